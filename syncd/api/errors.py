"""Store refusals as HTTP answers, with the store's own words."""

from __future__ import annotations

from typing import Any, Callable

from fastapi import HTTPException

from syncd.incidents import service as incident_service


def refusals_as_http(action: Callable[[], Any]) -> Any:
    """Run ``action``; NotFound is 404, a version conflict or a bad transition 409, any other
    store refusal 400."""
    try:
        return action()
    except incident_service.NotFound as error:
        raise HTTPException(404, str(error)) from None
    except (incident_service.VersionConflict, incident_service.InvalidTransition) as error:
        raise HTTPException(409, str(error)) from None
    except incident_service.StoreError as error:
        raise HTTPException(400, str(error)) from None
