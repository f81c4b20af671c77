"""``integrity.signatures``: every record is a DSSE envelope signed by the policy's trainer key
(check 1, docs/verifying.md §1; run by :func:`attest.verifier.integrity.check_integrity`).

Every record's key ID is checked; which signatures are verified depends on the mode.

Signature modes. ``all`` verifies every record's signature. ``sample`` checks every record's key
ID and verifies the signatures of every record that is not ``train.steps`` plus 256 random ones,
*provided* ``integrity.statement_binding`` passed: the statement's trainer signature (same key)
covers a server checkpoint whose root is the RFC 6962 root of exactly these leaves, so under
SHA-256 collision resistance it authenticates every record; the per-record signatures verified
are defence in depth. When the statement does not bind the log, ``sample`` verifies every
signature instead, so this check never leans on a check that failed. ``auto`` samples from
:data:`AUTO_SAMPLE_FROM` records on, under the same condition. The result's evidence names the
mode that ran (``mode``) and, when it differs, the one requested (``requested``).

Speed. ECDSA P-256 verification dominates (~0.1 ms a signature); large logs are verified on every
core by threads. Recent ``cryptography`` releases let go of the GIL while OpenSSL verifies (two
threads verify 1.6–1.9× as fast as one on this project's 2-core machines); with older ones the
threads take turns and the check costs what one thread would.
"""

from __future__ import annotations

import itertools
import operator
import os
import random
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from attest.dsse import pae
from attest.records import SignedRecord
from attest.verifier.context import VerifyContext
from attest.verifier.result import Basis, CheckResult, reporter

__all__ = [
    "AUTO_SAMPLE_FROM",
    "PARALLEL_FROM",
    "SAMPLE_SIZE",
    "SIGNATURE_TITLES",
    "check_signatures",
]

SIGNATURE_TITLES = {"integrity.signatures": "Trainer signatures on every record"}
PARALLEL_FROM = 512
SAMPLE_SIZE = 256
AUTO_SAMPLE_FROM = 4096

_TYPE = operator.attrgetter("type")
_SIGNATURES = operator.attrgetter("envelope.signatures")
_FIRST = operator.itemgetter(0)
_KEYID = operator.attrgetter("keyid")


_r = reporter(SIGNATURE_TITLES, Basis.CRYPTOGRAPHIC)


def _verify_chunk(
    key: ec.EllipticCurvePublicKey, items: Sequence[tuple[int, bytes, bytes]]
) -> int | None:
    alg = ec.ECDSA(hashes.SHA256())
    verify = key.verify
    for index, sig, message in items:
        try:
            verify(sig, message, alg)
        except InvalidSignature:
            return index
    return None


def _verify_all(
    key: ec.EllipticCurvePublicKey, items: list[tuple[int, bytes, bytes]]
) -> int | None:
    """The first index whose signature fails, or None. Large inputs are split over threads:
    where ``cryptography`` lets go of the GIL while OpenSSL verifies, threads use every core
    without copying the messages to worker processes (and run one after another where it does
    not)."""
    workers = min(os.cpu_count() or 1, 8)
    if len(items) < PARALLEL_FROM or workers < 2:
        return _verify_chunk(key, items)
    size = -(-len(items) // (workers * 4))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    with ThreadPoolExecutor(workers) as pool:
        found = [i for i in pool.map(_verify_chunk, itertools.repeat(key), chunks) if i is not None]
    return min(found) if found else None


def check_signatures(ctx: VerifyContext, *, statement_binds: bool) -> CheckResult:
    """``integrity.signatures`` in the mode ``ctx.signature_mode`` asks for (module docstring);
    ``statement_binds``: whether ``integrity.statement_binding`` passed."""
    cid = "integrity.signatures"
    key = ctx.trainer_key
    records = ctx.bundle.records
    if key is None:
        seen = sorted({s.keyid for r in records for s in r.envelope.signatures})
        if not ctx.policy.trainer_keys:
            return _r(
                "skip",
                cid,
                "the policy trusts no trainer key; add one to the policy or pass --trust-trainer",
                got=seen,
            )
        return _r(
            "fail",
            cid,
            "the records are signed by a key the policy does not trust",
            expected=[k.key_id for k in ctx.policy.trainer_keys],
            got=seen,
        )
    kid = key.key_id
    if not _first_keyids_are(records, kid):
        for i, signed in enumerate(records):
            sigs = signed.envelope.signatures
            if not (sigs and sigs[0].keyid == kid) and not any(s.keyid == kid for s in sigs):
                return _r(
                    "fail",
                    cid,
                    f"leaf {i} (seq {signed.record.seq}) is not signed by the trusted trainer key",
                    expected=kid,
                    got=[s.keyid for s in sigs],
                    leaf=i,
                )
    requested = ctx.signature_mode
    mode = _resolve_mode(requested, len(records), statement_binds=statement_binds)
    chosen: Iterable[int] = range(len(records))
    if mode == "sample":
        types = map(_TYPE, ctx.records)
        is_step = list(map(operator.eq, types, itertools.repeat("train.steps")))
        steps = list(itertools.compress(range(len(records)), is_step))
        rest = list(itertools.compress(range(len(records)), map(operator.not_, is_step)))
        rng = random.Random(ctx.replay_seed)
        chosen = sorted(rest + rng.sample(steps, min(SAMPLE_SIZE, len(steps))))
    checked: list[tuple[int, bytes, bytes]] = []
    for i in chosen:
        env = records[i].envelope
        message = pae(env.payload_type, env.payload)
        checked.extend((i, s.sig, message) for s in env.signatures if s.keyid == kid)
    bad = _verify_all(key.key, checked)
    basis = {"mode": mode} if requested == mode else {"mode": mode, "requested": requested}
    if bad is not None:
        return _r(
            "fail",
            cid,
            f"leaf {bad}'s signature does not verify under the trusted "
            "trainer key: the record was altered after signing",
            expected=kid,
            got="invalid ECDSA P-256 signature",
            leaf=bad,
            **basis,
        )
    if mode == "sample":
        return _r(
            "pass",
            cid,
            f"all {len(records)} records carry the trusted key ID; "
            f"{len(checked)} signatures verified (every non-step record and a random "
            "sample); the trainer-signed statement binds the Merkle root of every record",
            key_id=kid,
            verified=len(checked),
            records=len(records),
            **basis,
        )
    note = "" if requested == mode else " (the statement does not bind this log, so not sampled)"
    return _r(
        "pass",
        cid,
        f"{len(checked)} signatures verify under trainer key {kid[:16]}…{note}",
        key_id=kid,
        verified=len(checked),
        **basis,
    )


def _first_keyids_are(records: Sequence[SignedRecord], kid: str) -> bool:
    """Whether every record's first signature names ``kid`` (the usual envelope), checked a
    column at a time; ``False`` sends the caller to its record-by-record loop."""
    try:
        return set(map(_KEYID, map(_FIRST, map(_SIGNATURES, records)))) <= {kid}
    except IndexError:  # a record without signatures
        return False


def _resolve_mode(requested: str, records: int, *, statement_binds: bool) -> str:
    """The signature mode that runs. ``sample`` (and ``auto`` from :data:`AUTO_SAMPLE_FROM`
    records) samples only when the trainer-signed statement verified and binds the Merkle root
    of exactly these records: then that one signature authenticates every leaf, and the
    per-record signatures checked are defence in depth. Otherwise every signature is checked,
    so this check stands on its own."""
    if requested == "all" or not statement_binds:
        return "all"
    if requested == "auto" and records < AUTO_SAMPLE_FROM:
        return "all"
    return "sample"
