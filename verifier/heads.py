"""The tree-head half of check 1 (integrity): what the log server signed, and whether these
records are the log it signed (docs/verifying.md §1).

``integrity.checkpoints``  every tree head is a C2SP checkpoint signed and timestamped by the
                           policy's server key for this bundle's origin, sizes increasing
``integrity.merkle_root``  the RFC 6962 root recomputed from the records equals the last head,
                           whose size is the record count
``integrity.consistency``  each head's root is the root of the records' prefix of its size, and
                           RFC 9162 consistency proofs link successive heads (a fork fails here)
``integrity.earlier_checkpoints`` heads the *verifier* fetched before (``--checkpoint``) are
                           prefixes of this log: the log shown today continues the one shown then

:mod:`attest.verifier.integrity` builds the tree once (:class:`Log`) and runs these beside the
record and statement checks.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from attest.errors import AttestError
from attest.merkle import MerkleTree
from attest.note import SignedCheckpoint, open_checkpoint
from attest.proof import verify_consistency
from attest.verifier.context import VerifyContext
from attest.verifier.result import Basis, CheckResult, reporter

__all__ = [
    "HEAD_TITLES",
    "Log",
    "check_consistency",
    "check_earlier_checkpoints",
    "check_heads",
    "check_merkle_root",
]

HEAD_TITLES = {
    "integrity.checkpoints": "Server-signed tree heads",
    "integrity.merkle_root": "Merkle root recomputed from the records",
    "integrity.consistency": "Consistency between successive tree heads",
    "integrity.earlier_checkpoints": "Extends the tree heads fetched earlier",
}


@dataclass
class Log:
    """What several integrity checks share: the tree over the records and the opened heads."""

    tree: MerkleTree
    heads: list[SignedCheckpoint]
    heads_ok: bool


_r = reporter(HEAD_TITLES, Basis.CRYPTOGRAPHIC)


# --- tree heads -------------------------------------------------------------------------------


def check_heads(ctx: VerifyContext) -> tuple[CheckResult, list[SignedCheckpoint]]:
    cid = "integrity.checkpoints"
    notes = ctx.bundle.checkpoints
    verifier = ctx.server_verifier
    if verifier is None:
        if not ctx.policy.server_keys:
            return _r(
                "skip",
                cid,
                "the policy trusts no server key; add one to the policy or pass --trust-server",
            ), []
        return _r(
            "fail",
            cid,
            "no tree head is signed by a server key the policy trusts",
            expected=[v.to_vkey() for v in ctx.policy.server_keys],
            got=ctx.bundle.keys.get("server"),
        ), []
    if not notes:
        return _r("fail", cid, "the bundle holds no signed tree head", expected=">= 1", got=0), []
    heads: list[SignedCheckpoint] = []
    for i, note in enumerate(notes):
        try:
            heads.append(open_checkpoint(note, verifier, origin=ctx.bundle.origin))
        except AttestError as exc:
            return _r(
                "fail",
                cid,
                f"tree head {i}: {exc.message}",
                expected=exc.expected,
                got=exc.got,
                index=i,
            ), heads
    sizes = [h.checkpoint.size for h in heads]
    if any(b < a for a, b in itertools.pairwise(sizes)):
        return _r(
            "fail",
            cid,
            "tree heads are not in increasing size order",
            expected="increasing",
            got=sizes,
        ), heads
    return _r(
        "pass",
        cid,
        f"{len(heads)} tree heads signed by {verifier.name} for {ctx.bundle.origin}",
        sizes=sizes,
        times=[h.timestamp for h in heads],
    ), heads


def check_merkle_root(ctx: VerifyContext, log: Log) -> CheckResult:
    cid = "integrity.merkle_root"
    if not log.heads:
        return _r("skip", cid, "no verified tree head to compare with")
    last = log.heads[-1].checkpoint
    n = log.tree.size
    if last.size != n:
        return _r(
            "fail", cid, "the last tree head does not cover every record", expected=n, got=last.size
        )
    root = log.tree.root()
    if root != last.root:
        return _r(
            "fail",
            cid,
            "the root recomputed from the records differs from the signed one",
            expected=last.root.hex(),
            got=root.hex(),
            size=n,
        )
    return _r(
        "pass", cid, f"root of {n} records equals the signed tree head", root=root.hex(), size=n
    )


def check_consistency(ctx: VerifyContext, log: Log) -> CheckResult:
    cid = "integrity.consistency"
    if not log.heads:
        return _r("skip", cid, "no verified tree head to check")
    n = log.tree.size
    for i, h in enumerate(log.heads):
        cp = h.checkpoint
        if cp.size > n or cp.size == 0:
            return _r(
                "fail",
                cid,
                f"tree head {i} has a size the records cannot have",
                expected=f"1..{n}",
                got=cp.size,
                index=i,
            )
        root = log.tree.root(cp.size)
        if root != cp.root:
            return _r(
                "fail",
                cid,
                f"tree head {i} (size {cp.size}) signs a root these records "
                "do not have: the log was forked or rewritten",
                expected=root.hex(),
                got=cp.root.hex(),
                index=i,
            )
    proofs = ctx.bundle.consistency
    for i, (a, b) in enumerate(itertools.pairwise(log.heads)):
        try:
            verify_consistency(
                old_size=a.checkpoint.size,
                new_size=b.checkpoint.size,
                old_root=a.checkpoint.root,
                new_root=b.checkpoint.root,
                proof=proofs[i] if i < len(proofs) else (),
            )
        except AttestError as exc:
            return _r(
                "fail",
                cid,
                f"tree heads {i} → {i + 1}: {exc.message}",
                expected=exc.expected,
                got=exc.got,
                index=i,
            )
    return _r(
        "pass",
        cid,
        f"{max(len(log.heads) - 1, 0)} consistency proofs verify; every head's "
        "root matches the records",
        heads=len(log.heads),
    )


def check_earlier_checkpoints(ctx: VerifyContext, log: Log) -> CheckResult:
    """The bundle's heads only prove the bundle consistent with itself; a head the verifier
    fetched earlier (during training, at a previous audit) rules out a history re-signed since:
    the records' prefix of that size must have exactly that signed root."""
    cid = "integrity.earlier_checkpoints"
    notes = ctx.earlier_checkpoints
    if not notes:
        return _r(
            "skip",
            cid,
            "no earlier tree head given; pass --checkpoint with one fetched before to rule out "
            "a history re-signed since",
        )
    verifier = ctx.server_verifier
    if verifier is None:
        return _r("skip", cid, "no trusted server key to open the given tree heads with")
    n, checked = log.tree.size, []
    for i, note in enumerate(notes):
        try:
            head = open_checkpoint(note, verifier, origin=ctx.bundle.origin).checkpoint
        except AttestError as exc:
            return _r(
                "skip",
                cid,
                f"given tree head {i} cannot be used: {exc.message}",
                expected=exc.expected,
                got=exc.got,
                index=i,
            )
        if head.size > n:
            return _r(
                "fail",
                cid,
                f"given tree head {i} covers {head.size} records but the bundle holds {n}: "
                "records the log had are missing",
                expected=f"<= {n}",
                got=head.size,
                index=i,
            )
        root = log.tree.root(head.size)
        if root != head.root:
            return _r(
                "fail",
                cid,
                f"the log was rewritten after given tree head {i} (size {head.size}) was "
                "signed: the records' root at that size differs",
                expected=head.root.hex(),
                got=root.hex(),
                index=i,
            )
        checked.append(head.size)
    return _r(
        "pass",
        cid,
        f"the records continue every given tree head (sizes {', '.join(map(str, checked))})",
        sizes=checked,
    )
