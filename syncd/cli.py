"""The `syncd` command. Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Callable, Sequence

from syncd import __version__, logs

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("syncd.cli")


class UsageError(Exception):
    """A mistake in what the user asked for (exit 2), as opposed to a runtime failure (exit 1)."""


def default_config_path() -> str:
    return os.environ.get("SYNCD_CONFIG") or "syncd.yaml"


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="configuration file (default: $SYNCD_CONFIG, else ./syncd.yaml)")


def load_config_or_fail(path: str | None):
    """The validated configuration, or UsageError with every problem the file has."""
    from syncd.config import ConfigError, load_config
    try:
        return load_config(path or default_config_path())
    except ConfigError as error:
        raise UsageError(str(error)) from None


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
    config = load_config_or_fail(args.file or args.config)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(json.dumps(config.redacted(), indent=2, default=str))
    return EXIT_OK


def cmd_mappings_validate(args: argparse.Namespace) -> int:
    from syncd.mapping import validate_files
    files = args.files
    if not files:
        config = load_config_or_fail(args.config)
        files = [str(connector.mapping) for connector in config.connectors.values()]
    problems = validate_files(files)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {len(files)} file(s)", file=sys.stderr)
        return EXIT_USAGE
    print(f"{len(files)} mapping file(s) valid")
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
    print(f"{args.system} simulator listening on http://{args.host}:{args.port} "
          f"(admin endpoints under /_sim/; Ctrl-C stops)", flush=True)
    try:
        simulator.serve_forever(args.host, args.port)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


# -- parser -------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="Incident-response daemon that keeps ServiceNow and Jira in step with its own "
                    "incident store.")
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    parser.add_argument("--log-format", choices=["auto", "json", "text"], default="auto",
                        help="log line format (default: text on a terminal, JSON otherwise)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    db_parser = commands.add_parser("db", help="store schema")
    db_commands = db_parser.add_subparsers(dest="db_command", metavar="SUBCOMMAND")
    upgrade = db_commands.add_parser("upgrade", help="migrate the store's schema to this version")
    _add_config_option(upgrade)
    upgrade.set_defaults(handler=cmd_db_upgrade)

    config_parser = commands.add_parser("config", help="configuration file")
    config_commands = config_parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    check = config_commands.add_parser("check", help="validate a configuration file and print it, "
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

    simulate = commands.add_parser("simulate", help="run a ServiceNow or Jira simulator")
    simulate.add_argument("system", choices=["servicenow", "jira"])
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8081)
    simulate.add_argument("--state-file", help="keep records in this JSON file across restarts")
    simulate.add_argument("--webhook-url", help="POST a webhook here on every change")
    simulate.add_argument("--webhook-secret", help="secret for webhook signing")
    simulate.add_argument("--deployment", choices=["Cloud", "Server"], default="Cloud",
                          help="Jira only: which Jira to imitate")
    simulate.set_defaults(handler=cmd_simulate)

    for name, sub in (("db", db_parser), ("config", config_parser), ("mappings", mappings_parser)):
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
    logs.configure(args.log_format, args.log_level)
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
