"""A contact URL apprise cannot read is refused when the response files load, with file:line."""

import pytest

from syncd.response_files import ResponseFileError, load_response_files


@pytest.mark.parametrize(("url", "says"), [
    ("foo://bar", "apprise has no channel foo://"),
    ("json://", "apprise cannot parse this json:// URL"),
])
def test_an_unreadable_contact_url_is_refused_with_file_and_line(tmp_path, url, says):
    path = tmp_path / "people.yaml"
    path.write_text(f"""users:
  - id: alice
    name: Alice
    email: alice@example.com
    contacts:
      pager: "{url}"
""")
    with pytest.raises(ResponseFileError) as raised:
        load_response_files([path])
    assert f"{path}:6: users[0].contacts.pager: {says}" in str(raised.value)


def test_a_secret_in_a_refused_url_is_not_shown(tmp_path):
    path = tmp_path / "people.yaml"
    path.write_text("""users:
  - id: alice
    name: Alice
    email: alice@example.com
    contacts:
      pager: "nosuch://user:hunter2secret@example.com/?token=tok-abcdef"
""")
    with pytest.raises(ResponseFileError) as raised:
        load_response_files([path])
    assert "apprise has no channel nosuch://" in str(raised.value)
    assert "hunter2secret" not in str(raised.value) and "tok-abcdef" not in str(raised.value)
