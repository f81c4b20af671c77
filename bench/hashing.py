"""Hashing throughput of ``attest hash`` against ``model_signing`` and plain hashlib.

Generates a safetensors file of random bytes (default 1 GiB in 8 tensors) in a temporary folder,
or uses ``--path``, warms the page cache, then times the cases below: best and median of
``--repeat`` rounds, the cases run round-robin so background load falls on all alike.

- ``attest hash`` as a whole process (start-up included), SHA-256 and BLAKE3;
- ``model_signing sign key`` as a whole process on the same file (ECDSA P-256 key), and
  ``model_signing.hashing.hash`` in process;
- ``digest_safetensors`` in process, SHA-256 and BLAKE3 (all cores, and one worker);
- single-threaded ``hashlib.sha256`` over the raw file bytes (one call over an mmap);
- bare interpreter start-up, for reference.

Prints a table and writes JSON (``--out``). Usage::

    .venv/bin/python bench/hashing.py [--size-mib 1024] [--out bench/results/hashing.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from attest.digest import digest_safetensors

GB = 1e9


def write_random_safetensors(path: Path, *, size: int, tensors: int) -> None:
    """A safetensors file of ``tensors`` U8 tensors of random bytes, ``size`` bytes of data."""
    per = size // tensors
    sizes = [per] * (tensors - 1) + [size - per * (tensors - 1)]
    header: dict[str, Any] = {}
    cursor = 0
    for i, n in enumerate(sizes):
        header[f"layers.{i}.weight"] = {
            "dtype": "U8",
            "shape": [n],
            "data_offsets": [cursor, cursor + n],
        }
        cursor += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    block = 16 << 20
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for n in sizes:
            while n:
                step = min(n, block)
                f.write(os.urandom(step))
                n -= step


def timed_round_robin(
    cases: dict[str, Callable[[], object]], repeat: int
) -> dict[str, dict[str, float]]:
    """Run every case once per round, ``repeat`` rounds, so that load from other processes on
    the machine falls on all cases alike; report the best and the median time of each."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: {"best_s": min(t), "median_s": statistics.median(t)} for name, t in times.items()}


def run(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def attest_command() -> list[str]:
    exe = shutil.which("attest", path=str(Path(sys.executable).parent))
    if exe:
        probe = subprocess.run([exe, "hash", "--help"], capture_output=True)
        if probe.returncode == 0:
            return [exe, "hash"]
    return [sys.executable, "-m", "attest.cli_hash"]


def ecdsa_key(folder: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    path = folder / "bench-key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def sha256_single_thread(path: Path) -> None:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        hashlib.sha256(mm).digest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", type=Path, help="an existing .safetensors file to hash")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--tensors", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/hashing.json"))
    parser.add_argument("--skip-model-signing", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="attest-bench-") as tmp:
        folder = Path(tmp)
        path = args.path or folder / "model.safetensors"
        if args.path is None:
            start = time.perf_counter()
            write_random_safetensors(path, size=args.size_mib << 20, tensors=args.tensors)
            print(f"wrote {path} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        size = path.stat().st_size
        sha256_single_thread(path)  # warm the page cache

        cmd = attest_command()
        expected = digest_safetensors(path).qualified
        assert run([*cmd, str(path)]).strip() == expected, "attest hash disagrees with the API"

        cases: dict[str, Callable[[], object]] = {
            "python start-up (python -c pass)": partial(run, [sys.executable, "-c", "pass"]),
        }
        for alg in ("sha256", "blake3"):
            cases[f"attest hash, whole process, {alg}"] = partial(
                run, [*cmd, str(path), "--algorithm", alg]
            )
        if not args.skip_model_signing:
            key = ecdsa_key(folder)
            ms = shutil.which("model_signing", path=str(Path(sys.executable).parent))
            assert ms, "model_signing is not installed beside this interpreter"
            sig = folder / "model.sig"
            cases["model_signing sign key, whole process"] = partial(
                run,
                [ms, "sign", "key", str(path), "--private_key", str(key), "--signature", str(sig)],
            )
            from model_signing import hashing as ms_hashing

            cases["model_signing.hashing.hash, in process"] = partial(ms_hashing.hash, path)
        for alg in ("sha256", "blake3"):
            cases[f"attest in process, {alg}, all cores"] = partial(
                digest_safetensors, path, algorithm=alg
            )
            cases[f"attest in process, {alg}, 1 worker"] = partial(
                digest_safetensors, path, algorithm=alg, workers=1
            )
        cases["hashlib.sha256, one thread, raw file"] = partial(sha256_single_thread, path)
        load_before = os.getloadavg()[0]
        results = timed_round_robin(cases, args.repeat)
        load_after = os.getloadavg()[0]

    for r in results.values():
        r["GB_per_s"] = size / r["best_s"] / GB
    start_up = results["python start-up (python -c pass)"]
    start_up["GB_per_s"] = 0.0

    def best(name: str) -> float:
        return results[name]["best_s"]

    checks: dict[str, Any] = {}
    if not args.skip_model_signing:
        ratio = best("model_signing sign key, whole process") / best(
            "attest hash, whole process, sha256"
        )
        checks["whole-process speed-up vs model_signing (target >= 1.5)"] = round(ratio, 2)
    checks["in-process sha256 / one-thread hashlib (target > 1)"] = round(
        best("hashlib.sha256, one thread, raw file") / best("attest in process, sha256, all cores"),
        2,
    )
    checks["in-process blake3 GB/s (target >= 5)"] = round(
        results["attest in process, blake3, all cores"]["GB_per_s"], 2
    )

    print(
        f"\nfile: {size / (1 << 30):.2f} GiB, {args.tensors} tensors; cpus: {os.cpu_count()};"
        f" load average {load_before:.2f} before, {load_after:.2f} after"
    )
    print(f"{'measurement':48s} {'best s':>8s} {'median s':>9s} {'GB/s':>7s}")
    for name, r in results.items():
        print(f"{name:48s} {r['best_s']:8.3f} {r['median_s']:9.3f} {r['GB_per_s']:7.2f}")
    for name, value in checks.items():
        print(f"{name}: {value}")

    report = {
        "benchmark": "hashing",
        "file_bytes": size,
        "tensors": args.tensors if args.path is None else None,
        "repeat": args.repeat,
        "attest_command": " ".join(Path(c).name for c in cmd),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before_after": [round(load_before, 2), round(load_after, 2)],
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "results": {k: {m: round(v, 4) for m, v in r.items()} for k, r in results.items()},
        "checks": checks,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
