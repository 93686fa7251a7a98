"""The `syncd` command. Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from syncd import __version__, logs

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("syncd.cli")


class UsageError(Exception):
    """A mistake in what the user asked for (exit 2), as opposed to a runtime failure (exit 1)."""


def default_config_path() -> str:
    return os.environ.get("SYNCD_CONFIG") or "syncd.yaml"


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="configuration file (default: $SYNCD_CONFIG, else ./syncd.yaml)")


_log_flags: dict[str, str | None] = {"format": None, "level": None}


def load_config_or_fail(path: str | None):
    """The validated configuration, or UsageError with every problem the file has. The file's
    `logging` section applies where the command line did not say otherwise."""
    from syncd.config import ConfigError, load_config
    try:
        config = load_config(path or default_config_path())
    except ConfigError as error:
        raise UsageError(str(error).replace("\n", "\n  ")) from None
    logs.configure(_log_flags["format"] or config.logging.format,
                   _log_flags["level"] or config.logging.level)
    return config


# -- commands -----------------------------------------------------------------------------------

def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from syncd.store import db
    config = load_config_or_fail(args.config)
    engine = db.open_engine(config.store.url.get_secret_value()
                            if hasattr(config.store.url, "get_secret_value") else config.store.url)
    before = db.current_revision(engine)
    db.upgrade(engine)
    after = db.current_revision(engine)
    print(f"store schema: {before or 'empty'} -> {after}" if before != after
          else f"store schema already at {after}")
    engine.dispose()
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate the config, its mapping files and its response files; print them redacted (the
    config's sections at the top, what the response files define under "definitions")."""
    config = load_config_or_fail(args.file or args.config)
    mapping_files = [str(connector.mapping) for connector in config.connectors.values()]
    if report_mapping_problems(mapping_files):
        return EXIT_USAGE
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    from syncd.clock import SystemClock
    from syncd.oncall.service import coverage_warnings
    for warning in coverage_warnings(session=None, responses=config.responses,
                                     now=SystemClock().now()):
        print(f"warning: {warning}", file=sys.stderr)
    if config.responses.users and config.http.link_secret is None:
        print("warning: http.link_secret is not set: pages carry no acknowledge link and the "
              "calendar feeds are off", file=sys.stderr)
    print(json.dumps({**config.redacted(), "definitions": config.responses.redacted()},
                     indent=2, default=str))
    print(f"config valid, {len(mapping_files)} mapping file(s) and "
          f"{len(config.responses.files)} response file(s) valid", file=sys.stderr)
    return EXIT_OK


def report_mapping_problems(files: list[str]) -> bool:
    """Print every problem of the mapping files (file:line:column) to stderr; True if any."""
    from syncd.mapping import validate_files
    problems = validate_files(files)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {len(files)} mapping file(s)", file=sys.stderr)
    return bool(problems)


def cmd_mappings_validate(args: argparse.Namespace) -> int:
    files = args.files
    if not files:
        config = load_config_or_fail(args.config)
        files = [str(connector.mapping) for connector in config.connectors.values()]
    if report_mapping_problems(files):
        return EXIT_USAGE
    print(f"{len(files)} mapping file(s) valid")
    return EXIT_OK


@contextmanager
def store_transaction(args: argparse.Namespace, connector: str | None = None) -> Iterator[Session]:
    """One transaction on the configured store, for commands that only touch the store (they may
    run beside a daemon: SQLite's one-process rule is about daemons)."""
    from syncd.connectors.factory import secret
    from syncd.store import db
    config = load_config_or_fail(args.config)
    _check_connector(config, connector)
    engine = db.open_engine(secret(config.store.url))
    try:
        db.ensure_schema(engine, auto_upgrade=False)
    except db.SchemaOutOfDate as error:
        raise UsageError(str(error)) from None
    try:
        with db.transaction(db.session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def _check_connector(config, name: str | None) -> None:
    if name is not None and name not in config.connectors:
        raise UsageError(f"no connector named {name!r} in the configuration "
                         f"(configured: {', '.join(config.connectors)})")


def cmd_run(args: argparse.Namespace) -> int:
    """Exit 2 when the configuration (or what it names) must be fixed first, 1 when the start
    failed at run time (a taken port: a supervisor's restart may well succeed)."""
    from syncd.daemon import ConfigurationProblem, Daemon, StartupError
    config = load_config_or_fail(args.config)
    try:
        Daemon(config).run_until_signalled()
    except ConfigurationProblem as error:
        raise UsageError(str(error)) from None
    except StartupError as error:
        print(f"syncd: {error}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from syncd.demo import DemoFailed, run_demo
    try:
        return run_demo(args.dir.resolve(), once=args.once)
    except DemoFailed as error:
        print(f"syncd demo: {error}", file=sys.stderr)
        return EXIT_FAILURE


def cmd_dead_letters_list(args: argparse.Namespace) -> int:
    from syncd.engine import dead_letters
    with store_transaction(args, args.connector) as session:
        rows = dead_letters.list_dead_letters(session=session, connector=args.connector)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no dead letters")
    else:
        for row in rows:
            print(f"{row['id']:>8}  {row['connector']:<12} {row['operation']:<8} "
                  f"incident {row['incident_id'] or '-':<6} attempts {row['attempts']:<3} "
                  f"{row['last_error']}")
    return EXIT_OK


def cmd_dead_letters_retry(args: argparse.Namespace) -> int:
    from syncd.clock import SystemClock
    from syncd.engine import dead_letters
    from syncd.store.errors import NotFound
    if not args.all and args.id is None:
        raise UsageError("dead-letters retry: give a dead letter's ID (out-12, in-3) or --all")
    now = SystemClock().now()
    with store_transaction(args) as session:
        ids = ([row["id"] for row in dead_letters.list_dead_letters(session=session)] if args.all
               else [args.id])
        for dead_letter_id in ids:
            try:
                dead_letters.retry(session=session, dead_letter_id=dead_letter_id, now=now)
            except NotFound as error:
                raise UsageError(str(error)) from None
    print(f"{len(ids)} dead letter(s) queued for another attempt")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    from syncd.clock import SystemClock
    from syncd.engine import service as sync_service
    with store_transaction(args, args.connector) as session:
        sync_service.set_paused(session=session, connector=args.connector, reason=None,
                           now=SystemClock().now())
    print(f"{args.connector}: inbound sync resumed; the change that paused it will be applied")
    return EXIT_OK


def cmd_reconcile(args: argparse.Namespace) -> int:
    from syncd.daemon import Daemon, StartupError
    config = load_config_or_fail(args.config)
    _check_connector(config, args.connector)
    daemon = Daemon(config)
    try:
        daemon.open()
        assert daemon.engine is not None
        for name in [args.connector] if args.connector else list(config.connectors):
            counts = daemon.engine.inbound.reconcile(name)
            print(f"{name}: checked {counts['checked']}, repaired {counts['repaired']}, "
                  f"vanished {counts['vanished']}")
        delivered = daemon.engine.deliver_all_due()
        print(f"delivered {delivered} outbox row(s)")
    except StartupError as error:
        raise UsageError(str(error)) from None
    finally:
        daemon.stop()
    return EXIT_OK


@contextmanager
def incident_commands(args: argparse.Namespace) -> Iterator:
    """The daemon's pieces a command needs to change incidents exactly as the daemon would: the
    same transaction, outbox rows to the tickets, escalation hooks. The running daemon delivers."""
    from syncd.daemon import Daemon, StartupError
    daemon = Daemon(load_config_or_fail(args.config))
    try:
        daemon.open(for_commands=True)
        yield daemon
    except StartupError as error:
        raise UsageError(str(error)) from None
    finally:
        daemon.stop()


def _incident_command(args: argparse.Namespace, run: Callable) -> int:
    from syncd.incidents import service as incident_service
    with incident_commands(args) as daemon:
        try:
            changed = run(daemon.engine.commands, args.as_user or _cli_actor())
        except incident_service.NotFound as error:
            raise UsageError(str(error)) from None
        except (incident_service.InvalidTransition, incident_service.InvalidField) as error:
            print(f"syncd: {error}", file=sys.stderr)
            return EXIT_FAILURE
    print(f"SYN-{args.id}: " + (", ".join(f"{name} {old} -> {new}" for name, (old, new)
                                           in changed.items()) if changed else "no change"))
    return EXIT_OK


def cmd_ack(args: argparse.Namespace) -> int:
    return _incident_command(args, lambda commands, actor: commands.acknowledge(
        args.id, actor=actor, source="cli"))


def cmd_resolve(args: argparse.Namespace) -> int:
    return _incident_command(args, lambda commands, actor: commands.resolve(
        args.id, actor=actor, source="cli", resolution=args.note))


def cmd_note(args: argparse.Namespace) -> int:
    if not args.text.strip():
        raise UsageError("note: the text is empty")

    def add(commands, actor):
        commands.add_note(args.id, args.text, author=actor, source="cli")
        return {"note": (None, args.text)}
    return _incident_command(args, add)


def cmd_action_run(args: argparse.Namespace) -> int:
    """Run a Custom Incident Action as the daemon would: the row, the call, the timeline."""
    from syncd.incidents import service as incident_service
    from syncd.response import actions
    with incident_commands(args) as daemon:
        try:
            run = actions.run_action(
                sessions=daemon.sessions, clock=daemon.clock,
                responses=daemon.responses.current(), action_id=args.action,
                incident_id=args.id, actor=args.as_user or _cli_actor(), source="cli",
                confirmed=args.yes)
        except incident_service.NotFound as error:
            raise UsageError(str(error)) from None
        except actions.ActionRefused as refused:
            if refused.status == 404:
                raise UsageError(str(refused)) from None
            print(f"syncd: {refused}", file=sys.stderr)
            return EXIT_FAILURE
    took = f" in {run.duration_ms} ms" if run.duration_ms is not None else ""
    code = f" HTTP {run.status_code}" if run.status_code is not None else ""
    print(f"SYN-{args.id}: action {run.label} {run.state}{code}{took}"
          + (f": {run.error}" if run.error else ""))
    return EXIT_OK if run.state == "succeeded" else EXIT_FAILURE


def cmd_incidents_list(args: argparse.Namespace) -> int:
    from syncd.incidents import service as incident_service
    with store_transaction(args) as session:
        rows = incident_service.list_incidents(session=session, status=args.status,
                                               limit=args.limit, offset=0)
        for row in rows:
            print(f"{row.number:>8}  {row.status:<12} {row.priority or '--':<3} "
                  f"{row.updated_at:%Y-%m-%d %H:%M}  {row.title}")
    return EXIT_OK


def cmd_incidents_show(args: argparse.Namespace) -> int:
    from fastapi import HTTPException

    from syncd.api.incidents import incident_detail
    with incident_commands(args) as daemon:
        try:
            detail = incident_detail(daemon.engine, args.id)
        except HTTPException as error:
            raise UsageError(str(error.detail)) from None
    print(json.dumps(detail, indent=2, default=str))
    return EXIT_OK


def cmd_page_test(args: argparse.Namespace) -> int:
    """A test notification now to each (or the named) contact of a user, recorded in the store
    as a ``test`` row; prints each outcome, exit 1 when one was not sent."""
    from syncd.clock import SystemClock
    from syncd.connectors.factory import secret
    from syncd.notify import service as notify
    from syncd.notify.channels import channel_of
    from syncd.notify.sender import NotificationSender
    from syncd.store import db
    from syncd.yamlsource import did_you_mean
    config = load_config_or_fail(args.config)
    responses = config.responses
    user = responses.users.get(args.user)
    if user is None:
        hint = did_you_mean(args.user, responses.users)
        raise UsageError(f"no user {args.user!r} in the response files"
                         + (f" ({hint})" if hint else ""))
    contacts = [args.contact] if args.contact else list(user.contacts)
    for contact in contacts:
        if contact not in user.contacts:
            raise UsageError(f"user {user.id} has no contact {contact!r} (contacts: "
                             f"{', '.join(user.contacts) or 'none'})")
    if not contacts:
        raise UsageError(f"user {user.id} has no contacts in the response files")
    engine = db.open_engine(secret(config.store.url))
    try:
        db.ensure_schema(engine, auto_upgrade=False)
    except db.SchemaOutOfDate as error:
        raise UsageError(str(error)) from None
    clock = SystemClock()
    sessions = db.session_factory(engine)
    sender = NotificationSender(sessions=sessions, clock=clock, responses=lambda: responses,
                                worker_id=f"cli-page-test-{os.getpid()}", max_attempts=1)
    failed = 0
    try:
        for contact in contacts:
            with db.transaction(sessions) as session:
                row = notify.enqueue_test(session=session, user=user, contact=contact,
                                          now=clock.now())
                claim = notify.claim_rows(session=session, ids=[row.id], now=clock.now(),
                                          worker_id=sender.worker_id,
                                          send_timeout=sender.send_timeout)
            (delivery,) = sender.send([claim])
            failed += delivery.outcome != "sent"
            print(f"{contact} ({channel_of(user.contacts[contact])}): {delivery.outcome}: "
                  f"{delivery.detail}")
    finally:
        engine.dispose()
    return EXIT_FAILURE if failed else EXIT_OK


def cmd_mappings_preview(args: argparse.Namespace) -> int:
    """Read one record and show what syncd would make of it, without touching the store."""
    from syncd.clock import SystemClock
    from syncd.connectors.base import Ref, RemoteError
    from syncd.connectors.factory import build_connector, seconds
    from syncd.connectors.http import RetryPolicy
    from syncd.mapping import MappingError, UnmappableValue, load_mapping
    config = load_config_or_fail(args.config)
    _check_connector(config, args.connector)
    settings = config.connectors[args.connector]
    try:
        mapping = load_mapping(settings.mapping)
    except MappingError as error:
        raise UsageError(str(error)) from None
    connector = build_connector(args.connector, settings, clock=SystemClock(),
                                overlap=timedelta(seconds=seconds(config.sync.poll_overlap)),
                                policy=RetryPolicy(max_attempts=1))    # a person is waiting
    try:
        record = connector.fetch(args.remote_key)
    except RemoteError as error:
        print(f"syncd: cannot read {args.remote_key!r}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        connector.close()
    if record is None:
        example = ("a number such as INC0010001 or a sys_id" if settings.type == "servicenow"
                   else "an issue key such as OPS-12 or an issue id")
        raise UsageError(f"{args.connector} ({settings.url}) has no record {args.remote_key!r}; "
                         f"give {example}")
    # A preview has no incident: templates see this placeholder number, id and URL.
    placeholders = {"number": "SYN-0", "id": 0, "url": "/api/v1/incidents/0"}
    try:
        canonical = mapping.to_canonical(record.fields)
        outbound = mapping.to_remote(canonical, context={**canonical, **placeholders},
                                     creating=False)
    except UnmappableValue as error:
        print(f"syncd: {args.connector} {record.key} cannot be mapped: {error}", file=sys.stderr)
        return EXIT_FAILURE

    def plain(value):
        if isinstance(value, Ref):
            return {"reference": {"match": value.match, "value": value.value}}
        return str(value)

    print(json.dumps({"remote": {"key": record.key, "version": record.version,
                                 "fields": record.fields},
                      "canonical": canonical,
                      "outbound_writes": outbound,
                      "template_placeholders": placeholders}, indent=2, default=plain))
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    options: dict = {"state_file": args.state_file, "webhook_url": args.webhook_url,
                     "webhook_secret": args.webhook_secret}
    if args.system == "servicenow":
        from syncd.simulators.servicenow import ServiceNowSimulator as simulator_class
    else:
        from syncd.simulators.jira import JiraSimulator as simulator_class
        options["deployment"] = args.deployment
    simulator = simulator_class(**{k: v for k, v in options.items() if v is not None})
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    simulator.start(args.host, args.port)
    print(f"{args.system} simulator listening on {simulator.base_url} "
          f"(admin endpoints under /_sim/; Ctrl-C stops)", flush=True)
    print(f"  url: {simulator.base_url}", *(f"  {line}" for line in simulator.credentials()),
          sep="\n", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        simulator.stop()          # also writes --state-file
    return EXIT_OK


# -- on call ------------------------------------------------------------------------------------

ONCALL_USAGE = """syncd oncall [SCHEDULE] [--at TIME]
       syncd oncall override SCHEDULE USER --from TIME --to TIME
       syncd oncall override --list [SCHEDULE]
       syncd oncall override --remove ID"""
TIME_HELP = ('ISO 8601 with an offset (2026-11-02T09:00+01:00, ...Z), "now", or relative: '
             '+2h (--at=-30m)')


def _cli_instant(option: str, text: str, now):
    """A time as people type it on the command line; UsageError saying what is expected."""
    from datetime import datetime

    from syncd.config import parse_duration
    if text == "now":
        return now
    if text[:1] in "+-":
        try:
            offset = parse_duration(text[1:])
        except ValueError as error:
            raise UsageError(f"{option} {text}: {error}") from None
        return now + offset if text[0] == "+" else now - offset
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected {TIME_HELP}") from None
    if value.tzinfo is None:
        raise UsageError(f"{option} {text}: give a UTC offset (like {text}+01:00 or {text}Z): "
                         f"the time zone must not be guessed")
    return value


def _cli_actor() -> str:
    import getpass
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):           # no user name known for this process
        return "cli"


def _both_clocks(instant, time_zone: str) -> str:
    """An instant in the schedule's zone and in UTC: 'Mon 2026-11-09 09:00 CET (08:00 UTC)'."""
    from datetime import UTC
    from zoneinfo import ZoneInfo
    local, utc = instant.astimezone(ZoneInfo(time_zone)), instant.astimezone(UTC)
    same_day = local.date() == utc.date()
    return f"{local:%a %Y-%m-%d %H:%M %Z} ({utc:{'%H:%M' if same_day else '%Y-%m-%d %H:%M'}} UTC)"


def cmd_oncall(args: argparse.Namespace) -> int:
    if args.words[:1] == ["override"]:
        return _oncall_override(args, args.words[1:])
    if args.from_ or args.to or args.list is not None or args.remove is not None:
        raise UsageError("--from, --to, --list and --remove belong to `syncd oncall override`")
    if len(args.words) > 1:
        raise UsageError(f"oncall: one schedule at most, got {' '.join(args.words)}")
    from syncd.clock import SystemClock
    from syncd.oncall import service as oncall_service
    from syncd.store.errors import NotFound
    responses = load_config_or_fail(args.config).responses
    at = _cli_instant("--at", args.at, SystemClock().now()) if args.at else SystemClock().now()
    with store_transaction(args) as session:
        try:
            answers = oncall_service.who_is_on_call(
                session=session, responses=responses, at=at,
                schedule_id=args.words[0] if args.words else None)
        except NotFound as error:
            raise UsageError(str(error)) from None
    if not answers:
        print("no schedules are defined in the response files")

    def person(user_id: str | None) -> str:
        user = responses.users.get(user_id) if user_id else None
        return f"{user.name} ({user_id})" if user else (user_id or "nobody")

    for answer in answers:
        zone = answer.schedule.time_zone
        print(f"{answer.schedule.id}: {answer.schedule.name} ({zone})")
        until = f" until {_both_clocks(answer.until, zone)}" if answer.until else ""
        print(f"  on call at {_both_clocks(at, zone)}: {person(answer.user_id)}{until}")
        for handoff in answer.next_handoffs:
            print(f"  {_both_clocks(handoff.at, zone)}: {person(handoff.from_user)} -> "
                  f"{person(handoff.to_user)}")
        if not answer.next_handoffs:
            print("  no handoff within a year")
    return EXIT_OK


def _print_override(override, verb: str = "") -> None:
    print(f"{verb}override {override.id}: {override.user_id} on call in {override.schedule_id} "
          f"from {override.starts_at.isoformat()} to {override.ends_at.isoformat()} "
          f"(by {override.created_by or 'unknown'})")


def _oncall_override(args: argparse.Namespace, words: list[str]) -> int:
    from syncd.clock import SystemClock
    from syncd.oncall import service as oncall_service
    from syncd.store.errors import NotFound
    if args.at:
        raise UsageError("--at belongs to `syncd oncall`; an override takes --from and --to")
    now = SystemClock().now()
    if args.remove is not None:
        if words or args.list is not None or args.from_ or args.to:
            raise UsageError("oncall override --remove ID takes nothing else")
        with store_transaction(args) as session:
            try:
                removed = oncall_service.remove_override(session=session, override_id=args.remove)
            except NotFound as error:
                raise UsageError(str(error)) from None
            _print_override(removed, "removed ")
        return EXIT_OK
    if args.list is not None:
        if words or args.from_ or args.to:
            raise UsageError("usage: syncd oncall override --list [SCHEDULE]")
        with store_transaction(args) as session:
            rows = oncall_service.list_overrides(session=session, schedule_id=args.list or None,
                                                 since=now)
            for row in rows:
                _print_override(row)
        if not rows:
            print("no current or coming overrides")
        return EXIT_OK
    if len(words) != 2 or not args.from_ or not args.to:
        raise UsageError("usage: syncd oncall override SCHEDULE USER --from TIME --to TIME")
    responses = load_config_or_fail(args.config).responses
    starts_at = _cli_instant("--from", args.from_, now)
    ends_at = _cli_instant("--to", args.to, now)
    with store_transaction(args) as session:
        try:
            override = oncall_service.add_override(
                session=session, responses=responses, schedule_id=words[0], user_id=words[1],
                starts_at=starts_at, ends_at=ends_at, actor=_cli_actor(), now=now)
        except oncall_service.InvalidOverride as error:
            raise UsageError(str(error)) from None
        _print_override(override, "added ")
    return EXIT_OK


def _simulate_epilog() -> str:
    """The credentials each simulator accepts, for `syncd simulate --help`."""
    from syncd.simulators.accounts import (JIRA_SIGNATURE_HEADER, JIRA_USERS,
                                           SERVICENOW_SECRET_HEADER, SERVICENOW_USERS,
                                           jira_credentials, servicenow_credentials)
    sections = [("servicenow", servicenow_credentials(SERVICENOW_USERS, None)),
                ("jira (--deployment Cloud, the default)", jira_credentials(JIRA_USERS, "Cloud", None)),
                ("jira --deployment Server", jira_credentials(JIRA_USERS, "Server", None))]
    lines = ["credentials accepted:"]
    for name, credentials in sections:
        lines += [f"  {name}:", *(f"    {line}" for line in credentials)]
    lines += ["  with --webhook-secret S: ServiceNow sends S in its webhooks' "
              f"{SERVICENOW_SECRET_HEADER} header,",
              f"    Jira signs them with S in {JIRA_SIGNATURE_HEADER}"]
    return "\n".join(lines)


# -- parser -------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="Incident-response daemon that keeps ServiceNow and Jira in step with its own "
                    "incident store.")
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    parser.add_argument("--log-format", choices=["auto", "json", "text"],
                        help="log line format (default: the config's logging.format, else text on "
                             "a terminal and JSON otherwise)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper,
                        help="default: the config's logging.level, else INFO (WARNING for demo)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    db_parser = commands.add_parser("db", help="store schema")
    db_commands = db_parser.add_subparsers(dest="db_command", metavar="SUBCOMMAND")
    upgrade = db_commands.add_parser("upgrade", help="migrate the store's schema to this version")
    _add_config_option(upgrade)
    upgrade.set_defaults(handler=cmd_db_upgrade)

    config_parser = commands.add_parser("config", help="configuration file")
    config_commands = config_parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    check = config_commands.add_parser("check", help="validate a configuration file, its mapping "
                                                     "and response files, and print them, "
                                                     "secrets redacted")
    check.add_argument("file", nargs="?", help="the file (default: --config)")
    _add_config_option(check)
    check.set_defaults(handler=cmd_config_check)

    mappings_parser = commands.add_parser("mappings", help="field mapping files")
    mappings_commands = mappings_parser.add_subparsers(dest="mappings_command", metavar="SUBCOMMAND")
    validate = mappings_commands.add_parser("validate", help="check mapping files, reporting every "
                                                             "problem with file:line:column")
    validate.add_argument("files", nargs="*", metavar="FILE",
                          help="mapping files (default: those the configuration names)")
    _add_config_option(validate)
    validate.set_defaults(handler=cmd_mappings_validate)
    preview = mappings_commands.add_parser("preview", help="read one real record and show its "
                                                           "canonical values and outbound writes")
    preview.add_argument("connector")
    preview.add_argument("remote_key", metavar="REMOTE_KEY")
    _add_config_option(preview)
    preview.set_defaults(handler=cmd_mappings_preview)

    run = commands.add_parser("run", help="run the daemon in the foreground until SIGTERM/SIGINT")
    _add_config_option(run)
    run.set_defaults(handler=cmd_run)

    demo = commands.add_parser("demo", help="the daemon against built-in simulators on SQLite, "
                                            "playing a short incident story")
    demo.add_argument("--dir", type=Path, default=Path("syncd-demo"),
                      help="folder for the demo's config and store (default ./syncd-demo)")
    demo.add_argument("--once", action="store_true", help="exit after the story (for tests)")
    demo.set_defaults(handler=cmd_demo)

    dead = commands.add_parser("dead-letters", help="deliveries that gave up and wait for an operator")
    dead_commands = dead.add_subparsers(dest="dead_command", metavar="SUBCOMMAND")
    dead_list = dead_commands.add_parser("list", help="list dead letters with their reasons")
    dead_list.add_argument("--connector")
    dead_list.add_argument("--json", action="store_true")
    _add_config_option(dead_list)
    dead_list.set_defaults(handler=cmd_dead_letters_list)
    dead_retry = dead_commands.add_parser("retry", help="queue dead letters for another attempt")
    dead_retry.add_argument("id", nargs="?", help="a dead letter's id from `list`: out-12, in-3")
    dead_retry.add_argument("--all", action="store_true")
    _add_config_option(dead_retry)
    dead_retry.set_defaults(handler=cmd_dead_letters_retry)

    reconcile = commands.add_parser("reconcile", help="re-read every linked record and repair drift")
    reconcile.add_argument("--connector")
    _add_config_option(reconcile)
    reconcile.set_defaults(handler=cmd_reconcile)

    resume = commands.add_parser("resume", help="resume a connector paused after a mass change")
    resume.add_argument("connector")
    _add_config_option(resume)
    resume.set_defaults(handler=cmd_resume)

    page = commands.add_parser("page", help="notifications: send a test page")
    page_commands = page.add_subparsers(dest="page_command", metavar="SUBCOMMAND")
    page_test = page_commands.add_parser(
        "test", help="send a test notification now to each (or one) contact of a user")
    page_test.add_argument("user", metavar="USER", help="a user id from the response files")
    page_test.add_argument("--contact", metavar="NAME", help="only this contact")
    _add_config_option(page_test)
    page_test.set_defaults(handler=cmd_page_test)

    simulate = commands.add_parser(
        "simulate", help="run a ServiceNow or Jira simulator",
        description="Run a ServiceNow or Jira simulator over HTTP, with admin endpoints under\n"
                    "/_sim/ (faults, request log, reset, human edits). It prints its URL and the\n"
                    "credentials it accepts when it starts.",
        epilog=_simulate_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    simulate.add_argument("system", choices=["servicenow", "jira"])
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8081)
    simulate.add_argument("--state-file", help="keep records in this JSON file across restarts")
    simulate.add_argument("--webhook-url", help="POST a webhook here on every change")
    simulate.add_argument("--webhook-secret", help="secret for webhook signing")
    simulate.add_argument("--deployment", choices=["Cloud", "Server"], default="Cloud",
                          help="Jira only: which Jira to imitate")
    simulate.set_defaults(handler=cmd_simulate)

    action = commands.add_parser("action", help="Custom Incident Actions")
    action_commands = action.add_subparsers(dest="action_command", metavar="SUBCOMMAND")
    action_run = action_commands.add_parser(
        "run", help="run an action on an incident: the call, its answer on the timeline")
    action_run.add_argument("action", metavar="ACTION", help="an action id from the response files")
    action_run.add_argument("id", type=int, metavar="ID", help="the incident number (SYN-<ID>)")
    action_run.add_argument("--yes", action="store_true",
                            help="confirm an action that asks for a confirmation")
    action_run.add_argument("--as", dest="as_user", metavar="USER",
                            help="who runs it (on the timeline); default cli:<your login>")
    _add_config_option(action_run)
    action_run.set_defaults(handler=cmd_action_run)

    incidents = commands.add_parser("incidents", help="incidents in the store")
    incident_commands_parser = incidents.add_subparsers(dest="incidents_command")
    listing = incident_commands_parser.add_parser("list", help="the newest incidents")
    listing.add_argument("--status", choices=["triggered", "acknowledged", "resolved"])
    listing.add_argument("--limit", type=int, default=50)
    _add_config_option(listing)
    listing.set_defaults(handler=cmd_incidents_list)
    show = incident_commands_parser.add_parser(
        "show", help="one incident as JSON: fields, links, timeline, escalation, pages")
    show.add_argument("id", type=int)
    _add_config_option(show)
    show.set_defaults(handler=cmd_incidents_show)
    who = ("who does it: a user id of the response files (an acknowledgement assigns the "
           "tickets to them); default cli:<your login>")
    ack = commands.add_parser("ack", help="acknowledge an incident: escalation stops, the "
                                          "tickets follow")
    ack.add_argument("id", type=int)
    ack.add_argument("--as", dest="as_user", metavar="USER", help=who)
    _add_config_option(ack)
    ack.set_defaults(handler=cmd_ack)
    resolve_parser = commands.add_parser("resolve", help="resolve an incident")
    resolve_parser.add_argument("id", type=int)
    resolve_parser.add_argument("--note", help="the resolution (close notes in ServiceNow)")
    resolve_parser.add_argument("--as", dest="as_user", metavar="USER", help=who)
    _add_config_option(resolve_parser)
    resolve_parser.set_defaults(handler=cmd_resolve)
    note = commands.add_parser("note", help="add an internal note (a ServiceNow work note, a "
                                            "Jira comment)")
    note.add_argument("id", type=int)
    note.add_argument("text")
    note.add_argument("--as", dest="as_user", metavar="USER", help=who)
    _add_config_option(note)
    note.set_defaults(handler=cmd_note)

    oncall = commands.add_parser(
        "oncall", help="who is on call, and schedule overrides", usage=ONCALL_USAGE,
        description="Without `override`: who is on call in each schedule (or in SCHEDULE) now or "
                    "at --at, and the next 3 handoffs, in the schedule's time zone and UTC. "
                    "`override` puts USER on call in SCHEDULE over every layer from --from to "
                    "--to; --list shows current and coming overrides, --remove ID deletes one. "
                    "Give SCHEDULE and USER before the options.",
        epilog=f"TIME: {TIME_HELP}")
    oncall.add_argument("words", nargs="*", metavar="SCHEDULE", help=argparse.SUPPRESS)
    oncall.add_argument("--at", metavar="TIME", help="the instant to ask about (default now)")
    oncall.add_argument("--from", dest="from_", metavar="TIME", help="override: when it starts")
    oncall.add_argument("--to", metavar="TIME", help="override: when it ends")
    oncall.add_argument("--list", nargs="?", const="", metavar="SCHEDULE",
                        help="override: list current and coming overrides (of SCHEDULE)")
    oncall.add_argument("--remove", metavar="ID", type=int, help="override: delete one")
    _add_config_option(oncall)
    oncall.set_defaults(handler=cmd_oncall)

    for sub in (db_parser, config_parser, mappings_parser, dead, page, incidents):
        sub.set_defaults(handler=_missing_subcommand(sub))
    return parser


def _missing_subcommand(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _log_flags.update(format=args.log_format, level=args.log_level)
    quiet_by_default = args.command == "demo"       # the story is the output; logs only for trouble
    logs.configure(args.log_format or "auto",
                   args.log_level or ("WARNING" if quiet_by_default else "INFO"))
    try:
        return args.handler(args)
    except UsageError as error:
        print(f"syncd: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as error:
        log.exception("command failed")
        print(f"syncd: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
