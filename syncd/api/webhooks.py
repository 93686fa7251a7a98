"""Webhooks from ServiceNow and Jira: verify, then queue hints (events are hints, invariant 7), so
they answer fast and never trust a payload's values."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from syncd.connectors.base import WebhookRejected
from syncd.engine.sync_engine import SyncEngine


class DeliveryDeduper:
    """Remembers recent webhook delivery ids (Jira retries a delivery with the same identifier)."""

    def __init__(self, size: int = 10_000):
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str) -> bool:
        with self._lock:
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = None
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
            return True


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refused with 413 as soon as it grows past ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(413, f"body larger than {max_bytes} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise HTTPException(413, f"body larger than {max_bytes} bytes")
    return body


def webhook_router(engine: SyncEngine, max_body_bytes: int) -> APIRouter:
    router = APIRouter(tags=["webhooks"])
    deduper = DeliveryDeduper()

    @router.post("/webhooks/{connector}", status_code=202)
    async def webhook(connector: str, request: Request) -> dict[str, Any]:
        runtime = engine.runtimes.get(connector)
        if runtime is None:
            raise HTTPException(404, f"no connector named {connector!r}")
        body = await read_body(request, max_body_bytes)
        try:
            remote_ids = runtime.connector.parse_webhook(dict(request.headers), body)
        except WebhookRejected as rejected:
            raise HTTPException(rejected.status, rejected.reason) from None
        delivery = request.headers.get("x-atlassian-webhook-identifier")
        if delivery and not deduper.first_time(f"{connector}:{delivery}"):
            return {"accepted": 0, "duplicate": True}
        for remote_id in remote_ids:
            engine.hint(connector, remote_id)
        return {"accepted": len(remote_ids)}

    return router
