"""Verification time against log size (issue 6 benchmark; docs/verifying.md "Speed").

Generates synthetic honest logs of 10^3 … 10^5 records (one step per ``train.steps`` record with
a warm-up and cosine learning-rate schedule, a checkpoint every 1000 records, a signed tree head
every 500 records, a committed data order and a signed statement), then times, separately:

- ``parse``: ``Bundle.read`` (base64, JSON and its strictness, the RFC 8785 canonicality of
  every payload, field checks, blob names);
- ``integrity+chain``: checks 1 and 2 (:func:`check_integrity`, :func:`check_chain`) with every
  signature verified (``--signatures all``) and in ``sample`` mode.

Each figure is the fastest of ``--repeat`` runs (the machine may be shared; the minimum is the
least disturbed). Prints a table and writes ``bench/results/verify.json``. Target: 100k records
≤ 2 s for parse and checks (``total_sample_s``).

    .venv/bin/python bench/verify.py [--sizes 1000,10000,100000] [--repeat 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from attest.bundle import Bundle
from attest.canonical import canonical_json, sha256_digest
from attest.digest import ModelDigest, TensorDigest
from attest.dsse import Envelope
from attest.keys import TrainerKey
from attest.log import LogSigner, build_bundle
from attest.merkle import MerkleTree
from attest.records import RECORD_PAYLOAD_TYPE, Record
from attest.statement import Dependency, LineageStatement, loss_curve_digest, sign_statement
from attest.verifier.chain import check_chain
from attest.verifier.context import VerifyContext
from attest.verifier.integrity import check_integrity
from attest.verifier.policy import builtin_policy

ALGORITHM = "attest-tensors-v1/sha256/chunk=16777216"
BATCH = 4


def _learning_rate(step: int, steps: int) -> float:
    """A pre-training schedule: linear warm-up over 2000 steps to 3e-4, cosine decay to 3e-6.
    Its values span the number ranges a real log holds (1e-7 … 1e-4 included)."""
    peak, floor, warmup = 3e-4, 3e-6, min(2000, steps // 10 + 1)
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * t))


def _model(i: int) -> ModelDigest:
    t = TensorDigest("w", "F32", (4,), 16, hashlib.sha256(b"w%d" % i).digest())
    return ModelDigest.from_tensors(ALGORITHM, [t])


def synthetic(n: int, key: TrainerKey, signer: LogSigner) -> Bundle:
    """An honest bundle of ``n`` records."""
    run = f"bench-{n}"
    blobs: dict[str, Any] = {}

    def blob(doc: Any) -> str:
        name = sha256_digest(canonical_json(doc))
        blobs[name] = doc
        return name

    every = 1000
    steps = n - 5 - (n - 5) // every  # records left for steps after the fixed ones and checkpoints
    init = _model(0)
    entries: list[tuple[str, dict[str, Any]]] = [
        (
            "run.start",
            {
                "config": {},
                "code": {"revision": None, "dirty": False, "diff": None},
                "environment": {},
                "model": {"import_path": "bench:M", "init_args": {}, "parameters": 4},
                "init": {"seed": 0, "recipe": "seed-then-construct"},
                "components": [],
                "parent": None,
                "digest_algorithm": ALGORITHM,
            },
        ),
        (
            "weights.init",
            {
                "step": 0,
                "model": {"algorithm": ALGORITHM, "root": init.hex},
                "tensors": blob(init.to_json()),
            },
        ),
        (
            "data.manifest",
            {
                "dataset": {
                    "name": "bench",
                    "size": steps * BATCH,
                    "fingerprint": "sha256:" + "0" * 64,
                    "shards": [],
                },
                "sampler": {
                    "kind": "sequential",
                    "seed": None,
                    "batch_size": BATCH,
                    "drop_last": False,
                    "world_size": 1,
                },
            },
        ),
        (
            "data.order",
            {
                "epoch": 0,
                "position": 0,
                "batch_size": BATCH,
                "order": blob({"epoch": 0, "ids": list(range(steps * BATCH))}),
            },
        ),
    ]
    prev, losses, checkpoints = init.hex, [], []
    for s in range(steps):
        loss = 2.0 / (1 + s / 100)
        losses.append(loss)
        ids = list(range(s * BATCH, (s + 1) * BATCH))
        entries.append(
            (
                "train.steps",
                {
                    "first_step": s,
                    "loss": [loss],
                    "lr": [_learning_rate(s, steps)],
                    "grad_norm": [0.5 + 1.0 / (1 + s / 50)],
                    "batch": [sha256_digest(json.dumps(ids, separators=(",", ":")).encode())],
                },
            )
        )
        if (s + 1) % every == 0 and len(checkpoints) < (n - 5) // every:
            d = _model(s + 1)
            entries.append(
                (
                    "weights.checkpoint",
                    {
                        "step": s + 1,
                        "model": {"algorithm": ALGORITHM, "root": d.hex},
                        "tensors": blob(d.to_json()),
                        "state": {
                            "optimizer": "sha256:" + "0" * 64,
                            "scheduler": None,
                            "rng": "sha256:" + "0" * 64,
                            "path": None,
                        },
                        "prev_checkpoint": prev,
                    },
                )
            )
            checkpoints.append((s + 1, d.hex))
            prev = d.hex
    final = _model(steps + 1)
    entries.append(
        (
            "run.end",
            {
                "step": steps,
                "model": {"algorithm": ALGORITHM, "root": final.hex},
                "tensors": blob(final.to_json()),
                "last_checkpoint": prev,
            },
        )
    )
    tree, leaves, heads = MerkleTree(), [], []
    prev_digest: str | None = None
    manifest = ""
    for seq, (rtype, body) in enumerate(entries):
        record = Record(rtype, run, seq, prev_digest, "2026-01-01T00:00:00Z", body)
        payload = record.canonical()
        prev_digest = sha256_digest(payload)
        if rtype == "data.manifest":
            manifest = prev_digest[7:]
        leaf = canonical_json(Envelope.sign(RECORD_PAYLOAD_TYPE, payload, key).to_json())
        leaves.append(leaf)
        tree.append(leaf)
        if tree.size % 500 == 0 or seq == len(entries) - 1:
            heads.append(
                (tree.size, signer.sign(run, tree.size, tree.root(), timestamp=1_800_000_000))
            )
    statement = LineageStatement(
        run=run,
        model_sha256=final.hex,
        digest_algorithm=ALGORITHM,
        external_parameters={},
        internal_parameters={},
        dependencies=(
            Dependency("init-weights", init.hex, {}),
            Dependency("data-manifest", manifest, {}),
        ),
        byproducts=(
            *(Dependency(f"checkpoint:{s}", r, {}) for s, r in checkpoints),
            Dependency("loss-curve", loss_curve_digest(0, losses)[7:], {}),
        ),
        log_checkpoint=heads[-1][1],
        started="2026-01-01T00:00:00Z",
        finished="2026-01-01T00:00:01Z",
    )
    return build_bundle(
        run=run,
        origin=signer.origin(run),
        tree=tree,
        leaves=leaves,
        checkpoints=heads,
        blobs=blobs,
        statement=sign_statement(statement, key),
        keys={},
    )


def measure(
    n: int, key: TrainerKey, signer: LogSigner, folder: Path, repeat: int
) -> dict[str, Any]:
    t0 = time.perf_counter()
    bundle = synthetic(n, key, signer)
    path = folder / f"bundle-{n}.json"
    bundle.write(path)
    del bundle
    gen = time.perf_counter() - t0
    policy = builtin_policy("strict").with_keys(
        trainer_keys=[key.public], server_keys=[signer.verifier]
    )
    times: dict[str, list[float]] = {"parse": [], "all": [], "sample": []}
    kernel: list[tuple[float, int]] = []  # per parse: system seconds, minor page faults
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        parsed = Bundle.read(path)
        times["parse"].append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_SELF)
        kernel.append((after.ru_stime - before.ru_stime, after.ru_minflt - before.ru_minflt))
        for mode in ("all", "sample"):
            ctx = VerifyContext(
                bundle=parsed,
                policy=policy,
                trainer_key=key.public,
                server_verifier=signer.verifier,
                signature_mode=mode,
                replay_seed=0,
            )
            t0 = time.perf_counter()
            results = check_integrity(ctx) + check_chain(ctx)
            times[mode].append(time.perf_counter() - t0)
            bad = [r.id for r in results if r.status.value not in ("pass", "skipped")]
            if bad:
                raise SystemExit(f"synthetic honest log failed {bad}")
            modes = {r.evidence.get("mode") for r in results if r.id == "integrity.signatures"}
            if modes != {mode}:
                raise SystemExit(f"signature mode {mode} ran as {modes}")
        records = len(parsed.records)
        del parsed, ctx, results
    parse = min(times["parse"])
    system_s, minor_faults = kernel[times["parse"].index(parse)]
    row: dict[str, Any] = {
        "records": records,
        "bytes": path.stat().st_size,
        "generate_s": round(gen, 3),
        "parse_s": round(parse, 3),
        # Of the fastest parse: time in the kernel, nearly all of it first-touch page faults.
        "parse_system_s": round(system_s, 3),
        "parse_minor_faults": minor_faults,
    }
    for mode in ("all", "sample"):
        row[f"checks_{mode}_s"] = round(min(times[mode]), 3)
        row[f"total_{mode}_s"] = round(min(times[mode]) + parse, 3)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--repeat", type=int, default=3, help="runs per size; the fastest is kept")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "verify.json"))
    args = ap.parse_args()
    key = TrainerKey.generate()
    signer = LogSigner("bench.example/attest", ed25519.Ed25519PrivateKey.generate())
    rows = []
    print(
        f"{'records':>8} {'parse s':>8} {'(system s)':>10} {'checks all s':>13} {'checks sample s':>16} {'total all s':>12} {'total sample s':>15}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            row = measure(n, key, signer, Path(tmp), max(args.repeat, 1))
            rows.append(row)
            print(
                f"{row['records']:>8} {row['parse_s']:>8} {row['parse_system_s']:>10} {row['checks_all_s']:>13} {row['checks_sample_s']:>16}"
                f" {row['total_all_s']:>12} {row['total_sample_s']:>15}",
                flush=True,
            )
    doc = {
        "benchmark": "verify",
        "target": "100k records <= 2 s (integrity + chain)",
        "repeat": max(args.repeat, 1),
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
