"""Bundle and statement parsing: malformed input is refused with the field named."""

from __future__ import annotations

import copy
import gc
import json
from pathlib import Path
from typing import Any

import pytest

from attest.bundle import Bundle, paused_gc
from attest.canonical import strict_json_loads
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


def test_leaving_paused_gc_moves_what_it_made_to_the_oldest_generation() -> None:
    was = gc.isenabled()
    try:
        gc.enable()
        with paused_gc():
            made = [[i] for i in range(2000)]
        assert any(o is made for o in gc.get_objects(generation=2))
        assert gc.get_freeze_count() == 0
        gc.freeze()  # a process that keeps frozen objects of its own (a pre-fork server)
        frozen = gc.get_freeze_count()
        with paused_gc():
            [[i] for i in range(2000)]
        assert gc.get_freeze_count() == frozen  # not released
    finally:
        gc.unfreeze()
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


def _written_variants(text: str) -> list[str]:
    """The text Bundle.write makes and texts that differ from it in spelling or in what they
    say; reading any of them must give the strict parser's answer."""
    env = '"payloadType": "application/vnd.attest.record.v1+json"'
    payload_at = text.index('"payload": "', text.index('"records"'))
    payload_end = text.index('"', payload_at + len('"payload": "'))
    payload = text[payload_at + len('"payload": "') : payload_end]
    padded = next(
        i for i in range(payload_at, len(text)) if text.startswith('=",', i)
    )  # a base64 text that pads: its last character has unused low bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    def with_first_envelope(**fields: Any) -> str:  # written as Bundle.write writes
        doc = json.loads(text)
        doc["records"][0].update(fields)
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"

    signatures = json.loads(text)["records"][0]["signatures"]
    return [
        text,
        with_first_envelope(signatures=[]),  # the envelope rules msgspec must apply as well
        with_first_envelope(signatures=signatures * 17),
        with_first_envelope(payloadType=""),
        json.dumps(json.loads(text)),  # other whitespace
        json.dumps(json.loads(text), sort_keys=True, separators=(",", ":")),
        json.dumps(dict(reversed(json.loads(text).items()))),  # another key order
        text.replace(env, env + ", " + env, 1),  # a duplicate name inside an envelope
        # ... and one whose second value would be the one a last-wins reader keeps
        text[:payload_at] + f'"payload": "e30=", "payload": "{payload}"' + text[payload_end + 1 :],
        text.replace('"run": "run-1"', '"run": "run-1", "run": "run-1"', 1),
        text.replace("application/vnd.attest.record", "application/vnd.att\\u0065st.record", 1),
        text[: padded - 1] + alphabet[(alphabet.index(text[padded - 1]) + 1) % 64] + text[padded:],
        text.replace('"blobs": {}', '"blobs": {"a": 1e400}', 1),
        text.replace('"blobs": {}', '"blobs": {"a": NaN}', 1),
        text.replace('"blobs": {}', '"blobs": {"a": 1.0}', 1),
        text.replace('"keys": {', '"keys": {"x": "\\ud800",', 1),
    ]


def _read(parse: Any) -> Any:
    try:
        bundle = parse()
    except FormatError as exc:
        return "error", exc.message
    return "ok", bundle, [(s.leaf_data(), s.record.digest) for s in bundle.records]


def test_reading_a_bundle_text_gives_the_strict_parsers_answer(
    bundle_json: dict[str, Any],
) -> None:
    """Bundle.loads skips the strict parser for text in the form Bundle.write makes; every
    variant must still read as the strict parser (and the one-by-one record parser) reads it."""
    text = Bundle.from_json(bundle_json).dumps()
    outcomes = set()
    for variant in _written_variants(text):
        want = _read(lambda v=variant: Bundle.from_json(strict_json_loads(v, what="b")))
        got = _read(lambda v=variant: Bundle.loads(v, what="b"))
        assert got == want, variant[:200]
        assert _read(lambda v=variant: Bundle.loads(v.encode(), what="b")) == want
        outcomes.add(want[0])
    assert outcomes == {"ok", "error"}


def test_a_written_bundle_skips_the_strict_parser(
    bundle_json: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Speed, not answers (the test above compares those): text Bundle.write made is read by
    msgspec alone, or a 10^5-record bundle would be parsed twice."""
    text = Bundle.from_json(bundle_json).dumps()

    def strict(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a written bundle went through the strict parser")

    monkeypatch.setattr("attest.bundle.strict_json_loads", strict)
    assert Bundle.loads(text) == Bundle.from_json(bundle_json)
