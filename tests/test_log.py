"""The embedded log: all-or-nothing appends, signed tree heads, crash recovery, bundle export."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from attest.bundle import Bundle
from attest.errors import ChainError, FormatError, SignatureError
from attest.keys import TrainerKey
from attest.log import LocalLog
from attest.merkle import root_from_leaf_hashes
from attest.note import open_checkpoint
from attest.proof import verify_consistency
from attest.records import RecordWriter, SignedRecord


def steps(i: int) -> dict[str, Any]:
    return {
        "first_step": i,
        "loss": [1.0],
        "lr": [0.1],
        "grad_norm": [None],
        "batch": ["sha256:" + "00" * 32],
    }


def make_log(tmp_path: Path, key: TrainerKey) -> tuple[LocalLog, RecordWriter]:
    log = LocalLog(tmp_path / "log")
    log.create_run("run-1", key.public, {"purpose": "test"})
    return log, RecordWriter("run-1", key)


def test_appends_return_signed_consistent_checkpoints(
    tmp_path: Path, trainer_key: TrainerKey
) -> None:
    log, w = make_log(tmp_path, trainer_key)
    notes = []
    for i in range(4):
        leaves = [w.write("train.steps", steps(2 * i + j)).leaf_data() for j in range(2)]
        receipt = log.append("run-1", leaves)
        assert (receipt.first_index, receipt.count) == (2 * i, 2)
        notes.append(
            open_checkpoint(
                receipt.checkpoint, log.signer.verifier, origin=log.signer.origin("run-1")
            )
        )
    assert [n.checkpoint.size for n in notes] == [2, 4, 6, 8]
    assert all(n.timestamp is not None for n in notes)
    bundle = log.export("run-1")
    tree_root = root_from_leaf_hashes([_leaf_hash(r) for r in bundle.records])
    assert notes[-1].checkpoint.root == tree_root
    for (a, b), proof in zip(itertools.pairwise(notes), bundle.consistency, strict=True):
        verify_consistency(
            old_size=a.checkpoint.size,
            new_size=b.checkpoint.size,
            old_root=a.checkpoint.root,
            new_root=b.checkpoint.root,
            proof=list(proof),
        )


def _leaf_hash(record: SignedRecord) -> bytes:
    from attest.merkle import SHA256

    return SHA256.hash_leaf(record.leaf_data())


def test_a_bad_record_rejects_the_whole_batch(tmp_path: Path, trainer_key: TrainerKey) -> None:
    log, w = make_log(tmp_path, trainer_key)
    good = w.write("train.steps", steps(0)).leaf_data()
    forged = (
        RecordWriter(
            "run-1", TrainerKey.generate(), seq=1, prev=SignedRecord.from_leaf(good).record.digest
        )
        .write("train.steps", steps(1))
        .leaf_data()
    )
    with pytest.raises(SignatureError):
        log.append("run-1", [good, forged])
    assert log.export("run-1").records == ()  # nothing from the batch was kept


def test_gaps_and_replays_are_refused(tmp_path: Path, trainer_key: TrainerKey) -> None:
    log, w = make_log(tmp_path, trainer_key)
    first = w.write("train.steps", steps(0)).leaf_data()
    log.append("run-1", [first])
    with pytest.raises(ChainError):
        log.append("run-1", [first])
    w.write("train.steps", steps(1))  # skipped: never sent
    with pytest.raises(ChainError):
        log.append("run-1", [w.write("train.steps", steps(2)).leaf_data()])
    with pytest.raises(FormatError, match="at least one record"):
        log.append("run-1", [])


def test_torn_tail_is_dropped_on_reopen(tmp_path: Path, trainer_key: TrainerKey) -> None:
    log, w = make_log(tmp_path, trainer_key)
    log.append("run-1", [w.write("train.steps", steps(0)).leaf_data()])
    entries = tmp_path / "log" / "runs" / "run-1" / "entries"
    with open(entries, "ab") as f:
        f.write(b"\x00\x00\x10\x00partial")  # a crash in the middle of an unacknowledged write
    reopened = LocalLog(tmp_path / "log")
    assert len(reopened.export("run-1").records) == 1
    reopened.append("run-1", [w.write("train.steps", steps(1)).leaf_data()])
    assert len(LocalLog(tmp_path / "log").export("run-1").records) == 2


def test_a_crash_before_the_head_is_written_gets_a_head_on_reopen(
    tmp_path: Path, trainer_key: TrainerKey
) -> None:
    # Killed after the entries were fsync'd, before (or while) their checkpoint line was
    # written: the batch may have been acknowledged, so the reopened log must sign for it.
    log, w = make_log(tmp_path, trainer_key)
    log.append("run-1", [w.write("train.steps", steps(0)).leaf_data()])
    log.append("run-1", [w.write("train.steps", steps(1)).leaf_data()])
    heads = tmp_path / "log" / "runs" / "run-1" / "checkpoints.jsonl"
    first_line = heads.read_bytes().split(b"\n")[0] + b"\n"
    heads.write_bytes(first_line + b'{"size": 2, "no')  # the second head torn mid-line
    reopened = LocalLog(tmp_path / "log")
    head = open_checkpoint(reopened.checkpoint("run-1"), reopened.signer.verifier).checkpoint
    records = reopened.export("run-1").records
    assert head.size == 2
    assert head.root == root_from_leaf_hashes([_leaf_hash(r) for r in records])
    reopened.append("run-1", [w.write("train.steps", steps(2)).leaf_data()])
    sizes = [json.loads(line)["size"] for line in heads.read_text().splitlines()]
    assert sizes == [1, 2, 3]


def test_run_belongs_to_its_key(tmp_path: Path, trainer_key: TrainerKey) -> None:
    log, _ = make_log(tmp_path, trainer_key)
    log.create_run("run-1", trainer_key.public)  # idempotent
    with pytest.raises(ChainError, match="another trainer key"):
        log.create_run("run-1", TrainerKey.generate().public)


def test_exported_bundle_round_trips(tmp_path: Path, trainer_key: TrainerKey) -> None:
    log, w = make_log(tmp_path, trainer_key)
    log.append("run-1", [w.write("train.steps", steps(0)).leaf_data()])
    digest = log.put_blob("run-1", {"tensors": [1, 2, 3]})
    bundle = log.export("run-1")
    assert bundle.blob(digest) == {"tensors": [1, 2, 3]}
    path = tmp_path / "bundle.json"
    bundle.write(path)
    assert Bundle.read(path) == bundle
    tampered = json.loads(path.read_text())
    tampered["blobs"][digest] = {"tensors": [1, 2, 4]}
    with pytest.raises(FormatError, match="does not hash to its name"):
        Bundle.from_json(tampered)
