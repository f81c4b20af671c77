"""The log server's REST contract, in process (DESIGN §5): appends, proofs, bundles, errors, roles.

Every test drives the FastAPI app through its HTTP interface with the MLflow mirror off; the
process-level behaviour (MLflow mount, crash recovery, PostgreSQL replicas) lives in
``test_server_processes.py``.
"""

from __future__ import annotations

import base64
import itertools
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from attest.bundle import Bundle
from attest.canonical import canonical_json, sha256_digest
from attest.keys import TrainerKey
from attest.merkle import SHA256
from attest.note import NoteVerifier, open_checkpoint
from attest.proof import verify_consistency, verify_inclusion
from attest.records import RecordWriter, SignedRecord
from attest.server import Settings, create_app
from attest.server.auth import issue_token
from attest.server.cli import token as token_cli
from attest.server.errors import ConflictError
from attest.server.storage import Store
from attest.statement import LineageStatement, sign_statement

BATCH = ["sha256:" + "0" * 64]


def steps(writer: RecordWriter, n: int, *, first: int = 0) -> list[SignedRecord]:
    return [
        writer.write(
            "train.steps",
            {
                "first_step": first + i,
                "loss": [2.0 - 0.01 * (first + i)],
                "lr": [0.1],
                "grad_norm": [None],
                "batch": BATCH,
            },
        )
        for i in range(n)
    ]


def body(records: list[SignedRecord]) -> dict[str, Any]:
    return {"records": [r.to_json() for r in records]}


class Server:
    """An app, its client, and tokens for each role."""

    def __init__(self, data: Path) -> None:
        self.app = create_app(Settings(data=data, mlflow=False, max_body_bytes=256 * 1024))
        self.store: Store = self.app.state.attest.store
        self.client = TestClient(self.app)
        self.verifier = NoteVerifier.from_vkey(self.client.get("/v1/server-key").text.strip())
        self.tokens = {
            name: issue_token(self.store, role=role, name=name)[0]
            for name, role in [
                ("alice", "trainer"),
                ("bob", "trainer"),
                ("reader", "reader"),
                ("admin", "admin"),
            ]
        }
        self.tokens["granted"] = issue_token(
            self.store, role="reader", name="granted", runs=["r1"]
        )[0]

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def create(self, run: str, key: TrainerKey, who: str = "alice") -> Any:
        return self.client.post(
            "/v1/runs", json={"run": run, "trainer_key": key.public.to_pem()}, headers=self.h(who)
        )


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "data")
    with s.client:
        yield s


def test_create_run_is_idempotent_for_the_same_key_and_refuses_another(srv: Server) -> None:
    key = TrainerKey.generate()
    assert srv.create("r1", key).status_code == 201
    again = srv.create("r1", key)
    assert again.status_code == 200 and again.json()["trainer_key_id"] == key.key_id
    other = srv.create("r1", TrainerKey.generate())
    assert other.status_code == 409
    assert other.json()["expected"] == key.key_id


def test_append_receipt_checkpoint_and_proofs_verify(srv: Server) -> None:
    key = TrainerKey.generate()
    srv.create("r1", key)
    w = RecordWriter("r1", key)
    notes = []
    all_records: list[SignedRecord] = []
    for n in (3, 1, 7):
        batch = steps(w, n, first=len(all_records))
        resp = srv.client.post("/v1/runs/r1/records", json=body(batch), headers=srv.h("alice"))
        assert resp.status_code == 200, resp.text
        receipt = resp.json()
        assert (receipt["first_index"], receipt["count"]) == (len(all_records), n)
        all_records += batch
        cp = open_checkpoint(receipt["checkpoint"], srv.verifier, origin="localhost/attest/runs/r1")
        assert cp.checkpoint.size == len(all_records) and cp.timestamp is not None
        notes.append(cp)
    final = notes[-1].checkpoint
    assert (
        srv.client.get("/v1/runs/r1/checkpoint", headers=srv.h("alice")).text == notes[-1].note_text
    )
    for i, rec in enumerate(all_records):
        p = srv.client.get(f"/v1/runs/r1/proof/inclusion?index={i}", headers=srv.h("alice")).json()
        verify_inclusion(
            index=i,
            size=final.size,
            leaf_hash=SHA256.hash_leaf(rec.leaf_data()),
            proof=[bytes.fromhex(x) for x in p["proof"]],
            root=final.root,
        )
    for old in notes[:-1]:
        p = srv.client.get(
            f"/v1/runs/r1/proof/consistency?old={old.checkpoint.size}&new={final.size}",
            headers=srv.h("alice"),
        ).json()
        verify_consistency(
            old_size=old.checkpoint.size,
            new_size=final.size,
            old_root=old.checkpoint.root,
            new_root=final.root,
            proof=[bytes.fromhex(x) for x in p["proof"]],
        )
    entries = srv.client.get("/v1/runs/r1/entries?start=2&end=5", headers=srv.h("alice")).json()
    assert [canonical_json(e) for e in entries["entries"]] == [
        r.leaf_data() for r in all_records[2:5]
    ]


def test_retry_of_an_acknowledged_batch_is_acknowledged_again_without_duplicates(
    srv: Server,
) -> None:
    key = TrainerKey.generate()
    srv.create("r1", key)
    w = RecordWriter("r1", key)
    first, second = steps(w, 4), steps(w, 2, first=4)
    srv.client.post("/v1/runs/r1/records", json=body(first), headers=srv.h("alice"))
    resp = srv.client.post("/v1/runs/r1/records", json=body(first), headers=srv.h("alice"))
    assert resp.status_code == 200 and resp.json()["first_index"] == 0
    # overlapping retry: the tail of the first batch plus the new batch
    resp = srv.client.post(
        "/v1/runs/r1/records", json=body(first[2:] + second), headers=srv.h("alice")
    )
    assert resp.status_code == 200 and resp.json()["first_index"] == 2
    assert srv.client.get("/v1/runs/r1", headers=srv.h("alice")).json()["size"] == 6


def test_chain_break_is_409_naming_expected_seq_and_appends_nothing(srv: Server) -> None:
    key = TrainerKey.generate()
    srv.create("r1", key)
    w = RecordWriter("r1", key)
    srv.client.post("/v1/runs/r1/records", json=body(steps(w, 2)), headers=srv.h("alice"))
    skipped = RecordWriter("r1", key, seq=w.seq + 1, prev=w.prev)
    resp = srv.client.post(
        "/v1/runs/r1/records", json=body(steps(skipped, 1)), headers=srv.h("alice")
    )
    assert resp.status_code == 409
    err = resp.json()
    assert (err["expected"], err["got"], err["next_seq"]) == (2, 3, 2)
    assert err["prev"] == w.prev
    # a forked chain (same seq, other bytes) is refused as well
    fork = RecordWriter("r1", key)
    resp = srv.client.post(
        "/v1/runs/r1/records", json=body(steps(fork, 1, first=50)), headers=srv.h("alice")
    )
    assert resp.status_code == 409
    # a batch that breaks in the middle appends nothing
    good = steps(w, 2, first=2)
    broken = good + steps(RecordWriter("r1", key, seq=9, prev=w.prev), 1)
    assert (
        srv.client.post(
            "/v1/runs/r1/records", json=body(broken), headers=srv.h("alice")
        ).status_code
        == 409
    )
    assert srv.client.get("/v1/runs/r1", headers=srv.h("alice")).json()["size"] == 2


def test_records_signed_by_another_key_or_tampered_are_refused(srv: Server) -> None:
    key = TrainerKey.generate()
    srv.create("r1", key)
    forged = steps(RecordWriter("r1", TrainerKey.generate()), 1)
    resp = srv.client.post("/v1/runs/r1/records", json=body(forged), headers=srv.h("alice"))
    assert resp.status_code == 400 and "signature" in resp.json()["error"]
    env = steps(RecordWriter("r1", key), 1)[0].to_json()
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[-1] ^= 1
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    resp = srv.client.post("/v1/runs/r1/records", json={"records": [env]}, headers=srv.h("alice"))
    assert resp.status_code == 400
    assert srv.client.get("/v1/runs/r1", headers=srv.h("alice")).json()["size"] == 0


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"{not json", 400),
        (b'{"records": [], "records": []}', 400),
        (b'{"records": []}', 400),
        (b'{"records": [{"payload": "%%%", "payloadType": "x", "signatures": []}]}', 400),
        (b'{"records": 7}', 400),
        (b'{"other": []}', 400),
        (b"[1, 2]", 400),
        (b'{"records": [NaN]}', 400),
        (b'{"records": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
    ],
    ids=[
        "not-json",
        "duplicate-key",
        "empty",
        "bad-envelope",
        "not-list",
        "wrong-field",
        "array",
        "nan",
        "nested-too-deep",
    ],
)
def test_malformed_append_bodies_are_4xx(srv: Server, payload: bytes, status: int) -> None:
    srv.create("r1", TrainerKey.generate())
    resp = srv.client.post(
        "/v1/runs/r1/records",
        content=payload,
        headers={**srv.h("alice"), "Content-Type": "application/json"},
    )
    assert resp.status_code == status
    assert isinstance(resp.json()["error"], str)


def test_oversize_body_is_413_and_unknown_run_404(srv: Server) -> None:
    srv.create("r1", TrainerKey.generate())
    big = b'{"records": ["' + b"x" * (300 * 1024) + b'"]}'
    resp = srv.client.post(
        "/v1/runs/r1/records",
        content=big,
        headers={**srv.h("alice"), "Content-Type": "application/json"},
    )
    assert resp.status_code == 413
    resp = srv.client.post("/v1/runs/nope/records", json={"records": []}, headers=srv.h("admin"))
    assert resp.status_code == 404 and "unknown run" in resp.json()["error"]


def test_blobs_are_stored_only_under_their_digest(srv: Server) -> None:
    srv.create("r1", TrainerKey.generate())
    doc = {"ids": [3, 1, 2], "epoch": 0}
    digest = sha256_digest(canonical_json(doc))
    url = f"/v1/runs/r1/blobs/{digest}"
    assert srv.client.put(url, json=doc, headers=srv.h("alice")).status_code == 201
    assert srv.client.put(url, json=doc, headers=srv.h("alice")).status_code == 200
    wrong = srv.client.put(url, json={"ids": [1, 2, 3], "epoch": 0}, headers=srv.h("alice"))
    assert wrong.status_code == 400 and wrong.json()["expected"] == digest
    assert (
        srv.client.put("/v1/runs/r1/blobs/md5:abc", json=doc, headers=srv.h("alice")).status_code
        == 400
    )
    bundle = Bundle.from_json(srv.client.get("/v1/runs/r1/bundle", headers=srv.h("alice")).json())
    assert bundle.blobs == {digest: doc}


def _statement(key: TrainerKey, note: str) -> dict[str, Any]:
    lineage = LineageStatement(
        run="r1",
        model_sha256="ab" * 32,
        digest_algorithm="attest-tensors-v1/sha256/chunk=16777216",
        external_parameters={"config": {}, "seed": 0, "code": {}},
        internal_parameters={"environment": {}},
        dependencies=(),
        byproducts=(),
        log_checkpoint=note,
        started="2026-01-01T00:00:00Z",
        finished="2026-01-01T00:01:00Z",
    )
    return sign_statement(lineage, key)


def test_statement_must_be_signed_by_the_runs_trainer_key(srv: Server) -> None:
    key = TrainerKey.generate()
    srv.create("r1", key)
    w = RecordWriter("r1", key)
    note = srv.client.post(
        "/v1/runs/r1/records", json=body(steps(w, 2)), headers=srv.h("alice")
    ).json()["checkpoint"]
    good = _statement(key, note)
    bad = _statement(TrainerKey.generate(), note)
    resp = srv.client.put("/v1/runs/r1/statement", json=bad, headers=srv.h("alice"))
    assert resp.status_code == 400
    assert (
        srv.client.put("/v1/runs/r1/statement", json=good, headers=srv.h("alice")).status_code
        == 201
    )
    assert (
        srv.client.put("/v1/runs/r1/statement", json=good, headers=srv.h("alice")).status_code
        == 200
    )
    bundle = Bundle.from_json(srv.client.get("/v1/runs/r1/bundle", headers=srv.h("alice")).json())
    assert bundle.statement == good


def test_bundle_holds_every_record_and_consistent_checkpoints(srv: Server) -> None:
    key = TrainerKey.generate()
    srv.create("r1", key)
    w = RecordWriter("r1", key)
    records: list[SignedRecord] = []
    for n in (2, 3, 1):
        batch = steps(w, n, first=len(records))
        srv.client.post("/v1/runs/r1/records", json=body(batch), headers=srv.h("alice"))
        records += batch
    bundle = Bundle.from_json(srv.client.get("/v1/runs/r1/bundle", headers=srv.h("reader")).json())
    assert [r.leaf_data() for r in bundle.records] == [r.leaf_data() for r in records]
    heads = [open_checkpoint(n, srv.verifier).checkpoint for n in bundle.checkpoints]
    assert [h.size for h in heads] == [2, 5, 6]
    for (a, b), proof in zip(itertools.pairwise(heads), bundle.consistency, strict=True):
        verify_consistency(
            old_size=a.size, new_size=b.size, old_root=a.root, new_root=b.root, proof=list(proof)
        )


def test_tlog_tiles_serve_entries_and_level0_hashes(srv: Server) -> None:
    key = TrainerKey.generate()
    srv.create("r1", key)
    records = steps(RecordWriter("r1", key), 5)
    srv.client.post("/v1/runs/r1/records", json=body(records), headers=srv.h("alice"))
    raw = srv.client.get("/v1/runs/r1/tlog/tile/entries/000.p/5", headers=srv.h("alice")).content
    pos, leaves = 0, []
    while pos < len(raw):
        (n,) = struct.unpack(">H", raw[pos : pos + 2])
        leaves.append(raw[pos + 2 : pos + 2 + n])
        pos += 2 + n
    assert leaves == [r.leaf_data() for r in records]
    tile = srv.client.get("/v1/runs/r1/tlog/tile/0/000.p/5", headers=srv.h("alice")).content
    assert tile == b"".join(SHA256.hash_leaf(r.leaf_data()) for r in records)
    assert srv.client.get("/v1/runs/r1/tlog/tile/0/000", headers=srv.h("alice")).status_code == 404
    assert srv.client.get("/v1/runs/r1/tlog/tile/0/0x1", headers=srv.h("alice")).status_code == 400


def test_role_denials(srv: Server) -> None:
    key = TrainerKey.generate()
    assert srv.create("r1", key, who="alice").status_code == 201
    records = body(steps(RecordWriter("r1", key), 1))
    post = srv.client.post
    # no token, bad scheme, unknown token
    assert post("/v1/runs/r1/records", json=records).status_code == 401
    assert (
        post("/v1/runs/r1/records", json=records, headers={"Authorization": "Basic x"}).status_code
        == 401
    )
    assert (
        post(
            "/v1/runs/r1/records", json=records, headers={"Authorization": "Bearer attest_nope"}
        ).status_code
        == 401
    )
    # a reader can neither append nor create runs
    assert post("/v1/runs/r1/records", json=records, headers=srv.h("reader")).status_code == 403
    assert srv.create("r2", TrainerKey.generate(), who="reader").status_code == 403
    # a trainer cannot append to (or re-register) another trainer's run, nor read it
    assert post("/v1/runs/r1/records", json=records, headers=srv.h("bob")).status_code == 403
    assert srv.create("r1", key, who="bob").status_code == 403
    assert srv.client.get("/v1/runs/r1", headers=srv.h("bob")).status_code == 403
    # a granted reader reads only its runs
    srv.create("r3", TrainerKey.generate(), who="bob")
    assert srv.client.get("/v1/runs/r1/bundle", headers=srv.h("granted")).status_code == 200
    assert srv.client.get("/v1/runs/r3/bundle", headers=srv.h("granted")).status_code == 403
    assert [r["run"] for r in srv.client.get("/v1/runs", headers=srv.h("granted")).json()] == ["r1"]
    # only admins manage tokens
    assert post("/v1/tokens", json={"role": "admin"}, headers=srv.h("alice")).status_code == 403
    made = post("/v1/tokens", json={"role": "reader", "name": "eve"}, headers=srv.h("admin"))
    assert made.status_code == 201
    eve = {"Authorization": f"Bearer {made.json()['token']}"}
    assert srv.client.get("/v1/runs/r1", headers=eve).status_code == 200
    assert srv.client.delete("/v1/tokens/eve", headers=srv.h("admin")).json() == {"revoked": 1}
    assert srv.client.get("/v1/runs/r1", headers=eve).status_code == 401
    # the owner appends fine
    assert post("/v1/runs/r1/records", json=records, headers=srv.h("alice")).status_code == 200


@pytest.mark.parametrize("route", ["proof/inclusion?index=1", "proof/consistency?old=1"])
def test_proof_routes_check_the_token_the_role_and_the_run(srv: Server, route: str) -> None:
    key = TrainerKey.generate()
    srv.create("r1", key)
    srv.client.post(
        "/v1/runs/r1/records", json=body(steps(RecordWriter("r1", key), 3)), headers=srv.h("alice")
    )
    srv.create("r3", TrainerKey.generate(), who="bob")

    def status(run: str, headers: dict[str, str] | None = None) -> int:
        return int(srv.client.get(f"/v1/runs/{run}/{route}", headers=headers).status_code)

    nobody = {"Authorization": "Bearer attest_nope"}
    assert (status("r1"), status("r1", nobody), status("r1", {"Authorization": "Basic x"})) == (
        401,
        401,
        401,
    )
    assert status("absent", nobody) == 401  # 401 comes before 404, as on every run route
    assert status("absent", srv.h("reader")) == 404
    assert status("r1", srv.h("bob")) == 403  # another trainer's run
    assert (status("r1", srv.h("granted")), status("r3", srv.h("granted"))) == (200, 403)
    assert (status("r1", srv.h("alice")), status("r1", srv.h("reader"))) == (200, 200)
    made = srv.client.post(
        "/v1/tokens", json={"role": "reader", "name": "eve"}, headers=srv.h("admin")
    )
    eve = {"Authorization": f"Bearer {made.json()['token']}"}
    assert status("r1", eve) == 200
    srv.client.delete("/v1/tokens/eve", headers=srv.h("admin"))
    assert status("r1", eve) == 401


def test_proof_sizes_beyond_the_log_are_refused(srv: Server) -> None:
    key = TrainerKey.generate()
    srv.create("r1", key)
    srv.client.post(
        "/v1/runs/r1/records", json=body(steps(RecordWriter("r1", key), 3)), headers=srv.h("alice")
    )

    def get(query: str) -> Any:
        return srv.client.get(f"/v1/runs/r1/proof/{query}", headers=srv.h("alice"))

    for query in ("inclusion?index=3", "inclusion?index=0&size=4", "inclusion?index=2&size=2"):
        assert get(query).status_code == 400, query
    for query in ("consistency?old=1&new=4", "consistency?old=4", "consistency?old=0"):
        assert get(query).status_code == 400, query
    proof = get("inclusion?index=2").json()
    assert (proof["size"], proof["index"], len(proof["proof"])) == (3, 2, 1)
    assert (
        proof["checkpoint"] == srv.client.get("/v1/runs/r1/checkpoint", headers=srv.h("alice")).text
    )
    assert get("consistency?old=2").json()["new"] == 3


def test_tokens_are_stored_hashed(srv: Server) -> None:
    from attest.server.auth import hash_token

    raw = srv.store.engine.raw_connection()
    try:
        dump = "\n".join(raw.driver_connection.iterdump())  # type: ignore[union-attr]
    finally:
        raw.close()
    for tok in srv.tokens.values():
        assert tok not in dump
        assert hash_token(tok) in dump


def test_token_cli_create_list_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    data = str(tmp_path / "d")
    made = runner.invoke(
        token_cli,
        ["create", "--role", "reader", "--name", "reg", "--runs", "r1", "--data", data, "--json"],
    )
    assert made.exit_code == 0, made.output
    info = json.loads(made.output.strip().splitlines()[-1])
    assert info["token"].startswith("attest_")
    listed = runner.invoke(token_cli, ["list", "--data", data])
    assert "reg\treader\tactive\truns=r1" in listed.output and info["token"] not in listed.output
    assert runner.invoke(token_cli, ["revoke", "reg", "--data", data]).exit_code == 0
    assert "revoked" in runner.invoke(token_cli, ["list", "--data", data]).output
    assert runner.invoke(token_cli, ["revoke", "reg", "--data", data]).exit_code != 0


def test_a_database_refuses_a_second_server_key(tmp_path: Path) -> None:
    create_app(Settings(data=tmp_path / "a", mlflow=False))
    url = f"sqlite:///{tmp_path / 'a' / 'attest.db'}"
    with pytest.raises(ConflictError):
        create_app(Settings(data=tmp_path / "b", database_url=url, mlflow=False))


def test_report_page_shows_the_run(srv: Server) -> None:
    key = TrainerKey.generate()
    srv.create("r1", key)
    srv.client.post(
        "/v1/runs/r1/records", json=body(steps(RecordWriter("r1", key), 5)), headers=srv.h("alice")
    )
    page = srv.client.get("/runs/r1", headers=srv.h("alice"))
    assert page.status_code == 200 and "<svg" in page.text and "/v1/runs/r1/bundle" in page.text
    login = srv.client.post(
        "/login",
        content=f"token={srv.tokens['reader']}",
        follow_redirects=False,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert login.status_code == 303 and "attest_token" in login.headers["set-cookie"]
