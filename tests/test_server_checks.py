"""The append fast path of the log server (DESIGN §5 "Appends"): signatures verified in worker
processes with the same outcome as in process, the per-process tree and note caches, and a
revocation that still takes effect on the very next read.

Each attack a check stops is sent through both paths: a forged signature, a record of another
run and a malformed record, in orders that tell "first failure of the batch" apart.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi.testclient import TestClient

from attest.errors import AttestError, FormatError, SignatureError
from attest.keys import TrainerKey
from attest.log import LogSigner
from attest.merkle import SHA256, MerkleTree
from attest.note import NoteVerifier, open_checkpoint
from attest.proof import verify_inclusion
from attest.records import RecordWriter
from attest.server import Settings, create_app, verifying
from attest.server.auth import hash_token, issue_token
from attest.server.cli import token as token_cli
from attest.server.lookup import RecentReads
from attest.server.storage import Store
from attest.server.verifying import BatchChecker, check_batch, shared_checker

BATCH = ["sha256:" + "3" * 64]


def envelopes(run: str, key: TrainerKey, n: int) -> list[dict[str, Any]]:
    w = RecordWriter(run, key)
    return [
        w.write(
            "train.steps",
            {"first_step": i, "loss": [1.0], "lr": [0.1], "grad_norm": [0.5], "batch": BATCH},
        ).to_json()
        for i in range(n)
    ]


def forge(env: dict[str, Any]) -> dict[str, Any]:
    """The envelope with its signature bytes altered (same key id)."""
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[-1] ^= 1
    return {**env, "signatures": [{**env["signatures"][0], "sig": base64.b64encode(sig).decode()}]}


@pytest.fixture(scope="module")
def pool() -> Iterator[BatchChecker]:
    checker = BatchChecker(workers=2, min_batch=4)
    checker.start()
    yield checker
    checker.close()


def outcome(checker: BatchChecker | None, run: str, key: TrainerKey, batch: list[Any]) -> Any:
    """What checking ``batch`` gives: the leaves, or the error's class, message and evidence."""
    try:
        if checker is None:
            signed = check_batch(run, key.public, batch)
        else:
            signed = checker.check(run, key.public, batch)
    except AttestError as exc:
        return (type(exc), exc.message, exc.expected, exc.got)
    return [s.leaf_data() for s in signed]


def test_pool_accepts_what_the_request_thread_accepts(pool: BatchChecker) -> None:
    key = TrainerKey.generate()
    batch = envelopes("r", key, 40)
    leaves = outcome(pool, "r", key, batch)
    assert isinstance(leaves, list) and len(leaves) == 40
    assert leaves == outcome(None, "r", key, batch)


@pytest.mark.parametrize(
    ("edits", "want"),
    [
        # a forged signature in the second chunk is found
        ({31: "forge"}, SignatureError),
        # a malformed record anywhere wins over an earlier bad signature (parsing comes first)
        ({2: "forge", 37: "malformed"}, FormatError),
        # a bad signature before a record of another run is what is reported
        ({5: "forge", 30: "other-run"}, SignatureError),
        # a record of another run before a bad signature is what is reported
        ({5: "other-run", 30: "forge"}, FormatError),
        # a record signed by another key
        ({25: "other-key"}, SignatureError),
    ],
)
def test_pool_refuses_what_the_request_thread_refuses_with_the_same_error(
    pool: BatchChecker, edits: dict[int, str], want: type[AttestError]
) -> None:
    key = TrainerKey.generate()
    batch: list[Any] = envelopes("r", key, 40)
    for i, what in edits.items():
        if what == "forge":
            batch[i] = forge(batch[i])
        elif what == "malformed":
            batch[i] = {**batch[i], "payload": "not base64!"}
        elif what == "other-run":
            batch[i] = envelopes("other", key, 1)[0]
        else:
            batch[i] = envelopes("r", TrainerKey.generate(), 1)[0]
    got = outcome(pool, "r", key, batch)
    assert got == outcome(None, "r", key, batch)
    assert isinstance(got, tuple) and got[0] is want


def test_a_broken_pool_falls_back_to_the_request_thread_then_recovers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checker = BatchChecker(workers=1, min_batch=4)
    checker.start()
    key = TrainerKey.generate()
    batch = envelopes("r", key, 8)
    try:
        pool = checker._pool
        assert pool is not None
        for proc in list(pool._processes.values()):  # a worker dies (OOM killer, kill -9)
            os.kill(proc.pid, signal.SIGKILL)
        time.sleep(0.5)
        assert len(outcome(checker, "r", key, batch)) == 8  # verified in process instead
        bad = [*batch[:5], forge(batch[5]), *batch[6:]]
        assert outcome(checker, "r", key, bad)[0] is SignatureError
        assert checker._pool is None  # not restarted at once ...
        monkeypatch.setattr(verifying, "RETRY_AFTER_S", 0)
        checker._retry_at = 0.0
        assert len(outcome(checker, "r", key, batch)) == 8
        assert checker._pool is not None  # ... but after the retry delay
    finally:
        checker.close()


def test_workers_exit_when_the_server_process_is_killed(tmp_path: Path) -> None:
    code = (
        "import os, sys, time\n"
        "from attest.server.verifying import BatchChecker\n"
        "if __name__ == '__main__':\n"
        "    c = BatchChecker(workers=2)\n"
        "    c.start()\n"
        "    print(' '.join(str(p) for p in c._pool._processes), flush=True)\n"
        "    time.sleep(600)\n"
    )
    script = tmp_path / "holder.py"
    script.write_text(code)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.2)
        assert not any(_alive(p) for p in workers)
    finally:
        if proc.poll() is None:
            proc.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_shared_checker_is_one_per_process_and_worker_count() -> None:
    assert shared_checker(0) is shared_checker(0)
    assert shared_checker(0) is not shared_checker(1)
    assert verifying.default_workers() >= 0


# --- the store's caches ------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(
        f"sqlite:///{tmp_path / 'log.db'}",
        signer=LogSigner("localhost/attest", ed25519.Ed25519PrivateKey.generate()),
        checker=BatchChecker(workers=0),
    )
    s.create_schema()
    yield s
    s.dispose()


def test_cached_tree_grows_with_this_processs_appends_and_stays_correct(store: Store) -> None:
    key = TrainerKey.generate()
    info, _ = store.create_run("r", key.public, {}, owner="t")
    batch = envelopes("r", key, 50)
    store.append(info, batch[:10])
    info = store.get_run("r")
    tree = store.tree(info)  # loaded once from the database
    for start, end in [(10, 11), (11, 30), (30, 50)]:
        store.append(info, batch[start:end])
        info = store.get_run("r")
        cached = store.cached_tree(info)
        assert cached is tree and tree.size == end  # grown in place, not reloaded
    expected = MerkleTree()
    leaves = store.entries(info, 0, 50)
    for leaf in leaves:
        expected.append(leaf)
    assert tree.root() == expected.root() == info.root
    for i in (0, 17, 49):
        verify_inclusion(
            index=i,
            size=50,
            leaf_hash=SHA256.hash_leaf(leaves[i]),
            proof=tree.inclusion_proof(i, 50),
            root=info.root,
        )


def test_cached_tree_catches_up_with_appends_made_elsewhere(tmp_path: Path, store: Store) -> None:
    key = TrainerKey.generate()
    info, _ = store.create_run("r", key.public, {}, owner="t")
    batch = envelopes("r", key, 21)
    store.append(info, batch[:5])
    tree = store.tree(store.get_run("r"))
    other = Store(store.url, signer=store.signer)  # another replica on the same database
    try:
        other.append("r", batch[5:20])
    finally:
        other.dispose()
    info = store.get_run("r")
    assert store.cached_tree(info) is None  # behind: the caller must not use it as is
    assert store.tree(info) is tree and tree.size == 20 and tree.root() == info.root
    store.append(info, batch[20:])
    info = store.get_run("r")
    assert store.cached_tree(info) is tree and tree.root() == info.root


def test_note_cache_never_hides_a_head_written_later(store: Store) -> None:
    key = TrainerKey.generate()
    info, _ = store.create_run("r", key.public, {}, owner="t")
    batch = envelopes("r", key, 6)
    store.append(info, batch[:3])
    info = store.get_run("r")
    assert store.head_at(info, 3) is not None and store.cached_head_at(info, 3)[0]
    assert store.head_at(info, 2) is None and store.cached_head_at(info, 2) == (True, None)
    assert store.head_at(info, 6) is None  # beyond the run: not remembered as missing
    assert store.cached_head_at(info, 6) == (False, None)
    receipt = store.append(info, batch[3:])
    assert store.head_at(store.get_run("r"), 6) == receipt.checkpoint


# --- the per-request read ----------------------------------------------------------------------


def test_one_read_gives_the_token_and_the_run_either_of_which_may_be_missing(store: Store) -> None:
    token = issue_token(store, role="reader", name="auditor", runs=["r"])[0]
    store.create_run("r", TrainerKey.generate().public, {"purpose": "test"}, owner="t")
    h, nobody = hash_token(token), hash_token("attest_nope")
    row, info = store.token_and_run(h, "r")
    assert row == store.find_token(h) and row is not None and row.runs == ("r",)
    assert info == store.get_run("r")
    assert store.token_and_run(h, "absent") == (row, None)
    assert store.token_and_run(nobody, "r") == (None, info)
    assert store.token_and_run(nobody, "absent") == (None, None)
    # on SQLite the event-loop path reads too, even when a recent read would do
    assert asyncio.run(store.token_and_run_async(h, "r", recent=True)) == (row, info)
    store.revoke_token("auditor")
    revoked, _ = asyncio.run(store.token_and_run_async(h, "r", recent=True))
    assert revoked is not None and revoked.revoked_at is not None


def test_recent_reads_expire_and_never_outlive_a_clear() -> None:
    reads = RecentReads(3600, limit=2)
    reads.put("a", 1, reads.generation)
    assert reads.get("a") == 1
    before = reads.generation
    reads.clear()
    assert reads.get("a") is None
    reads.put("b", 2, before)  # read before the clear: it may predate the write that caused it
    assert reads.get("b") is None
    for key in ("b", "c", "d"):
        reads.put(key, key, reads.generation)
    assert (reads.get("b"), reads.get("d")) == (None, "d")  # bounded
    reads.discard("d")
    assert reads.get("d") is None
    expired = RecentReads(0)
    expired.put("a", 1, expired.generation)
    assert expired.get("a") is None


def test_proof_routes_document_the_bearer_scheme_like_every_run_route(tmp_path: Path) -> None:
    spec = create_app(Settings(data=tmp_path, mlflow=False)).openapi()
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    for path, model in [("inclusion", "InclusionProof"), ("consistency", "ConsistencyProof")]:
        op = spec["paths"][f"/v1/runs/{{run}}/proof/{path}"]["get"]
        assert op["security"] == spec["paths"]["/v1/runs/{run}/checkpoint"]["get"]["security"]
        assert op["security"] == [{"HTTPBearer": []}]
        schema = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{model}"}


# --- over HTTP ---------------------------------------------------------------------------------


def test_large_batches_through_the_pool_over_http(tmp_path: Path) -> None:
    app = create_app(Settings(data=tmp_path, mlflow=False, verify_workers=2))
    store: Store = app.state.attest.store
    tok = issue_token(store, role="trainer", name="t")[0]
    h = {"Authorization": f"Bearer {tok}"}
    key = TrainerKey.generate()
    with TestClient(app) as client:
        assert store.checker.workers == 2
        pem = key.public.to_pem()
        assert client.post("/v1/runs", json={"run": "r", "trainer_key": pem}, headers=h).is_success
        batch = envelopes("r", key, 200)
        bad = [*batch[:150], forge(batch[150]), *batch[151:]]
        resp = client.post("/v1/runs/r/records", json={"records": bad[:200]}, headers=h)
        assert resp.status_code == 400 and "signature" in resp.json()["error"]
        assert client.get("/v1/runs/r", headers=h).json()["size"] == 0  # nothing stored
        for start in (0, 100):
            resp = client.post(
                "/v1/runs/r/records", json={"records": batch[start : start + 100]}, headers=h
            )
            assert resp.status_code == 200, resp.text
        verifier = NoteVerifier.from_vkey(client.get("/v1/server-key").text.strip())
        cp = open_checkpoint(resp.json()["checkpoint"], verifier, origin="localhost/attest/runs/r")
        assert cp.checkpoint.size == 200
        proof = client.get("/v1/runs/r/proof/inclusion?index=150", headers=h).json()
        assert proof["checkpoint"] == resp.json()["checkpoint"]
        verify_inclusion(
            index=150,
            size=200,
            leaf_hash=bytes.fromhex(proof["leaf_hash"]),
            proof=[bytes.fromhex(x) for x in proof["proof"]],
            root=cp.checkpoint.root,
        )


def test_revocation_from_another_process_stops_the_next_proof_request(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app = create_app(Settings(data=data, mlflow=False))
    store: Store = app.state.attest.store
    reader = issue_token(store, role="reader", name="auditor")[0]
    key = TrainerKey.generate()
    store.create_run("r", key.public, {}, owner="t")
    store.append("r", envelopes("r", key, 3))
    url = "/v1/runs/r/proof/inclusion?index=1"
    with TestClient(app) as client:
        for _ in range(3):  # warm every cache the request path has
            assert client.get(url, headers={"Authorization": f"Bearer {reader}"}).is_success
        result = CliRunner().invoke(token_cli, ["revoke", "auditor", "--data", str(data)])
        assert result.exit_code == 0, result.output
        resp = client.get(url, headers={"Authorization": f"Bearer {reader}"})
        assert resp.status_code == 401
        resp = client.get(
            "/v1/runs/r/proof/consistency?old=1", headers={"Authorization": f"Bearer {reader}"}
        )
        assert resp.status_code == 401
