"""Response files as an admin edits them: the example validates, every mistake is named with
its file, line and key path, ids are unique across files, names must point at something, and a
broken edit of a running set keeps the previous one."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from syncd.metrics import RESPONSE_RELOADS
from syncd.response_files import ResponseFileError, ResponseFiles, load_response_files

EXAMPLE = Path(__file__).parent.parent / "examples" / "oncall.yaml"
ENV = {"TWILIO_SID": "AC0123456789abcdef0123456789abcdef", "TWILIO_TOKEN": "twilio-token-42aa",
       "PAYMENTS_ROUTING_KEY": "rk-0123456789"}

ALICE = """\
users:
  - id: alice
    name: Alice Adams
    email: alice@example.com
    time_zone: Europe/Berlin
    contacts: {mail: "mailto://mail.example.com?to=alice@example.com"}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(*paths: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ResponseFileError) as caught:
        load_response_files(paths, environ=ENV if environ is None else environ)
    return str(caught.value).splitlines()


def test_the_example_loads_every_kind():
    responses = load_response_files([EXAMPLE], environ=ENV)

    alice = responses.users["alice"]
    assert alice.contacts["phone"] == ("twilio://AC0123456789abcdef0123456789abcdef:"
                                       "twilio-token-42aa@15550001111/15550002222")
    assert [(r.contact, r.after) for r in alice.rules.high] == [
        ("mail", timedelta(0)), ("phone", timedelta(minutes=3))]
    assert [r.contact for r in responses.users["bob"].notification_rules.high] == ["mail"]
    weekdays, nights = responses.schedules["payments-primary"].layers
    assert (weekdays.rotation, nights.rotation, weekdays.users) == ("weekly", "daily", ["alice", "bob"])
    assert weekdays.restrictions[0].from_.isoformat() == "09:00:00"
    policy = responses.escalation_policies["payments"]
    assert (policy.repeat, policy.rules[1].targets[0].user) == (1, "erin")
    service = responses.services["payments-api"]
    assert service.routing_key.get_secret_value() == "rk-0123456789"
    assert (service.alert_grouping.type, service.alert_grouping.fields) == ("content", ["component"])
    assert (service.ack_timeout, service.page_on.priority) == (timedelta(minutes=30), ["P1", "P2"])
    assert responses.plays["major-incident"].model_extra["subscribers"] == ["erin"]
    assert responses.actions["restart-payments"].label == "Restart the payments pods"

    shown = str(responses.redacted()) + repr(responses)
    assert "twilio-token-42aa" not in shown and "rk-0123456789" not in shown


def test_every_mistake_is_named_with_file_line_and_key_path(tmp_path):
    path = write(tmp_path, "team.yaml", """\
        users:
          - id: bob
            name: Bob
            email: bob-at-example
            time_zone: Europe/Berln
            contacts: {mail: "not a url"}
            colour: blue
        schedules:
          - id: primary
            name: Primary
            time_zone: UTC
            layers:
              - name: days
                start: "2026-11-02T09:00+01:00"
                rotation: fortnightly
                users: []
                restrictions:
                  - {days: [mon, tues], from: "09:00", to: "18:00"}
                  - {from: "09:00", to: "09:00"}
        escalation_policies:
          - id: payments
            repeat: -1
            rules:
              - targets: [{user: bob, schedule: primary}]
                escalate_after: 30s
        services:
          - id: api
            name: API
            escalation_policy: payments
            urgency: urgent
            match: {prio: [P1]}
            alert_grouping: {window: 2d, fields: [component]}
        incidents: []
        """)

    assert problems_of(path) == [
        f'{path}:4: users[0].email: expected an email address like alice@example.com, got '
        '"bob-at-example"',
        f'{path}:5: users[0].time_zone: unknown time zone "Europe/Berln": expected an IANA name '
        "like Europe/Berlin or America/New_York (did you mean 'Europe/Berlin'?)",
        f'{path}:6: users[0].contacts.mail: expected an apprise URL like mailto://… or slack://…, '
        'got "not a url"',
        f"{path}:7: users[0].colour: unknown key (known keys: id, name, email, time_zone, "
        "contacts, rules)",
        f"{path}:14: schedules[0].layers[0].start: write the start without an offset: it is read "
        "in the schedule's time_zone",
        f'{path}:15: schedules[0].layers[0].rotation: expected hourly, daily, weekly or a duration '
        'like 12h or 3d, got "fortnightly"',
        f"{path}:16: schedules[0].layers[0].users: must not be empty",
        f'{path}:18: schedules[0].layers[0].restrictions[0].days[1]: expected one of mon, tue, '
        "wed, thu, fri, sat, sun, got \"tues\" (did you mean 'tue'?)",
        f"{path}:19: schedules[0].layers[0].restrictions[1]: from and to are the same time: the "
        "window would be empty; leave restrictions out to be on call all day",
        f"{path}:22: escalation_policies[0].repeat: must be at least 0, got -1",
        f"{path}:24: escalation_policies[0].rules[0].targets[0]: a target names exactly one of "
        "user or schedule, e.g. {schedule: payments-primary}",
        f"{path}:25: escalation_policies[0].rules[0].escalate_after: must be at least 1m (a "
        "person needs time to answer), got 30s",
        f'{path}:30: services[0].urgency: expected one of high, low, by_priority, got "urgent"',
        f'{path}:31: services[0].match: cannot match on "prio": expected one of status, '
        "priority, urgency, service, group, assignee or custom.<name> (did you mean 'priority'?)",
        f"{path}:32: services[0].alert_grouping.window: must be at most 24h, got 2d",
        f"{path}:33: incidents: unknown key (known keys: users, schedules, escalation_policies, "
        "services, plays, actions)",
    ]


def test_ids_are_unique_across_files(tmp_path):
    first = write(tmp_path, "a.yaml", ALICE)
    second = write(tmp_path, "b.yaml", ALICE.replace("Alice Adams", "Alice Again"))

    assert problems_of(first, second) == [
        f"{second}:2: users[0].id: id 'alice' is already used by users[0] ({first}:2); ids are "
        "unique across all response files"]


def test_names_that_point_at_nothing_are_refused_with_a_hint(tmp_path):
    people = write(tmp_path, "people.yaml", ALICE + "    rules:\n"
                                                     "      high: [{contact: mial, after: 0m}]\n")
    paging = write(tmp_path, "paging.yaml", """\
        schedules:
          - id: primary
            name: Primary
            time_zone: UTC
            layers: [{name: all, start: "2026-01-01T00:00", rotation: daily, users: [alice, alcie]}]
        escalation_policies:
          - id: payments
            rules:
              - targets: [{schedule: primry}, {user: bob}]
                escalate_after: 5m
        services:
          - {id: api, name: API, escalation_policy: paymnets, routing_key: same-key-1}
          - {id: web, name: Web, escalation_policy: payments, routing_key: same-key-1}
        """)

    problems = problems_of(people, paging)
    assert problems == [
        f"{people}:8: users[0].rules.high[0].contact: unknown contact of alice 'mial' (did you "
        "mean 'mail'?)",
        f"{paging}:5: schedules[0].layers[0].users[1]: unknown user 'alcie' (did you mean "
        "'alice'?)",
        f"{paging}:9: escalation_policies[0].rules[0].targets[0].schedule: unknown schedule "
        "'primry' (did you mean 'primary'?)",
        f"{paging}:9: escalation_policies[0].rules[0].targets[1].user: unknown user 'bob' "
        "(known: alice)",
        f"{paging}:12: services[0].escalation_policy: unknown escalation policy 'paymnets' (did "
        "you mean 'payments'?)",
        f"{paging}:13: services[1].routing_key: the same routing_key as services[0] "
        f"({paging}:12): events must name one service",
    ]
    assert not [p for p in problems if "same-key-1" in p]


def test_a_missing_variable_and_a_syntax_error_are_named(tmp_path):
    secrets = write(tmp_path, "secrets.yaml", ALICE.replace(
        '"mailto://mail.example.com?to=alice@example.com"', '"pover://${PUSHOVER_USER}@token"'))
    broken = write(tmp_path, "broken.yaml", "users: [\n")

    assert problems_of(secrets, broken, environ={}) == [
        f"{secrets}:6: users[0].contacts.mail: environment variable PUSHOVER_USER is not set",
        f"{broken}:2:1: YAML syntax error: while parsing a flow node; expected the node content, "
        "but found '<stream end>'",
    ]


def test_a_broken_edit_keeps_the_previous_set_and_is_counted_once(tmp_path):
    path = write(tmp_path, "team.yaml", ALICE)
    files = ResponseFiles([str(tmp_path / "*.yaml")], environ=ENV)
    rejected = RESPONSE_RELOADS.labels(outcome="rejected")
    applied = RESPONSE_RELOADS.labels(outcome="applied")
    before = (rejected._value.get(), applied._value.get())

    assert files.reload() is False                          # nothing changed
    path.write_text(ALICE.replace("Europe/Berlin", "Mars/Olympus"))
    assert files.reload() is False
    assert files.reload() is False                          # the same broken content: judged once
    assert files.current().users["alice"].time_zone == "Europe/Berlin"
    assert (rejected._value.get(), applied._value.get()) == (before[0] + 1, before[1])

    write(tmp_path, "more.yaml", ALICE.replace("alice", "bob").replace("Alice Adams", "Bob"))
    path.write_text(ALICE.replace("Europe/Berlin", "Europe/Paris"))
    assert files.reload() is True                           # a new file joins through the glob
    assert files.current().users["alice"].time_zone == "Europe/Paris"
    assert set(files.current().users) == {"alice", "bob"}
    assert applied._value.get() == before[1] + 1


def test_a_set_that_does_not_validate_refuses_to_start(tmp_path):
    write(tmp_path, "team.yaml", ALICE.replace("alice@example.com", "alice"))
    with pytest.raises(ResponseFileError, match=r"team.yaml:4: users\[0\].email"):
        ResponseFiles([str(tmp_path / "*.yaml")])


def test_paging_mistakes_are_refused_with_file_and_line(tmp_path):
    """The issue's list: a restriction with no days, escalate_after 0m, an unknown apprise
    scheme (the unknown user and contact are above)."""
    path = write(tmp_path, "paging.yaml", """\
        users:
          - id: alice
            name: Alice Adams
            email: alice@example.com
            contacts: {mail: "mailtoo://mail.example.com?to=alice@example.com"}
        schedules:
          - id: primary
            name: Primary
            time_zone: UTC
            layers:
              - {name: all, start: "2026-01-01T00:00", rotation: daily, users: [alice],
                 restrictions: [{days: [], from: "09:00", to: "18:00"}]}
        escalation_policies:
          - {id: payments, rules: [{targets: [{user: alice}], escalate_after: 0m}]}
        """)
    problems = problems_of(path)
    assert [problem.split(": ")[1] for problem in problems] == [
        "users[0].contacts.mail", "schedules[0].layers[0].restrictions[0].days",
        "escalation_policies[0].rules[0].escalate_after"], problems
    assert problems[0].startswith(f"{path}:5:") and "mailtoo" in problems[0]
    assert problems[1].startswith(f"{path}:12:")
    assert problems[2].startswith(f"{path}:14:") and "must be at least 1m" in problems[2]
