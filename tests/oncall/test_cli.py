"""`syncd oncall`: who is on call, and overrides added, listed and removed from the command line.
Overrides use relative times (+1h), so the tests hold whatever today's date is."""

from __future__ import annotations

import pytest

from syncd import cli
from tests.oncall.conftest import RESPONSES
from tests.support import ENV, write_config


@pytest.fixture
def run(store, tmp_path, monkeypatch, capsys):
    """``run("oncall", ...)``: the command's exit code, stdout and stderr."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "oncall.yaml").write_text(RESPONSES)
    config = write_config(tmp_path, store.url, extra='response: {files: ["oncall.yaml"]}')

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main([*args, "--config", str(config)])
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_oncall_prints_who_is_on_call_and_the_next_handoffs_in_both_clocks(run):
    code, out, _ = run("oncall", "payments-primary", "--at", "2026-11-06T12:00:00Z")
    assert code == 0
    assert out.splitlines() == [
        "payments-primary: Payments primary (Europe/Berlin)",
        ("  on call at Fri 2026-11-06 13:00 CET (12:00 UTC): Alice Adams (alice) until "
         "Fri 2026-11-06 18:00 CET (17:00 UTC)"),
        "  Fri 2026-11-06 18:00 CET (17:00 UTC): Alice Adams (alice) -> Carol Clark (carol)",
        "  Sat 2026-11-07 09:00 CET (08:00 UTC): Carol Clark (carol) -> nobody",
        "  Sat 2026-11-07 18:00 CET (17:00 UTC): nobody -> Dave Dunn (dave)"]


def test_oncall_without_a_schedule_answers_for_every_one(run):
    code, out, _ = run("oncall", "--at", "2026-11-06T07:00-05:00")
    assert code == 0
    assert [line for line in out.splitlines() if not line.startswith(" ")] == [
        "payments-primary: Payments primary (Europe/Berlin)", "search: Search (America/New_York)",
        "unused: Nobody pages this (UTC)"]
    assert "  on call at Fri 2026-11-06 07:00 EST (12:00 UTC): Alice Adams (alice)" in out


@pytest.mark.parametrize("args, message", [
    (["oncall", "payments-primay"], "did you mean 'payments-primary'?"),
    (["oncall", "--at", "2026-11-06T12:00"], "give a UTC offset"),
    (["oncall", "--at", "friday"], "expected ISO 8601"),
    (["oncall", "--at", "+2x"], "expected a duration"),
    (["oncall", "--from", "now"], "belong to `syncd oncall override`"),
    (["oncall", "override", "payments-primary", "erin", "--from", "now"], "--from TIME --to TIME"),
    (["oncall", "override", "payments-primary", "alcie", "--from", "now", "--to", "+1h"],
     "did you mean 'alice'?"),
    (["oncall", "override", "payments-primary", "erin", "--from", "+2h", "--to", "+1h"],
     "before it starts"),
    (["oncall", "override", "--remove", "999"], "override 999 does not exist"),
])
def test_bad_input_exits_2_saying_what_was_wrong(run, args, message):
    code, _, err = run(*args)
    assert code == 2
    assert message in err


def test_an_override_is_added_shown_listed_and_removed(run):
    code, out, _ = run("oncall", "override", "payments-primary", "erin", "--from", "now",
                       "--to", "+3h")
    assert code == 0 and out.startswith("added override ")
    override_id = out.split()[2].rstrip(":")
    assert "erin on call in payments-primary" in out and "(by cli:" in out
    code, out, _ = run("oncall", "payments-primary", "--at", "+1h")
    assert code == 0 and "Erin Evans (erin) until" in out
    code, out, _ = run("oncall", "override", "--list", "payments-primary")
    assert code == 0 and out.startswith(f"override {override_id}: erin")
    assert run("oncall", "override", "--list", "search")[1] == "no current or coming overrides\n"
    code, out, _ = run("oncall", "override", "--remove", override_id)
    assert code == 0 and out.startswith(f"removed override {override_id}:")
    assert run("oncall", "override", "--list")[1] == "no current or coming overrides\n"
