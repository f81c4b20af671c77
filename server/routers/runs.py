"""Runs: create, list, summarise; append records; store blobs and the signed statement."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from attest.errors import ChainError, FormatError
from attest.keys import TrainerPublicKey
from attest.log import MAX_BATCH
from attest.server.deps import (
    AppState,
    PrincipalDep,
    ReadableRun,
    StateDep,
    WritableRun,
    json_body,
    read_json,
)
from attest.server.errors import error_body
from attest.server.schemas import (
    DIGEST_PATTERN,
    CreateRun,
    ErrorBody,
    ReceiptOut,
    RunSummary,
    Stored,
)
from attest.server.storage import RunInfo
from attest.statement import open_statement

__all__ = ["router", "summary"]

router = APIRouter(prefix="/v1/runs", tags=["runs"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 422)
}
_ENVELOPE_SCHEMA = {
    "type": "object",
    "required": ["payload", "payloadType", "signatures"],
    "properties": {
        "payload": {"type": "string", "contentEncoding": "base64"},
        "payloadType": {"type": "string"},
        "signatures": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"keyid": {"type": "string"}, "sig": {"type": "string"}},
            },
        },
    },
}


def summary(state: AppState, info: RunInfo) -> RunSummary:
    base = f"/v1/runs/{info.name}"
    mlflow: dict[str, Any] | None = None
    links = {
        "bundle": f"{base}/bundle",
        "checkpoint": f"{base}/checkpoint",
        "report": f"/runs/{info.name}",
    }
    if state.mirror is not None:
        run_id, mirrored, _ = state.store.mirror_state(info)
        mlflow = {"run_id": run_id, "mirrored_size": mirrored}
        if run_id and state.mlflow_url is not None:
            exp = state.mirror.experiment_id or "0"
            links["mlflow"] = f"{state.mlflow_url.rstrip('/')}/#/experiments/{exp}/runs/{run_id}"
    return RunSummary(
        run=info.name,
        owner=info.owner,
        trainer_key=info.key.to_pem(),
        trainer_key_id=info.key.key_id,
        meta=dict(info.meta),
        size=info.size,
        root=info.root.hex(),
        created_at=info.created_at,
        origin=state.signer.origin(info.name),
        checkpoint=state.store.latest_checkpoint(info),
        statement=state.store.statement(info) is not None,
        links=links,
        mlflow=mlflow,
    )


@router.post("", status_code=201, response_model=RunSummary, responses=_ERRORS)
def create_run(
    body: CreateRun, state: StateDep, principal: PrincipalDep, response: Response
) -> RunSummary:
    """Register a run and its trainer's public key (201; 200 if it exists with the same key)."""
    principal.require_create(body.run)
    key = TrainerPublicKey.from_pem(body.trainer_key)
    info, created = state.store.create_run(body.run, key, body.meta, owner=principal.name)
    if not created:
        principal.require_write(info)
        response.status_code = 200
    elif state.mirror is not None:
        state.mirror.notify(info.name)
    return summary(state, info)


@router.get("", response_model=list[RunSummary], responses=_ERRORS)
def list_runs(state: StateDep, principal: PrincipalDep) -> list[RunSummary]:
    """Every run the caller may read."""
    return [summary(state, i) for i in state.store.list_runs() if principal.can_read(i)]


@router.get("/{run}", response_model=RunSummary, responses=_ERRORS)
def get_run(info: ReadableRun, state: StateDep) -> RunSummary:
    """A run's registration, size, root and latest signed checkpoint."""
    return summary(state, info)


@router.post(
    "/{run}/records",
    response_model=ReceiptOut,
    responses=_ERRORS,
    openapi_extra=json_body(
        {
            "type": "object",
            "required": ["records"],
            "properties": {
                "records": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_BATCH,
                    "items": _ENVELOPE_SCHEMA,
                }
            },
        }
    ),
)
async def append_records(
    info: WritableRun, state: StateDep, request: Request
) -> ReceiptOut | JSONResponse:
    """Append a batch of trainer-signed records in one transaction; the receipt carries the
    signed checkpoint covering them. A chain break answers 409 with ``next_seq``/``prev``."""
    body = await read_json(request, limit=state.settings.max_body_bytes, what="request body")
    if not isinstance(body, dict) or set(body) != {"records"}:
        raise FormatError('body must be {"records": [<DSSE envelope>, ...]}')
    records = body["records"]
    if not isinstance(records, list):
        raise FormatError("'records' must be a list of DSSE envelopes")
    try:
        receipt = await run_in_threadpool(state.store.append, info, records)
    except ChainError as exc:
        now = await run_in_threadpool(state.store.get_run, info.name)
        return JSONResponse(
            status_code=409,
            content=error_body(exc, next_seq=now.size, prev=now.prev),
        )
    if state.mirror is not None:
        state.mirror.notify(info.name)
    return ReceiptOut(**receipt.to_json())


@router.put(
    "/{run}/blobs/{digest}",
    response_model=Stored,
    responses=_ERRORS,
    openapi_extra=json_body({}),
)
async def put_blob(
    info: WritableRun, digest: str, state: StateDep, request: Request, response: Response
) -> Stored:
    """Store a JSON document named by ``sha256:<hex of its RFC 8785 bytes>`` (201; 200 if held)."""
    if not re.fullmatch(DIGEST_PATTERN, digest):
        raise FormatError(
            "blob name must be 'sha256:' and 64 lowercase hex digits", got=digest[:80]
        )
    doc = await read_json(request, limit=state.settings.max_body_bytes, what="blob")
    stored = await run_in_threadpool(state.store.put_blob, info, digest, doc)
    response.status_code = 201 if stored else 200
    return Stored(run=info.name, name=digest, stored=stored)


@router.put(
    "/{run}/statement",
    response_model=Stored,
    responses=_ERRORS,
    openapi_extra=json_body({"type": "object"}),
)
async def put_statement(
    info: WritableRun, state: StateDep, request: Request, response: Response
) -> Stored:
    """Store the trainer-signed lineage statement (a Sigstore bundle v0.3 whose DSSE signature
    must verify under the run's trainer key)."""
    doc = await read_json(request, limit=state.settings.max_body_bytes, what="statement")
    open_statement(doc, info.key)
    stored = await run_in_threadpool(state.store.put_statement, info, doc)
    if state.mirror is not None:
        state.mirror.notify(info.name, bundle=True)
    response.status_code = 201 if stored else 200
    return Stored(run=info.name, name="statement", stored=stored)
