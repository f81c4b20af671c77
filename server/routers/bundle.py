"""Bundle export: everything a verifier needs about one run, in one JSON file (DESIGN §3)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from attest.bundle import BUNDLE_MEDIA_TYPE
from attest.server.bundles import run_bundle
from attest.server.deps import ReadableRun, StateDep

__all__ = ["router"]

router = APIRouter(prefix="/v1/runs/{run}", tags=["bundle"])


@router.get(
    "/bundle",
    response_class=Response,
    responses={200: {"content": {"application/json": {}, BUNDLE_MEDIA_TYPE: {}}}},
)
async def bundle(info: ReadableRun, state: StateDep) -> Response:
    """The run's bundle as of now: records, blobs, signed checkpoints with consistency proofs,
    and the signed statement once the trainer stored it."""
    b = await run_in_threadpool(run_bundle, state.store, info)
    return Response(
        b.dump_bytes(),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{info.name}.bundle.json"'},
    )
