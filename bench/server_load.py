"""Log-server benchmark (DESIGN §8): append throughput and proof latency, SQLite and PostgreSQL.

For each database it starts ``attest serve --no-mlflow`` as a child process and measures, from
concurrent HTTP clients on loopback (records are signed beforehand; signing is the trainer's cost):

- records/s appended in batches of 100 (``--clients`` clients, one run each);
- records/s appended one by one (same clients);
- inclusion-proof latency p50/p99 over HTTP at each ``--proof-sizes`` log size, after one warm-up
  request (the server caches a run's tree): first from a single client, then from
  ``--proof-clients`` concurrent client processes; and consistency-proof latency (random old
  size to the latest) from a single client. Those logs are written straight into the
  database with random leaf hashes and the signed tree head an append would leave: proof cost
  depends on the size, not on the leaf bytes;
- the latency of ``GET /v1/server-key`` (no database, no auth) from a single client: the floor
  that HTTP on loopback and the event loop set on this machine, for reading the proof figures.

PostgreSQL is used when ``--postgres URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
is reachable; a scratch database is created and dropped. Prints a table and writes JSON.

    python bench/server_load.py [--quick] [--databases sqlite postgresql] [--parts appends proofs]
        [--verify-workers N] [--json bench/results/server_load.json]

Targets on a 2-core machine (clients and server sharing it): >= 5,000 records/s batched on
SQLite, >= 1,000/s on PostgreSQL, proof p99 <= 5 ms.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ed25519

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_server_processes import ServerProcess, make_token

from attest.keys import TrainerKey, load_server_key, save_server_key
from attest.log import LogSigner
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


def synthetic_log(database_url: str, run: str, size: int, signer: LogSigner) -> None:
    """Write a run of ``size`` random leaves straight into the database (for proof timing),
    with the signed tree head an append to that size would have left."""
    from sqlalchemy import create_engine, insert, update

    from attest.merkle import CompactRange
    from attest.server.storage.tables import heads_t, leaves_t, runs_t

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
        root = rng.root()
        conn.execute(
            update(runs_t)
            .where(runs_t.c.id == pk)
            .values(size=size, compact=b"".join(rng.hashes), root=root)
        )
        ts = int(time.time())
        note = signer.sign(run, size, root, timestamp=ts)
        conn.execute(
            insert(heads_t).values(run_id=pk, size=size, root=root, note=note, timestamp=ts)
        )
    engine.dispose()


def _percentiles(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "requests": len(times),
        "p50_ms": statistics.median(times),
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
    }


def _timed_gets(
    client: httpx.Client,
    path: str,
    queries: Callable[[], dict[str, int]],
    samples: int,
    start: Any = None,
) -> list[float]:
    """Latency in ms of ``samples`` GETs of ``path`` (query from ``queries()`` each time), after
    one untimed request (the client's own set-up: connection, lazy imports). ``start``: a
    barrier to wait at after it, so that concurrent clients measure together rather than while
    others are still starting.

    The objects this process holds by then are frozen out of its garbage collector: a full
    collection over its imports (60 ms, 200 ms with four clients on two cores) would otherwise
    land in the timings as if the server had been slow."""
    client.get(path, params=queries()).raise_for_status()
    gc.collect()
    gc.freeze()
    try:
        if start is not None:
            start.wait()
        times = []
        for _ in range(samples):
            query = queries()
            t0 = time.perf_counter()
            client.get(path, params=query).raise_for_status()
            times.append((time.perf_counter() - t0) * 1000)
        return times
    finally:
        gc.unfreeze()


def _proof_requests(
    url: str,
    token: str,
    run: str,
    size: int,
    samples: int,
    kind: str = "inclusion",
    start: Any = None,
) -> list[float]:
    """Timed inclusion proofs for random leaves (or consistency proofs from random old sizes to
    the latest), as in :func:`_timed_gets`."""
    rnd = secrets.SystemRandom()

    def queries() -> dict[str, int]:
        if kind == "inclusion":
            return {"index": rnd.randrange(size)}
        return {"old": rnd.randrange(1, size + 1)}

    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as h:
        return _timed_gets(h, f"/v1/runs/{run}/proof/{kind}", queries, samples, start)


def _cpu_jiffies() -> tuple[int, int]:
    """(all, stolen) CPU time of the machine so far, from /proc/stat; (0, 0) where there is none.
    Time the hypervisor gave to other machines shows up in latency tails."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0


def _steal_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[0] - before[0]
    return 100.0 * (after[1] - before[1]) / total if total > 0 else 0.0


def _floor(url: str, samples: int) -> dict[str, float]:
    with httpx.Client(base_url=url) as h:
        return _percentiles(_timed_gets(h, "/v1/server-key", dict, samples))


def proof_latency(
    url: str,
    token: str,
    database_url: str,
    signer: LogSigner,
    size: int,
    samples: int,
    clients: int,
) -> dict[str, Any]:
    run = f"proofs-{size}-{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=600) as h:
        pem = TrainerKey.generate().public.to_pem()
        h.post("/v1/runs", json={"run": run, "trainer_key": pem}).raise_for_status()
        synthetic_log(database_url, run, size, signer)
        t0 = time.perf_counter()
        r = h.get(f"/v1/runs/{run}/proof/inclusion", params={"index": 0})
        r.raise_for_status()
        warm = time.perf_counter() - t0
        assert r.json()["checkpoint"], "the synthetic head should be served"
    out: dict[str, Any] = {"leaves": size, "first_request_s": warm}
    before = _cpu_jiffies()
    out["single_client"] = _percentiles(_proof_requests(url, token, run, size, samples))
    out["consistency_single_client"] = _percentiles(
        _proof_requests(url, token, run, size, samples, "consistency")
    )
    out["single_client_cpu_steal_pct"] = _steal_pct(before, _cpu_jiffies())
    if clients > 1:  # one process per client, so clients do not queue on one GIL
        spawn = multiprocessing.get_context("spawn")
        with spawn.Manager() as manager, ProcessPoolExecutor(clients, mp_context=spawn) as ex:
            start = manager.Barrier(clients)
            futures = [
                ex.submit(_proof_requests, url, token, run, size, samples, "inclusion", start)
                for _ in range(clients)
            ]
            per = [f.result() for f in futures]
        out[f"{clients}_clients"] = _percentiles([x for p in per for x in p])
    return out


def bench_database(name: str, database_url: str | None, args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"attest-bench-{name}-"))
    store_args = ["--data", str(tmp / "data")]
    if database_url:
        store_args += ["--database-url", database_url]
    key = tmp / "server.key"
    save_server_key(ed25519.Ed25519PrivateKey.generate(), key)
    signer = LogSigner("localhost/attest", load_server_key(key))
    token = make_token("trainer", "bench", *store_args)
    extra = [] if args.verify_workers is None else ["--verify-workers", str(args.verify_workers)]
    server = ServerProcess(
        *store_args,
        "--server-key",
        str(key),
        "--no-mlflow",
        "--log-level",
        "warning",
        *extra,
        log=tmp / "server.log",
    ).start()
    url = database_url or f"sqlite:///{tmp / 'data' / 'attest.db'}"
    try:
        result: dict[str, Any] = {"database": name, "load_average_before": os.getloadavg()[0]}
        n = args.records
        if "appends" in args.parts:
            result["batched_100_records_per_s"] = append_rate(
                server.url, token, args.clients, n, 100, "b"
            )
            result["single_records_per_s"] = append_rate(
                server.url, token, args.clients, n // 10, 1, "s"
            )
        result["server_key_floor"] = _floor(server.url, args.samples)
        result["proofs"] = (
            []
            if "proofs" not in args.parts
            else [
                proof_latency(
                    server.url,
                    token,
                    url.replace("postgresql://", "postgresql+psycopg://"),
                    signer,
                    s,
                    args.samples,
                    args.proof_clients,
                )
                for s in args.proof_sizes
            ]
        )
        return result
    finally:
        server.stop()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--records", type=int, default=5000, help="records per client, batched")
    p.add_argument("--clients", type=int, default=2, help="concurrent appending clients")
    p.add_argument("--samples", type=int, default=500, help="proof requests per size and client")
    p.add_argument("--proof-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument(
        "--proof-clients",
        type=int,
        default=4,
        help="concurrent proof clients, measured after the single client (1: single only)",
    )
    p.add_argument(
        "--databases", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    p.add_argument(
        "--parts", nargs="+", choices=["appends", "proofs"], default=["appends", "proofs"]
    )
    p.add_argument(
        "--verify-workers", type=int, default=None, help="passed to `attest serve` (default: its)"
    )
    p.add_argument(
        "--postgres",
        default=os.environ.get(
            "ATTEST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    p.add_argument("--json", type=Path, default=Path("bench/results/server_load.json"))
    args = p.parse_args()
    if args.quick:
        args.records, args.samples, args.proof_sizes = 1000, 100, [10_000]
    results = []
    if "sqlite" in args.databases:
        results.append(bench_database("sqlite", None, args))
    try:
        if "postgresql" not in args.databases:
            raise RuntimeError("not asked for")
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
        if "batched_100_records_per_s" in r:
            print(
                f"{r['database']:>10}: batched(100) {r['batched_100_records_per_s']:9.0f} rec/s   "
                f"one-by-one {r['single_records_per_s']:7.0f} rec/s"
            )
        fl = r["server_key_floor"]
        print(
            f"{r['database']:>10}  floor (GET /v1/server-key): p50 {fl['p50_ms']:.2f} ms "
            f"p99 {fl['p99_ms']:.2f} ms"
        )
        for pr in r["proofs"]:
            line = f"{'':>10}  proofs @ {pr['leaves']:>8} leaves:"
            for label, m in pr.items():
                if isinstance(m, dict):
                    line += f"  [{label}] p50 {m['p50_ms']:.2f} ms p99 {m['p99_ms']:.2f} ms"
            print(f"{line}  (first request {pr['first_request_s']:.2f} s)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "cores": os.cpu_count(),
        "clients": args.clients,
        "proof_clients": args.proof_clients,
        "verify_workers": args.verify_workers,
        "results": results,
    }
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
