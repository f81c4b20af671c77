"""Log reads: latest checkpoint, entries by range, inclusion and consistency proofs (RFC 9162)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel

from attest.errors import ConfigurationError
from attest.merkle import MerkleTree
from attest.server.deps import BEARER_AUTH, ReadableRun, ReadableRunAccess, StateDep
from attest.server.schemas import ConsistencyProof, Entries, ErrorBody, InclusionProof
from attest.server.storage import RunInfo, Store

__all__ = ["MAX_ENTRIES", "router"]

router = APIRouter(prefix="/v1/runs/{run}", tags=["log"])
MAX_ENTRIES = 1000
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 422)
}
_Size = Annotated[int, Query(ge=0, le=2**63 - 1)]


@router.get(
    "/checkpoint",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}}, **_ERRORS},
)
def checkpoint(info: ReadableRun, state: StateDep) -> PlainTextResponse:
    """The latest signed checkpoint: a C2SP tlog-checkpoint signed note."""
    return PlainTextResponse(state.store.latest_checkpoint(info))


@router.get("/entries", response_model=Entries, responses=_ERRORS)
def entries(
    info: ReadableRun, state: StateDep, start: _Size = 0, end: _Size | None = None
) -> Entries:
    """Leaves ``[start, end)`` as DSSE envelope JSON (at most 1000 per call)."""
    if end is not None and end < start:
        raise ConfigurationError("start must not exceed end", expected=f"<= {end}", got=start)
    if end is not None and end - start > MAX_ENTRIES:
        raise ConfigurationError(
            f"at most {MAX_ENTRIES} entries per call; page with start/end",
            expected=f"<= {MAX_ENTRIES}",
            got=end - start,
        )
    stop = min(info.size, start + MAX_ENTRIES if end is None else end)
    leaves = state.store.entries(info, start, stop) if start < stop else []
    return Entries(
        run=info.name,
        start=start,
        end=start + len(leaves),
        entries=[json.loads(x) for x in leaves],
    )


def _check_size(info: RunInfo, size: int, what: str) -> None:
    if size > info.size:
        raise ConfigurationError(
            f"{what} {size} exceeds the log's {info.size} leaves",
            expected=f"<= {info.size}",
            got=size,
        )


async def _tree(store: Store, info: RunInfo) -> MerkleTree:
    """The run's tree: from this process's cache, else loaded on a worker thread."""
    tree = store.cached_tree(info)
    if tree is None:
        tree = await run_in_threadpool(store.tree, info)
    return tree


def _json(body: BaseModel) -> Response:
    """``body`` as the response: FastAPI would validate the model again before encoding it, which
    costs more than the proof (the route's ``response_model`` still documents the shape)."""
    return Response(body.model_dump_json(), media_type="application/json")


@router.get(
    "/proof/inclusion", response_model=InclusionProof, responses=_ERRORS, openapi_extra=BEARER_AUTH
)
async def inclusion(access: ReadableRunAccess, index: _Size, size: _Size | None = None) -> Response:
    """Audit path for leaf ``index`` in the tree of ``size`` leaves (default: the latest)."""
    info = await access.with_leaves(max(index + 1, size or 0))
    store = access.state.store
    n = info.size if size is None else size
    _check_size(info, n, "size")
    if index >= n:
        raise ConfigurationError(
            f"index {index} is not below size {n}", expected=f"< {n}", got=index
        )
    # A proof from a cached tree is microseconds of work: it runs on the event loop, and only
    # a tree or note this process does not hold yet costs a trip to a worker thread.
    tree = await _tree(store, info)
    known, note = store.cached_head_at(info, n)
    if not known:
        note = await run_in_threadpool(store.head_at, info, n)
    return _json(
        InclusionProof(
            run=info.name,
            index=index,
            size=n,
            leaf_hash=tree.leaf_hash(index).hex(),
            root=tree.root(n).hex(),
            proof=[h.hex() for h in tree.inclusion_proof(index, n)],
            checkpoint=note,
        )
    )


@router.get(
    "/proof/consistency",
    response_model=ConsistencyProof,
    responses=_ERRORS,
    openapi_extra=BEARER_AUTH,
)
async def consistency(access: ReadableRunAccess, old: _Size, new: _Size | None = None) -> Response:
    """Proof that the tree of ``new`` leaves (default: the latest) extends that of ``old``."""
    info = await access.with_leaves(max(old, new or 0))
    store = access.state.store
    n = info.size if new is None else new
    _check_size(info, n, "new")
    if old == 0 or old > n:
        raise ConfigurationError(
            "old must be in [1, new]: a proof from size 0 proves nothing",
            expected=f"1..{n}",
            got=old,
        )
    tree = await _tree(store, info)
    return _json(
        ConsistencyProof(
            run=info.name,
            old=old,
            new=n,
            old_root=tree.root(old).hex(),
            new_root=tree.root(n).hex(),
            proof=[h.hex() for h in tree.consistency_proof(old, n)],
        )
    )
