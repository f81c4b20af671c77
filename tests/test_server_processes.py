"""The log server as real processes (DESIGN §5, §8): MLflow mount and mirror, kill -9 recovery,
and two replicas appending concurrently on one PostgreSQL database.

PostgreSQL tests use ``ATTEST_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``), create a fresh database per test and drop it
afterwards. Without a reachable server they skip, unless ``ATTEST_REQUIRE_POSTGRES=1``.
"""

from __future__ import annotations

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

from attest.bundle import Bundle
from attest.canonical import canonical_json
from attest.cli_export import export_command as export_cli
from attest.client import HttpDestination
from attest.keys import TrainerKey, save_server_key
from attest.merkle import SHA256
from attest.note import NoteVerifier, SignedCheckpoint, open_checkpoint
from attest.proof import verify_consistency, verify_inclusion
from attest.records import RecordWriter, SignedRecord
from attest.server.cli import token as token_cli

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
