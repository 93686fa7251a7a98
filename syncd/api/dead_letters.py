"""Dead letters of both directions: list and retry (operators)."""

from __future__ import annotations

from typing import Any, Callable

from fastapi import APIRouter, Depends

from syncd.api.errors import refusals_as_http
from syncd.engine import dead_letters
from syncd.engine.sync_engine import SyncEngine
from syncd.store.db import transaction


def dead_letter_router(engine: SyncEngine, actor: Callable[..., str]) -> APIRouter:
    router = APIRouter(prefix="/api/v1/dead-letters", tags=["operations"],
                       dependencies=[Depends(actor)])

    @router.get("")
    def list_dead_letters(connector: str | None = None) -> dict[str, Any]:
        with transaction(engine.sessions, readonly=True) as session:
            return {"dead_letters": dead_letters.list_dead_letters(session=session,
                                                                   connector=connector)}

    @router.post("/{dead_letter_id}/retry")
    def retry_dead_letter(dead_letter_id: str) -> dict[str, Any]:
        with transaction(engine.sessions) as session:
            result = refusals_as_http(lambda: dead_letters.retry(
                session=session, dead_letter_id=dead_letter_id, now=engine.clock.now()))
        engine.wake()
        return result

    return router
