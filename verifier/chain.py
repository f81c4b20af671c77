"""Check 2, chain: init → checkpoints → final, the model file, and the data consumed.

docs/verifying.md §2. Cryptographic checks over the records and blobs, plus the local model file:

``chain.init``        the init's per-tensor blob reproduces ``weights.init.model.root`` under the
                      run's digest algorithm
``chain.checkpoints`` each checkpoint's blob reproduces its root; its ``prev_checkpoint`` names the
                      previous checkpoint (the init for the first); steps increase within the run
``chain.final``       ``run.end``'s blob reproduces the final root and ``last_checkpoint`` names
                      the last checkpoint (or the init)
``chain.resume``      every ``run.resume`` restarts from a checkpoint logged before it
``chain.model``       ``--model``: the file's ``attest-tensors-v1`` digest equals the final root;
                      on a mismatch the evidence lists the tensors that differ
``chain.data_order``  every step's batch digest is SHA-256 of the sample ids the committed order
                      gives at that step (:mod:`attest.verifier.dataorder`; an honest log is
                      checked a segment at a time, a mismatch is then found step by step)
``chain.data_files``  ``--data``: the shard files the manifest lists are the files given
                      (:mod:`attest.verifier.datafiles`)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attest.bundle import paused_gc
from attest.digest import ModelDigest, digest_safetensors
from attest.errors import AttestError
from attest.verifier import datafiles
from attest.verifier.context import StepTable, VerifyContext
from attest.verifier.dataorder import DataSchedule
from attest.verifier.result import Basis, CheckResult, reporter

__all__ = ["TITLES", "check_chain"]

C = Basis.CRYPTOGRAPHIC
TITLES = {
    "chain.init": "Init weights digest",
    "chain.checkpoints": "Checkpoint chain",
    "chain.final": "Final weights digest",
    "chain.resume": "Resumes restart from logged checkpoints",
    "chain.model": "Model file matches the final digest",
    "chain.data_order": "Batches follow the committed data order",
    datafiles.CHECK_ID: datafiles.TITLE,
}


_r = reporter(TITLES, C)


def check_chain(ctx: VerifyContext) -> list[CheckResult]:
    """Run every ``chain.*`` check; never raises for a bad bundle."""
    with paused_gc():
        return _check_chain(ctx)


def _check_chain(ctx: VerifyContext) -> list[CheckResult]:
    out = []
    for fn in (_init, _checkpoints, _final, _resume, _model, _data_order, _data_files):
        try:
            out.append(fn(ctx))
        except AttestError as exc:
            cid = "chain." + fn.__name__.lstrip("_")
            out.append(_r("fail", cid, exc.message, expected=exc.expected, got=exc.got))
        except (KeyError, TypeError, ValueError) as exc:
            cid = "chain." + fn.__name__.lstrip("_")
            out.append(_r("fail", cid, f"a record lacks a field this check needs: {exc!r}"))
    return out


def _reproduces(
    ctx: VerifyContext, body: Mapping[str, Any], what: str
) -> tuple[ModelDigest, str | None]:
    """The body's blob digest, and a problem sentence when it does not reproduce the root."""
    digest = ctx.model_digest(str(body["tensors"]))
    model = body["model"]
    if model["algorithm"] != ctx.algorithm or digest.algorithm != ctx.algorithm:
        return digest, (
            f"{what} uses digest algorithm {model['algorithm']}/{digest.algorithm}, "
            f"the run declared {ctx.algorithm}"
        )
    if digest.hex != model["root"]:
        return (
            digest,
            f"{what}'s per-tensor blob has root {digest.hex}, the record says {model['root']}",
        )
    return digest, None


def _init(ctx: VerifyContext) -> CheckResult:
    body = ctx.weights_init
    digest, problem = _reproduces(ctx, body, "weights.init")
    if problem:
        return _r("fail", "chain.init", problem, expected=body["model"]["root"], got=digest.hex)
    if body["step"] != 0:
        return _r("fail", "chain.init", "the init must be step 0", expected=0, got=body["step"])
    return _r(
        "pass",
        "chain.init",
        f"{len(digest.tensors)} tensors reproduce init root {digest.hex[:16]}…",
        root=digest.hex,
        tensors=len(digest.tensors),
    )


def _checkpoints(ctx: VerifyContext) -> CheckResult:
    cid = "chain.checkpoints"
    prev = ctx.weights_init["model"]["root"]
    prev_step = 0
    total = len(ctx.step_table())
    chain = [prev]
    for body in ctx.checkpoints():
        step = body["step"]
        digest, problem = _reproduces(ctx, body, f"checkpoint at step {step}")
        if problem:
            return _r(
                "fail", cid, problem, expected=body["model"]["root"], got=digest.hex, step=step
            )
        if body["prev_checkpoint"] != prev:
            return _r(
                "fail",
                cid,
                f"checkpoint at step {step} does not name the previous one",
                expected=prev,
                got=body["prev_checkpoint"],
                step=step,
            )
        if step < prev_step or step > total:
            return _r(
                "fail",
                cid,
                f"checkpoint step {step} is out of order or past the last step",
                expected=f"{prev_step}..{total}",
                got=step,
            )
        prev, prev_step = body["model"]["root"], step
        chain.append(prev)
    n = len(ctx.checkpoints())
    return _r(
        "pass",
        cid,
        f"init → {n} checkpoints, each naming the one before and matching its per-tensor blob",
        chain=chain,
        steps=[0] + [b["step"] for b in ctx.checkpoints()],
    )


def _final(ctx: VerifyContext) -> CheckResult:
    cid = "chain.final"
    end = ctx.run_end
    if end is None:
        return _r("fail", cid, "the run has no run.end record", expected="run.end", got=None)
    digest, problem = _reproduces(ctx, end, "run.end")
    if problem:
        return _r("fail", cid, problem, expected=end["model"]["root"], got=digest.hex)
    cps = ctx.checkpoints()
    last = cps[-1]["model"]["root"] if cps else ctx.weights_init["model"]["root"]
    if end["last_checkpoint"] != last:
        return _r(
            "fail",
            cid,
            "run.end does not name the last checkpoint",
            expected=last,
            got=end["last_checkpoint"],
        )
    return _r(
        "pass",
        cid,
        f"final root {digest.hex[:16]}… follows checkpoint {last[:16]}…",
        root=digest.hex,
        tensors=len(digest.tensors),
    )


def _resume(ctx: VerifyContext) -> CheckResult:
    cid = "chain.resume"
    resumes = ctx.by_type("run.resume")
    if not resumes:
        return _r("pass", cid, "the run was never resumed", resumes=0)
    logged: dict[str, int] = {ctx.weights_init["model"]["root"]: 0}
    for r in ctx.records:
        if r.type == "weights.checkpoint":
            logged[r.body["model"]["root"]] = r.body["step"]
        elif r.type == "run.resume":
            root, step = r.body["from_checkpoint"], r.body["step"]
            if root not in logged:
                return _r(
                    "fail",
                    cid,
                    f"the resume at step {step} (seq {r.seq}) starts from "
                    "weights no earlier checkpoint logged",
                    expected=sorted(logged),
                    got=root,
                )
            if logged[root] != step:
                return _r(
                    "fail",
                    cid,
                    f"the resume at seq {r.seq} claims step {step} but its "
                    f"checkpoint is at step {logged[root]}",
                    expected=logged[root],
                    got=step,
                )
    return _r(
        "pass", cid, f"{len(resumes)} resumes, each from a logged checkpoint", resumes=len(resumes)
    )


def _model(ctx: VerifyContext) -> CheckResult:
    cid = "chain.model"
    if ctx.model_path is None:
        return _r("skip", cid, "no model file given (--model PATH)")
    final = ctx.final_digest()
    if final is None:
        return _r("fail", cid, "the run has no final digest to compare with")
    try:
        got = digest_safetensors(ctx.model_path, algorithm=final.algorithm)
    except AttestError as exc:
        return _r("fail", cid, f"cannot digest {ctx.model_path}: {exc.message}")
    if got.root == final.root:
        return _r(
            "pass",
            cid,
            f"{ctx.model_path.name} has the final root {final.hex[:16]}…",
            root=final.hex,
            path=str(ctx.model_path),
        )
    diff = final.diff(got)
    return _r(
        "fail",
        cid,
        f"{ctx.model_path.name} is not the attested final model: "
        f"{len(diff.changed)} changed, {len(diff.added)} added, {len(diff.removed)} removed tensors",
        expected=final.hex,
        got=got.hex,
        diff=diff.lines()[:50],
        path=str(ctx.model_path),
    )


def _data_order(ctx: VerifyContext) -> CheckResult:
    cid = "chain.data_order"
    table = ctx.step_table()
    if not table:
        return _r("skip", cid, "no steps logged")
    if not ctx.by_type("data.order"):
        return _r(
            "fail",
            cid,
            "the run committed no data order (no data.order record)",
            expected="data.order before the first step",
            got=None,
        )
    schedule = ctx.schedule
    if schedule.problems:
        return _r("fail", cid, schedule.problems[0], problems=list(schedule.problems))
    if not _follows_schedule(schedule, table):
        for step, batch in zip(table.step, table.batch, strict=True):
            want = schedule.batch_digest(step)
            if want is None:
                return _r(
                    "fail",
                    cid,
                    f"step {step} has no committed order (epoch ran out or "
                    "no data.order covers it)",
                    expected="a committed batch",
                    got=None,
                    step=step,
                )
            if want != batch:
                return _r(
                    "fail",
                    cid,
                    f"step {step}'s batch is not the committed one: the data "
                    "was reordered or swapped",
                    expected=want,
                    got=batch,
                    step=step,
                )
    return _r(
        "pass",
        cid,
        f"{len(table)} batches match the committed order ({len(schedule.segments)} segments)",
        steps=len(table),
        segments=len(schedule.segments),
    )


def _data_files(ctx: VerifyContext) -> CheckResult:
    return datafiles.check_data_files(ctx, _r)


def _follows_schedule(schedule: DataSchedule, table: StepTable) -> bool:
    """Whether the steps are 0…n-1 and each batch digest is the committed one: the honest case,
    decided with the digests of whole segments (:meth:`DataSchedule.batch_digests`). ``False``
    does not say which step differs; the step-by-step loop finds it and says so."""
    n = len(table)
    if table.step != tuple(range(n)):
        return False
    try:
        return schedule.batch_digests(0, n) == list(table.batch)
    except AttestError:  # an id RFC 8785 refuses: the loop raises it where it meets it
        return False
