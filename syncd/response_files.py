"""The response files: users, schedules, escalation policies, services, plays and actions.

Any file may hold any of the six top-level lists; together they form one :class:`ResponseSet`.
:func:`load_response_files` reports every problem of every file at once, as
``file:line: key.path: message``: each definition's own checks, ids used twice (across files
too), and names that point at nothing (a rule's contact, a policy's schedule, a service's
policy). :class:`ResponseFiles` holds the active set for the daemon and swaps it only for a
valid edit, as the mapping reload does. The format is documented in docs/configuration.md.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import threading
import typing
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from pydantic import BaseModel, ValidationError

from syncd.config import describe_error, printable
from syncd.metrics import RESPONSE_RELOADS
from syncd.oncall.definitions import EscalationPolicy, Schedule, Service, User
from syncd.response.definitions import Action, Play
from syncd.yamlsource import (
    KeyPath,
    SourceProblem,
    YamlDocument,
    YamlSyntaxError,
    did_you_mean,
    format_path,
    read_yaml,
)

log = logging.getLogger(__name__)

KINDS: dict[str, type[BaseModel]] = {
    "users": User, "schedules": Schedule, "escalation_policies": EscalationPolicy,
    "services": Service, "plays": Play, "actions": Action}
SECRET_KEYS = frozenset({"routing_key"})


class ResponseFileError(Exception):
    """Invalid response files; ``problems`` lists everything found, one per line."""

    def __init__(self, problems: list[SourceProblem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


@dataclass(frozen=True)
class ResponseSet:
    """Every definition of the response files, by kind and id (read-only)."""

    users: Mapping[str, User] = field(default_factory=lambda: MappingProxyType({}))
    schedules: Mapping[str, Schedule] = field(default_factory=lambda: MappingProxyType({}))
    escalation_policies: Mapping[str, EscalationPolicy] = field(
        default_factory=lambda: MappingProxyType({}))
    services: Mapping[str, Service] = field(default_factory=lambda: MappingProxyType({}))
    plays: Mapping[str, Play] = field(default_factory=lambda: MappingProxyType({}))
    actions: Mapping[str, Action] = field(default_factory=lambda: MappingProxyType({}))
    files: tuple[str, ...] = ()
    digest: str = ""

    def redacted(self) -> dict[str, list[dict[str, Any]]]:
        """Plain data for printing: routing keys as "***", secrets in contact URLs redacted."""
        return {kind: [printable(item.model_dump(by_alias=True)) for item in getattr(self, kind).values()]
                for kind in KINDS}


def expand_patterns(patterns: Iterable[str]) -> tuple[list[Path], set[str]]:
    """The files the globs match (each once, in pattern order, sorted within a pattern) and the
    patterns that match none."""
    paths: dict[Path, None] = {}
    unmatched: set[str] = set()
    for pattern in patterns:
        matches = sorted(Path(match) for match in glob.glob(pattern, recursive=True)
                         if Path(match).is_file())
        if not matches:
            unmatched.add(pattern)
        paths.update(dict.fromkeys(matches))
    return list(paths), unmatched


# -- loading -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Read:
    path: Path
    text: str | None
    error: str | None = None


def _read_all(paths: Iterable[str | os.PathLike]) -> list[_Read]:
    read = []
    for path in map(Path, paths):
        try:
            read.append(_Read(path, path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            read.append(_Read(path, None, exc.strerror if isinstance(exc, OSError)
                              else "not UTF-8 text"))
    return read


def _digest(read: list[_Read]) -> str:
    digest = hashlib.sha256()
    for item in read:
        digest.update(f"{item.path}\0{item.text if item.error is None else item.error}\0".encode())
    return digest.hexdigest()


def load_response_files(paths: Iterable[str | os.PathLike], *,
                        environ: Mapping[str, str] | None = None) -> ResponseSet:
    """Read and validate the given response files as one set; ``${VAR}`` is taken from
    ``environ`` (the process environment by default). Raise ResponseFileError with every
    problem of every file."""
    return _load(_read_all(paths), os.environ if environ is None else environ)


@dataclass
class _Defined:
    """One valid definition and where it was written."""

    item: Any
    document: YamlDocument
    path: KeyPath


def _load(read: list[_Read], environ: Mapping[str, str]) -> ResponseSet:
    problems: list[SourceProblem] = []
    defined: dict[str, dict[str, _Defined]] = {kind: {} for kind in KINDS}
    for item in read:
        if item.error is not None:
            problems.append(SourceProblem(str(item.path), None, "",
                                          f"cannot read the response file: {item.error}"))
            continue
        try:
            document = read_yaml(item.text or "", source=str(item.path), environ=environ)
        except YamlSyntaxError as exc:
            problems.append(exc.problem)
            continue
        _definitions(document, defined)
        problems += document.problems
    references: list[SourceProblem] = []
    if not problems:
        references = _references(defined)
    if problems or references:
        raise ResponseFileError(sorted(problems, key=_file_order(read)) +
                                sorted(references, key=_file_order(read)))
    return ResponseSet(
        **{kind: MappingProxyType({key: d.item for key, d in items.items()})
           for kind, items in defined.items()},
        files=tuple(str(item.path) for item in read), digest=_digest(read))


def _file_order(read: list[_Read]):
    order = {str(item.path): index for index, item in enumerate(read)}
    return lambda problem: (order.get(problem.file, len(order)), problem.line or 0, problem.path)


def _definitions(document: YamlDocument, defined: dict[str, dict[str, _Defined]]) -> None:
    """Validate each definition of one file, adding the valid ones to ``defined``."""
    data = document.data
    if data is None:
        return
    if not isinstance(data, dict):
        document.problem((), f"a response file is a mapping of lists: {', '.join(KINDS)}")
        return
    for kind, items in data.items():
        if kind not in KINDS:
            hint = did_you_mean(str(kind), KINDS) or f"known keys: {', '.join(KINDS)}"
            document.problem((kind,), f"unknown key ({hint})")
            continue
        if items is None:
            continue
        if not isinstance(items, list):
            document.problem((kind,), f"expected a list of {kind.replace('_', ' ')} "
                                      f"(lines starting with '- ')")
            continue
        for index, raw in enumerate(items):
            _definition(document, kind, index, raw, defined[kind])


def _definition(document: YamlDocument, kind: str, index: int, raw: Any,
                defined: dict[str, _Defined]) -> None:
    model = KINDS[kind]
    path: KeyPath = (kind, index)
    try:
        item = model.model_validate(raw)
    except ValidationError as invalid:
        for error in invalid.errors():
            document.invalid_value(*describe_error(
                {**error, "loc": path + tuple(error["loc"])},
                known_keys=_known_keys,
                is_secret=lambda where: any(part in SECRET_KEYS for part in where)))
        return
    first = defined.get(item.id)
    if first is not None:
        where = f"{first.document.source}:{first.document.line(first.path + ('id',))}"
        document.problem(path + ("id",), f"id {item.id!r} is already used by "
                                         f"{format_path(first.path)} ({where}); ids are unique "
                                         f"across all response files")
        return
    defined[item.id] = _Defined(item, document, path)


def _known_keys(parent: KeyPath) -> list[str]:
    """The keys allowed at ``parent`` (for "did you mean"): walk the models along the path."""
    model: type[BaseModel] | None = KINDS.get(str(parent[0])) if parent else None
    for part in parent[2:]:
        if model is None or isinstance(part, int):
            continue
        fields = {info.alias or name: info for name, info in model.model_fields.items()}
        model = _model_in(fields[part].annotation) if part in fields else None
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``list[Layer] | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _references(defined: dict[str, dict[str, _Defined]]) -> list[SourceProblem]:
    """Every name that points at no definition, with a hint at the nearest one."""
    problems: list[SourceProblem] = []

    def check(entry: _Defined, where: KeyPath, name: str, kind: str, choices: Iterable[str]) -> None:
        choices = list(choices)
        if name not in choices:
            hint = did_you_mean(name, choices)
            known = f"known: {', '.join(choices)}" if choices else f"no {kind} is defined"
            problems.append(entry.document.problem_at(
                entry.path + where, f"unknown {kind} {name!r} ({hint or known})"))

    users = defined["users"]
    for entry in users.values():
        rules = entry.item.rules
        for urgency in ("high", "low"):
            for index, rule in enumerate(getattr(rules, urgency) if rules else ()):
                check(entry, ("rules", urgency, index, "contact"), rule.contact,
                      f"contact of {entry.item.id}", entry.item.contacts)
    for entry in defined["schedules"].values():
        for layer_index, layer in enumerate(entry.item.layers):
            for index, user in enumerate(layer.users):
                check(entry, ("layers", layer_index, "users", index), user, "user", users)
    for entry in defined["escalation_policies"].values():
        for rule_index, rule in enumerate(entry.item.rules):
            for index, target in enumerate(rule.targets):
                where: KeyPath = ("rules", rule_index, "targets", index)
                if target.user is not None:
                    check(entry, where + ("user",), target.user, "user", users)
                else:
                    check(entry, where + ("schedule",), target.schedule, "schedule",
                          defined["schedules"])
    routing_keys: dict[str, _Defined] = {}
    for entry in defined["services"].values():
        check(entry, ("escalation_policy",), entry.item.escalation_policy, "escalation policy",
              defined["escalation_policies"])
        key = entry.item.routing_key.get_secret_value() if entry.item.routing_key else None
        if key in routing_keys:
            first = routing_keys[key]
            problems.append(entry.document.problem_at(
                entry.path + ("routing_key",),
                f"the same routing_key as {format_path(first.path)} "
                f"({first.document.source}:{first.document.line(first.path + ('routing_key',))}): "
                f"events must name one service"))
        elif key is not None:
            routing_keys[key] = entry
    return problems


# -- hot reload ----------------------------------------------------------------------------------

class ResponseFiles:
    """The active response set. ``reload()`` (on change and on SIGHUP) swaps in a new set only
    when every file validates; a broken edit is logged and counted, and the previous set stays."""

    def __init__(self, patterns: Iterable[str], *, environ: Mapping[str, str] | None = None):
        """Load the files the (absolute) globs match; raise ResponseFileError if any is invalid
        (the daemon refuses to start rather than page from a broken set)."""
        self._patterns = list(patterns)
        self._environ = os.environ if environ is None else environ
        self._lock = threading.Lock()
        read = self._read()
        self._current = _load(read, self._environ)
        self._judged = self._current.digest

    def current(self) -> ResponseSet:
        return self._current

    def reload(self) -> bool:
        """Re-read the files (globs re-expanded: a new file joins); True when a new set is now
        active. An unchanged content is not judged again, so a broken edit counts once."""
        with self._lock:
            read = self._read()
            digest = _digest(read)
            if digest == self._judged:
                return False
            self._judged = digest
            try:
                responses = _load(read, self._environ)
            except ResponseFileError as invalid:
                RESPONSE_RELOADS.labels(outcome="rejected").inc()
                log.error("response file edit rejected; the previous set stays active",
                          extra={"problems": [str(problem) for problem in invalid.problems]})
                return False
            self._current = responses
            RESPONSE_RELOADS.labels(outcome="applied").inc()
            log.info("response files reloaded", extra={"files": list(responses.files),
                                                       "digest": digest})
            return True

    def _read(self) -> list[_Read]:
        paths, _ = expand_patterns(self._patterns)
        return _read_all(paths)
