"""Records: RFC 8785 canonical form, the hash chain, strict parsing and the leaf size limit."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest.canonical import (
    canonical_json,
    canonical_json_reference,
    sha256_digest,
    strict_json_loads,
)
from attest.dsse import Envelope
from attest.errors import ChainError, FormatError, SignatureError
from attest.keys import TrainerKey
from attest.records import (
    RECORD_PAYLOAD_TYPE,
    Record,
    RecordWriter,
    SignedRecord,
    check_chain,
    is_run_id,
)

STEPS: dict[str, Any] = {
    "first_step": 0,
    "loss": [2.5],
    "lr": [0.001],
    "grad_norm": [None],
    "batch": ["sha256:" + "ab" * 32],
}


def test_canonical_json_rfc8785_examples() -> None:
    # RFC 8785 §3.2.2.3 number serialisation and §3.2.3 key ordering (by UTF-16 code units).
    assert canonical_json({"b": 1, "a": [1.0, 1e21, -0.0, 0.5]}) == b'{"a":[1,1e+21,0,0.5],"b":1}'
    assert canonical_json({"\u20ac": 1, "\r": 2, "1": 3}) == '{"\\r":2,"1":3,"\u20ac":1}'.encode()


@pytest.mark.parametrize("text", ['{"a":1,"a":2}', '{"a":NaN}', '{"a":Infinity}', "{"])
def test_strict_json_refuses_ambiguous_input(text: str) -> None:
    with pytest.raises(FormatError):
        strict_json_loads(text, what="input")


def test_writer_chains_records(trainer_key: TrainerKey) -> None:
    w = RecordWriter("run-1", trainer_key)
    a = w.write("train.steps", STEPS)
    b = w.write("train.steps", {**STEPS, "first_step": 1})
    assert (a.record.seq, b.record.seq) == (0, 1)
    assert a.record.prev is None and b.record.prev == a.record.digest
    check_chain([a.record, b.record], run="run-1")
    for r in (a, b):
        r.verify(trainer_key.public)
        assert SignedRecord.from_leaf(r.leaf_data()) == r


def test_resumed_writer_continues_the_chain(trainer_key: TrainerKey) -> None:
    w = RecordWriter("run-1", trainer_key)
    a = w.write("train.steps", STEPS)
    w2 = RecordWriter.from_state(json.loads(json.dumps(w.state())), trainer_key)
    b = w2.write("train.steps", STEPS)
    check_chain([a.record, b.record])


@pytest.mark.parametrize("attack", ["deleted", "reordered", "duplicated", "other-run"])
def test_chain_breaks_are_named(trainer_key: TrainerKey, attack: str) -> None:
    w = RecordWriter("run-1", trainer_key)
    recs = [w.write("train.steps", {**STEPS, "first_step": i}).record for i in range(3)]
    if attack == "deleted":
        recs = [recs[0], recs[2]]
    elif attack == "reordered":
        recs = [recs[0], recs[2], recs[1]]
    elif attack == "duplicated":
        recs = [recs[0], recs[1], recs[1], recs[2]]
    else:
        recs = [
            recs[0],
            RecordWriter("run-2", trainer_key, seq=1, prev=recs[0].digest)
            .write("train.steps", STEPS)
            .record,
        ]
    with pytest.raises(ChainError):
        check_chain(recs, run="run-1")


def test_non_canonical_payload_is_refused(trainer_key: TrainerKey) -> None:
    record = RecordWriter("run-1", trainer_key).write("train.steps", STEPS).record
    loose = json.dumps(record.to_json(), indent=2).encode()
    env = Envelope.sign(RECORD_PAYLOAD_TYPE, loose, trainer_key)
    with pytest.raises(FormatError, match="not RFC 8785 canonical"):
        SignedRecord.from_envelope(env)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**STEPS, "loss": []}, "must hold 1 to 256 steps"),
        ({**STEPS, "lr": [0.1, 0.2]}, "lr must have one entry per step"),
        ({k: v for k, v in STEPS.items() if k != "batch"}, "batch is required"),
        ({**STEPS, "first_step": "0"}, "first_step has the wrong JSON kind"),
    ],
)
def test_bad_bodies_are_refused(
    trainer_key: TrainerKey, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(FormatError, match=message):
        RecordWriter("run-1", trainer_key).write("train.steps", body)


def test_unknown_type_and_oversize_leaf(trainer_key: TrainerKey) -> None:
    with pytest.raises(FormatError, match="type is unknown"):
        RecordWriter("run-1", trainer_key).write("train.step", STEPS)
    big = {
        **STEPS,
        "batch": ["sha256:" + "ab" * 32] * 256,
        "loss": [1.0] * 256,
        "lr": [1.0] * 256,
        "grad_norm": [1.0] * 256,
        "first_step": 0,
    }
    RecordWriter("run-1", trainer_key).write("train.steps", big)  # 256 steps fit in a leaf
    huge = {**big, "note": "x" * 70000}
    with pytest.raises(FormatError, match="too large for a log entry"):
        RecordWriter("run-1", trainer_key).write("train.steps", huge)


@given(st.integers(min_value=0, max_value=10_000))
def test_any_bit_flip_in_a_leaf_is_detected(position: int) -> None:
    key = _KEY
    signed = RecordWriter("run-1", key).write("train.steps", STEPS)
    leaf = bytearray(signed.leaf_data())
    i = position % (len(leaf) * 8)
    leaf[i // 8] ^= 1 << (i % 8)
    try:
        parsed = SignedRecord.from_leaf(bytes(leaf))
    except FormatError:
        return
    with pytest.raises(SignatureError):
        parsed.verify(key.public)


_KEY = TrainerKey.generate()


def test_out_of_range_numbers_are_refused() -> None:
    with pytest.raises(FormatError, match="out of range"):
        strict_json_loads('{"loss": 1e999}', what="input")


@pytest.mark.parametrize("from_checkpoint", ["plain", 'quote" and \\ backslash', "non-ascii é ☃"])
def test_leaf_bytes_are_rfc8785_of_the_envelope(
    trainer_key: TrainerKey, from_checkpoint: str
) -> None:
    body = {"step": 1, "from_checkpoint": from_checkpoint, "data_position": {}}
    signed = RecordWriter("run-1", trainer_key).write("run.resume", body)
    assert signed.leaf_data() == canonical_json(signed.envelope.to_json())
    assert signed.record.digest == sha256_digest(canonical_json(signed.record.to_json()))


# --- fast parsing paths against the reference -------------------------------------------------


def _outcome(parse: Any, obj: Any) -> tuple[str, Any]:
    """What a parser makes of ``obj``: the record, envelope, leaf and digest, or the error."""
    try:
        signed = parse(obj, field="r")
    except FormatError as exc:
        return "error", (exc.message, exc.expected, exc.got)
    return "ok", (signed.record, signed.envelope, signed.leaf_data(), signed.record.digest)


def _envelope_json(payload: bytes, key: TrainerKey = _KEY) -> dict[str, Any]:
    return Envelope.sign(RECORD_PAYLOAD_TYPE, payload, key).to_json()


_finite = st.floats(allow_nan=False, allow_infinity=False)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | _finite | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@st.composite
def _record_json(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 3))
    num = st.none() | _finite | st.integers(-(2**54), 2**54)
    body = {
        "first_step": draw(st.integers(-1, 2**54)),
        "loss": draw(st.lists(num, min_size=n, max_size=n)),
        "lr": draw(st.lists(num, min_size=n, max_size=n + draw(st.integers(0, 1)))),
        "grad_norm": draw(st.lists(num, min_size=n, max_size=n)),
        "batch": ["sha256:" + "ab" * 32] * n,
        **draw(st.dictionaries(st.sampled_from(["note", "\U0001f600", "\ue000", "z"]), _json)),
    }
    seq = draw(st.integers(0, 3))
    return {
        "type": draw(st.sampled_from(["train.steps", "train.steps", "run.end"])),
        "run": draw(st.sampled_from(["run-1", "r é", "x" * 129])),
        "seq": seq,
        "prev": None if seq == 0 else draw(st.sampled_from(["sha256:" + "cd" * 32, "sha256:x"])),
        "time": draw(st.sampled_from(["2026-01-01T00:00:00Z", "t\u2028\x00", "[1.5e-6]"])),
        "body": body,
    }


def _encodings(record: dict[str, Any]) -> list[bytes]:
    """The canonical payload and near misses: other JSON encodings of the same value."""
    try:
        canonical = [canonical_json_reference(record)]
    except FormatError:
        canonical = []
    compact = (",", ":")
    return [
        *canonical,
        json.dumps(record, separators=compact).encode(),
        json.dumps(record, separators=compact, sort_keys=True).encode(),
        json.dumps(record, separators=compact, sort_keys=True, ensure_ascii=False).encode(),
    ]


@settings(max_examples=400, deadline=None)
@given(_record_json())
def test_fast_record_parsing_answers_as_the_reference(record: dict[str, Any]) -> None:
    for payload in _encodings(record):
        obj = _envelope_json(payload)
        want = _outcome(SignedRecord.from_json_reference, obj)
        assert _outcome(SignedRecord.from_json, obj) == want
        assert _outcome(SignedRecord.from_envelope, Envelope.from_json(obj)) == want
        if want[0] == "ok":
            assert want[1][2] == canonical_json_reference(obj)  # the leaf


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["payload", "payloadType", "signatures", "keyid", "sig", "extra"]),
    st.one_of(_json, st.sampled_from(["", "!!", "QR==", "QQ==", "QUJ=", "é", 'a"b', "e30="])),
)
def test_fast_envelope_parsing_answers_as_the_reference(where: str, value: Any) -> None:
    record = RecordWriter("run-1", _KEY).write("train.steps", STEPS).to_json()
    if where in ("keyid", "sig"):
        record["signatures"][0][where] = value
    else:
        record[where] = value
    want = _outcome(SignedRecord.from_json_reference, record)
    assert _outcome(SignedRecord.from_json, record) == want


@st.composite
def _log_envelopes(draw: st.DrawFn) -> list[Envelope]:
    """A few record envelopes as a bundle holds them: mostly honest, some near misses."""
    envelopes = []
    for _ in range(draw(st.integers(0, 5))):
        payload = draw(st.sampled_from(_encodings(draw(_record_json()))))
        env = Envelope.sign(RECORD_PAYLOAD_TYPE, payload, _KEY)
        odd = draw(st.sampled_from([None, None, None, "payloadType", "keyid", "extra-signature"]))
        if odd == "payloadType":
            env = msgspec.structs.replace(env, payload_type=draw(st.text(min_size=1, max_size=4)))
        elif odd == "keyid":
            sig = msgspec.structs.replace(env.signatures[0], keyid=draw(st.text(max_size=4)))
            env = msgspec.structs.replace(env, signatures=(sig,))
        elif odd == "extra-signature":
            env = msgspec.structs.replace(env, signatures=env.signatures * 2)
        envelopes.append(env)
    return envelopes


def _many_outcome(parse: Any, envelopes: list[Envelope]) -> Any:
    try:
        parsed = parse(envelopes, field="log")
    except FormatError as exc:
        return "error", (exc.message, exc.expected, exc.got)
    return "ok", [(s.record, s.envelope, s.leaf_data(), s.record.digest) for s in parsed]


def _each(envelopes: list[Envelope], *, field: str) -> list[SignedRecord]:
    return [SignedRecord.from_envelope(e, field=f"{field}[{i}]") for i, e in enumerate(envelopes)]


@settings(max_examples=300, deadline=None)
@given(_log_envelopes())
def test_many_records_parse_as_each_one_alone(envelopes: list[Envelope]) -> None:
    """The batched parse of a log answers as from_envelope item by item: the records, or the
    first bad item's error under its own name."""
    want = _many_outcome(_each, envelopes)
    assert _many_outcome(SignedRecord.many_from_envelopes, envelopes) == want
    assert _many_outcome(SignedRecord.many_from_json, [e.to_json() for e in envelopes]) == want


def test_payloads_that_only_parse_together_are_refused_one_by_one() -> None:
    """Joined with commas (as the batched parse joins payloads into one JSON array) these three
    payloads read as three valid records; alone, none is one."""
    writer = RecordWriter("run-1", _KEY)
    c0, c1, c2 = (writer.write("train.steps", STEPS).record.canonical() for _ in range(3))
    cut = c2.index(b',"prev"')
    split = [c0 + b"," + c1, c2[:cut], c2[cut + 1 :]]
    joined = msgspec.json.decode(b"[" + b",".join(split) + b"]")
    assert [Record.from_json(v).canonical() for v in joined] == [c0, c1, c2]
    envelopes = [Envelope.sign(RECORD_PAYLOAD_TYPE, p, _KEY) for p in split]
    with pytest.raises(FormatError, match=r"log\[0\] payload"):
        SignedRecord.many_from_envelopes(envelopes, field="log")


def test_non_canonical_base64_padding_keeps_the_canonical_leaf() -> None:
    # A payload whose base64 pads: the character before '=' has unused low bits.
    signed = next(
        s
        for s in (
            RecordWriter("run-1", _KEY).write("train.steps", {**STEPS, "first_step": i})
            for i in range(1, 100, 11)
        )
        if s.to_json()["payload"].endswith("=")
    )
    obj = signed.to_json()
    text = obj["payload"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    pad = len(text) - len(text.rstrip("="))
    last = text[-pad - 1]
    obj["payload"] = text[: -pad - 1] + alphabet[alphabet.index(last) + 1] + "=" * pad
    parsed = SignedRecord.from_json(obj)
    assert parsed.envelope == signed.envelope  # the same bytes ...
    # ... and the leaf is the canonical encoding, as the reference path makes it.
    assert parsed.leaf_data() == signed.leaf_data() == canonical_json(signed.to_json())
    assert parsed.leaf_data() == SignedRecord.from_json_reference(obj).leaf_data()


@pytest.mark.parametrize("run", ["run-1\n", "", "-run", "a" * 129, "run 1", "run/1", 7])
def test_run_ids_outside_the_pattern_are_refused(trainer_key: TrainerKey, run: Any) -> None:
    assert not is_run_id(run)
    with pytest.raises(FormatError, match="run id"):
        RecordWriter(run, trainer_key)
    good = RecordWriter("run-1", trainer_key).write("train.steps", STEPS).record.to_json()
    with pytest.raises(FormatError, match=r"record\.run"):
        Record.from_json({**good, "run": run})


@pytest.mark.parametrize("run", ["r", "run-1", "Run_2.b", "a" * 128])
def test_run_ids_in_the_pattern_are_accepted(run: str) -> None:
    assert is_run_id(run)


def test_a_writers_log_takes_the_batched_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Speed, not answers (the tests above compare those): every record a writer makes, with
    the numbers a real log holds (learning rates down to 1e-7 included), must be vouched for
    by the batched parse, or every record of a large log would be parsed one by one."""
    writer = RecordWriter("run-1", _KEY)
    start = {
        "config": {"lr": 3e-4, "betas": [0.9, 0.95]},
        "code": {},
        "environment": {"torch": "2.13.0"},
        "model": {"import_path": "m:M", "init_args": {"width": 64}},
        "init": {"seed": 7},
        "components": [],
        "parent": None,
        "digest_algorithm": "attest-tensors-v1/sha256/chunk=16777216",
    }
    envelopes = [writer.write("run.start", start).envelope]
    for i, lr in enumerate([3e-4, 1.5e-6, 2e-5, 1e-7, 0.0, 1e-6]):
        body = {**STEPS, "first_step": i, "lr": [lr], "loss": [2.5 - i / 10], "grad_norm": [None]}
        envelopes.append(writer.write("train.steps", body).envelope)

    def one_by_one(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a writer's record took the one-by-one path")

    monkeypatch.setattr(SignedRecord, "_parse", one_by_one)
    parsed = SignedRecord.many_from_envelopes(envelopes, field="log")
    assert [s.envelope for s in parsed] == envelopes
