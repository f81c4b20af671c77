"""Verdicts: a verifier posts what ``attest verify --json`` said about a run; readers list them.

A posted verdict is its poster's claim, kept exactly as posted: the server checks that it is a
verdict document about this run (and, once the run has ended, about this run's final model) but
never re-judges it — anyone can, by running ``attest verify`` on the same bundle. The latest one
becomes the MLflow run's ``attest.verdict`` tags and is shown, check by check, on the run page.
Only readers (verifiers, regulators) granted the run and admins may post; trainers may not judge
their own runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from attest.errors import FormatError
from attest.records import SignedRecord
from attest.server.deps import (
    AppState,
    PrincipalDep,
    ReadableRun,
    StateDep,
    json_body,
    read_json,
)
from attest.server.errors import ConflictError
from attest.server.schemas import ErrorBody, PostedVerdict
from attest.server.storage import RunInfo

__all__ = ["VERDICT_FORMAT", "check_verdict", "router"]

router = APIRouter(prefix="/v1/runs", tags=["verdicts"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413)
}
VERDICT_FORMAT = "attest-verdict/v1"
_OUTCOMES = ("verified", "tampered", "could-not-check", "not-from-scratch")


def _final_root(state: AppState, info: RunInfo) -> str | None:
    """The final model root the log's ``run.end`` names, or ``None`` before the run ends."""
    if info.size == 0:
        return None
    [leaf] = state.store.entries(info, info.size - 1, info.size)
    record = SignedRecord.from_leaf(leaf).record
    return str(record.body["model"]["root"]) if record.type == "run.end" else None


def check_verdict(doc: object, run: str, final_root: str | None) -> Mapping[str, Any]:
    """``doc`` if it is an ``attest-verdict/v1`` document about ``run`` (and its final model);
    :class:`FormatError` (400) or :class:`ConflictError` (409) naming what is wrong."""
    if not isinstance(doc, dict) or doc.get("format") != VERDICT_FORMAT:
        raise FormatError(
            "a verdict is the JSON `attest verify --json` prints",
            expected=f'{{"format": "{VERDICT_FORMAT}", ...}}',
            got=doc.get("format") if isinstance(doc, dict) else type(doc).__name__,
        )
    if doc.get("run") != run:
        raise FormatError(
            "the verdict is about another run; post it to that run",
            expected=run,
            got=doc.get("run"),
        )
    if doc.get("outcome") not in _OUTCOMES:
        raise FormatError(
            "verdict.outcome is unknown", expected=list(_OUTCOMES), got=doc.get("outcome")
        )
    policy, summary, checks = doc.get("policy"), doc.get("summary"), doc.get("checks")
    if not isinstance(policy, dict) or not isinstance(policy.get("name"), str):
        raise FormatError("verdict.policy must be an object with the policy's name")
    if not isinstance(summary, str):
        raise FormatError("verdict.summary must be a string")
    if not isinstance(checks, list) or not all(
        isinstance(c, dict) and isinstance(c.get("id"), str) and isinstance(c.get("status"), str)
        for c in checks
    ):
        raise FormatError("verdict.checks must be a list of {id, status, ...} objects")
    facts = doc.get("facts")
    judged = facts.get("final_root") if isinstance(facts, dict) else None
    if doc["outcome"] == "verified" and not isinstance(judged, str):
        raise FormatError(
            "a verified verdict must name the final root it judged (facts.final_root)"
        )
    if final_root is not None and judged is not None and judged != final_root:
        raise ConflictError(
            "the verdict judged another final model than this run's log names; verify the bundle"
            " `attest export` downloads now",
            expected=final_root,
            got=judged,
        )
    return doc


@router.post(
    "/{run}/verdicts",
    status_code=201,
    response_model=PostedVerdict,
    responses=_ERRORS,
    openapi_extra=json_body({"type": "object"}),
)
async def post_verdict(
    info: ReadableRun, state: StateDep, principal: PrincipalDep, request: Request
) -> PostedVerdict:
    """Keep the verdict ``attest verify --json`` printed for this run (readers and admins)."""
    principal.require_verdict(info)
    doc = await read_json(request, limit=state.settings.max_body_bytes, what="verdict")
    final_root = await run_in_threadpool(_final_root, state, info)
    verdict = check_verdict(doc, info.name, final_root)
    vid = await run_in_threadpool(
        state.store.add_verdict, info, posted_by=principal.name, document=verdict
    )
    if state.mirror is not None:
        state.mirror.notify(info.name)
    return PostedVerdict(
        id=vid,
        run=info.name,
        posted_by=principal.name,
        size=info.size,
        outcome=str(verdict["outcome"]),
        policy=str(verdict["policy"]["name"]),
    )


@router.get("/{run}/verdicts", responses=_ERRORS)
def list_verdicts(info: ReadableRun, state: StateDep) -> list[dict[str, Any]]:
    """The verdicts posted on this run, newest first, each with who posted it, when (Unix
    seconds), the tree size then, and the document as posted."""
    return state.store.verdicts(info)
