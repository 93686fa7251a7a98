"""The canonical incident fields and their allowed values: the one place that defines them.

Mappings, the store, the API and the CLI all speak these names; custom fields are ``custom.<name>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from syncd.store.errors import StoreError

INCIDENT_STATUSES = ("triggered", "acknowledged", "resolved")
PRIORITIES = ("P1", "P2", "P3", "P4", "P5")
URGENCIES = ("high", "low")
VISIBILITIES = ("internal", "public")
# Canonical fields that live in their own columns; anything under "custom." goes to JSON.
COLUMN_FIELDS = ("title", "description", "status", "priority", "urgency", "service", "group",
                 "assignee", "resolution")
CUSTOM_PREFIX = "custom."
ALLOWED_VALUES = {"status": INCIDENT_STATUSES, "priority": PRIORITIES, "urgency": URGENCIES}


@dataclass(frozen=True)
class CanonicalField:
    """What the store holds for a field: ``choices`` for enumerations, ``nullable`` for optional."""

    name: str
    nullable: bool
    choices: tuple[str, ...] | None = None
    text: bool = True          # a string field (custom fields hold any JSON value)


CANONICAL_FIELDS: dict[str, CanonicalField] = {f.name: f for f in (
    CanonicalField("title", nullable=False),
    CanonicalField("description", nullable=False),
    CanonicalField("status", nullable=False, choices=INCIDENT_STATUSES),
    CanonicalField("priority", nullable=True, choices=PRIORITIES),
    CanonicalField("urgency", nullable=True, choices=URGENCIES),
    CanonicalField("service", nullable=True),
    CanonicalField("group", nullable=True),
    CanonicalField("assignee", nullable=True),
    CanonicalField("resolution", nullable=True),
)}
assert tuple(CANONICAL_FIELDS) == COLUMN_FIELDS


def canonical_field(name: str) -> CanonicalField | None:
    """The definition of a canonical field name, including ``custom.<name>``; None if unknown."""
    if name in CANONICAL_FIELDS:
        return CANONICAL_FIELDS[name]
    suffix = name[len(CUSTOM_PREFIX):] if name.startswith(CUSTOM_PREFIX) else ""
    if suffix.isidentifier():
        return CanonicalField(name, nullable=True, text=False)
    return None


class InvalidField(StoreError):
    pass


def validate_fields(fields: Mapping[str, Any]) -> None:
    """Refuse unknown canonical fields and values outside their sets, naming the field."""
    for name, value in fields.items():
        if name.startswith(CUSTOM_PREFIX):
            if not name[len(CUSTOM_PREFIX):]:
                raise InvalidField("custom field needs a name after 'custom.'")
            continue
        if name not in COLUMN_FIELDS:
            raise InvalidField(f"unknown incident field {name!r}; known: {', '.join(COLUMN_FIELDS)}, custom.<name>")
        if name == "title" and not (isinstance(value, str) and value.strip()):
            raise InvalidField("title must be a non-empty string")
        allowed = ALLOWED_VALUES.get(name)
        if allowed and value is not None and value not in allowed:
            raise InvalidField(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    if "status" in fields and fields["status"] is None:
        raise InvalidField("status cannot be empty")


def incident_fields(incident: Any) -> dict[str, Any]:
    """The incident's canonical field values, custom fields flattened as custom.<name>."""
    values = {name: getattr(incident, name) for name in COLUMN_FIELDS}
    values.update({f"{CUSTOM_PREFIX}{k}": v for k, v in (incident.custom or {}).items()})
    return values
