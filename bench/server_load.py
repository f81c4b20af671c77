"""Log-server benchmark (DESIGN §8): append throughput and proof latency, SQLite and PostgreSQL.

For each database it starts ``attest serve --no-mlflow`` as a child process and measures, from
concurrent HTTP clients on loopback (records are signed beforehand; signing is the trainer's cost):

- records/s appended in batches of 100 (``--clients`` clients, one run each);
- records/s appended one by one (same clients);
- inclusion-proof latency p50/p99 over HTTP at each ``--proof-sizes`` log size, after one warm-up
  request (the server caches a run's tree). Those logs are written straight into the database
  with random leaf hashes: proof cost depends on the size, not on the leaf bytes.

PostgreSQL is used when ``--postgres URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
is reachable; a scratch database is created and dropped. Prints a table and writes JSON.

    python bench/server_load.py [--quick] [--json bench/results/server_load.json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ed25519

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_server_processes import ServerProcess, make_token

from attest.keys import TrainerKey, save_server_key
from attest.records import RecordWriter, SignedRecord


def records(run: str, key: TrainerKey, n: int) -> list[dict[str, Any]]:
    w = RecordWriter(run, key)
    out: list[SignedRecord] = []
    for i in range(n):
        out.append(
            w.write(
                "train.steps",
                {
                    "first_step": i,
                    "loss": [1.0],
                    "lr": [1e-3],
                    "grad_norm": [0.1],
                    "batch": ["sha256:" + "2" * 64],
                },
            )
        )
    return [r.to_json() for r in out]


def append_rate(url: str, token: str, clients: int, n: int, batch: int, tag: str) -> float:
    chains = []
    for c in range(clients):
        run = f"{tag}-{c}-{uuid.uuid4().hex[:6]}"
        key = TrainerKey.generate()
        chains.append((run, records(run, key, n), key))
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as h:
        for run, _, key in chains:
            pem = key.public.to_pem()
            h.post("/v1/runs", json={"run": run, "trainer_key": pem}).raise_for_status()

    def push(run: str, recs: list[dict[str, Any]]) -> None:
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as h:
            for i in range(0, len(recs), batch):
                h.post(
                    f"/v1/runs/{run}/records", json={"records": recs[i : i + batch]}
                ).raise_for_status()

    threads = [threading.Thread(target=push, args=(run, recs)) for run, recs, _ in chains]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return clients * n / (time.perf_counter() - t0)


def synthetic_log(url: str, database_url: str, run: str, size: int) -> None:
    """Write a run of ``size`` random leaves straight into the database (for proof timing)."""
    from sqlalchemy import create_engine, insert, update

    from attest.merkle import CompactRange
    from attest.server.storage import leaves_t, runs_t

    engine = create_engine(database_url)
    with engine.begin() as conn:
        pk = conn.execute(runs_t.select().where(runs_t.c.name == run)).one().id
        rng = CompactRange()
        step = 20000
        for start in range(0, size, step):
            rows = []
            for i in range(start, min(size, start + step)):
                h = secrets.token_bytes(32)
                rng.append(h)
                rows.append({"run_id": pk, "idx": i, "data": b"{}", "leaf_hash": h})
            conn.execute(insert(leaves_t), rows)
        conn.execute(
            update(runs_t)
            .where(runs_t.c.id == pk)
            .values(size=size, compact=b"".join(rng.hashes), root=rng.root())
        )
    engine.dispose()


def proof_latency(
    url: str, token: str, database_url: str, size: int, samples: int
) -> dict[str, float]:
    run = f"proofs-{size}-{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=600) as h:
        pem = TrainerKey.generate().public.to_pem()
        h.post("/v1/runs", json={"run": run, "trainer_key": pem}).raise_for_status()
        synthetic_log(url, database_url, run, size)
        t0 = time.perf_counter()
        h.get(f"/v1/runs/{run}/proof/inclusion", params={"index": 0}).raise_for_status()
        warm = time.perf_counter() - t0
        times = []
        rnd = secrets.SystemRandom()
        for _ in range(samples):
            i = rnd.randrange(size)
            t0 = time.perf_counter()
            h.get(f"/v1/runs/{run}/proof/inclusion", params={"index": i}).raise_for_status()
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {
        "leaves": size,
        "first_request_s": warm,
        "p50_ms": statistics.median(times),
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
    }


def bench_database(name: str, database_url: str | None, args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"attest-bench-{name}-"))
    store_args = ["--data", str(tmp / "data")]
    if database_url:
        store_args += ["--database-url", database_url]
    key = tmp / "server.key"
    save_server_key(ed25519.Ed25519PrivateKey.generate(), key)
    token = make_token("trainer", "bench", *store_args)
    server = ServerProcess(
        *store_args,
        "--server-key",
        str(key),
        "--no-mlflow",
        "--log-level",
        "warning",
        log=tmp / "server.log",
    ).start()
    url = database_url or f"sqlite:///{tmp / 'data' / 'attest.db'}"
    try:
        result: dict[str, Any] = {"database": name}
        n = args.records
        result["batched_100_records_per_s"] = append_rate(
            server.url, token, args.clients, n, 100, "b"
        )
        result["single_records_per_s"] = append_rate(
            server.url, token, args.clients, n // 10, 1, "s"
        )
        result["proofs"] = [
            proof_latency(
                server.url,
                token,
                url.replace("postgresql://", "postgresql+psycopg://"),
                s,
                args.samples,
            )
            for s in args.proof_sizes
        ]
        return result
    finally:
        server.stop()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--records", type=int, default=5000, help="records per client, batched")
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--samples", type=int, default=500, help="proof requests per size")
    p.add_argument("--proof-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument(
        "--postgres",
        default=os.environ.get(
            "ATTEST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    p.add_argument("--json", type=Path, default=Path("bench-server.json"))
    args = p.parse_args()
    if args.quick:
        args.records, args.samples, args.proof_sizes = 1000, 100, [10_000]
    results = [bench_database("sqlite", None, args)]
    try:
        import psycopg

        admin = psycopg.connect(args.postgres, autocommit=True, connect_timeout=3)
    except Exception as exc:
        print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
    else:
        db = f"attest_bench_{uuid.uuid4().hex[:10]}"
        admin.execute(f'CREATE DATABASE "{db}"')
        try:
            head = args.postgres.rpartition("/")[0]
            url = f"{head}/{db}".replace("postgresql://", "postgresql+psycopg://", 1)
            results.append(bench_database("postgresql", url, args))
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            admin.close()
    for r in results:
        print(
            f"{r['database']:>10}: batched(100) {r['batched_100_records_per_s']:9.0f} rec/s   "
            f"one-by-one {r['single_records_per_s']:7.0f} rec/s"
        )
        for pr in r["proofs"]:
            print(
                f"{'':>10}  inclusion proof @ {pr['leaves']:>8} leaves: p50 {pr['p50_ms']:.2f} ms, "
                f"p99 {pr['p99_ms']:.2f} ms (first request {pr['first_request_s']:.2f} s)"
            )
    args.json.write_text(json.dumps({"clients": args.clients, "results": results}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
