"""Check 1, integrity: the bundle is the untampered log its trainer signed and its server sealed.

docs/verifying.md §1. Every check here is cryptographic (``Basis.CRYPTOGRAPHIC``) and needs only
the bundle and the policy's keys:

``integrity.structure``   one run; ``run.start`` first, one ``weights.init``, ``run.end`` last (an
                          earlier ``run.end`` only directly before the ``run.resume`` that
                          extended the finished run)
``integrity.signatures``  every record is a DSSE envelope signed by the policy's trainer key
``integrity.seq``         record *i* has ``seq`` *i* (no gap, repeat or reordering)
``integrity.hash_chain``  each ``prev`` is the SHA-256 of the previous record (records.py)
``integrity.steps``       ``train.steps`` cover steps 0…N-1 exactly once, in order
``integrity.checkpoints`` every tree head is a C2SP checkpoint signed (and timestamped) by the
                          policy's server key for this bundle's origin, sizes increasing
``integrity.merkle_root`` the RFC 6962 root recomputed from the records equals the last tree head,
                          whose size is the record count
``integrity.consistency`` each tree head's root is recomputed from the records and an RFC 9162
                          consistency proof links each pair of successive heads (a fork — two
                          heads of one size with different roots — fails here)
``integrity.earlier_checkpoints`` tree heads the *verifier* fetched before (``--checkpoint``) have
                          the root of the records' prefix of their size: the log shown today
                          continues the one shown then (skipped when none is given)
``integrity.statement``   the lineage statement verifies under the trainer key, for this run
``integrity.statement_binding`` the statement names this log (its checkpoint covers every record,
                          same root) and these records (final and init roots, data manifest,
                          components, checkpoints, loss curve)

The four tree-head checks live in :mod:`attest.verifier.heads` and the signature check (with
its modes) in :mod:`attest.verifier.signatures`; this module builds the tree they share and runs
them with the rest.

Speed (bench/verify.py). The record digest is SHA-256 of the envelope payload — the payload *is*
the record's RFC 8785 bytes, enforced when the bundle is parsed — and the log leaves are the
bytes the parser already built, so the chain and the Merkle tree are recomputed with hashlib
alone, without re-canonicalising. The per-record checks (seq, hash chain, key IDs, steps)
compare whole columns with C-level ``map``; only when a column differs does the
record-by-record loop run, to name the first break. ECDSA P-256 verification dominates (~0.1 ms
a signature).
"""

from __future__ import annotations

import hashlib
import itertools
import operator
from typing import Any

from attest.bundle import paused_gc
from attest.errors import AttestError
from attest.merkle import LEAF_PREFIX, SHA256, MerkleTree
from attest.note import open_checkpoint
from attest.records import SignedRecord
from attest.statement import LineageStatement, loss_curve_digest, open_statement
from attest.verifier.context import VerifyContext
from attest.verifier.heads import (
    HEAD_TITLES,
    Log,
    check_consistency,
    check_earlier_checkpoints,
    check_heads,
    check_merkle_root,
)
from attest.verifier.result import Basis, CheckResult, Status, reporter
from attest.verifier.signatures import SIGNATURE_TITLES, check_signatures

__all__ = ["TITLES", "check_integrity", "leaf_bytes", "record_digest"]

C = Basis.CRYPTOGRAPHIC
TITLES = {
    "integrity.structure": "Bundle structure",
    "integrity.seq": "Record sequence numbers",
    "integrity.hash_chain": "Record hash chain",
    "integrity.steps": "Step continuity",
    "integrity.statement": "Trainer-signed lineage statement",
    "integrity.statement_binding": "Statement bound to this log and its records",
    **HEAD_TITLES,
    **SIGNATURE_TITLES,
}


_SHA256_PREFIX = "sha256:"
_HEX = type(hashlib.sha256()).hexdigest
_DIGEST = type(hashlib.sha256()).digest
_RUN = operator.attrgetter("run")
_TYPE = operator.attrgetter("type")
_SEQ = operator.attrgetter("seq")
_PREV = operator.attrgetter("record.prev")
_PAYLOAD = operator.attrgetter("envelope.payload")


_r = reporter(TITLES, C)


def record_digest(signed: SignedRecord) -> str:
    """``sha256:`` of the record's canonical bytes (the envelope payload is exactly those)."""
    return "sha256:" + hashlib.sha256(signed.envelope.payload).hexdigest()


def leaf_bytes(signed: SignedRecord) -> bytes:
    """The log leaf (RFC 8785 of the envelope JSON): :meth:`SignedRecord.leaf_data`, which the
    bundle parser already built (and size-checked) for every record."""
    return signed.leaf_data()


def check_integrity(ctx: VerifyContext) -> list[CheckResult]:
    """Run every ``integrity.*`` check; never raises for a bad bundle."""
    with paused_gc():  # the tree (2n hashes) is freed before the collector runs again
        return _check_integrity(ctx)


def _check_integrity(ctx: VerifyContext) -> list[CheckResult]:
    # RFC 6962 leaf hash, SHA-256(0x00 || leaf), with hashlib directly.
    leaves = map(LEAF_PREFIX.__add__, map(SignedRecord.leaf_data, ctx.bundle.records))
    leaf_hashes = list(map(_DIGEST, map(hashlib.sha256, leaves)))
    tree = MerkleTree.from_leaf_hashes(leaf_hashes, hasher=SHA256)
    heads_result, heads = check_heads(ctx)
    log = Log(tree, heads, heads_result.status.value == "pass")
    statement_result, statement = _statement(ctx)
    binding = _binding(ctx, log, statement)
    signatures = check_signatures(ctx, statement_binds=binding.status is Status.PASS)
    return [
        _structure(ctx),
        signatures,
        _seq(ctx),
        _hash_chain(ctx),
        _steps(ctx),
        heads_result,
        check_merkle_root(ctx, log),
        check_consistency(ctx, log),
        check_earlier_checkpoints(ctx, log),
        statement_result,
        binding,
    ]


# --- structure, seq, chain, steps -------------------------------------------------------------


def _structure(ctx: VerifyContext) -> CheckResult:
    cid = "integrity.structure"
    recs = ctx.records
    if not recs:
        return _r("fail", cid, "the bundle holds no records", expected=">= 1 record", got=0)
    others = sorted(set(map(_RUN, recs)) - {ctx.bundle.run})
    if others:
        return _r(
            "fail", cid, "records of another run are mixed in", expected=ctx.bundle.run, got=others
        )
    counts = {t: len(ctx.by_type(t)) for t in ("run.start", "weights.init", "data.manifest")}
    if recs[0].type != "run.start" or counts["run.start"] != 1:
        return _r(
            "fail",
            cid,
            "the log must open with its only run.start record",
            expected="run.start first, once",
            got=f"{recs[0].type} first, {counts['run.start']} run.start",
        )
    for t in ("weights.init", "data.manifest"):
        if counts[t] != 1:
            return _r(
                "fail", cid, f"the log must hold exactly one {t} record", expected=1, got=counts[t]
            )
    if recs[-1].type != "run.end":
        return _r(
            "fail",
            cid,
            "the log does not close with run.end: the run is unfinished or the log truncated",
            expected="run.end last",
            got=recs[-1].type,
        )
    # A finished run may be extended from one of its checkpoints (training continued with a
    # higher max_steps): the run.end it had is then followed by the run.resume that extends it,
    # and the last run.end is the run's end.
    early = [
        i
        for i, (r, nxt) in enumerate(itertools.pairwise(recs))
        if r.type == "run.end" and nxt.type != "run.resume"
    ]
    if early:
        return _r(
            "fail",
            cid,
            f"the run.end at position {early[0]} neither closes the log nor is followed by the"
            " run.resume that extends the run",
            expected="run.resume next",
            got=recs[early[0] + 1].type,
        )
    return _r(
        "pass",
        cid,
        f"{len(recs)} records of run {ctx.bundle.run}, run.start … run.end",
        records=len(recs),
        types={t: len(ctx.by_type(t)) for t in sorted(set(map(_TYPE, recs)))},
    )


def _seq(ctx: VerifyContext) -> CheckResult:
    cid = "integrity.seq"
    records = ctx.records
    if list(map(_SEQ, records)) != list(range(len(records))):
        for i, r in enumerate(records):
            if r.seq != i:
                return _r(
                    "fail",
                    cid,
                    f"leaf {i} holds record seq {r.seq}: a record was deleted, duplicated or moved",
                    expected=i,
                    got=r.seq,
                    leaf=i,
                )
    return _r("pass", cid, f"seq 0…{len(records) - 1} in log order", records=len(records))


def _hash_chain(ctx: VerifyContext) -> CheckResult:
    cid = "integrity.hash_chain"
    signed = ctx.bundle.records
    digests = list(
        map(_SHA256_PREFIX.__add__, map(_HEX, map(hashlib.sha256, map(_PAYLOAD, signed))))
    )
    named = [None, *digests][: len(digests)]  # what each record's prev must be
    if list(map(_PREV, signed)) != named:
        for i, (s, prev) in enumerate(zip(signed, named, strict=True)):
            r = s.record
            if r.prev != prev:
                return _r(
                    "fail",
                    cid,
                    f"leaf {i} (seq {r.seq}) does not name the previous record",
                    expected=prev,
                    got=r.prev,
                    leaf=i,
                )
    head = digests[-1] if digests else None
    return _r("pass", cid, "every record names the SHA-256 of the one before it", head=head)


def _steps(ctx: VerifyContext) -> CheckResult:
    cid = "integrity.steps"
    table = ctx.step_table()
    steps = table.step
    if steps != tuple(range(len(steps))):
        for i, step in enumerate(steps):
            if step != i:
                kind = "repeated" if step < i else "skipped"
                return _r(
                    "fail",
                    cid,
                    f"step {i} is {kind}: the record at seq {table.seq[i]} logs step {step}",
                    expected=i,
                    got=step,
                    seq=table.seq[i],
                )
    n = len(steps)
    end = ctx.run_end
    if end is not None and end.get("step") != n:
        return _r(
            "fail",
            cid,
            "run.end's step count differs from the steps logged",
            expected=n,
            got=end.get("step"),
        )
    return _r("pass", cid, f"steps 0…{n - 1} logged once each, in order", steps=n)


# --- statement --------------------------------------------------------------------------------


def _statement(ctx: VerifyContext) -> tuple[CheckResult, LineageStatement | None]:
    cid = "integrity.statement"
    if ctx.bundle.statement is None:
        return _r(
            "fail",
            cid,
            "the bundle carries no signed lineage statement",
            expected="a Sigstore bundle",
            got=None,
        ), None
    key = ctx.trainer_key
    if key is None:
        status = "skip" if not ctx.policy.trainer_keys else "fail"
        return _r(status, cid, "no trusted trainer key to check the statement with"), None
    try:
        statement = open_statement(ctx.bundle.statement, key)
    except AttestError as exc:
        return _r(
            "fail", cid, f"statement: {exc.message}", expected=exc.expected, got=exc.got
        ), None
    if statement.run != ctx.bundle.run:
        return _r(
            "fail",
            cid,
            "the statement is for another run",
            expected=ctx.bundle.run,
            got=statement.run,
        ), None
    return _r(
        "pass", cid, f"signed by trainer key {key.key_id[:16]}…", subject=statement.model_sha256
    ), statement


def _binding(ctx: VerifyContext, log: Log, st: LineageStatement | None) -> CheckResult:
    cid = "integrity.statement_binding"
    if st is None:
        return _r("skip", cid, "no verified statement to bind")
    if ctx.server_verifier is None:
        return _r("skip", cid, "no trusted server key to open the statement's log checkpoint")
    try:
        head = open_checkpoint(st.log_checkpoint, ctx.server_verifier, origin=ctx.bundle.origin)
    except AttestError as exc:
        return _r(
            "fail",
            cid,
            f"statement's log checkpoint: {exc.message}",
            expected=exc.expected,
            got=exc.got,
        )
    n = log.tree.size
    if head.checkpoint.size != n:
        return _r(
            "fail",
            cid,
            "the statement seals a log of another length: records were added "
            "or removed after signing",
            expected=n,
            got=head.checkpoint.size,
        )
    if head.checkpoint.root != log.tree.root():
        return _r(
            "fail",
            cid,
            "the statement seals another log root",
            expected=log.tree.root().hex(),
            got=head.checkpoint.root.hex(),
        )
    problems: list[dict[str, Any]] = []

    def want(what: str, expected: object, got: object) -> None:
        if expected != got:
            problems.append({"what": what, "expected": expected, "got": got})

    end = ctx.run_end
    try:
        want("subject (run.end model root)", end["model"]["root"] if end else None, st.model_sha256)
        want("digest algorithm", ctx.algorithm, st.digest_algorithm)
        init = st.dependency("init-weights")
        want("init-weights", ctx.weights_init["model"]["root"], init.sha256 if init else None)
        manifest = ctx.by_type("data.manifest")
        dm = st.dependency("data-manifest")
        want(
            "data-manifest", manifest[0].digest[7:] if manifest else None, dm.sha256 if dm else None
        )
        comps = {f"component:{c['name']}": c["digest"]["root"] for c in ctx.run_start["components"]}
        stated = {d.name: d.sha256 for d in st.dependencies if d.name.startswith("component:")}
        want("components", comps, stated)
        cps = {f"checkpoint:{b['step']}": b["model"]["root"] for b in ctx.checkpoints()}
        stated = {d.name: d.sha256 for d in st.byproducts if d.name.startswith("checkpoint:")}
        want("checkpoints", cps, stated)
        table = ctx.step_table()
        curve = loss_curve_digest(table.step[0] if table else 0, table.loss)[7:]
        lc = st.byproduct("loss-curve")
        want("loss-curve", curve, lc.sha256 if lc else None)
    except (KeyError, TypeError, AttestError) as exc:
        return _r("fail", cid, f"a record lacks a field the binding needs: {exc}")
    if problems:
        first = problems[0]
        return _r(
            "fail",
            cid,
            f"the statement's {first['what']} differs from the log",
            expected=first["expected"],
            got=first["got"],
            mismatches=problems,
        )
    return _r(
        "pass",
        cid,
        f"statement seals all {n} records (root {log.tree.root().hex()[:16]}…) "
        "and names the same final, init, checkpoints and loss curve",
        size=n,
    )
