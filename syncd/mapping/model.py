"""The mapping model and its pure transforms between remote records and canonical incident fields.

A :class:`Mapping` is built (and validated) by :mod:`syncd.mapping.loader`; here it only converts.
Every conversion is total: a value the mapping cannot place raises :class:`UnmappableValue` naming
the field and the value, so the engine dead-letters the change instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable
from typing import Mapping as MappingABC

from syncd.connectors.base import Ref
from syncd.incidents.fields import (  # noqa: F401
    CANONICAL_FIELDS,
    CUSTOM_PREFIX,
    INCIDENT_STATUSES,
    PRIORITIES,
    URGENCIES,
    VISIBILITIES,
    CanonicalField,
    canonical_field,
)
from syncd.mapping.templates import Template

# -- canonical vocabulary: the incident fields, defined once in syncd.incidents.fields ------------

POLICIES = ("store_wins", "remote_wins", "newest_wins")
DIRECTIONS = ("in", "out", "both")
CONTEXT_NAMES = ("number", "id", "url")


# -- errors ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """One thing wrong with a mapping file, located for an editor."""

    file: str
    line: int          # 1-based
    column: int        # 1-based
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}: {self.message}"
        return f"{where} (hint: {self.hint})" if self.hint else where


class MappingError(Exception):
    """A mapping file is invalid; ``problems`` lists everything found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("invalid mapping:\n" + "\n".join(f"  {p}" for p in self.problems))


class UnmappableValue(ValueError):
    """A value the mapping has no rule for; the engine dead-letters the change with this reason.

    ``field`` and ``value`` say what could not be mapped (a remote field name inbound, a canonical
    field name outbound); the engine may also raise it with just a reason."""

    def __init__(self, reason: str, *, field: str | None = None, value: Any = None,
                 direction: str | None = None):
        self.reason = reason
        self.field = field
        self.value = value
        self.direction = direction
        if field is None:
            super().__init__(reason)
        else:
            side = "remote field" if direction == "in" else "canonical field"
            super().__init__(f"{side} {field!r}: cannot map {value!r}: {reason}")

    @classmethod
    def inbound(cls, remote_field: str, value: Any, reason: str) -> UnmappableValue:
        return cls(reason, field=remote_field, value=value, direction="in")

    @classmethod
    def outbound(cls, canonical_name: str, value: Any, reason: str) -> UnmappableValue:
        return cls(reason, field=canonical_name, value=value, direction="out")


# -- model ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResolveWrite:
    """A remote field written when an incident becomes resolved: the canonical ``source`` field's
    value when it has one, else the ``default`` template (e.g. a ServiceNow close note)."""

    remote: str
    source: str | None
    default: Template | None

    def value(self, get: Callable[[str], Any], render_lookup: Callable[[str], Any]) -> Any:
        if self.source is not None and not _is_empty(get(self.source)):
            return get(self.source)
        return None if self.default is None else self.default.render(render_lookup)


@dataclass(frozen=True)
class FieldMapping:
    """One canonical field's rule. ``write_as`` makes it composite: inbound reads ``remote``,
    outbound writes the ``write_as`` fields, whose values ``outbound_map`` gives as dicts."""

    canonical: str
    remote: str
    direction: str
    policy: str
    value_map: MappingProxyType | None = None       # remote text -> canonical value
    outbound_map: MappingProxyType | None = None    # value_key(canonical) -> remote value (or dict)
    fallback: Any = None                            # canonical value for an unlisted remote value
    has_fallback: bool = False
    write_as: tuple[str, ...] = ()
    reference: str | None = None                    # the `match` attribute
    template: Template | None = None
    default: Any = None                             # canonical value used on create when unset
    has_default: bool = False
    on_resolve: tuple[ResolveWrite, ...] = ()

    @property
    def reads(self) -> bool:
        return self.direction in ("in", "both")

    @property
    def writes(self) -> bool:
        return self.direction in ("out", "both")

    @property
    def remote_written(self) -> tuple[str, ...]:
        return self.write_as or (self.remote,)

    # inbound --------------------------------------------------------------------------------
    def canonical_value(self, remote_value: Any) -> Any:
        """The canonical value for this rule's remote field value."""
        spec = canonical_field(self.canonical)
        if self.reference is not None:
            return self._dereference(remote_value)
        if self.value_map is not None:
            return self._map_in(remote_value, spec)
        if not spec.text:
            return remote_value                            # custom fields hold any JSON value
        if _is_empty(remote_value):
            if spec.nullable:
                return None
            if spec.choices is None:
                return ""
            raise UnmappableValue.inbound(self.remote, remote_value, f"{self.canonical} cannot be empty")
        if isinstance(remote_value, bool) or not isinstance(remote_value, (str, int, float)):
            raise UnmappableValue.inbound(self.remote, remote_value, f"{self.canonical} takes text")
        value = str(remote_value)
        if self.template is not None:
            carried = self.template.extract(self.canonical, value)
            value = value if carried is None else carried
        if spec.choices is not None and value not in spec.choices:
            raise UnmappableValue.inbound(
                self.remote, remote_value, f"{self.canonical} must be one of {', '.join(spec.choices)}; add a value_map")
        return value

    def _dereference(self, remote_value: Any) -> Any:
        if _is_empty(remote_value):
            return None
        if not isinstance(remote_value, MappingABC):
            raise UnmappableValue.inbound(self.remote, remote_value,
                                          "expected a reference (a dict of identifying attributes)")
        if _is_empty(remote_value.get(self.reference)):
            raise UnmappableValue.inbound(self.remote, remote_value,
                                          f"the reference has no {self.reference!r} attribute")
        return str(remote_value[self.reference])

    def _map_in(self, remote_value: Any, spec: CanonicalField) -> Any:
        key = value_key(remote_value)
        if key in self.value_map:
            return self.value_map[key]
        if self.has_fallback:
            return self.fallback
        if _is_empty(remote_value) and spec.nullable:
            return None
        known = ", ".join(repr(k) for k in self.value_map)
        raise UnmappableValue.inbound(self.remote, remote_value,
                                      f"not in the value_map of {self.canonical} (known: {known}); "
                                      "add it or set a fallback")

    # outbound -------------------------------------------------------------------------------
    def remote_values(self, value: Any, render_lookup: Callable[[str], Any]) -> dict[str, Any]:
        """The remote fields to write for canonical ``value``."""
        spec = canonical_field(self.canonical)
        if value is None and not spec.nullable:
            value = ""
        if spec.choices is not None and value is not None and value not in spec.choices:
            raise UnmappableValue.outbound(self.canonical, value,
                                           f"must be one of {', '.join(spec.choices)}")
        if self.outbound_map is not None:
            return self._map_out(value)
        if self.template is not None:
            value = self.template.render(render_lookup)
        if self.reference is not None and not _is_empty(value):
            value = Ref(self.reference, str(value))
        return {self.remote: value}

    def _map_out(self, value: Any) -> dict[str, Any]:
        key = value_key(value)
        if key in self.outbound_map:
            mapped = self.outbound_map[key]
            return dict(mapped) if self.write_as else {self.remote: mapped}
        if value is None:
            # nothing to say; a computed remote field (ServiceNow priority) cannot be emptied
            return {} if self.write_as else {self.remote: None}
        raise UnmappableValue.outbound(self.canonical, value, f"no outbound mapping to {self.remote}")


@dataclass(frozen=True)
class CommentRules:
    """Which remote comment channels import as which visibility, and where each visibility goes.

    ``inbound`` maps (channel, restricted) to a visibility, or None for "do not import";
    ``outbound`` maps a visibility to (channel, restricted), or None for "do not export"."""

    inbound: MappingProxyType
    outbound: MappingProxyType


@dataclass(frozen=True)
class Mapping:
    """The active field mapping of one connector: pure conversions the engine calls."""

    source: str                          # the file it came from
    system: str                          # servicenow | jira
    default_policy: str
    fields: tuple[FieldMapping, ...]
    comments: CommentRules
    on_create: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    digest: str = ""                     # sha256 of the file's bytes

    def rule_for(self, canonical: str) -> FieldMapping | None:
        """The rule mapping a canonical field, or None when this mapping leaves it alone."""
        for rule in self.fields:
            if rule.canonical == canonical:
                return rule
        return None

    @property
    def remote_fields_read(self) -> frozenset[str]:
        """The remote fields a connector must fetch for :meth:`to_canonical`."""
        return frozenset(rule.remote for rule in self.fields if rule.reads)

    @property
    def canonical_fields_in(self) -> frozenset[str]:
        """Canonical fields that remote changes may set."""
        return frozenset(rule.canonical for rule in self.fields if rule.reads)

    @property
    def canonical_fields_out(self) -> frozenset[str]:
        """Canonical fields whose changes are written to the remote."""
        return frozenset(rule.canonical for rule in self.fields if rule.writes)

    def policy_for(self, canonical_field: str) -> str:
        """The conflict policy for a field changed on both sides since the last sync."""
        rule = self.rule_for(canonical_field)
        return rule.policy if rule is not None else self.default_policy

    def to_canonical(self, remote_fields: MappingABC[str, Any]) -> dict[str, Any]:
        """Canonical values of the inbound (``in``/``both``) fields present in a remote record.
        A field the record lacks is left out; an unmappable value raises UnmappableValue."""
        out: dict[str, Any] = {}
        for rule in self.fields:
            if rule.reads and rule.remote in remote_fields:
                out[rule.canonical] = rule.canonical_value(remote_fields[rule.remote])
        return out

    def to_remote(self, canonical: MappingABC[str, Any], *, context: MappingABC[str, Any],
                  creating: bool) -> dict[str, Any]:
        """Remote field values for the outbound (``out``/``both``) fields present in ``canonical``.

        ``canonical`` may hold only the changed fields; templates and resolve notes look names up
        in it first, then in ``context`` (the whole incident plus ``number``, ``id``, ``url``).
        ``creating`` adds field defaults and ``on_create`` constants. When ``status`` is
        ``resolved``, the ``on_resolve`` fields are written as well."""
        values = dict(canonical)
        if creating:
            for rule in self.fields:
                if rule.writes and rule.has_default and values.get(rule.canonical) is None \
                        and context.get(rule.canonical) is None:
                    values[rule.canonical] = rule.default

        def get(name: str) -> Any:
            return values[name] if name in values else context.get(name)

        def render_lookup(name: str) -> Any:
            if name in values or name in context:
                return get(name)
            raise UnmappableValue.outbound(name, None,
                                           "a template needs it but the incident context lacks it")

        out: dict[str, Any] = {}
        if creating:
            for remote, template in self.on_create.items():
                out[remote] = template.render(render_lookup)
        for rule in self.fields:
            if rule.writes and rule.canonical in values:
                out.update(rule.remote_values(values[rule.canonical], render_lookup))
                if rule.canonical == "status" and values["status"] == "resolved":
                    for write in rule.on_resolve:
                        out[write.remote] = write.value(get, render_lookup)
        return out

    def comment_visibility(self, channel: str, restricted: bool) -> str | None:
        """The visibility an imported remote comment gets, or None: do not import it. A restricted
        Jira comment arrives on ``comment:<audience>``; rules are written for the base channel."""
        base = channel.partition(":")[0]
        return self.comments.inbound.get((base, bool(restricted)))

    def comment_channel(self, visibility: str) -> tuple[str, bool] | None:
        """Where a comment of this visibility goes: (channel, restricted), or None: do not export
        it. The channel is what ``Connector.add_comment`` takes (``comment:<role>`` restricts a
        Jira comment, so ``restricted`` is also readable from it)."""
        return self.comments.outbound.get(visibility)


# -- helpers --------------------------------------------------------------------------------------

def value_key(value: Any) -> Any:
    """How a value is looked up in a value map: scalars as their YAML text (``1`` and ``"1"`` are
    the same key, ``true`` is ``"true"``); None stays None; a list or dict is never a key."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return _UNHASHABLE


_UNHASHABLE = object()


def _is_empty(value: Any) -> bool:
    return value is None or value == ""
