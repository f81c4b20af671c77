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
    "BEARER_AUTH",
    "COOKIE",
    "AppState",
    "PrincipalDep",
    "ReadableRun",
    "ReadableRunAccess",
    "RunAccess",
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


async def _caller_and_run(
    state: AppState, request: Request, run: str, *, recent: bool = False
) -> tuple[Principal, RunInfo]:
    """Authenticate, then read the run: one statement reads both rows (401 comes before 404,
    as with separate look-ups), without a worker thread where the store can avoid one.
    ``recent``: see :meth:`Store.token_and_run_async`."""
    if state.settings.insecure_no_auth:
        return ANONYMOUS, await run_in_threadpool(state.store.get_run, run)
    token = bearer_token(request.headers.get("authorization"), request.cookies.get(COOKIE))
    row, info = await state.store.token_and_run_async(hash_token(token), run, recent=recent)
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
    principal, info = await _caller_and_run(state, request, run)
    principal.require_read(info)
    return info


async def writable_run(
    run: RunId,
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> RunInfo:
    principal, info = await _caller_and_run(state, request, run)
    principal.require_write(info)
    return info


ReadableRun = Annotated[RunInfo, Depends(readable_run)]
WritableRun = Annotated[RunInfo, Depends(writable_run)]


@dataclass(frozen=True)
class RunAccess:
    """A run the caller may read, with the app state that serves it.

    ``info`` may be a read up to :data:`~attest.server.storage.RECENT_READ_SECONDS` old (on
    PostgreSQL): a proof against it is a proof against a signed head that exists, and the
    response names its size. :meth:`with_leaves` reads again when the request needs more.
    """

    state: AppState
    info: RunInfo
    request: Request

    async def with_leaves(self, leaves: int) -> RunInfo:
        """The run, read again if the copy in hand has fewer than ``leaves`` leaves: an index
        or size that another replica has just appended is never refused as out of range."""
        if leaves <= self.info.size:
            return self.info
        principal, info = await _caller_and_run(self.state, self.request, self.info.name)
        principal.require_read(info)
        return info


async def readable_run_access(run: RunId, request: Request) -> RunAccess:
    """:data:`ReadableRun` and :data:`StateDep` as one dependency with no sub-dependencies,
    reading the token and run as recently read where the store allows (PostgreSQL).

    FastAPI spends about 30 µs resolving each dependency of a request; on the proof routes,
    where a cached proof costs less than that, ``ReadableRun`` plus ``StateDep`` (four
    dependencies, counting the bearer scheme) was a fifth of the request. Routes using this
    alias declare the bearer scheme with ``openapi_extra=BEARER_AUTH`` instead."""
    state: AppState = request.app.state.attest
    principal, info = await _caller_and_run(state, request, run, recent=True)
    principal.require_read(info)
    return RunAccess(state, info, request)


ReadableRunAccess = Annotated[RunAccess, Depends(readable_run_access)]
BEARER_AUTH: dict[str, Any] = {"security": [{"HTTPBearer": []}]}
"""The OpenAPI security entry ``Depends(_bearer)`` would add to a route."""


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` declaring a route's required JSON body, for routes that read the body
    themselves with :func:`read_json` (so FastAPI cannot see it)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


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
