"""The one YAML reader of syncd: config, mapping and response files all read through it.

Files are composed into PyYAML nodes rather than loaded straight into dicts, so that every value
keeps the line and column it came from and duplicate keys (which PyYAML would silently overwrite)
are caught. :func:`read_yaml` turns the nodes into plain values and remembers where each key path
was written; the mapping loader, which reports column-precise hints, walks the nodes itself with
:func:`compose`, :func:`mapping_items` and :func:`scalar`. Problems read
``file:line: key.path: message``. ``${VAR}`` interpolation happens only where the caller passes an
environment. Also here: :func:`redact_url`, because config and response files both show URLs.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Union
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import yaml

KeyPath = tuple[Union[str, int], ...]   # a key path: ("connectors", "jira", "poll_interval")
REDACTED = "***"
_MERGE_TAG = "tag:yaml.org,2002:merge"


# -- problems ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SourceProblem:
    """One problem (or warning) of a file: where it is and what was expected."""

    file: str
    line: int | None
    path: str
    message: str
    column: int | None = None

    def __str__(self) -> str:
        where = self.file if not self.line else f"{self.file}:{self.line}" + (
            f":{self.column}" if self.column else "")
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class YamlSyntaxError(Exception):
    """Text that is not YAML; ``problem`` says where and what PyYAML could not parse."""

    def __init__(self, problem: SourceProblem):
        self.problem = problem
        super().__init__(str(problem))


def format_path(path: KeyPath) -> str:
    """``("connectors", "jira", "token")`` as ``connectors.jira.token``, list items as ``[2]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


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


# -- nodes ---------------------------------------------------------------------------------------

_CONSTRUCTOR = yaml.SafeLoader("")


def compose(text: str | bytes, *, source: str) -> yaml.Node | None:
    """The root node of a YAML text (None when empty); raise YamlSyntaxError naming line:column."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = "; ".join(part for part in (exc.context, exc.problem) if part)
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise YamlSyntaxError(SourceProblem(source, line, "", f"YAML syntax error: {what}",
                                            column)) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(SourceProblem(source, None, "", f"YAML syntax error: {exc}")) from None


def scalar(node: yaml.Node) -> Any:
    """The Python value of a node, as PyYAML's safe loader makes it."""
    return _CONSTRUCTOR.construct_object(node, deep=True)


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


@dataclass(frozen=True)
class MappingItem:
    """One entry of a YAML mapping. ``first_line`` is set when the key was already used above
    (a duplicate); ``key`` is None when the key is not plain text."""

    key: str | None
    key_node: yaml.Node
    value_node: yaml.Node
    first_line: int | None = None


def mapping_items(node: yaml.MappingNode) -> Iterator[MappingItem]:
    """A mapping's entries in file order, with ``<<: *anchor`` merge keys applied (explicit keys
    win) and duplicates and non-text keys marked for the caller to report as it words things."""
    seen: dict[str, int] = {}
    duplicates: dict[int, int] = {}          # id(key node) -> line of the first use
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
            if key_node.value in seen:
                duplicates[id(key_node)] = seen[key_node.value]
            seen.setdefault(key_node.value, line_of(key_node))
    _CONSTRUCTOR.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        yield MappingItem(key, key_node, value_node, duplicates.get(id(key_node)))


# -- plain values with their places --------------------------------------------------------------

@dataclass
class YamlDocument:
    """A file read into plain values (``data``), with the line and column of every key path,
    the environment variables each value came from, and the problems found while reading."""

    source: str
    data: Any = None
    places: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    variables: dict[KeyPath, list[str]] = field(default_factory=dict)
    unresolved: set[KeyPath] = field(default_factory=set)    # ${...} failed: reported already
    problems: list[SourceProblem] = field(default_factory=list)

    def line(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its nearest written ancestor."""
        while path and path not in self.places:
            path = path[:-1]
        place = self.places.get(path)
        return place[0] if place else None

    def column(self, path: KeyPath) -> int | None:
        place = self.places.get(path)
        return place[1] if place else None

    def problem_at(self, path: KeyPath, message: str, line: int | None = None) -> SourceProblem:
        return SourceProblem(self.source, line or self.line(path), format_path(path), message)

    def problem(self, path: KeyPath, message: str, line: int | None = None) -> None:
        self.problems.append(self.problem_at(path, message, line))

    def invalid_value(self, path: KeyPath, message: str) -> None:
        """A validation problem at ``path``, naming the ${VAR}s its value came from; skipped
        where interpolation already failed (that problem is reported)."""
        if path in self.unresolved:
            return
        variables = self.variables.get(path)
        if variables:
            message += " (from " + ", ".join(f"${{{name}}}" for name in variables) + ")"
        self.problem(path, message)


class _PlainReader:
    def __init__(self, document: YamlDocument, environ: Mapping[str, str] | None):
        self.document = document
        self.environ = environ
        self._open: set[int] = set()

    def read(self, node: yaml.Node, path: KeyPath) -> Any:
        self.document.places.setdefault(path, (line_of(node), node.start_mark.column + 1))
        if id(node) in self._open:
            self.document.problem(path, "an alias refers to a mapping that contains it")
            return None
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return [self.read(item, path + (index,)) for index, item in enumerate(node.value)]
            return self._scalar(node, path)
        finally:
            self._open.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for item in mapping_items(node):
            if item.key is None:
                self.document.problem(path, "keys must be plain text", line_of(item.key_node))
                continue
            key_path = path + (item.key,)
            if item.first_line is not None:
                self.document.problem(key_path, f"duplicate key: it is already set on line "
                                                f"{item.first_line}; keep one", line_of(item.key_node))
            self.document.places[key_path] = (line_of(item.key_node), item.key_node.start_mark.column + 1)
            result[item.key] = self.read(item.value_node, key_path)
        return result

    def _scalar(self, node: yaml.Node, path: KeyPath) -> Any:
        value = scalar(node)
        if not isinstance(value, str) or self.environ is None:
            return value
        text, used, problems = interpolate(value, self.environ)
        if used:
            self.document.variables[path] = used
        for problem in problems:
            self.document.problem(path, problem)
            self.document.unresolved.add(path)
        return text


def read_yaml(text: str | bytes, *, source: str, environ: Mapping[str, str] | None = None
              ) -> YamlDocument:
    """Read YAML text into a :class:`YamlDocument`; with ``environ``, interpolate ``${VAR}`` in
    every string. Raise YamlSyntaxError for text that is not YAML; other problems are collected
    in ``problems`` (an empty file gives ``data`` None)."""
    document = YamlDocument(source, places={(): (1, 1)})
    root = compose(text, source=source)
    if root is not None:
        document.data = _PlainReader(document, environ).read(root, ())
    return document


def read_yaml_file(path: str | Path, *, what: str, environ: Mapping[str, str] | None = None
                   ) -> YamlDocument:
    """Like :func:`read_yaml` for a file; an unreadable file raises YamlSyntaxError too, naming
    ``what`` the file is ("the config file")."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise YamlSyntaxError(SourceProblem(str(path), None, "", f"cannot read {what}: {reason}")
                              ) from None
    return read_yaml(text, source=str(path), environ=environ)


# -- secrets in URLs -----------------------------------------------------------------------------

_SECRET_PARAMETER = re.compile(r"token|key|secret|pass|pwd|auth|sig|credential", re.IGNORECASE)
# A path segment or host of a notification URL that looks like a credential (Slack's and
# Telegram's tokens, webhook ids): long, and mixing letters with digits.
_TOKEN_LIKE = re.compile(r"(?=[^/]*\d)(?=[^/]*[A-Za-z])[A-Za-z0-9_\-:.]{16,}")


def redact_url(url: str) -> str:
    """``url`` safe to show: a password in ``user:pass@``, query parameters named like a token,
    key, secret or password, and (outside http/https) token-like host or path parts become
    ``***``. Text that is not a URL is returned as it is."""
    try:
        split = urlsplit(url)
    except ValueError:
        return REDACTED
    if not split.scheme or "://" not in url:
        return url
    web = split.scheme in ("http", "https")
    netloc = split.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        user = user if web else _redact_token(user)
        userinfo = f"{user}:{REDACTED}" if colon else user
        netloc = f"{userinfo}@{hostport if web else _redact_token(hostport)}"
    elif not web:
        netloc = _redact_token(netloc)
    path = split.path if web else "/".join(_redact_token(part) for part in split.path.split("/"))
    query = "&".join(
        f"{quote(name, safe='')}={REDACTED if _SECRET_PARAMETER.search(name) else quote(value, safe='@,:')}"
        for name, value in parse_qsl(split.query, keep_blank_values=True))
    return urlunsplit((split.scheme, netloc, path, query, split.fragment))


def _redact_token(part: str) -> str:
    return REDACTED if _TOKEN_LIKE.fullmatch(part) else part
