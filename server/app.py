"""The log server's ASGI app (DESIGN §5 "One process").

:func:`create_app` builds an outer FastAPI app that carries the attest API (``/v1/...``, health,
HTML pages, ``/openapi.json``) and then mounts MLflow's own server app at ``/``, so the same
process is the MLflow UI and REST API for the mirrored runs. Order matters: MLflow's app mounts
its Flask app at ``/`` as a catch-all, so every attest route is registered *before* the mount.

MLflow's paths are guarded too when auth is on: any valid token (or the ``/login`` cookie) may
read; only admins may write through MLflow's REST API (the mirror writes in-process). The UI's
static files stay public.

Errors: every :class:`~attest.errors.AttestError` becomes its JSON error body with the status of
:func:`attest.server.errors.status_for`; request validation errors are 422 in the same shape;
anything else is logged and answered 500 without details.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from attest.errors import AttestError
from attest.keys import load_server_key, save_server_key
from attest.log import LogSigner
from attest.server.auth import authenticate
from attest.server.deps import COOKIE, AppState
from attest.server.errors import ForbiddenError, error_body, status_for
from attest.server.mirror import Mirror
from attest.server.routers import (
    bundle,
    health,
    keys,
    proofs,
    report,
    runs,
    tlog,
    tokens,
    verdicts,
)
from attest.server.settings import Settings, get_settings
from attest.server.storage import Store
from attest.server.verifying import shared_checker

__all__ = ["create_app"]

log = logging.getLogger("attest.server")

_ATTEST_PATHS = re.compile(r"^/(v1/|runs(/|$)|login$|healthz$|readyz$|openapi\.json$|docs|redoc)")
_PUBLIC_MLFLOW = re.compile(r"^/($|static-files/|favicon\.ico$)")
_MLFLOW_READ_POST = re.compile(r"(/search$|/search-[a-z-]+$|/graphql$|/get-history)")


def _server_signer(settings: Settings) -> LogSigner:
    path = settings.resolved_server_key()
    if not path.exists():
        save_server_key(ed25519.Ed25519PrivateKey.generate(), path)
        log.info("created server key %s", path)
    return LogSigner(settings.log_name, load_server_key(path))


def _configure_embedded_mlflow(settings: Settings) -> None:
    """Point MLflow's server app at this data folder (read by mlflow.server on import and on its
    first request; the names are those ``mlflow server`` sets for its workers)."""
    uri = settings.resolved_mlflow_uri()
    os.environ["_MLFLOW_SERVER_FILE_STORE"] = uri
    os.environ["_MLFLOW_SERVER_REGISTRY_STORE"] = uri
    os.environ["_MLFLOW_SERVER_ARTIFACT_ROOT"] = "mlflow-artifacts:/"
    os.environ["_MLFLOW_SERVER_SERVE_ARTIFACTS"] = "true"
    os.environ["_MLFLOW_SERVER_ARTIFACT_DESTINATION"] = settings.resolved_artifacts_destination()
    os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"


class _MlflowGuard:
    """Bearer/cookie auth in front of the mounted MLflow app (attest routes pass through)."""

    def __init__(self, app: ASGIApp, store: Store) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if _ATTEST_PATHS.match(path) or (method == "GET" and _PUBLIC_MLFLOW.match(path)):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            principal = await anyio.to_thread.run_sync(
                authenticate,
                self.store,
                request.headers.get("authorization"),
                request.cookies.get(COOKIE),
            )
            reading = method in ("GET", "HEAD", "OPTIONS") or (
                method == "POST" and _MLFLOW_READ_POST.search(path) is not None
            )
            if principal.role != "admin" and (principal.role != "reader" or principal.runs):
                # MLflow lists and serves every run; only tokens that may read all of them
                # may see it, so a run grant cannot be side-stepped through MLflow's API.
                raise ForbiddenError(
                    f"token {principal.name!r} ({principal.role}) may read only some runs, and "
                    "the MLflow UI shows every run; use the /v1 API, or ask an admin for an "
                    "unrestricted reader token"
                )
            if not reading:
                principal.require_admin()
        except AttestError as exc:
            await JSONResponse(error_body(exc), status_code=status_for(exc))(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The outer app: attest API first, then (embedded mode) MLflow's server app at ``/``."""
    settings = settings or get_settings()
    settings.data.mkdir(parents=True, exist_ok=True)
    signer = _server_signer(settings)
    store = Store(
        settings.resolved_database_url(),
        signer=signer,
        checker=shared_checker(settings.resolved_verify_workers()),
    )
    store.create_schema()
    store.bind_server_key(signer.verifier.to_vkey())
    mount = settings.mlflow and not settings.mlflow_is_remote
    mirror: Mirror | None = None
    mlflow_url: str | None = None
    if settings.mlflow:
        if mount:
            _configure_embedded_mlflow(settings)
            mlflow_url = "/"
        else:
            mlflow_url = settings.mlflow_tracking_uri
        mirror = Mirror(
            store,
            tracking_uri=settings.resolved_mlflow_uri(),
            artifacts_destination=None if not mount else settings.resolved_artifacts_destination(),
        )
    if settings.insecure_no_auth:
        log.warning(
            "AUTHENTICATION IS OFF (--insecure-no-auth): anyone who can reach this server is an "
            "admin. Use this only for a local demo."
        )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(store.checker.start)
        if mirror is not None:
            mirror.start()
        yield
        if mirror is not None:
            mirror.stop()
        await store.close_async()
        store.dispose()

    app = FastAPI(
        title="attest log server",
        version="1",
        description="Append-only, countersigned training-lineage logs (one Merkle log per run).",
        lifespan=lifespan,
    )
    app.state.attest = AppState(settings, store, signer, mirror, mlflow_url)
    _install_error_handlers(app)
    # Proofs first: FastAPI tries the routers in order, at several µs per route passed over,
    # and proof requests are the hot path (no two routers' paths overlap, so order is free).
    for module in (proofs, health, keys, runs, verdicts, tlog, bundle, tokens, report):
        app.include_router(module.router)
    if mount:
        from mlflow.server.fastapi_app import app as mlflow_app

        app.mount("/", mlflow_app)
        if not settings.insecure_no_auth:
            app.add_middleware(_MlflowGuard, store=store)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AttestError)
    async def _attest_error(_request: Request, exc: AttestError) -> JSONResponse:
        return JSONResponse(error_body(exc), status_code=status_for(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()[:5]
        )
        return JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        body: dict[str, Any] = {"error": "internal server error; see the server log"}
        return JSONResponse(body, status_code=500)
