"""The configuration file: YAML read into pydantic models, with ``${VAR}`` interpolation.

The file is composed into PyYAML nodes rather than loaded into plain dicts, so every problem can
name its line, and duplicate keys (which PyYAML would silently overwrite) are caught. Every problem
of a file is reported at once, one per line, as ``FILE:LINE: key.path: what was expected``, so an
admin fixes a file in one pass. Secrets are ``SecretStr`` and are never echoed, not even in errors.
Pure: reads the config file and checks that mapping files exist; no network, no database.
The keys are documented in docs/configuration.md.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Union
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, SecretStr,
    StringConstraints, ValidationError, ValidationInfo, field_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from syncd.mapping.loader import default_mapping_path

DEFAULT_STORE_URL = "sqlite:///syncd.db"
SECRET_KEYS = frozenset({"password", "token", "webhook_secret", "api_tokens"})
REDACTED = "***"
CONNECTOR_NAME = r"^[a-z0-9_-]{1,64}$"   # used in URLs and metric labels

KeyPath = tuple[Union[str, int], ...]   # a key path: ("connectors", "jira", "poll_interval")


# -- problems ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConfigProblem:
    """One problem (or warning) of a config file: where it is and what was expected."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """An invalid config file; the message lists every problem, one per line."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


def format_path(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


# -- value types ---------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> timedelta:
    """``15s``, ``5m``, ``1h30m``, ``250ms`` or a bare number of seconds; raise ValueError."""
    if isinstance(value, timedelta):
        return value
    expected = f"expected a duration like 30s, 5m, 1h30m or 250ms, got {_shown(value)}"
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
        raise ValueError(f"must not be negative, got {_shown(value)}")
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
        raise ValueError(f"expected a URL like https://acme.example.com, got {_shown(value)}")
    return value.rstrip("/")


def _jira_project_key(value: str) -> str:
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", value):
        raise ValueError(f"expected a Jira project key like OPS (capital letters, digits, _), "
                         f"got {_shown(value)}")
    return value


def _table_name(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9_]+", value):
        raise ValueError(f"expected a ServiceNow table name like incident, got {_shown(value)}")
    return value


def _listen_address(value: str) -> str:
    host, separator, port = value.rpartition(":")
    expected = f'expected "host:port" like 127.0.0.1:8080 or [::1]:8080, got {_shown(value)}'
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
        raise ValueError(f"expected a file path, got {_shown(value)}")
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


class HttpSettings(_Section):
    listen: ListenAddress = "127.0.0.1:8080"
    api_tokens: list[Secret] = Field(default_factory=list)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)


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
    pause_when_share_changed: float = Field(default=0.5, gt=0, le=1)
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


class Config(_Section):
    """The validated configuration. ``warnings`` holds what is legal but probably not meant."""

    store: StoreSettings = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    http: HttpSettings = HttpSettings()
    connectors: dict[ConnectorName, ConnectorSettings]
    sync: SyncSettings = SyncSettings()
    logging: LoggingSettings = LoggingSettings()
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @field_validator("store", "http", "sync", "logging", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        """A section written with nothing under it (``sync:``) takes all its defaults."""
        return {} if value is None else value

    @field_validator("connectors")
    @classmethod
    def _at_least_one(cls, value: dict) -> dict:
        if not value:
            raise ValueError("at least one connector is required")
        return value

    @property
    def warnings(self) -> list[str]:
        return list(self._warnings)

    def redacted(self) -> dict[str, Any]:
        """Plain data for printing: secrets as "***", durations as "1h30m", paths as text."""
        data = _plain(self)
        data["store"]["url"] = make_url(self.store.url.get_secret_value()).render_as_string(
            hide_password=True)
        return data


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return {name: _plain(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _section_keys(parent: KeyPath, data: Any) -> list[str]:
    """The keys allowed where an unknown key was found (for "did you mean")."""
    sections: dict[str, type[BaseModel]] = {
        "store": StoreSettings, "http": HttpSettings, "sync": SyncSettings, "logging": LoggingSettings}
    model: type[BaseModel] | None = None
    if parent == ():
        model = Config
    elif len(parent) == 1 and parent[0] in sections:
        model = sections[str(parent[0])]
    elif len(parent) == 2 and parent[0] == "connectors":
        section = data.get("connectors", {}).get(parent[1], {})
        model = CONNECTOR_TYPES.get(section.get("type")) if isinstance(section, dict) else None
    return list(model.model_fields) if model else []


# -- interpolation -------------------------------------------------------------------------------

_REFERENCE = re.compile(r"\$(\$?)\{([^}]*)\}|\$(\$?)\{")
_REFERENCE_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


def interpolate(text: str, environ: Mapping[str, str]) -> tuple[str, list[str], list[str]]:
    """``text`` with each ``${VAR}`` / ``${VAR:-default}`` replaced and ``$${`` kept as ``${``.

    Returns (result, names of variables used, problems). ``:-default`` applies when the variable
    is unset or empty, as in the shell."""
    used: list[str] = []
    problems: list[str] = []

    def replace(match: re.Match) -> str:
        escaped, body = match.group(1) or match.group(3), match.group(2)
        if escaped:
            return match.group(0)[1:]
        if body is None:
            problems.append("unterminated ${: write ${NAME}, or $${ for a literal ${")
            return ""
        parsed = _REFERENCE_BODY.fullmatch(body)
        if not parsed:
            problems.append("bad ${...} reference: expected ${NAME} or ${NAME:-default}")
            return ""
        name, default = parsed.group(1), parsed.group(2)
        used.append(name)
        value = environ.get(name)
        if default is not None and not value:
            return default
        if value is None:
            problems.append(f"environment variable {name} is not set")
            return ""
        return value

    return _REFERENCE.sub(replace, text), used, problems


# -- reading -------------------------------------------------------------------------------------

class _Reader:
    """Turns composed YAML nodes into plain data, recording each key path's line and the
    environment variables each value came from, and collecting problems."""

    def __init__(self, source: str, environ: Mapping[str, str]):
        self.source = source
        self.environ = environ
        self.problems: list[ConfigProblem] = []
        self.lines: dict[KeyPath, int] = {(): 1}
        self.variables: dict[KeyPath, list[str]] = {}
        self.unresolved: set[KeyPath] = set()    # values whose ${...} failed: reported already
        self._constructor = yaml.SafeLoader("")
        self._open: set[int] = set()

    def problem(self, path: KeyPath, message: str, line: int | None = None) -> None:
        self.problems.append(ConfigProblem(self.source, line or self.line(path),
                                           format_path(path), message))

    def line(self, path: KeyPath) -> int | None:
        while path not in self.lines:
            path = path[:-1]
        return self.lines[path]

    def read(self, node: yaml.Node, path: KeyPath) -> Any:
        if id(node) in self._open:
            self.problem(path, "an alias refers to a mapping that contains it")
            return None
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    self.lines[path + (index,)] = item.start_mark.line + 1
                    items.append(self.read(item, path + (index,)))
                return items
            return self._scalar(node, path)
        finally:
            self._open.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                line = key_node.start_mark.line + 1
                if key_node.value in seen:
                    self.problem(path + (key_node.value,), f"duplicate key: it is already set on "
                                                          f"line {seen[key_node.value]}; keep one", line)
                seen.setdefault(key_node.value, line)
        self._constructor.flatten_mapping(node)   # `<<: *anchor` merge keys; explicit keys win
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(path, "keys must be plain text", key_node.start_mark.line + 1)
                continue
            key_path = path + (key_node.value,)
            self.lines[key_path] = key_node.start_mark.line + 1
            result[key_node.value] = self.read(value_node, key_path)
        return result

    def _scalar(self, node: yaml.Node, path: KeyPath) -> Any:
        value = self._constructor.construct_object(node, deep=True)
        if not isinstance(value, str):
            return value
        text, used, problems = interpolate(value, self.environ)
        if used:
            self.variables[path] = used
        for problem in problems:
            self.problem(path, problem)
            self.unresolved.add(path)
        return text


# -- errors --------------------------------------------------------------------------------------

def _shown(value: Any) -> str:
    if isinstance(value, (str, bool)) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return str(value)
    return {dict: "a mapping", list: "a list"}.get(type(value), type(value).__name__)


def is_secret_path(path: KeyPath) -> bool:
    return any(part in SECRET_KEYS for part in path) or path[:2] == ("store", "url")


_EXPECTED = {
    "string_type": "expected text", "int_type": "expected a whole number",
    "int_parsing": "expected a whole number", "int_from_float": "expected a whole number",
    "bool_type": "expected true or false", "bool_parsing": "expected true or false",
    "float_type": "expected a number", "float_parsing": "expected a number",
    "dict_type": "expected a mapping (key: value lines)",
    "model_type": "expected a mapping (key: value lines)",
    "model_attributes_type": "expected a mapping (key: value lines)",
    "list_type": "expected a list", "missing": "required, but missing",
}


_BOUNDS = {"greater_than": "greater than", "greater_than_equal": "at least",
           "less_than": "less than", "less_than_equal": "at most"}


def _problem_of(error: dict, data: Any) -> tuple[KeyPath, str]:
    """Key path and message for one pydantic error, without echoing a secret."""
    loc: KeyPath = tuple(error["loc"])
    if loc[:1] == ("connectors",) and len(loc) > 2 and loc[2] in CONNECTOR_TYPES:
        loc = loc[:2] + loc[3:]   # pydantic puts the discriminator's tag in the path
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    got = ""
    if kind == "value_error":
        message = str(ctx["error"])
    elif kind == "extra_forbidden":
        known = _section_keys(loc[:-1], data)
        hint = _did_you_mean(str(loc[-1]), known) or f"known keys: {', '.join(known)}"
        message = f"unknown key ({hint})"
    elif loc[-1:] == ("[key]",):
        loc = loc[:-1]
        message = ("a connector name may only use lowercase letters, digits, - and _ "
                   f"(it appears in URLs and metric labels), got {_shown(loc[-1])}")
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        loc = loc + ("type",)
        types = list(CONNECTOR_TYPES)
        tag = ctx.get("tag")
        message = f"expected one of {', '.join(types)}" if tag is not None \
            else f"required, one of {', '.join(types)}"
        if tag is not None:
            got = f", got {_shown(tag)}"
            hint = _did_you_mean(tag, types)
            got += f" ({hint})" if hint else ""
    elif kind == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        message = f"expected one of {', '.join(choices)}"
        hint = _did_you_mean(str(value), choices)
        got = f", got {_shown(value)}" + (f" ({hint})" if hint else "")
    elif kind == "string_too_short" and ctx.get("min_length") == 1:
        message = "must not be empty"
    elif kind in _BOUNDS:
        message = f"must be {_BOUNDS[kind]} {next(iter(ctx.values()))}"
        got = f", got {_shown(value)}"
    elif value is None and kind not in ("missing",):
        message = "required, but empty"
    else:
        message = _EXPECTED.get(kind) or error["msg"][0].lower() + error["msg"][1:]
        if kind != "missing":
            got = f", got {_shown(value)}"
    if is_secret_path(loc):
        got = ""
    return loc, message + got


# -- loading -------------------------------------------------------------------------------------

def load_config(path: str | os.PathLike, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate a config file; raise ConfigError listing every problem."""
    source = str(path)
    environ = os.environ if environ is None else environ
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([ConfigProblem(source, None, "", f"cannot read the config file: {reason}")
                           ]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        what = "; ".join(part for part in (exc.context, exc.problem) if part)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError([ConfigProblem(where, None, "", f"YAML syntax error: {what}")]) from None
    reader = _Reader(source, environ)
    if root is None:
        raise ConfigError([ConfigProblem(source, None, "", "the file is empty; it needs at least "
                                                           "a `connectors:` section")])
    data = reader.read(root, ())
    if not isinstance(data, dict):
        reader.problem((), "the file must be a mapping of sections (store, http, connectors, ...)")
        raise ConfigError(reader.problems)
    base_dir = Path(path).absolute().parent
    config = None
    try:
        config = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as invalid:
        for error in invalid.errors():
            loc, message = _problem_of(error, data)
            if loc in reader.unresolved:
                continue
            variables = reader.variables.get(loc)
            if variables:
                message += " (from " + ", ".join(f"${{{name}}}" for name in variables) + ")"
            reader.problem(loc, message)
    if reader.problems or config is None:
        raise ConfigError(sorted(reader.problems, key=_by_line)) from None
    config._warnings = [str(w) for w in sorted(_warnings(config, reader), key=_by_line)]
    return config


def _by_line(problem: ConfigProblem) -> tuple[int, str]:
    return problem.line or 0, problem.path


def _warnings(config: Config, reader: _Reader) -> list[ConfigProblem]:
    """What is valid but probably not meant."""
    found: list[ConfigProblem] = []

    def warn(path: KeyPath, message: str) -> None:
        found.append(ConfigProblem(reader.source, reader.line(path), format_path(path), message))

    secrets: list[KeyPath] = [("http", "api_tokens", index) for index in range(len(config.http.api_tokens))]
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
