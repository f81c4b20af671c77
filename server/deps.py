"""Shared request dependencies: the app state, the caller, the run it names, JSON bodies.

Handlers read like prose through ``Annotated`` aliases (``state: StateDep``,
``info: ReadableRun``); each alias does its check (token, role, grant) before the handler runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from attest.canonical import strict_json_loads
from attest.log import LogSigner
from attest.server.auth import ANONYMOUS, Principal, authenticate
from attest.server.errors import PayloadTooLargeError
from attest.server.mirror import Mirror
from attest.server.schemas import RUN_ID_PATTERN
from attest.server.settings import Settings
from attest.server.storage import RunInfo, Store

__all__ = [
    "COOKIE",
    "AppState",
    "PrincipalDep",
    "ReadableRun",
    "RunId",
    "StateDep",
    "WritableRun",
    "read_json",
]

COOKIE = "attest_token"


@dataclass
class AppState:
    """What every request needs: settings, storage, the tree-head signer, the mirror."""

    settings: Settings
    store: Store
    signer: LogSigner
    mirror: Mirror | None
    mlflow_url: str | None


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.attest
    return state


StateDep = Annotated[AppState, Depends(get_state)]
_bearer = HTTPBearer(auto_error=False, description="token from `attest token create`")


def get_principal(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if state.settings.insecure_no_auth:
        return ANONYMOUS
    return authenticate(
        state.store, request.headers.get("authorization"), request.cookies.get(COOKIE)
    )


PrincipalDep = Annotated[Principal, Depends(get_principal)]
RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="run id")]


def readable_run(run: RunId, state: StateDep, principal: PrincipalDep) -> RunInfo:
    info = state.store.get_run(run)
    principal.require_read(info)
    return info


def writable_run(run: RunId, state: StateDep, principal: PrincipalDep) -> RunInfo:
    info = state.store.get_run(run)
    principal.require_write(info)
    return info


ReadableRun = Annotated[RunInfo, Depends(readable_run)]
WritableRun = Annotated[RunInfo, Depends(writable_run)]


async def read_json(request: Request, *, limit: int, what: str) -> Any:
    """The request body parsed as strict JSON (no duplicate keys, no NaN), at most ``limit``
    bytes: 413 past it, 400 for anything that is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(
            f"{what} is too large; send smaller batches", expected=f"<= {limit}", got=int(declared)
        )
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLargeError(
                f"{what} is too large; send smaller batches", expected=f"<= {limit}", got=total
            )
        chunks.append(chunk)
    return strict_json_loads(b"".join(chunks), what=what)
