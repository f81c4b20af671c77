"""The log server as real processes (DESIGN §5, §8): MLflow mount and mirror, kill -9 recovery,
and two replicas appending concurrently on one PostgreSQL database.

PostgreSQL tests use ``ATTEST_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``), create a fresh database per test and drop it
afterwards. Without a reachable server they skip, unless ``ATTEST_REQUIRE_POSTGRES=1``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi.testclient import TestClient

from attest.bundle import Bundle
from attest.canonical import canonical_json
from attest.cli_export import export_command as export_cli
from attest.client import HttpDestination
from attest.keys import TrainerKey, save_server_key
from attest.log import LogSigner
from attest.merkle import SHA256
from attest.note import NoteVerifier, SignedCheckpoint, open_checkpoint
from attest.proof import verify_consistency, verify_inclusion
from attest.records import RecordWriter, SignedRecord
from attest.server import Settings, create_app
from attest.server.auth import hash_token, issue_token
from attest.server.cli import token as token_cli
from attest.server.storage import Store
from attest.server.verifying import BatchChecker

BATCH = ["sha256:" + "1" * 64]


def chain(run: str, key: TrainerKey, n: int) -> list[SignedRecord]:
    w = RecordWriter(run, key)
    return [
        w.write(
            "train.steps",
            {
                "first_step": i,
                "loss": [1.0 / (i + 1)],
                "lr": [0.01],
                "grad_norm": [0.5],
                "batch": BATCH,
            },
        )
        for i in range(n)
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``attest serve`` in a child process."""

    def __init__(self, *args: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [*args, "--port", str(self.port)]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> ServerProcess:
        code = "from attest.cli import main; main()"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, "serve", *self.args], stdout=out, stderr=out
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not start: {self.log.read_text()[-2000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def make_token(role: str, name: str, *store_args: str) -> str:
    result = CliRunner().invoke(token_cli, ["create", "--role", role, "--name", name, *store_args])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[0]


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def verify_log(
    url: str, tok: str, run: str, expected: Sequence[SignedRecord], notes: Sequence[str]
) -> None:
    """Every expected record is at its index, and every handed-out checkpoint is consistent with
    the current tree (equal sizes have equal roots), and every leaf's inclusion proof verifies."""
    with httpx.Client(base_url=url, headers=auth(tok), timeout=30) as c:
        verifier = NoteVerifier.from_vkey(c.get("/v1/server-key").text.strip())
        head = open_checkpoint(c.get(f"/v1/runs/{run}/checkpoint").text, verifier).checkpoint
        assert head.size >= len(expected)
        got: list[bytes] = []
        while len(got) < head.size:
            page = c.get(f"/v1/runs/{run}/entries", params={"start": len(got)}).json()["entries"]
            got += [canonical_json(e) for e in page]
        assert got[: len(expected)] == [r.leaf_data() for r in expected]
        roots: dict[int, bytes] = {}
        for note in notes:
            cp: SignedCheckpoint = open_checkpoint(note, verifier)
            size, root = cp.checkpoint.size, cp.checkpoint.root
            assert roots.setdefault(size, root) == root, f"two roots signed for size {size}"
        for size, root in roots.items():
            proof = c.get(
                f"/v1/runs/{run}/proof/consistency", params={"old": size, "new": head.size}
            ).json()["proof"]
            verify_consistency(
                old_size=size,
                new_size=head.size,
                old_root=root,
                new_root=head.root,
                proof=[bytes.fromhex(h) for h in proof],
            )
        for i, leaf in enumerate(got):
            proof = c.get(
                f"/v1/runs/{run}/proof/inclusion", params={"index": i, "size": head.size}
            ).json()["proof"]
            verify_inclusion(
                index=i,
                size=head.size,
                leaf_hash=SHA256.hash_leaf(leaf),
                proof=[bytes.fromhex(h) for h in proof],
                root=head.root,
            )


# --- MLflow ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mlflow_run_has_loss_history_and_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    admin = make_token("admin", "admin", "--data", str(data))
    trainer = make_token("trainer", "trainer", "--data", str(data))
    limited = make_token("reader", "limited", "--data", str(data), "--runs", "other-run")
    auditor = make_token("reader", "auditor", "--data", str(data), "--runs", "mlrun")
    server = ServerProcess("--data", str(data), log=tmp_path / "server.log").start()
    try:
        key = TrainerKey.generate()
        dest = HttpDestination(server.url, trainer)
        dest.create_run("mlrun", key.public, {"purpose": "test"})
        w = RecordWriter("mlrun", key)
        blob = dest.put_blob("mlrun", {"tensors": ["a", "b"]})
        start = w.write(
            "run.start",
            {
                "config": {"lr": 0.01, "optimizer": {"name": "adamw", "betas": [0.9, 0.95]}},
                "code": {"revision": None, "dirty": False, "diff": None},
                "environment": {},
                "model": {"import_path": "m:M", "init_args": {}, "parameters": 1},
                "init": {"seed": 1, "recipe": "seed-then-construct"},
                "components": [],
                "parent": None,
                "digest_algorithm": "attest-tensors-v1/sha256/chunk=16777216",
            },
        )
        losses = [3.0 - 0.05 * i for i in range(30)]
        losses[7] = None  # type: ignore[call-overload]  # a non-finite loss is logged as null
        records = [start]
        for first in range(0, 30, 10):
            records.append(
                w.write(
                    "train.steps",
                    {
                        "first_step": first,
                        "loss": losses[first : first + 10],
                        "lr": [0.01] * 10,
                        "grad_norm": [None] * 10,
                        "batch": BATCH * 10,
                    },
                )
            )
        model = {"algorithm": "attest-tensors-v1/sha256/chunk=16777216", "root": "ab" * 32}
        records.append(
            w.write(
                "run.end",
                {"step": 30, "model": model, "tensors": blob, "last_checkpoint": "ab" * 32},
            )
        )
        dest.append("mlrun", [r.leaf_data() for r in records])

        with httpx.Client(base_url=server.url, headers=auth(admin)) as c:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                mirror = c.get("/v1/runs/mlrun").json()["mlflow"]
                if mirror["mirrored_size"] == len(records):
                    break
                time.sleep(0.3)
            assert mirror["mirrored_size"] == len(records), (tmp_path / "server.log").read_text()[
                -3000:
            ]
            # MLflow paths need a token too
            assert (
                c.get(
                    "/api/2.0/mlflow/experiments/get-by-name",
                    params={"experiment_name": "attest"},
                    headers={"Authorization": ""},
                ).status_code
                == 401
            )

        from mlflow.tracking import MlflowClient

        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", admin)
        client = MlflowClient(tracking_uri=server.url)
        exp = client.get_experiment_by_name("attest")
        assert exp is not None
        run = client.get_run(mirror["run_id"])
        assert run.data.tags["attest.run"] == "mlrun"
        assert run.data.tags["attest.tree_size"] == str(len(records))
        assert run.data.params["optimizer.name"] == "adamw"
        history = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
        expected = [(i, v) for i, v in enumerate(losses) if v is not None]
        assert [(m.step, m.value) for m in history] == expected
        paths = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"bundle.json", "checkpoint.note", "blobs"} <= paths
        # A run grant cannot be side-stepped through MLflow: tokens limited to some runs (a
        # reader granted another run, a trainer) may not fetch this run's bundle artifact there.
        for tok in (limited, trainer):
            denied = httpx.get(
                f"{server.url}/get-artifact",
                params={"path": "bundle.json", "run_uuid": run.info.run_id},
                headers=auth(tok),
            )
            assert denied.status_code == 403, denied.text
            assert "may read only some runs" in denied.json()["error"]
        local = client.download_artifacts(run.info.run_id, "bundle.json", str(tmp_path))
        bundle = Bundle.read(local)
        assert [r.leaf_data() for r in bundle.records] == [r.leaf_data() for r in records]
        assert blob in bundle.blobs

        # A verifier posts its verdict: the MLflow run's verdict tags follow.
        assert run.data.tags["attest.verdict"] == "unverified"
        verdict = {
            "format": "attest-verdict/v1",
            "run": "mlrun",
            "outcome": "verified",
            "summary": "from scratch (policy strict)",
            "policy": {"name": "strict", "source": "built-in"},
            "facts": {"final_root": model["root"]},
            "checks": [{"id": "integrity.signatures", "status": "pass"}],
        }
        posted = httpx.post(
            f"{server.url}/v1/runs/mlrun/verdicts", json=verdict, headers=auth(auditor)
        )
        assert posted.status_code == 201, posted.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tags = client.get_run(run.info.run_id).data.tags
            if tags["attest.verdict"] == "verified":
                break
            time.sleep(0.3)
        assert tags["attest.verdict"] == "verified"
        assert tags["attest.verdict_by"] == "auditor"
        assert tags["attest.verdict_policy"] == "strict"
    finally:
        server.stop()


# --- crash recovery ----------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_during_appends_keeps_every_acknowledged_record(tmp_path: Path) -> None:
    data = tmp_path / "data"
    trainer = make_token("trainer", "trainer", "--data", str(data))
    args = ("--data", str(data), "--no-mlflow")
    server = ServerProcess(*args, log=tmp_path / "server.log").start()
    key = TrainerKey.generate()
    records = chain("crash", key, 5000)
    acked: list[dict[str, Any]] = []
    stop = threading.Event()

    def writer() -> None:
        pos = 0
        with httpx.Client(base_url=server.url, headers=auth(trainer), timeout=10) as c:
            c.post("/v1/runs", json={"run": "crash", "trainer_key": key.public.to_pem()})
            while not stop.is_set() and pos < len(records):
                batch = records[pos : pos + 3]
                try:
                    resp = c.post(
                        "/v1/runs/crash/records", json={"records": [r.to_json() for r in batch]}
                    )
                except httpx.HTTPError:
                    return  # the server died; this batch was never acknowledged
                assert resp.status_code == 200, resp.text
                acked.append(resp.json())
                pos += len(batch)

    try:
        t = threading.Thread(target=writer)
        t.start()
        deadline = time.monotonic() + 30
        while len(acked) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill9()
        stop.set()
        t.join(30)
        assert len(acked) >= 20
        server = ServerProcess(*args, log=tmp_path / "server.log").start()
        last = acked[-1]
        n_acked = last["first_index"] + last["count"]
        verify_log(
            server.url, trainer, "crash", records[:n_acked], [a["checkpoint"] for a in acked]
        )
        # the trainer resynchronises from the server's size and carries on
        with httpx.Client(base_url=server.url, headers=auth(trainer), timeout=10) as c:
            size = c.get("/v1/runs/crash").json()["size"]
            assert size in (n_acked, n_acked + 3)
            resp = c.post(
                "/v1/runs/crash/records",
                json={"records": [r.to_json() for r in records[size : size + 2]]},
            )
            assert resp.status_code == 200 and resp.json()["first_index"] == size
        # a regulator's export of the bundle after the crash
        out = tmp_path / "crash.bundle.json"
        result = CliRunner().invoke(
            export_cli, ["crash", "--server", server.url, "--token", trainer, "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        assert len(Bundle.read(out).records) == size + 2
    finally:
        stop.set()
        server.stop()


# --- PostgreSQL replicas -----------------------------------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    base = os.environ.get("ATTEST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        reason = f"PostgreSQL not reachable at {base}: {exc}".strip()
        if os.environ.get("ATTEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " (ATTEST_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    name = f"attest_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        head, _, _ = base.rpartition("/")
        yield f"{head}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.mark.postgres
@pytest.mark.slow
def test_two_replicas_append_concurrently_without_gaps_or_duplicates(
    tmp_path: Path, pg_url: str
) -> None:
    key_file = tmp_path / "server.key"
    save_server_key(ed25519.Ed25519PrivateKey.generate(), key_file)
    trainer = make_token(
        "trainer", "trainer", "--database-url", pg_url, "--data", str(tmp_path / "cli")
    )
    servers = [
        ServerProcess(
            "--database-url",
            pg_url,
            "--server-key",
            str(key_file),
            "--data",
            str(tmp_path / f"d{i}"),
            "--no-mlflow",
            log=tmp_path / f"server{i}.log",
        ).start()
        for i in range(2)
    ]
    key = TrainerKey.generate()
    shared = chain("shared", key, 300)
    own = {f"solo{i}": chain(f"solo{i}", key, 120) for i in range(4)}
    notes: dict[str, list[str]] = {run: [] for run in ["shared", *own]}
    errors: list[BaseException] = []
    with httpx.Client(base_url=servers[0].url, headers=auth(trainer)) as c:
        for run in notes:
            assert (
                c.post(
                    "/v1/runs", json={"run": run, "trainer_key": key.public.to_pem()}
                ).status_code
                == 201
            )

    def racer(seed: int) -> None:
        """Many writers on one chain: read the size, send the next few records, lose or win."""
        rng = random.Random(seed)
        clients = [httpx.Client(base_url=s.url, headers=auth(trainer), timeout=30) for s in servers]
        try:
            while True:
                c = rng.choice(clients)
                size = c.get("/v1/runs/shared").json()["size"]
                if size >= len(shared):
                    return
                batch = shared[size : size + rng.randint(1, 8)]
                resp = c.post(
                    "/v1/runs/shared/records", json={"records": [r.to_json() for r in batch]}
                )
                assert resp.status_code in (200, 409), resp.text
                if resp.status_code == 200:
                    notes["shared"].append(resp.json()["checkpoint"])
        except BaseException as exc:
            errors.append(exc)
        finally:
            for c in clients:
                c.close()

    def solo(run: str, seed: int) -> None:
        rng = random.Random(seed)
        records = own[run]
        clients = [httpx.Client(base_url=s.url, headers=auth(trainer), timeout=30) for s in servers]
        try:
            pos = 0
            while pos < len(records):
                batch = records[pos : pos + 5]
                resp = rng.choice(clients).post(
                    f"/v1/runs/{run}/records", json={"records": [r.to_json() for r in batch]}
                )
                assert resp.status_code == 200, resp.text
                assert resp.json()["first_index"] == pos
                notes[run].append(resp.json()["checkpoint"])
                pos += len(batch)
        except BaseException as exc:
            errors.append(exc)
        finally:
            for c in clients:
                c.close()

    try:
        threads = [threading.Thread(target=racer, args=(i,)) for i in range(4)]
        threads += [threading.Thread(target=solo, args=(run, i)) for i, run in enumerate(own)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors[0]
        verify_log(servers[1].url, trainer, "shared", shared, notes["shared"])
        for run, records in own.items():
            verify_log(servers[0].url, trainer, run, records, notes[run])
        psycopg = pytest.importorskip("psycopg")
        with psycopg.connect(pg_url.replace("+psycopg", "")) as conn:
            rows = conn.execute(
                "SELECT r.name, count(*), count(DISTINCT l.idx), min(l.idx), max(l.idx), r.size "
                "FROM attest_leaves l JOIN attest_runs r ON r.id = l.run_id GROUP BY r.name, r.size"
            ).fetchall()
        sizes = {"shared": 300, **{run: 120 for run in own}}
        for name, count, distinct, lo, hi, size in rows:
            assert (count, distinct, lo, hi, size) == (
                sizes[name],
                sizes[name],
                0,
                sizes[name] - 1,
                sizes[name],
            )
    finally:
        for s in servers:
            s.stop()


def _drop_connections(pg_url: str) -> None:
    """End every other session on the test database, as a database restart would."""
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def _pg_store(pg_url: str, signer: LogSigner | None = None, **options: Any) -> Store:
    store = Store(
        pg_url,
        signer=signer or LogSigner("localhost/attest", ed25519.Ed25519PrivateKey.generate()),
        checker=BatchChecker(workers=0),
        **options,
    )
    store.create_schema()
    return store


@pytest.mark.postgres
def test_postgres_request_read_survives_connections_the_database_dropped(pg_url: str) -> None:
    store = _pg_store(pg_url)
    try:
        token = issue_token(store, role="reader", name="auditor")[0]
        store.create_run("r", TrainerKey.generate().public, {}, owner="t")
        h = hash_token(token)
        expected = store.token_and_run(h, "r")
        assert expected[0] is not None and expected[1] is not None

        async def read_around_a_drop() -> list[Any]:
            first = await store.token_and_run_async(h, "r")
            _drop_connections(pg_url)
            return [first, await store.token_and_run_async(h, "r")]

        _drop_connections(pg_url)
        assert store.token_and_run(h, "r") == expected  # the thread path
        assert asyncio.run(read_around_a_drop()) == [expected, expected]  # the event-loop path
        assert asyncio.run(store.token_and_run_async(h, "r")) == expected  # on another loop
    finally:
        store.dispose()


@pytest.mark.postgres
def test_postgres_proof_reads_are_reused_only_until_this_process_writes(pg_url: str) -> None:
    store = _pg_store(pg_url, recent_read_seconds=3600)
    other = _pg_store(pg_url, store.signer)  # another replica
    try:
        token = issue_token(store, role="reader", name="auditor")[0]
        local = hash_token(issue_token(store, role="reader", name="local")[0])
        key = TrainerKey.generate()
        store.create_run("r", key.public, {}, owner="t")
        records = [r.to_json() for r in chain("r", key, 4)]
        h = hash_token(token)

        def read(*, recent: bool, token_hash: str = h) -> tuple[Any, Any]:
            return asyncio.run(store.token_and_run_async(token_hash, "r", recent=recent))

        assert read(recent=True)[1].size == 0
        other.append("r", records[:2])
        assert read(recent=True)[1].size == 0  # a proof request may reuse the earlier read
        assert read(recent=False)[1].size == 2  # every other request reads
        assert read(recent=True)[1].size == 2  # and that read is the one reused next
        store.append("r", records[2:])
        assert read(recent=True)[1].size == 4  # this process's own append is seen at once
        other.revoke_token("auditor")
        assert read(recent=True)[0].revoked_at is None  # within the bound, on another replica
        assert read(recent=False)[0].revoked_at is not None
        assert read(recent=True)[0].revoked_at is not None  # a refusal ends the reuse
        assert read(recent=True, token_hash=local)[0].revoked_at is None
        store.revoke_token("local")  # a revocation through this process: seen at once
        assert read(recent=True, token_hash=local)[0].revoked_at is not None
    finally:
        store.dispose()
        other.dispose()


@pytest.mark.postgres
def test_postgres_proofs_never_refuse_a_leaf_another_replica_just_appended(
    tmp_path: Path, pg_url: str
) -> None:
    app = create_app(
        Settings(data=tmp_path / "a", database_url=pg_url, mlflow=False, verify_workers=0)
    )
    store: Store = app.state.attest.store
    other = _pg_store(pg_url, store.signer)  # another replica
    try:
        reader = issue_token(store, role="reader", name="auditor")[0]
        key = TrainerKey.generate()
        store.create_run("r", key.public, {}, owner="t")
        records = chain("r", key, 6)
        other.append("r", [r.to_json() for r in records[:3]])
        with TestClient(app) as client:
            get = functools.partial(client.get, headers=auth(reader))
            assert get("/v1/runs/r/proof/inclusion?index=0").json()["size"] == 3
            newest = other.append("r", [r.to_json() for r in records[3:]]).checkpoint
            head = open_checkpoint(newest, NoteVerifier.from_vkey(store.signer.verifier.to_vkey()))
            proof = get("/v1/runs/r/proof/inclusion?index=5").json()
            assert (proof["size"], proof["checkpoint"]) == (6, newest)
            verify_inclusion(
                index=5,
                size=6,
                leaf_hash=SHA256.hash_leaf(records[5].leaf_data()),
                proof=[bytes.fromhex(x) for x in proof["proof"]],
                root=head.checkpoint.root,
            )
            assert get("/v1/runs/r/proof/consistency?old=3&new=6").json()["new_root"] == (
                head.checkpoint.root.hex()
            )
            store.revoke_token("auditor")
            assert get("/v1/runs/r/proof/inclusion?index=0").status_code == 401
    finally:
        other.dispose()
