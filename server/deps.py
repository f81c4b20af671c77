"""Shared request dependencies: the app state, the caller, the run it names, JSON bodies.

Handlers read like prose through ``Annotated`` aliases (``state: StateDep``,
``info: ReadableRun``); each alias does its check (token, role, grant) before the handler runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from attest.canonical import strict_json_loads
from attest.log import LogSigner
from attest.server.auth import (
    ANONYMOUS,
    Principal,
    authenticate,
    bearer_token,
    hash_token,
    principal_for,
)
from attest.server.errors import PayloadTooLargeError
from attest.server.mirror import Mirror
from attest.server.schemas import RUN_ID_PATTERN
from attest.server.settings import Settings
from attest.server.storage import RunInfo, Store, unknown_run

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


def _principal(state: AppState, request: Request) -> Principal:
    if state.settings.insecure_no_auth:
        return ANONYMOUS
    return authenticate(
        state.store, request.headers.get("authorization"), request.cookies.get(COOKIE)
    )


async def get_principal(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return await run_in_threadpool(_principal, state, request)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="run id")]


def _caller_and_run(state: AppState, request: Request, run: str) -> tuple[Principal, RunInfo]:
    """Authenticate, then read the run: one trip to a worker thread and one database
    connection for both look-ups (401 comes before 404, as with separate look-ups)."""
    if state.settings.insecure_no_auth:
        return ANONYMOUS, state.store.get_run(run)
    token = bearer_token(request.headers.get("authorization"), request.cookies.get(COOKIE))
    row, info = state.store.token_and_run(hash_token(token), run)
    principal = principal_for(row)
    if info is None:
        raise unknown_run(run)
    return principal, info


async def readable_run(
    run: RunId,
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> RunInfo:
    principal, info = await run_in_threadpool(_caller_and_run, state, request, run)
    principal.require_read(info)
    return info


async def writable_run(
    run: RunId,
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> RunInfo:
    principal, info = await run_in_threadpool(_caller_and_run, state, request, run)
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
