"""Health and metrics: what probes and Prometheus read. No credentials: they say nothing secret."""

from __future__ import annotations

from typing import Any, Callable

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from syncd.metrics import REGISTRY


def health_router(readiness: Callable[[], dict[str, Any]]) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    def readyz() -> JSONResponse:
        report = readiness()
        return JSONResponse(report, status_code=200 if report.get("ready") else 503)

    @router.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router
