"""Destinations, the spool and its sender: order, durability, retries, no duplicates."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from attest.bundle import Bundle
from attest.client import (
    DestinationUnavailable,
    HttpDestination,
    Spool,
    open_destination,
    tree_size_of,
)
from attest.errors import ChainError, ConfigurationError, FormatError
from attest.keys import TrainerKey, TrainerPublicKey
from attest.log import LocalLog, Receipt
from attest.records import RecordWriter, SignedRecord, check_chain

BODY = {
    "first_step": 0,
    "loss": [1.0],
    "lr": [0.1],
    "grad_norm": [None],
    "batch": ["sha256:" + "0" * 64],
}


def records(n: int, key: TrainerKey, run: str = "run1") -> list[SignedRecord]:
    w = RecordWriter(run, key)
    return [w.write("train.steps", dict(BODY, first_step=i)) for i in range(n)]


class Flaky:
    """A LocalLog that fails the first ``fail`` appends; with ``lose_answer`` the append lands
    in the log but the answer is lost (as when a server dies after committing)."""

    def __init__(self, log: LocalLog, *, fail: int = 0, lose_answer: int = 0) -> None:
        self.log, self.fail, self.lose = log, fail, lose_answer
        self.appends: list[int] = []

    def create_run(
        self, run: str, key: TrainerPublicKey, meta: Mapping[str, Any] | None = None
    ) -> None:
        self.log.create_run(run, key, meta)

    def append(self, run: str, leaves: Sequence[bytes]) -> Receipt:
        if self.fail > 0:
            self.fail -= 1
            raise DestinationUnavailable("down")
        receipt = self.log.append(run, leaves)
        self.appends.append(len(leaves))
        if self.lose > 0:
            self.lose -= 1
            raise DestinationUnavailable("answer lost")
        return receipt

    def put_blob(self, run: str, doc: Any) -> str:
        return self.log.put_blob(run, doc)

    def put_statement(self, run: str, st: Mapping[str, Any]) -> None:
        self.log.put_statement(run, st)

    def checkpoint(self, run: str) -> str:
        return self.log.checkpoint(run)

    def export(self, run: str) -> Bundle:
        return self.log.export(run)


def test_spool_ships_in_order_through_outages_and_lost_answers(tmp_path: Path) -> None:
    key = TrainerKey.generate()
    log = LocalLog(tmp_path / "log")
    dest = Flaky(log, fail=3, lose_answer=1)
    spool = Spool(
        tmp_path / "spool",
        dest,
        "run1",
        verifier=log.signer.verifier,
        backoff=(0.001, 0.01),
        max_batch=4,
    )
    spool.add_create(key.public, {})
    recs = records(10, key)
    spool.add_records(recs[:5])
    spool.add_blob({"a": 1})
    spool.add_records(recs[5:])
    assert spool.flush(10)
    spool.close()
    bundle = log.export("run1")
    assert [r.record.seq for r in bundle.records] == list(range(10))
    check_chain(r.record for r in bundle.records)
    assert not spool.errors
    assert spool.pending == 0


def test_spool_resumes_after_restart_without_resending(tmp_path: Path) -> None:
    key = TrainerKey.generate()
    log = LocalLog(tmp_path / "log")
    dest = Flaky(log)
    spool = Spool(tmp_path / "spool", dest, "run1", start=False)
    spool.add_create(key.public, {})
    recs = records(6, key)
    spool.add_records(recs)
    assert spool.ship_once() and spool.ship_once()  # create, then all six leaves in one batch
    spool.add_statement({"mediaType": "x"})
    spool._file.close()
    # A torn last line (crash mid-write) is dropped on reopen.
    with open(tmp_path / "spool" / "spool.jsonl", "ab") as f:
        f.write(b'{"k": "blob", "doc"')
    again = Spool(tmp_path / "spool", dest, "run1", start=False)
    assert again.pending == 1
    assert again.ship_once() and not again.ship_once()
    assert dest.appends == [6]
    assert log.export("run1").statement == {"mediaType": "x"}
    assert again.last_leaf() == recs[-1].to_json()


def test_a_log_killed_between_entries_and_head_takes_the_retry_after_restart(
    tmp_path: Path,
) -> None:
    # The server fsync'd the batch and died before signing its head; the sender never got an
    # answer. After the restart the retried batch is a repeat (409), and the log's checkpoint
    # must cover the batch so the sender can see it landed.
    key = TrainerKey.generate()
    log = LocalLog(tmp_path / "log")
    dest = Flaky(log, lose_answer=1)
    spool = Spool(tmp_path / "spool", dest, "run1", verifier=log.signer.verifier, start=False)
    spool.add_create(key.public, {})
    spool.add_records(records(3, key))
    spool.ship_once()
    with pytest.raises(DestinationUnavailable):
        spool.ship_once()
    heads = tmp_path / "log" / "runs" / "run1" / "checkpoints.jsonl"
    heads.write_bytes(b"")  # the head of that batch was never written
    dest.log = LocalLog(tmp_path / "log")  # the restarted server
    assert spool.ship_once() and spool.pending == 0
    assert not spool.errors
    assert [r.record.seq for r in dest.log.export("run1").records] == [0, 1, 2]


def test_a_real_chain_break_is_not_skipped(tmp_path: Path) -> None:
    key = TrainerKey.generate()
    log = LocalLog(tmp_path / "log")
    spool = Spool(tmp_path / "spool", log, "run1", start=False)
    spool.add_create(key.public, {})
    spool.add_records(records(3, key)[1:])  # seq 1, 2: a gap at 0
    spool.ship_once()
    with pytest.raises(ChainError):
        spool.ship_once()
    assert spool.pending == 2


def test_receipts_are_checked_against_the_server_key(tmp_path: Path) -> None:
    key = TrainerKey.generate()
    log = LocalLog(tmp_path / "log")
    other = LocalLog(tmp_path / "other")
    spool = Spool(tmp_path / "spool", log, "run1", verifier=other.signer.verifier, start=False)
    spool.add_create(key.public, {})
    spool.add_records(records(2, key))
    spool.ship_once()
    spool.ship_once()
    assert spool.errors and "verif" in str(type(spool.errors[0]).__mro__).lower()


# --- HTTP ------------------------------------------------------------------------------------


def log_app(log: LocalLog, token: str) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """The REST contract, served from a LocalLog through httpx.MockTransport."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("authorization") != f"Bearer {token}":
            return httpx.Response(401, json={"detail": "bad token"})
        parts = request.url.path.strip("/").split("/")
        try:
            if request.method == "POST" and parts == ["v1", "runs"]:
                body = json.loads(request.content)
                log.create_run(
                    body["run"], TrainerPublicKey.from_pem(body["trainer_key"]), body["meta"]
                )
                return httpx.Response(201, json={"run": body["run"]})
            run = parts[2]
            if request.method == "POST" and parts[3:] == ["records"]:
                leaves = [
                    SignedRecord.from_json(r).leaf_data()
                    for r in json.loads(request.content)["records"]
                ]
                return httpx.Response(200, json=log.append(run, leaves).to_json())
            if request.method == "PUT" and parts[3] == "blobs":
                assert log.put_blob(run, json.loads(request.content)) == parts[4]
                return httpx.Response(201)
            if request.method == "PUT" and parts[3:] == ["statement"]:
                log.put_statement(run, json.loads(request.content))
                return httpx.Response(201)
            if request.method == "GET" and parts[3:] == ["bundle"]:
                return httpx.Response(200, json=log.export(run).to_json())
            if request.method == "GET" and parts[3:] == ["checkpoint"]:
                return httpx.Response(200, text=log.checkpoint(run))
        except ChainError as exc:
            return httpx.Response(409, json={"detail": exc.message})
        except FormatError as exc:
            return httpx.Response(400, json={"detail": exc.message})
        return httpx.Response(404, json={"detail": "no such endpoint"})

    return httpx.MockTransport(handle), seen


def test_http_destination_speaks_the_rest_contract(tmp_path: Path) -> None:
    key = TrainerKey.generate()
    log = LocalLog(tmp_path / "log")
    transport, seen = log_app(log, "t0k")
    dest = HttpDestination("http://log.example", "t0k", transport=transport)
    dest.create_run("run1", key.public, {"m": 1})
    recs = records(3, key)
    receipt = dest.append("run1", [r.leaf_data() for r in recs])
    assert (receipt.first_index, receipt.count) == (0, 3)
    assert tree_size_of(receipt.checkpoint, log.signer.verifier) == 3
    digest = dest.put_blob("run1", {"b": [1, 2]})
    dest.put_statement("run1", {"mediaType": "s"})
    assert tree_size_of(dest.checkpoint("run1")) == 3
    bundle = dest.export("run1")
    assert digest in bundle.blobs and bundle.statement == {"mediaType": "s"}
    assert [(r.method, r.url.path) for r in seen[:4]] == [
        ("POST", "/v1/runs"),
        ("POST", "/v1/runs/run1/records"),
        ("PUT", f"/v1/runs/run1/blobs/{digest}"),
        ("PUT", "/v1/runs/run1/statement"),
    ]
    with pytest.raises(ChainError):  # a repeated seq
        dest.append("run1", [recs[0].leaf_data()])
    with pytest.raises(ConfigurationError, match="token"):
        HttpDestination("http://log.example", "wrong", transport=transport).checkpoint("run1")


def test_http_errors_map_to_retryable_or_not() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(DestinationUnavailable):
        HttpDestination("http://x", transport=httpx.MockTransport(down)).checkpoint("r")
    busy = httpx.MockTransport(lambda r: httpx.Response(503, text="busy"))
    with pytest.raises(DestinationUnavailable):
        HttpDestination("http://x", transport=busy).checkpoint("r")


def test_spool_over_http_survives_an_outage(tmp_path: Path) -> None:
    key = TrainerKey.generate()
    log = LocalLog(tmp_path / "log")
    transport, _ = log_app(log, "t")
    up = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        if not up.is_set():
            raise httpx.ConnectError("refused")
        return transport.handle_request(request)

    dest = HttpDestination("http://x", "t", transport=httpx.MockTransport(handler))
    spool = Spool(tmp_path / "spool", dest, "run1", backoff=(0.001, 0.02))
    spool.add_create(key.public, {})
    spool.add_records(records(5, key))
    assert not spool.flush(0.2)
    up.set()
    assert spool.flush(10)
    spool.close()
    assert len(log.export("run1").records) == 5


def test_open_destination_schemes(tmp_path: Path) -> None:
    assert isinstance(open_destination(tmp_path / "a"), LocalLog)
    assert isinstance(open_destination(f"file://{tmp_path}/b"), LocalLog)
    assert isinstance(open_destination("https://log.example"), HttpDestination)
    log = LocalLog(tmp_path / "c")
    assert open_destination(log) is log
    with pytest.raises(ConfigurationError, match="'s3'"):
        open_destination("s3://bucket/x")


def test_records_of_another_chain_at_the_same_seq_are_never_skipped(tmp_path: Path) -> None:
    key = TrainerKey.generate()
    log = LocalLog(tmp_path / "log")
    log.create_run("run1", key.public)
    log.append("run1", [r.leaf_data() for r in records(2, key)])  # someone else's seq 0, 1
    spool = Spool(tmp_path / "spool", log, "run1", start=False)
    mine = records(3, key)  # same key, different signatures and times: other leaves
    spool.add_records(mine)
    with pytest.raises(ChainError, match="reused"):
        spool.ship_once()
    assert spool.pending == 3


def test_background_sections_shorten_the_switch_interval_and_restore_it() -> None:
    import sys

    from attest.client import yielding_to_training

    before = sys.getswitchinterval()
    with yielding_to_training():
        with yielding_to_training():
            assert sys.getswitchinterval() <= 0.0005
        assert sys.getswitchinterval() <= 0.0005
    assert sys.getswitchinterval() == before
