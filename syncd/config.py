"""The configuration file: YAML read into pydantic models, with ``${VAR}`` interpolation.

The file is read by :mod:`syncd.yamlsource`, which keeps every key path's line and catches
duplicate keys. Every problem of a file is reported at once, one per line, as
``FILE:LINE: key.path: what was expected``, so an admin fixes a file in one pass. Secrets are
``SecretStr`` and are never echoed, not even in errors; secrets inside URLs are redacted wherever
the config is shown. Loading also validates the response files that ``response.files`` names.
Reads files only: no network, no database. The keys are documented in docs/configuration.md.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import replace
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal, Mapping, Union
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from syncd.connectors.http import RetryPolicy
from syncd.mapping.loader import default_mapping_path
from syncd.yamlsource import (
    REDACTED,
    KeyPath,
    SourceProblem,
    YamlDocument,
    YamlSyntaxError,
    did_you_mean,
    interpolate,
    read_yaml_file,
    redact_url,
)

if TYPE_CHECKING:
    from syncd.response_files import ResponseSet

__all__ = ["Config", "ConfigError", "ConfigProblem", "format_duration", "interpolate",
           "load_config", "parse_duration", "redact_url"]

DEFAULT_STORE_URL = "sqlite:///syncd.db"
SECRET_KEYS = frozenset({"password", "token", "webhook_secret", "api_tokens", "link_secret"})
CONNECTOR_NAME = r"^[a-z0-9_-]{1,64}$"   # used in URLs and metric labels
API_TOKEN_NAME = r"^[A-Za-z0-9_.@-]{1,64}$"   # an actor's name on the timeline
PLAIN_TOKEN_NAME = "api"
MIN_LINK_SECRET = 16
# The retry policy the daemon gives its connectors (daemon.build_connector's default); the claim
# lease is checked against it.
DAEMON_RETRY_POLICY = RetryPolicy()


# -- problems ------------------------------------------------------------------------------------

ConfigProblem = SourceProblem   # one problem (or warning) of a config file


class ConfigError(Exception):
    """An invalid config file; the message lists every problem, one per line."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


# -- value types ---------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> timedelta:
    """``15s``, ``5m``, ``1h30m``, ``250ms`` or a bare number of seconds; raise ValueError."""
    if isinstance(value, timedelta):
        return value
    expected = f"expected a duration like 30s, 5m, 1h30m or 250ms, got {shown(value)}"
    if isinstance(value, bool):
        raise ValueError(expected)
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = list(_DURATION_PART.finditer(text))
            if not text or "".join(part.group(0) for part in parts) != text:
                raise ValueError(expected) from None
            seconds = sum(float(p.group(1)) * _UNIT_SECONDS[p.group(2)] for p in parts)
    else:
        raise ValueError(expected)
    if not seconds >= 0:     # also refuses NaN
        raise ValueError(f"must not be negative, got {shown(value)}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The inverse of parse_duration, for printing: ``1h30m``, ``250ms``, ``0s``."""
    milliseconds = round(value.total_seconds() * 1000)
    text = ""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, milliseconds = divmod(milliseconds, size)
        text += f"{count}{unit}" if count else ""
    return text or "0s"


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return value


def _secret_not_empty(value: SecretStr) -> SecretStr:
    if not value.get_secret_value():
        raise ValueError("must not be empty")
    return value


def _web_url(value: str) -> str:
    split = urlsplit(value)
    if split.scheme not in ("http", "https") or not split.netloc:
        raise ValueError(f"expected a URL like https://acme.example.com, got {shown(value)}")
    return value.rstrip("/")


def _jira_project_key(value: str) -> str:
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", value):
        raise ValueError(f"expected a Jira project key like OPS (capital letters, digits, _), "
                         f"got {shown(value)}")
    return value


def _table_name(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9_]+", value):
        raise ValueError(f"expected a ServiceNow table name like incident, got {shown(value)}")
    return value


def _listen_address(value: str) -> str:
    host, separator, port = value.rpartition(":")
    expected = f'expected "host:port" like 127.0.0.1:8080 or [::1]:8080, got {shown(value)}'
    if not separator or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(expected)
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host.strip("[]"))
        except ValueError:
            raise ValueError(expected) from None
    elif not re.fullmatch(r"[A-Za-z0-9.-]+", host):
        raise ValueError(expected)
    return value


def _relative_to_config(path: Path, info: ValidationInfo) -> Path:
    """Relative paths are relative to the config file's folder (the working folder when the
    models are validated without one)."""
    path = path.expanduser()
    base_dir = (info.context or {}).get("base_dir") or Path.cwd()
    return path if path.is_absolute() else Path(os.path.normpath(base_dir / path))


def _existing_file(value: Any, info: ValidationInfo) -> Path:
    """A path relative to the config file's folder, made absolute; the file must exist."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ValueError(f"expected a file path, got {shown(value)}")
    path = _relative_to_config(Path(value), info)
    if not path.is_file():
        raise ValueError(f"no such file: {path} (a relative path is relative to the config "
                         f"file's folder)")
    return path


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
Secret = Annotated[SecretStr, AfterValidator(_secret_not_empty)]
Text = Annotated[str, StringConstraints(min_length=1)]
WebUrl = Annotated[Text, AfterValidator(_web_url)]
ListenAddress = Annotated[str, AfterValidator(_listen_address)]
ExistingFile = Annotated[Path, BeforeValidator(_existing_file)]
ConnectorName = Annotated[str, StringConstraints(pattern=CONNECTOR_NAME)]


# -- the model -----------------------------------------------------------------------------------

class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def __repr_args__(self) -> Any:
        """Reprs show URLs with their secrets redacted (SecretStr fields hide themselves)."""
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if isinstance(value, str) else value


class StoreSettings(_Section):
    url: SecretStr = Field(default=SecretStr(DEFAULT_STORE_URL), validate_default=True)
    auto_upgrade: bool = Field(default=None, validate_default=True)   # type: ignore[assignment]
    pool_size: int = Field(default=10, ge=1, le=1000)

    @field_validator("url", mode="before")
    @classmethod
    def _database_url(cls, value: Any, info: ValidationInfo) -> SecretStr:
        """SQLite or PostgreSQL; a relative SQLite path is made relative to the config file."""
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        expected = "expected a URL like sqlite:///syncd.db or postgresql+psycopg://user@host/db"
        if not isinstance(text, str):
            raise ValueError(expected)
        try:
            url = make_url(text)
        except ArgumentError:
            raise ValueError(expected) from None
        backend = url.get_backend_name()
        if backend == "postgres":
            raise ValueError(f"{expected}: write postgresql://, not postgres://")
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"{expected}: syncd stores in SQLite or PostgreSQL, not {backend}")
        database = url.database
        if backend == "sqlite" and database and database != ":memory:" \
                and not database.startswith("file:") and not Path(database).is_absolute():
            absolute = str(_relative_to_config(Path(database), info))
            text = url.set(database=absolute).render_as_string(hide_password=False)
        return SecretStr(text)

    @field_validator("auto_upgrade", mode="before")
    @classmethod
    def _upgrade_sqlite_by_default(cls, value: Any, info: ValidationInfo) -> Any:
        """On for SQLite (one process owns it), off for PostgreSQL (replicas must agree)."""
        if value is not None:
            return value
        url = info.data.get("url")
        return url is not None and make_url(url.get_secret_value()).get_backend_name() == "sqlite"


def _token_name(value: str) -> str:
    if not re.fullmatch(API_TOKEN_NAME, value):
        raise ValueError(f"a token's name may use letters, digits, '.', '_', '@' and '-' (it names "
                         f"the actor on the timeline), got {shown(value)}")
    return value


class ApiToken(_Section):
    """A bearer token for the REST API and console; ``name`` is the actor its requests act as."""

    name: Annotated[str, AfterValidator(_token_name)]
    token: Secret


def _plain_token_named_api(value: Any) -> Any:
    """A plain string in ``http.api_tokens`` is a token named "api" (as before names existed)."""
    return {"name": PLAIN_TOKEN_NAME, "token": value} if isinstance(value, str) else value


def _link_secret_length(value: SecretStr) -> SecretStr:
    if len(value.get_secret_value()) < MIN_LINK_SECRET:
        raise ValueError(f"must be at least {MIN_LINK_SECRET} characters (it signs acknowledge "
                         f"links); generate one with: openssl rand -hex 32")
    return value


class HttpSettings(_Section):
    listen: ListenAddress = "127.0.0.1:8080"
    public_url: WebUrl | None = Field(default=None, validate_default=True)
    api_tokens: list[Annotated[ApiToken, BeforeValidator(_plain_token_named_api)]] = Field(
        default_factory=list)
    link_secret: Annotated[SecretStr, AfterValidator(_link_secret_length)] | None = None
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)

    @field_validator("public_url")
    @classmethod
    def _from_listen(cls, value: str | None, info: ValidationInfo) -> str | None:
        """How people reach syncd; without one, the listen address (right for a laptop only)."""
        if value is not None:
            return value
        listen = info.data.get("listen")
        return f"http://{listen}" if listen else None

    @field_validator("api_tokens")
    @classmethod
    def _names_unique(cls, tokens: list[ApiToken]) -> list[ApiToken]:
        first: dict[str, int] = {}
        for index, token in enumerate(tokens):
            if token.name in first:
                raise PydanticCustomError(
                    "duplicate_token_name",
                    "the name '{name}' is already used by http.api_tokens[{first}] (a plain "
                    "string is named 'api'): give each token its own name with {name, token}",
                    {"name": token.name, "first": first[token.name], "index": index})
            first[token.name] = index
        return tokens


class _ConnectorSettings(_Section):
    type: str
    url: WebUrl
    poll_interval: PositiveDuration = timedelta(seconds=30)
    mapping: ExistingFile
    create_incidents: bool = False
    create_tickets: bool = False
    webhook_secret: Secret | None = None
    verify_tls: bool = True
    timeout: PositiveDuration = timedelta(seconds=30)
    # How long one remote call keeps retrying transient errors (429, 5xx, timeouts) before the
    # delivery backs off as a whole: RetryPolicy.max_total_seconds.
    retry_for: PositiveDuration = timedelta(seconds=DAEMON_RETRY_POLICY.max_total_seconds)


class ServiceNowSettings(_ConnectorSettings):
    type: Literal["servicenow"]
    username: Text
    password: Secret
    table: Annotated[str, AfterValidator(_table_name)] = "incident"
    filter: str | None = None
    mapping: ExistingFile = default_mapping_path("servicenow")
    page_size: int = Field(default=500, ge=1, le=10000)


class JiraSettings(_ConnectorSettings):
    """Basic auth with username + token (Cloud API token), Bearer with the token alone (a
    Server/Data Center personal access token)."""

    type: Literal["jira"]
    username: Text | None = None
    token: Secret
    project: Annotated[str, AfterValidator(_jira_project_key)]
    issue_type: Text = "Incident"
    jql: Text | None = None
    mapping: ExistingFile = default_mapping_path("jira")
    deployment: Literal["auto", "cloud", "server"] = "auto"
    page_size: int = Field(default=100, ge=1, le=1000)

    @field_validator("username", mode="before")
    @classmethod
    def _empty_means_bearer(cls, value: Any) -> Any:
        """``username: "${JIRA_USER:-}"`` left empty selects Bearer auth, like leaving it out."""
        return None if value == "" else value


ConnectorSettings = Annotated[Union[ServiceNowSettings, JiraSettings], Field(discriminator="type")]
CONNECTOR_TYPES: dict[str, type[_ConnectorSettings]] = {
    "servicenow": ServiceNowSettings, "jira": JiraSettings}


class SyncSettings(_Section):
    outbox_workers: int = Field(default=4, ge=1, le=64)
    max_attempts: int = Field(default=10, ge=1)
    backoff_initial: PositiveDuration = timedelta(seconds=1)
    backoff_max: PositiveDuration = timedelta(minutes=10)
    reconcile_after_downtime: Duration = timedelta(minutes=10)
    # Pause a connector when one poll would make the same destructive change (a field emptied or
    # set to one value, records vanishing) to more than this share of its links (and >= 10).
    pause_when_share_changed: float = Field(default=0.2, gt=0, le=1)
    poll_overlap: Duration = timedelta(minutes=2)
    # How long a worker's claim on an outbox row lasts; a replica that dies mid-delivery holds
    # its rows this long before another replica takes them over.
    claim_lease: PositiveDuration = timedelta(minutes=2)

    @field_validator("backoff_max")
    @classmethod
    def _not_below_initial(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        initial = info.data.get("backoff_initial")
        if initial is not None and value < initial:
            raise ValueError(f"must be at least backoff_initial ({format_duration(initial)}), "
                             f"got {format_duration(value)}")
        return value


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "text"] = "auto"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


def _glob_relative_to_config(value: str, info: ValidationInfo) -> str:
    """A glob relative to the config file's folder, made absolute."""
    return str(_relative_to_config(Path(value), info))


class ResponseSettings(_Section):
    # Globs naming the response files (users, schedules, policies, services, plays, actions).
    files: list[Annotated[Text, AfterValidator(_glob_relative_to_config)]] = Field(
        default_factory=list)


class Config(_Section):
    """The validated configuration. ``warnings`` holds what is legal but probably not meant;
    ``responses`` the response files as validated when the config was loaded."""

    store: StoreSettings = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    http: HttpSettings = HttpSettings()
    response: ResponseSettings = ResponseSettings()
    # Empty for deployments that only take alerts and page.
    connectors: dict[ConnectorName, ConnectorSettings] = Field(default_factory=dict)
    sync: SyncSettings = SyncSettings()
    logging: LoggingSettings = LoggingSettings()
    _warnings: list[str] = PrivateAttr(default_factory=list)
    _responses: ResponseSet | None = PrivateAttr(default=None)

    @field_validator("store", "http", "response", "connectors", "sync", "logging", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        """A section written with nothing under it (``sync:``) takes all its defaults."""
        return {} if value is None else value

    @property
    def warnings(self) -> list[str]:
        return list(self._warnings)

    @property
    def responses(self) -> ResponseSet:
        """The response files loaded with the config (load_config sets them)."""
        if self._responses is None:
            raise RuntimeError("response files are loaded by load_config, not by model_validate")
        return self._responses

    def redacted(self) -> dict[str, Any]:
        """Plain data for printing: secrets as "***", secrets inside URLs as "***", durations as
        "1h30m", paths as text."""
        data = printable(self)
        data["store"]["url"] = make_url(self.store.url.get_secret_value()).render_as_string(
            hide_password=True)
        return data


def printable(value: Any) -> Any:
    """Plain data for showing a config or a response file: secrets as "***", secrets inside URLs
    redacted, durations and times as people write them."""
    if isinstance(value, BaseModel):
        return {name: printable(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {key: printable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [printable(item) for item in value]
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, (datetime, time)):
        return value.isoformat(timespec="minutes")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        return redact_url(value)
    return value


def _section_keys(parent: KeyPath, data: Any) -> list[str]:
    """The keys allowed where an unknown key was found (for "did you mean")."""
    sections: dict[str, type[BaseModel]] = {
        "store": StoreSettings, "http": HttpSettings, "response": ResponseSettings,
        "sync": SyncSettings, "logging": LoggingSettings}
    model: type[BaseModel] | None = None
    if parent == ():
        model = Config
    elif len(parent) == 1 and parent[0] in sections:
        model = sections[str(parent[0])]
    elif len(parent) == 3 and parent[:2] == ("http", "api_tokens"):
        model = ApiToken
    elif len(parent) == 2 and parent[0] == "connectors":
        section = (data.get("connectors") or {}).get(parent[1], {})
        model = CONNECTOR_TYPES.get(section.get("type")) if isinstance(section, dict) else None
    return list(model.model_fields) if model else []


# -- errors --------------------------------------------------------------------------------------

def shown(value: Any) -> str:
    """A value for an error message; a URL with its secrets redacted."""
    if isinstance(value, str):
        return json.dumps(redact_url(value))
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return str(value)
    return {dict: "a mapping", list: "a list"}.get(type(value), type(value).__name__)


def is_secret_path(path: KeyPath) -> bool:
    if path[:2] == ("http", "api_tokens") and path[-1:] == ("name",):
        return False      # a token's name is who acts, not a secret
    return any(part in SECRET_KEYS for part in path) or path[:2] == ("store", "url")


EXPECTED_BY_ERROR = {
    "string_type": "expected text", "int_type": "expected a whole number",
    "int_parsing": "expected a whole number", "int_from_float": "expected a whole number",
    "bool_type": "expected true or false", "bool_parsing": "expected true or false",
    "float_type": "expected a number", "float_parsing": "expected a number",
    "dict_type": "expected a mapping (key: value lines)",
    "model_type": "expected a mapping (key: value lines)",
    "model_attributes_type": "expected a mapping (key: value lines)",
    "list_type": "expected a list", "missing": "required, but missing",
}


BOUND_WORDS = {"greater_than": "greater than", "greater_than_equal": "at least",
               "less_than": "less than", "less_than_equal": "at most"}


def describe_error(error: dict, *, known_keys: Callable[[KeyPath], list[str]],
                   is_secret: Callable[[KeyPath], bool]) -> tuple[KeyPath, str]:
    """Key path and plain-words message for one pydantic error, without echoing a secret; used
    for config and response files alike. ``known_keys(parent)`` lists the keys allowed there."""
    loc: KeyPath = tuple(error["loc"])
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    got = ""
    if kind == "value_error":
        message = str(ctx["error"])
    elif kind == "extra_forbidden":
        known = known_keys(loc[:-1])
        hint = did_you_mean(str(loc[-1]), known) or f"known keys: {', '.join(known)}"
        message = f"unknown key ({hint})"
    elif kind == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        message = f"expected one of {', '.join(choices)}"
        hint = did_you_mean(str(value), choices)
        got = f", got {shown(value)}" + (f" ({hint})" if hint else "")
    elif kind in ("string_too_short", "too_short") and ctx.get("min_length") == 1:
        message = "must not be empty"
    elif kind in BOUND_WORDS:
        message = f"must be {BOUND_WORDS[kind]} {next(iter(ctx.values()))}"
        got = f", got {shown(value)}"
    elif value is None and kind not in ("missing",):
        message = "required, but empty"
    else:
        message = EXPECTED_BY_ERROR.get(kind) or error["msg"][0].lower() + error["msg"][1:]
        if kind != "missing":
            got = f", got {shown(value)}"
    if is_secret(loc):
        got = ""
    return loc, message + got


def _problem_of(error: dict, data: Any) -> tuple[KeyPath, str]:
    """Key path and message for one pydantic error of the config file."""
    loc: KeyPath = tuple(error["loc"])
    if loc[:1] == ("connectors",) and len(loc) > 2 and loc[2] in CONNECTOR_TYPES:
        loc = loc[:2] + loc[3:]   # pydantic puts the discriminator's tag in the path
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "duplicate_token_name":
        return loc + (ctx["index"], "name"), error["msg"]
    if loc[-1:] == ("[key]",):
        loc = loc[:-1]
        return loc, ("a connector name may only use lowercase letters, digits, - and _ "
                     f"(it appears in URLs and metric labels), got {shown(loc[-1])}")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        types = list(CONNECTOR_TYPES)
        tag = ctx.get("tag")
        if tag is None:
            return loc + ("type",), f"required, one of {', '.join(types)}"
        hint = did_you_mean(tag, types)
        return loc + ("type",), (f"expected one of {', '.join(types)}, got {shown(tag)}"
                                 + (f" ({hint})" if hint else ""))
    return describe_error({**error, "loc": loc}, known_keys=lambda parent: _section_keys(parent, data),
                          is_secret=is_secret_path)


# -- loading -------------------------------------------------------------------------------------

def load_config(path: str | os.PathLike, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate a config file and the response files it names; raise
    ConfigError listing every problem."""
    from syncd.response_files import (  # a cycle at import time: they use our value types
        ResponseFileError,
        expand_patterns,
        load_response_files,
    )

    environ = os.environ if environ is None else environ
    try:
        document = read_yaml_file(path, what="the config file", environ=environ)
    except YamlSyntaxError as exc:
        raise ConfigError([exc.problem]) from None
    data = document.data
    if data is None and not document.problems:
        raise ConfigError([ConfigProblem(str(path), None, "", "the file is empty; write at least "
                                                              "one section (store, http, "
                                                              "response, connectors)")])
    if not isinstance(data, dict):
        document.problem((), "the file must be a mapping of sections (store, http, response, "
                             "connectors, ...)")
        raise ConfigError(document.problems)
    config = None
    try:
        config = Config.model_validate(data, context={"base_dir": Path(path).absolute().parent})
    except ValidationError as invalid:
        for error in invalid.errors():
            document.invalid_value(*_problem_of(error, data))
    if config is not None:
        document.problems += _lease_problems(config, document)
    if document.problems or config is None:
        raise ConfigError(sorted(document.problems, key=_by_line)) from None
    paths, unmatched = expand_patterns(config.response.files)
    try:
        responses = load_response_files(paths, environ=environ)
    except ResponseFileError as invalid:
        raise ConfigError(invalid.problems) from None
    warnings = _warnings(config, document) + [
        document.problem_at(("response", "files", index), f"{pattern!r} matches no file")
        for index, pattern in enumerate(config.response.files) if pattern in unmatched]
    config._warnings = [str(w) for w in sorted(warnings, key=_by_line)]
    config._responses = responses
    return config


def connector_retry_policy(retry_for: timedelta) -> RetryPolicy:
    """The daemon's retry policy for a connector that retries each call for ``retry_for``."""
    return replace(DAEMON_RETRY_POLICY, max_total_seconds=retry_for.total_seconds())


def retry_budget(timeout: timedelta, policy: RetryPolicy = DAEMON_RETRY_POLICY) -> timedelta:
    """The longest one remote call may take under ``policy`` with per-request ``timeout``, for
    the lease check: the policy's own bound (``RetryPolicy.budget_seconds``: request timeouts are
    capped by the time left) plus one ``timeout`` of margin, since a read timeout bounds each wait
    for bytes and a server trickling its answer can overrun the cap; or, when smaller, the cost of
    every attempt with at most one backoff (backoff_max plus its jitter) between them."""
    per_attempt = timeout.total_seconds()
    by_attempts = (policy.max_attempts * per_attempt
                   + (policy.max_attempts - 1) * (policy.backoff_max + policy.backoff_initial))
    by_deadline = policy.budget_seconds + per_attempt
    return timedelta(seconds=min(by_attempts, by_deadline))


def _lease_problems(config: Config, document: YamlDocument) -> list[ConfigProblem]:
    """A claim that lapses while its remote call still retries lets two workers write."""
    problems = []
    lease = config.sync.claim_lease
    for name, connector in config.connectors.items():
        budget = retry_budget(connector.timeout, connector_retry_policy(connector.retry_for))
        if lease < budget:
            path: KeyPath = ("sync", "claim_lease")
            line = document.line(path) if path in document.places else \
                document.line(("connectors", name, "timeout"))
            problems.append(document.problem_at(path, (
                f"{format_duration(lease)} is shorter than connectors.{name}'s retry budget "
                f"(timeout {format_duration(connector.timeout)} per attempt, retried for up to "
                f"{format_duration(connector.retry_for)}: {format_duration(budget)}): raise "
                f"sync.claim_lease or lower connectors.{name}.timeout or "
                f"connectors.{name}.retry_for"), line=line))
    return problems


def _by_line(problem: ConfigProblem) -> tuple[int, str]:
    return problem.line or 0, problem.path


def _warnings(config: Config, reader: YamlDocument) -> list[ConfigProblem]:
    """What is valid but probably not meant."""
    found: list[ConfigProblem] = []

    def warn(path: KeyPath, message: str) -> None:
        found.append(reader.problem_at(path, message))

    secrets: list[KeyPath] = [
        ("http", "api_tokens", index) + (("token",) if ("http", "api_tokens", index, "token")
                                         in reader.places else ())
        for index in range(len(config.http.api_tokens))]
    if config.http.link_secret is not None:
        secrets.append(("http", "link_secret"))
    for name, connector in config.connectors.items():
        secrets += [("connectors", name, key) for key in sorted(SECRET_KEYS)
                    if getattr(connector, key, None) is not None]
    for path in secrets:
        if path not in reader.variables:
            warn(path, "a secret written in the file; take it from the environment with ${VAR}")
    if make_url(config.store.url.get_secret_value()).password and ("store", "url") not in reader.variables:
        warn(("store", "url"), "a password written in the file; take the URL from the environment "
                               "with ${VAR}")
    if not config.http.api_tokens:
        warn(("http", "api_tokens"), "no API token: the REST API refuses every request")
    for name, connector in config.connectors.items():
        if not (connector.create_incidents or connector.create_tickets):
            warn(("connectors", name), "neither create_incidents nor create_tickets is true: "
                                       "nothing will ever be linked to this connector")
        if connector.webhook_secret is None:
            warn(("connectors", name), "no webhook_secret: webhooks are refused; polling still "
                                       "works")
    if len(config.connectors) > 1 and not any(c.create_incidents for c in config.connectors.values()):
        warn(("connectors",), "no connector has create_incidents: true, so no remote record will "
                              "start an incident")
    return found
