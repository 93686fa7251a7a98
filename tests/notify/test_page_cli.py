"""`syncd page test USER [--contact NAME]`: a test notification to each contact, recorded."""

from __future__ import annotations

from sqlalchemy import select

from syncd.cli import main
from syncd.notify.mail_sink import MailSink
from syncd.notify.models import Notification

from .receivers import JsonReceiver


def write(tmp_path, store_url, contacts: dict[str, str]):
    lines = "\n".join(f'      {name}: "{url}"' for name, url in contacts.items())
    (tmp_path / "people.yaml").write_text(f"""
users:
  - id: alice
    name: Alice Adams
    email: alice@example.com
    contacts:
{lines}
""")
    config = tmp_path / "syncd.yaml"
    config.write_text(f'store: {{url: "{store_url}"}}\nresponse: {{files: ["people.yaml"]}}\n')
    return str(config)


def test_a_test_page_reaches_every_contact_and_is_recorded(store, tmp_path, capsys):
    with MailSink() as sink, JsonReceiver() as receiver:
        config = write(tmp_path, store.url, {"mail": sink.url_for("alice@example.com"),
                                             "hook": receiver.url("ok")})
        assert main(["page", "test", "alice", "--config", config]) == 0
        (mail,) = sink.wait_for(1)
        assert receiver.paths() == ["/ok"]
    out = capsys.readouterr().out
    assert "mail (mailto): sent" in out and "hook (json): sent" in out
    assert mail["Subject"] == "syncd test notification for Alice Adams"
    with store.transaction() as session:
        rows = session.scalars(select(Notification)).all()
    assert sorted((row.kind, row.contact, row.state) for row in rows) == [
        ("test", "hook", "sent"), ("test", "mail", "sent")]


def test_a_failing_contact_exits_1_and_only_the_named_one_is_tried(store, tmp_path, capsys):
    with JsonReceiver() as receiver:
        config = write(tmp_path, store.url, {"good": receiver.url("ok"),
                                             "bad": receiver.url("fail")})
        assert main(["page", "test", "alice", "--contact", "bad", "--config", config]) == 1
        assert receiver.paths() == ["/fail"]             # once: a test is not retried
    assert "bad (json): failed" in capsys.readouterr().out


def test_an_unknown_user_or_contact_is_a_usage_error(store, tmp_path, capsys):
    config = write(tmp_path, store.url, {"mail": "json://127.0.0.1:9/x"})
    assert main(["page", "test", "alise", "--config", config]) == 2
    assert "no user 'alise'" in capsys.readouterr().err
    assert main(["page", "test", "alice", "--contact", "phone", "--config", config]) == 2
    assert "has no contact 'phone'" in capsys.readouterr().err
