"""Response Plays and Custom Incident Actions as the response files define them.

Validated minimally for now: an id (unique across all files), a name, and every other key kept
as written. The plays issue gives them their real shape (steps, conditions, the action's
request); until then the response files can already hold them and ``syncd config check``
accepts them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from syncd.config import Text
from syncd.oncall.definitions import Identifier
from syncd.yamlsource import redact_url


class _Kept(BaseModel):
    """Keys beyond the known ones are kept as given, for the plays issue to define."""

    model_config = ConfigDict(frozen=True, extra="allow")

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if isinstance(value, str) else value


class Play(_Kept):
    """A Response Play: steps run together on an incident (subscribers, a status update, ...)."""

    id: Identifier
    name: Text | None = None


class Action(_Kept):
    """A Custom Incident Action: a button in the console that calls out (a webhook, a runbook)."""

    id: Identifier
    label: Text | None = None
