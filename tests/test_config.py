"""The config file as an admin writes it: the documented example loads, and every mistake is
reported at once with file, line and key path, without ever echoing a secret."""

from __future__ import annotations

import json
import shutil
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from syncd.config import (
    Config, ConfigError, format_duration, interpolate, load_config, parse_duration, redact_url,
    retry_budget,
)
from syncd.connectors.http import RetryPolicy
from syncd.mapping import default_mapping_path

# The example of DESIGN.md's external contract, verbatim.
DESIGN_EXAMPLE = """\
store: {url: "sqlite:///syncd.db"}          # or postgresql+psycopg://user@host/db
http: {listen: "127.0.0.1:8080", api_tokens: ["${SYNCD_API_TOKEN}"]}
connectors:
  servicenow:                                # the connector's name; its type says what it is
    type: servicenow
    url: "https://acme.service-now.com"
    username: "${SN_USER}"
    password: "${SN_PASSWORD}"
    table: incident
    filter: "active=true"                    # encoded query choosing what syncs
    poll_interval: 15s
    mapping: mappings/servicenow.yaml
    create_incidents: true                   # a new matching record here creates an incident
    create_tickets: false                    # a new incident creates a record here
    webhook_secret: "${SN_WEBHOOK_SECRET}"
  jira:
    type: jira
    url: "https://acme.atlassian.net"
    username: "${JIRA_USER}"
    token: "${JIRA_TOKEN}"
    project: OPS
    issue_type: Incident
    jql: "project = OPS"
    poll_interval: 15s
    mapping: mappings/jira.yaml
    create_incidents: false
    create_tickets: true
    webhook_secret: "${JIRA_WEBHOOK_SECRET}"
"""

ENV = {
    "SYNCD_API_TOKEN": "api-token-1f2e3d", "SN_USER": "syncd.integration",
    "SN_PASSWORD": "sn-password-9a8b7c", "SN_WEBHOOK_SECRET": "sn-hook-secret-5d4c",
    "JIRA_USER": "syncd@acme.example", "JIRA_TOKEN": "jira-token-3b2a1f",
    "JIRA_WEBHOOK_SECRET": "jira-hook-secret-7e6d",
}
SECRET_VALUES = ["api-token-1f2e3d", "sn-password-9a8b7c", "sn-hook-secret-5d4c",
                 "jira-token-3b2a1f", "jira-hook-secret-7e6d"]

MINIMAL_JIRA = """\
connectors:
  jira:
    type: jira
    url: https://acme.atlassian.net
    token: "${JIRA_TOKEN}"
    project: OPS
    create_tickets: true
"""


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A folder holding the config file and, beside it, the mapping files it names."""
    (tmp_path / "mappings").mkdir()
    for system in ("servicenow", "jira"):
        shutil.copy(default_mapping_path(system), tmp_path / "mappings" / f"{system}.yaml")
    return tmp_path


def write(folder: Path, text: str, name: str = "syncd.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=ENV if environ is None else environ)
    return str(caught.value).splitlines()


# -- the documented example --------------------------------------------------------------------

def test_design_example_loads_with_its_environment(config_dir):
    config = load_config(write(config_dir, DESIGN_EXAMPLE), environ=ENV)

    servicenow, jira = config.connectors["servicenow"], config.connectors["jira"]
    assert (servicenow.type, jira.type) == ("servicenow", "jira")
    assert servicenow.username == "syncd.integration"
    assert servicenow.password.get_secret_value() == "sn-password-9a8b7c"
    assert servicenow.webhook_secret.get_secret_value() == "sn-hook-secret-5d4c"
    assert (servicenow.table, servicenow.filter) == ("incident", "active=true")
    assert servicenow.poll_interval == timedelta(seconds=15)
    assert servicenow.mapping == config_dir / "mappings" / "servicenow.yaml"
    assert (servicenow.create_incidents, servicenow.create_tickets) == (True, False)
    assert jira.token.get_secret_value() == "jira-token-3b2a1f"
    assert (jira.project, jira.issue_type, jira.jql) == ("OPS", "Incident", "project = OPS")
    assert (jira.create_incidents, jira.create_tickets, jira.deployment) == (False, True, "auto")
    assert [(token.name, token.token.get_secret_value()) for token in config.http.api_tokens] == \
        [("api", "api-token-1f2e3d")]
    assert config.http.listen == "127.0.0.1:8080"
    assert config.store.url.get_secret_value() == f"sqlite:///{config_dir / 'syncd.db'}"
    assert config.store.auto_upgrade is True
    assert config.warnings == []


def test_everything_not_written_takes_its_documented_default(config_dir):
    config = load_config(write(config_dir, MINIMAL_JIRA), environ=ENV)

    assert config.store.url.get_secret_value() == f"sqlite:///{config_dir / 'syncd.db'}"
    assert (config.store.auto_upgrade, config.store.pool_size) == (True, 10)
    assert (config.http.listen, config.http.api_tokens, config.http.max_body_bytes) == \
        ("127.0.0.1:8080", [], 1024 * 1024)
    jira = config.connectors["jira"]
    assert jira.mapping == default_mapping_path("jira")
    assert (jira.username, jira.issue_type, jira.jql, jira.page_size) == (None, "Incident", None, 100)
    assert (jira.poll_interval, jira.timeout, jira.verify_tls) == \
        (timedelta(seconds=30), timedelta(seconds=30), True)
    sync = config.sync
    assert (sync.outbox_workers, sync.max_attempts, sync.pause_when_share_changed) == (4, 10, 0.2)
    assert (sync.backoff_initial, sync.backoff_max, sync.reconcile_after_downtime,
            sync.poll_overlap) == (timedelta(seconds=1), timedelta(minutes=10),
                                   timedelta(minutes=10), timedelta(minutes=2))
    assert (config.logging.level, config.logging.format) == ("INFO", "auto")


# -- secrets -----------------------------------------------------------------------------------

def test_redacted_view_shows_settings_but_no_secret(config_dir):
    config = load_config(write(config_dir, DESIGN_EXAMPLE), environ=ENV)
    redacted = config.redacted()
    printed = json.dumps(redacted)

    assert not [secret for secret in SECRET_VALUES if secret in printed]
    assert redacted["http"]["api_tokens"] == [{"name": "api", "token": "***"}]
    assert redacted["connectors"]["servicenow"]["password"] == "***"
    assert redacted["connectors"]["jira"]["token"] == "***"
    assert redacted["connectors"]["jira"]["webhook_secret"] == "***"
    assert redacted["connectors"]["jira"]["poll_interval"] == "15s"
    assert redacted["connectors"]["jira"]["mapping"] == str(config_dir / "mappings" / "jira.yaml")
    assert redacted["sync"]["backoff_max"] == "10m"


def test_store_password_is_masked_but_the_rest_of_the_url_shown(config_dir):
    path = write(config_dir, 'store: {url: "${DATABASE_URL}"}\n' + MINIMAL_JIRA)
    config = load_config(path, environ={**ENV, "DATABASE_URL": "postgresql+psycopg://syncd:pg-pass-42@db/syncd"})

    assert config.redacted()["store"]["url"] == "postgresql+psycopg://syncd:***@db/syncd"
    assert "pg-pass-42" not in repr(config)
    assert config.store.auto_upgrade is False   # replicas share PostgreSQL: upgrade on purpose


def test_repr_and_str_never_show_a_secret(config_dir):
    config = load_config(write(config_dir, DESIGN_EXAMPLE), environ=ENV)
    shown = repr(config) + str(config) + repr(config.connectors) + str(config.connectors["jira"])

    assert not [secret for secret in SECRET_VALUES if secret in shown]


def test_an_invalid_secret_is_refused_without_echoing_it(config_dir):
    path = write(config_dir, """\
        store: {url: "mysql://syncd:db-secret-77@db/syncd"}
        http: {api_tokens: [{name: bot, token: [api-secret-66]}]}
        connectors:
          sn:
            type: servicenow
            url: https://acme.service-now.com
            username: syncd
            password: [sn-secret-55]
            webhook_secret: 4433221100
            create_incidents: true
        """)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)

    assert message.splitlines() == [
        f"{path}:1: store.url: expected a URL like sqlite:///syncd.db or "
        "postgresql+psycopg://user@host/db: syncd stores in SQLite or PostgreSQL, not mysql",
        f"{path}:2: http.api_tokens[0].token: expected text",
        f"{path}:8: connectors.sn.password: expected text",
        f"{path}:9: connectors.sn.webhook_secret: expected text",
    ]
    for secret in ("db-secret-77", "api-secret-66", "sn-secret-55", "4433221100"):
        assert secret not in message
    # Nor in a traceback: the pydantic error (which holds the inputs) is not chained.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_secret_written_in_the_file_is_accepted_with_a_warning(config_dir):
    path = write(config_dir, MINIMAL_JIRA.replace('"${JIRA_TOKEN}"', "literal-token"))
    config = load_config(path, environ={})

    assert config.connectors["jira"].token.get_secret_value() == "literal-token"
    assert f"{path}:5: connectors.jira.token: a secret written in the file; take it from the " \
           "environment with ${VAR}" in config.warnings
    assert not [w for w in config.warnings if "literal-token" in w]


# -- ${VAR} interpolation ----------------------------------------------------------------------

def test_a_missing_environment_variable_is_named_with_its_key_path(config_dir):
    path = write(config_dir, DESIGN_EXAMPLE)
    environ = {k: v for k, v in ENV.items() if k not in ("SN_PASSWORD", "JIRA_TOKEN")}

    assert problems_of(path, environ) == [
        f"{path}:8: connectors.servicenow.password: environment variable SN_PASSWORD is not set",
        f"{path}:20: connectors.jira.token: environment variable JIRA_TOKEN is not set",
    ]


@pytest.mark.parametrize("text, environ, expected", [
    ("${A}", {"A": "1"}, "1"),
    ("https://${HOST}:${PORT}/x", {"HOST": "h", "PORT": "8"}, "https://h:8/x"),
    ("${A:-fallback}", {}, "fallback"),
    ("${A:-fallback}", {"A": ""}, "fallback"),
    ("${A:-fallback}", {"A": "set"}, "set"),
    ("${A:-}", {}, ""),
    ("${A}", {"A": ""}, ""),
    ("cost $${PRICE} and $5", {}, "cost ${PRICE} and $5"),
])
def test_interpolation(text, environ, expected):
    assert interpolate(text, environ)[0] == expected
    assert interpolate(text, environ)[2] == []


@pytest.mark.parametrize("text, problem", [
    ("${A", "unterminated ${: write ${NAME}, or $${ for a literal ${"),
    ("${1A}", "bad ${...} reference: expected ${NAME} or ${NAME:-default}"),
    ("${A-x}", "bad ${...} reference: expected ${NAME} or ${NAME:-default}"),
    ("${MISSING}", "environment variable MISSING is not set"),
])
def test_bad_interpolation_is_refused(text, problem):
    assert interpolate(text, {})[2] == [problem]


def test_a_value_from_the_environment_is_checked_like_a_written_one(config_dir):
    path = write(config_dir, MINIMAL_JIRA + "    poll_interval: ${JIRA_POLL}\n"
                                            "    verify_tls: ${VERIFY:-false}\n")

    assert problems_of(path, {**ENV, "JIRA_POLL": "soon"}) == [
        f"{path}:8: connectors.jira.poll_interval: expected a duration like 30s, 5m, 1h30m or "
        '250ms, got "soon" (from ${JIRA_POLL})']
    config = load_config(path, environ={**ENV, "JIRA_POLL": "1m"})
    assert config.connectors["jira"].poll_interval == timedelta(minutes=1)
    assert config.connectors["jira"].verify_tls is False


def test_an_empty_jira_username_means_bearer_auth(config_dir):
    path = write(config_dir, MINIMAL_JIRA + '    username: "${JIRA_USER:-}"\n')

    assert load_config(path, environ=ENV).connectors["jira"].username == "syncd@acme.example"
    assert load_config(path, environ={"JIRA_TOKEN": "t"}).connectors["jira"].username is None


# -- every mistake, with file, line and key path -----------------------------------------------

def test_every_problem_of_a_file_is_reported_at_once_with_line_and_key_path(config_dir):
    path = write(config_dir, """\
        store: {url: "sqlite:///syncd.db", pool_size: many}
        http: {listen: "localhost"}
        connectors:
          servicenow:
            type: servicenow
            url: acme.service-now.com
            username: syncd
            password: "${SN_PASSWORD}"
            poll_interval: soon
            verify_tls: maybe
            create_incidents: true
          jira:
            type: jira
            url: https://acme.atlassian.net
            token: "${JIRA_TOKEN}"
            project: ops
            deployment: clod
            mapping: mappings/missing.yaml
        sync: {backoff_initial: 1m, backoff_max: 30s, pause_when_share_changed: 1.5}
        logging: {format: yaml}
        """)

    assert problems_of(path) == [
        f'{path}:1: store.pool_size: expected a whole number, got "many"',
        f'{path}:2: http.listen: expected "host:port" like 127.0.0.1:8080 or [::1]:8080, '
        'got "localhost"',
        f'{path}:6: connectors.servicenow.url: expected a URL like https://acme.example.com, '
        'got "acme.service-now.com"',
        f'{path}:9: connectors.servicenow.poll_interval: expected a duration like 30s, 5m, '
        '1h30m or 250ms, got "soon"',
        f'{path}:10: connectors.servicenow.verify_tls: expected true or false, got "maybe"',
        f'{path}:16: connectors.jira.project: expected a Jira project key like OPS (capital '
        'letters, digits, _), got "ops"',
        f'{path}:17: connectors.jira.deployment: expected one of auto, cloud, server, got "clod" '
        "(did you mean 'cloud'?)",
        f"{path}:18: connectors.jira.mapping: no such file: {config_dir}/mappings/missing.yaml "
        "(a relative path is relative to the config file's folder)",
        f"{path}:19: sync.backoff_max: must be at least backoff_initial (1m), got 30s",
        f"{path}:19: sync.pause_when_share_changed: must be at most 1.0, got 1.5",
        f'{path}:20: logging.format: expected one of auto, json, text, got "yaml"',
    ]


def test_an_unknown_key_suggests_the_near_one(config_dir):
    path = write(config_dir, MINIMAL_JIRA.replace("project:", "projct:") + "    colour: blue\nsyncc: {}\n")

    assert problems_of(path) == [
        f"{path}:2: connectors.jira.project: required, but missing",
        f"{path}:6: connectors.jira.projct: unknown key (did you mean 'project'?)",
        f"{path}:8: connectors.jira.colour: unknown key (known keys: type, url, poll_interval, "
        "mapping, create_incidents, create_tickets, webhook_secret, verify_tls, timeout, "
        "retry_for, username, token, project, issue_type, jql, deployment, page_size)",
        f"{path}:9: syncc: unknown key (did you mean 'sync'?)",
    ]


def test_connectors_need_a_known_type_and_a_usable_name(config_dir):
    path = write(config_dir, """\
        connectors:
          "Service Now": {type: servicenow, url: "https://a.service-now.com", username: u, password: p}
          tickets: {type: jria}
          other: {url: "https://a.atlassian.net"}
        """)

    assert problems_of(path, {}) == [
        f'{path}:2: connectors.Service Now: a connector name may only use lowercase letters, '
        'digits, - and _ (it appears in URLs and metric labels), got "Service Now"',
        f"{path}:3: connectors.tickets.type: expected one of servicenow, jira, got \"jria\" "
        "(did you mean 'jira'?)",
        f"{path}:4: connectors.other.type: required, one of servicenow, jira",
    ]


@pytest.mark.parametrize("text", ["store: {}\n", "connectors: {}\n", "connectors:\n"])
def test_a_deployment_without_connectors_is_valid(config_dir, text):
    """Alerts-only and paging-only deployments have no ticket system."""
    config = load_config(write(config_dir, text), environ=ENV)
    assert config.connectors == {}


@pytest.mark.parametrize("text, problem", [
    ("connectors: [jira]\n", ":1: connectors: expected a mapping (key: value lines), got a list"),
    ("- connectors\n", ":1: the file must be a mapping of sections (store, http, response, "
                       "connectors, ...)"),
    ("# nothing yet\n", ": the file is empty; write at least one section (store, http, response, "
                        "connectors)"),
])
def test_a_file_that_is_not_a_config_is_refused(config_dir, text, problem):
    path = write(config_dir, text)
    assert problems_of(path) == [f"{path}{problem}"]


def test_a_duplicate_key_is_refused_not_silently_overwritten(config_dir):
    path = write(config_dir, MINIMAL_JIRA + "    project: SEC\n")

    assert problems_of(path) == [
        f"{path}:8: connectors.jira.project: duplicate key: it is already set on line 6; keep one"]


def test_a_yaml_syntax_error_names_line_and_column(config_dir):
    path = write(config_dir, "connectors:\n  jira: {type: jira\n  other: x\n")

    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:3:8: YAML syntax error: while parsing a flow mapping")


def test_a_missing_file_is_named(tmp_path):
    path = tmp_path / "nowhere.yaml"
    assert problems_of(path) == [f"{path}: cannot read the config file: No such file or directory"]


def test_merge_keys_share_settings_between_connectors(config_dir):
    path = write(config_dir, """\
        connectors:
          ops: &jira {type: jira, url: "https://acme.atlassian.net", token: "${JIRA_TOKEN}", project: OPS, create_tickets: true}
          sec: {<<: *jira, project: SEC, url: "https://sec.atlassian.net"}
        """)
    config = load_config(path, environ=ENV)
    assert config.connectors["sec"].project == "SEC"
    assert config.connectors["sec"].url == "https://sec.atlassian.net"
    assert config.connectors["sec"].token.get_secret_value() == "jira-token-3b2a1f"


# -- durations ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("15s", 15), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("250ms", 0.25), ("1.5s", 1.5),
    ("2d", 172800), (30, 30), (0.5, 0.5), ("45", 45), ("0s", 0),
])
def test_durations_parse(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["soon", "", "5 m", "1h 30m", "m5", "15x", "1h-30m", True, [1]])
def test_durations_reject_what_is_not_one(text):
    with pytest.raises(ValueError, match="expected a duration like 30s"):
        parse_duration(text)


def test_negative_and_zero_intervals_are_refused(config_dir):
    path = write(config_dir, MINIMAL_JIRA + "    poll_interval: 0s\n    timeout: -5\n")
    assert problems_of(path) == [
        f"{path}:8: connectors.jira.poll_interval: must be longer than 0s",
        f"{path}:9: connectors.jira.timeout: must not be negative, got -5",
    ]


@pytest.mark.parametrize("value", ["1h30m", "250ms", "0s", "2d3h", "10m"])
def test_durations_print_as_they_are_written(value):
    assert format_duration(parse_duration(value)) == value


@given(st.integers(min_value=0, max_value=10**11))
def test_a_printed_duration_reads_back_as_itself(milliseconds):
    duration = timedelta(milliseconds=milliseconds)
    assert parse_duration(format_duration(duration)) == duration


# -- paths relative to the config file ---------------------------------------------------------

def test_relative_paths_are_relative_to_the_config_file_not_the_working_folder(config_dir, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    nested = config_dir / "etc"
    nested.mkdir()
    path = write(nested, 'store: {url: "sqlite:///../data/syncd.db"}\n'
                 + MINIMAL_JIRA + "    mapping: ../mappings/jira.yaml\n")

    config = load_config(path, environ=ENV)
    assert config.connectors["jira"].mapping == config_dir / "mappings" / "jira.yaml"
    assert config.store.url.get_secret_value() == f"sqlite:///{config_dir / 'data' / 'syncd.db'}"


@pytest.mark.parametrize("url", ["sqlite:////var/lib/syncd/syncd.db", "sqlite://",
                                 "sqlite:///:memory:"])
def test_absolute_and_in_memory_sqlite_urls_are_kept(config_dir, url):
    config = load_config(write(config_dir, f'store: {{url: "{url}"}}\n' + MINIMAL_JIRA), environ=ENV)
    assert config.store.url.get_secret_value() == url


# -- other checks ------------------------------------------------------------------------------

@pytest.mark.parametrize("listen, valid", [
    ("127.0.0.1:8080", True), ("0.0.0.0:80", True), ("[::1]:8080", True), ("syncd.local:9000", True),
    (":8080", False), ("127.0.0.1", False), ("127.0.0.1:http", False), ("127.0.0.1:70000", False),
    ("[nope]:80", False), ("a b:80", False),
])
def test_listen_address_is_host_and_port(config_dir, listen, valid):
    path = write(config_dir, f'http: {{listen: "{listen}"}}\n' + MINIMAL_JIRA)
    if valid:
        assert load_config(path, environ=ENV).http.listen == listen
    else:
        [problem] = problems_of(path)
        assert problem.startswith(f'{path}:1: http.listen: expected "host:port"')


def test_two_connectors_that_never_create_incidents_get_a_warning(config_dir):
    path = write(config_dir, DESIGN_EXAMPLE.replace("create_incidents: true", "create_incidents: false"))
    config = load_config(path, environ=ENV)

    assert config.warnings == [
        f"{path}:3: connectors: no connector has create_incidents: true, so no remote record will "
        "start an incident",
        f"{path}:4: connectors.servicenow: neither create_incidents nor create_tickets is true: "
        "nothing will ever be linked to this connector",
    ]


def test_one_connector_creating_tickets_is_fine_alone(config_dir):
    config = load_config(write(config_dir, MINIMAL_JIRA), environ=ENV)

    assert not [w for w in config.warnings if "create_incidents" in w]


def test_a_connector_that_neither_creates_nor_is_created_gets_a_warning(config_dir):
    path = write(config_dir, MINIMAL_JIRA.replace("    create_tickets: true\n", ""))
    assert f"{path}:2: connectors.jira: neither create_incidents nor create_tickets is true: " \
           "nothing will ever be linked to this connector" in load_config(path, environ=ENV).warnings


def test_models_validate_without_a_file_too():
    """Code building a Config directly (tests, `syncd demo`) gets the same checks."""
    config = Config.model_validate({"connectors": {"jira": {
        "type": "jira", "url": "https://a.atlassian.net", "token": "t", "project": "OPS"}}})
    assert config.store.url.get_secret_value() == f"sqlite:///{Path.cwd() / 'syncd.db'}"


def test_an_empty_section_takes_its_defaults(config_dir):
    config = load_config(write(config_dir, "store:\nhttp:\nsync:\nlogging:\n" + MINIMAL_JIRA),
                         environ=ENV)
    assert (config.store.auto_upgrade, config.http.listen, config.sync.outbox_workers,
            config.logging.format) == (True, "127.0.0.1:8080", 4, "auto")


# -- http: named tokens, public_url, link_secret -----------------------------------------------

def test_api_tokens_are_named_and_a_plain_string_is_named_api(config_dir):
    path = write(config_dir, """\
        http:
          api_tokens:
            - "${SYNCD_API_TOKEN}"
            - {name: ops-bot, token: "${BOT_TOKEN}"}
        """)
    config = load_config(path, environ={**ENV, "BOT_TOKEN": "bot-token-8c7b"})

    assert [(t.name, t.token.get_secret_value()) for t in config.http.api_tokens] == [
        ("api", "api-token-1f2e3d"), ("ops-bot", "bot-token-8c7b")]
    assert "bot-token-8c7b" not in repr(config) + json.dumps(config.redacted())


def test_two_tokens_with_one_name_are_refused_naming_the_second(config_dir):
    path = write(config_dir, """\
        http:
          api_tokens:
            - "${SYNCD_API_TOKEN}"
            - {name: ops-bot, token: b-secret-1}
            - {name: api, token: c-secret-2}
        """)
    problems = problems_of(path)

    assert problems == [
        f"{path}:5: http.api_tokens[2].name: the name 'api' is already used by "
        "http.api_tokens[0] (a plain string is named 'api'): give each token its own name with "
        "{name, token}"]
    assert not [p for p in problems if "secret-1" in p or "secret-2" in p]


def test_a_token_needs_a_usable_name_and_a_value(config_dir):
    path = write(config_dir, 'http:\n  api_tokens:\n    - {name: "ops bot", token: ""}\n'
                             '    - {token: d-secret-3}\n')

    assert problems_of(path) == [
        f"{path}:3: http.api_tokens[0].name: a token's name may use letters, digits, '.', '_', "
        "'@' and '-' (it names the actor on the timeline), got \"ops bot\"",
        f"{path}:3: http.api_tokens[0].token: must not be empty",
        f"{path}:4: http.api_tokens[1].name: required, but missing",
    ]


def test_public_url_defaults_to_the_listen_address_and_loses_a_trailing_slash(config_dir):
    assert load_config(write(config_dir, 'http: {listen: "0.0.0.0:9000"}\n'),
                       environ=ENV).http.public_url == "http://0.0.0.0:9000"
    config = load_config(write(config_dir, 'http: {public_url: "https://syncd.example.com/"}\n'),
                         environ=ENV)
    assert config.http.public_url == "https://syncd.example.com"

    path = write(config_dir, 'http: {public_url: "syncd.example.com"}\n')
    assert problems_of(path) == [
        f'{path}:1: http.public_url: expected a URL like https://acme.example.com, '
        'got "syncd.example.com"']


def test_a_short_link_secret_is_refused_without_echoing_it(config_dir):
    path = write(config_dir, 'http:\n  link_secret: "${SYNCD_LINK_SECRET}"\n')

    assert problems_of(path, {"SYNCD_LINK_SECRET": "short-7"}) == [
        f"{path}:2: http.link_secret: must be at least 16 characters (it signs acknowledge "
        "links); generate one with: openssl rand -hex 32 (from ${SYNCD_LINK_SECRET})"]
    config = load_config(path, environ={"SYNCD_LINK_SECRET": "a" * 32})
    assert config.http.link_secret.get_secret_value() == "a" * 32
    assert config.redacted()["http"]["link_secret"] == "***"


def test_a_link_secret_written_in_the_file_gets_a_warning(config_dir):
    path = write(config_dir, "http:\n  link_secret: 0123456789abcdef0123\n")
    assert f"{path}:2: http.link_secret: a secret written in the file; take it from the " \
           "environment with ${VAR}" in load_config(path, environ={}).warnings


# -- the claim lease and the connectors' retry budget ------------------------------------------

def test_retry_budget_is_the_deadline_plus_one_last_timeout():
    policy = RetryPolicy(max_attempts=5, max_total_seconds=60, backoff_initial=0.5, backoff_max=30)
    assert retry_budget(timedelta(seconds=30), policy) == timedelta(seconds=90)
    few = RetryPolicy(max_attempts=2, max_total_seconds=600, backoff_initial=1, backoff_max=5)
    assert retry_budget(timedelta(seconds=10), few) == timedelta(seconds=26)   # 2x10 + 6


def test_a_short_retry_for_allows_a_short_lease(config_dir):
    path = write(config_dir, MINIMAL_JIRA + "    timeout: 2s\n    retry_for: 1s\nsync:\n  claim_lease: 4s\n")
    assert load_config(path, environ=ENV).connectors["jira"].retry_for == timedelta(seconds=1)


def test_a_claim_lease_shorter_than_a_connectors_retry_budget_is_refused(config_dir):
    path = write(config_dir, MINIMAL_JIRA + "    timeout: 30s\nsync:\n  claim_lease: 30s\n")

    assert problems_of(path) == [
        f"{path}:10: sync.claim_lease: 30s is shorter than connectors.jira's retry budget "
        "(timeout 30s per attempt, retried for up to 1m: 1m30s): raise sync.claim_lease or lower "
        "connectors.jira.timeout or connectors.jira.retry_for"]


def test_a_long_timeout_under_the_default_lease_is_refused_at_the_timeout(config_dir):
    path = write(config_dir, MINIMAL_JIRA + "    timeout: 2m\n")

    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:8: sync.claim_lease: 2m is shorter than connectors.jira's "
                              "retry budget")
    assert problem.endswith("raise sync.claim_lease or lower connectors.jira.timeout or "
                            "connectors.jira.retry_for")
    write(config_dir, MINIMAL_JIRA + "    timeout: 2m\nsync: {claim_lease: 5m}\n")
    assert load_config(path, environ=ENV).sync.claim_lease == timedelta(minutes=5)


# -- response files ----------------------------------------------------------------------------

RESPONSE_ENV = {**ENV, "TWILIO_SID": "AC0123456789abcdef0123456789abcdef",
                "TWILIO_TOKEN": "twilio-token-42aa", "PAYMENTS_ROUTING_KEY": "rk-0123456789",
                "SYNCD_LINK_SECRET": "link-secret-0123456789"}
EXAMPLES = Path(__file__).parent.parent / "examples"


def test_the_example_configuration_validates_with_its_response_files():
    config = load_config(EXAMPLES / "syncd.yaml", environ=RESPONSE_ENV)

    assert config.warnings == []
    assert [t.name for t in config.http.api_tokens] == ["ops-bot"]
    assert config.http.public_url == "https://syncd.example.com"
    responses = config.responses
    assert list(responses.users) == ["alice", "bob", "carol", "dave", "erin"]
    assert responses.services["payments-api"].escalation_policy == "payments"
    assert responses.files == (str(EXAMPLES / "oncall.yaml"),)
    printed = json.dumps(responses.redacted()) + repr(responses)
    assert not [s for s in ("twilio-token-42aa", "rk-0123456789", "0123456789abcdef0123")
                if s in printed]


def test_response_globs_are_relative_to_the_config_and_one_matching_nothing_warns(config_dir):
    (config_dir / "oncall").mkdir()
    shutil.copy(EXAMPLES / "oncall.yaml", config_dir / "oncall" / "team.yaml")
    path = write(config_dir, 'response:\n  files: ["oncall/*.yaml", "missing/*.yaml"]\n')

    config = load_config(path, environ=RESPONSE_ENV)
    assert config.response.files == [str(config_dir / "oncall/*.yaml"),
                                     str(config_dir / "missing/*.yaml")]
    assert "erin" in config.responses.users
    assert f"{path}:2: response.files[1]: {str(config_dir / 'missing/*.yaml')!r} matches no " \
           "file" in config.warnings


def test_a_broken_response_file_refuses_the_config_with_its_file_and_line(config_dir):
    broken = config_dir / "oncall.yaml"
    broken.write_text("users:\n  - id: alice\n    name: Alice\n    email: nope\n")
    path = write(config_dir, 'response: {files: ["oncall.yaml"]}\n')

    assert problems_of(path) == [f'{broken}:4: users[0].email: expected an email address like '
                                 'alice@example.com, got "nope"']


# -- secrets inside URLs -----------------------------------------------------------------------

@pytest.mark.parametrize("url, shown", [
    ("https://syncd:pa55word@example.com/x", "https://syncd:***@example.com/x"),
    ("https://example.com/hook?token=abc123&channel=ops", "https://example.com/hook?token=***&channel=ops"),
    ("https://example.com/?api_key=k&Password=p&sig=s", "https://example.com/?api_key=***&Password=***&sig=***"),
    ("twilio://AC0123456789abcdef0123:tok@15550001111/15550002222", "twilio://***:***@15550001111/15550002222"),
    ("slack://T1234ABCD/B1234ABCD/XoXoXoXo1234abcd5678efgh/#ops", "slack://T1234ABCD/B1234ABCD/***/#ops"),
    ("tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/-100123", "tgram://***/-100123"),
    ("mailto://mail.example.com?from=oncall@example.com&to=alice@example.com",
     "mailto://mail.example.com?from=oncall@example.com&to=alice@example.com"),
    ("mailto://user:app-password@gmail.com", "mailto://user:***@gmail.com"),
    ("https://acme.service-now.com", "https://acme.service-now.com"),
    ("not a url", "not a url"),
])
def test_redact_url_hides_passwords_tokens_and_secret_parameters(url, shown):
    assert redact_url(url) == shown


def test_a_url_with_credentials_is_redacted_in_the_shown_config_and_in_errors(config_dir):
    path = write(config_dir, MINIMAL_JIRA.replace("https://acme.atlassian.net",
                                                  "https://bot:pw-in-url-99@acme.atlassian.net"))
    config = load_config(path, environ=ENV)
    assert config.redacted()["connectors"]["jira"]["url"] == "https://bot:***@acme.atlassian.net"
    assert "pw-in-url-99" not in repr(config) + str(config.connectors["jira"])

    path = write(config_dir, 'http: {public_url: "ftp://u:pw-in-url-98@host"}\n')
    [problem] = problems_of(path)
    assert "pw-in-url-98" not in problem and "ftp://u:***@host" in problem


# -- syncd config check ------------------------------------------------------------------------

def test_config_check_validates_mappings_and_response_files_and_prints_them_redacted(config_dir):
    from tests.support import syncd

    shutil.copy(EXAMPLES / "oncall.yaml", config_dir / "oncall.yaml")
    path = write(config_dir, 'response: {files: ["oncall.yaml"]}\n'
                 + MINIMAL_JIRA + "    mapping: mappings/jira.yaml\n")
    result = syncd("config", "check", str(path), env=RESPONSE_ENV)

    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["connectors"]["jira"]["token"] == "***"
    alice = printed["definitions"]["users"][0]
    assert alice["contacts"]["phone"] == "twilio://***:***@15550001111/15550002222"
    assert printed["definitions"]["services"][0]["routing_key"] == "***"
    assert not [s for s in ("twilio-token-42aa", "rk-0123456789", "jira-token-3b2a1f")
                if s in result.stdout + result.stderr]
    assert "1 mapping file(s) and 1 response file(s) valid" in result.stderr

    (config_dir / "mappings" / "jira.yaml").write_text("system: jira\nfields: []\npolicy: often\n")
    result = syncd("config", "check", str(path), env=RESPONSE_ENV)
    assert result.returncode == 2
    assert f"{config_dir}/mappings/jira.yaml:3:9: conflict policy 'often'" in result.stderr
