"""Liveness (the process answers) and readiness (the database answers)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from attest.server.deps import StateDep

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """200 while the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "database unreachable"}})
def readyz(state: StateDep) -> Any:
    """200 when the log database answers; 503 otherwise."""
    try:
        state.store.ping()
    except Exception as exc:
        return JSONResponse(
            status_code=503,
            content={"error": f"log database unreachable: {type(exc).__name__}; check it is up"},
        )
    return {"status": "ready"}
