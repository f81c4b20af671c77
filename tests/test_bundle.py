"""Bundle and statement parsing: malformed input is refused with the field named."""

from __future__ import annotations

import copy
import gc
import json
from pathlib import Path
from typing import Any

import pytest

from attest.bundle import Bundle, paused_gc
from attest.errors import FormatError, SignatureError
from attest.keys import TrainerKey
from attest.log import LocalLog
from attest.records import RecordWriter, SignedRecord
from attest.statement import (
    Dependency,
    LineageStatement,
    loss_curve_digest,
    open_statement,
    sign_statement,
)


def statement() -> LineageStatement:
    return LineageStatement(
        run="run-1",
        model_sha256="ab" * 32,
        digest_algorithm="attest-tensors-v1/sha256/chunk=16777216",
        external_parameters={"seed": 7},
        internal_parameters={},
        dependencies=(Dependency("init-weights", "cd" * 32, {}),),
        byproducts=(Dependency("loss-curve", loss_curve_digest(0, [2.0, 1.5])[7:], {}),),
        log_checkpoint="example.com/runs/run-1\n1\nAAAA\n\n— example.com abc\n",
        started="2026-11-23T00:00:00Z",
        finished="2026-11-23T00:01:00Z",
    )


def test_statement_round_trip_and_trust(trainer_key: TrainerKey) -> None:
    signed = sign_statement(statement(), trainer_key)
    assert signed["verificationMaterial"]["publicKey"]["hint"] == trainer_key.key_id
    assert signed["dsseEnvelope"]["signatures"][0]["keyid"] == trainer_key.key_id
    assert open_statement(signed, trainer_key.public) == statement()
    with pytest.raises(SignatureError, match="untrusted key"):
        open_statement(signed, TrainerKey.generate().public)


def test_statement_keyid_must_match_hint(trainer_key: TrainerKey) -> None:
    signed = sign_statement(statement(), trainer_key)
    signed["verificationMaterial"]["publicKey"]["hint"] = "other"
    with pytest.raises(FormatError, match=r"keyid must equal publicKey\.hint"):
        open_statement(signed, trainer_key.public)


@pytest.fixture
def bundle_json(tmp_path: Path, trainer_key: TrainerKey) -> dict[str, Any]:
    log = LocalLog(tmp_path)
    log.create_run("run-1", trainer_key.public)
    w = RecordWriter("run-1", trainer_key)
    for i in range(3):
        body = {
            "first_step": i,
            "loss": [1.0],
            "lr": [0.1],
            "grad_norm": [None],
            "batch": ["sha256:" + "00" * 32],
        }
        log.append("run-1", [w.write("train.steps", body).leaf_data()])
    log.put_statement("run-1", sign_statement(statement(), trainer_key))
    return log.export("run-1").to_json()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.update(mediaType="x"), "mediaType is not an attest bundle"),
        (lambda b: b.pop("records"), "missing \\['records'\\]"),
        (lambda b: b.update(surprise=1), "unknown \\['surprise'\\]"),
        (lambda b: b.update(run=""), "bundle.run must be a non-empty string"),
        (lambda b: b["records"][1].update(payload="!!"), "bundle.records\\[1\\].payload"),
        (lambda b: b.update(checkpoints=[1]), "list of signed-note strings"),
        (lambda b: b["consistency"].pop(), "one proof between each pair"),
        (lambda b: b["consistency"][0].__setitem__(0, "zz"), "consistency\\[0\\]\\[0\\]"),
        (lambda b: b["blobs"].update({"sha256:12": {}}), "bundle.blobs key"),
        (lambda b: b.update(statement=[]), "bundle.statement must be"),
    ],
)
def test_malformed_bundles_name_the_field(
    bundle_json: dict[str, Any], mutate: Any, message: str
) -> None:
    Bundle.from_json(bundle_json)  # the honest one parses
    broken = copy.deepcopy(bundle_json)
    mutate(broken)
    with pytest.raises(FormatError, match=message):
        Bundle.from_json(broken)


def test_bundle_records_equal_the_reference_parse(bundle_json: dict[str, Any]) -> None:
    parsed = Bundle.from_json(bundle_json).records
    reference = [SignedRecord.from_json_reference(r) for r in bundle_json["records"]]
    assert [(s.record, s.envelope, s.leaf_data(), s.record.digest) for s in parsed] == [
        (s.record, s.envelope, s.leaf_data(), s.record.digest) for s in reference
    ]


def test_parsing_pauses_the_collector_and_restores_it(bundle_json: dict[str, Any]) -> None:
    was = gc.isenabled()
    try:
        gc.enable()
        Bundle.from_json(bundle_json)
        assert gc.isenabled()
        with pytest.raises(FormatError):
            Bundle.from_json({**bundle_json, "run": ""})
        assert gc.isenabled()
        gc.disable()
        Bundle.from_json(bundle_json)
        assert not gc.isenabled()  # left as the caller had it
        with paused_gc():
            assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()


def test_a_written_bundle_reads_back_as_the_same_bundle(
    bundle_json: dict[str, Any], tmp_path: Path
) -> None:
    bundle = Bundle.from_json({**bundle_json, "keys": {"trainer": "clé ✓", "server": "😀"}})
    path = tmp_path / "b.json"
    bundle.write(path)
    assert Bundle.read(path) == bundle
    assert json.loads(path.read_text(encoding="utf-8")) == bundle.to_json()
    assert bundle.dumps() == path.read_text(encoding="utf-8")


def test_bundle_text_with_a_duplicate_key_is_refused(bundle_json: dict[str, Any]) -> None:
    text = json.dumps(bundle_json)
    assert Bundle.loads(text) == Bundle.from_json(bundle_json)
    twice = text.replace('"run": "run-1"', '"run": "run-1", "run": "run-2"', 1)
    with pytest.raises(FormatError, match="downloaded: duplicate JSON key 'run'"):
        Bundle.loads(twice, what="downloaded")
