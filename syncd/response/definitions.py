"""Response Plays and Custom Incident Actions as the response files define them.

A play is validated minimally for now (an id, a name, every other key kept as written) until the
plays work gives it its steps. An action is complete: where it shows, the request it makes, and a
body template parsed at load in the sandbox it renders in (syncd.response.actions); see
docs/actions.md.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, SecretStr

from syncd.config import PositiveDuration, Text, WebUrl
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


def _template(source: str) -> str:
    """A body template that parses and reaches for no private attribute, or a load error."""
    from syncd.response.actions import TemplateRefused, check_template
    try:
        check_template(source)
    except TemplateRefused as refused:
        raise ValueError(str(refused)) from None
    return source


BodyTemplate = Annotated[str, AfterValidator(_template)]
DEFAULT_ACTION_TIMEOUT = timedelta(seconds=16)   # PagerDuty's limit for a custom action


class Action(BaseModel):
    """A Custom Incident Action: a button on the incident that calls one configured URL.

    Header values are secrets (tokens come in through ``${VAR}``) and are shown as "***"; the
    template fills only the body, never the URL, so an action reaches the host it names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Identifier
    label: Text
    description: str = ""
    services: list[Identifier] = []
    method: Literal["POST", "GET", "PUT", "PATCH", "DELETE"] = "POST"
    url: WebUrl
    headers: dict[str, SecretStr] = {}
    body: BodyTemplate | None = None
    timeout: PositiveDuration = DEFAULT_ACTION_TIMEOUT
    confirm: bool = False

    def shows_for(self, service: str | None) -> bool:
        """Whether the action is offered on an incident of ``service`` (no list: everywhere)."""
        return not self.services or service in self.services
