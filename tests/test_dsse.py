"""DSSE envelopes: the PAE known answer from the DSSE spec, round trips, and forgeries."""

from __future__ import annotations

import base64

import pytest

from attest.dsse import Envelope, pae
from attest.errors import FormatError, SignatureError
from attest.keys import TrainerKey


def test_pae_matches_dsse_protocol_example() -> None:
    # DSSE protocol.md, "Test cases": PAE of this type and payload.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_sign_verify_round_trip(trainer_key: TrainerKey) -> None:
    env = Envelope.sign("application/x-test", b"payload", trainer_key)
    assert env.signatures[0].keyid == trainer_key.key_id
    again = Envelope.from_json(env.to_json())
    assert again == env
    again.verify(trainer_key.public)


def test_wrong_key_is_refused(trainer_key: TrainerKey) -> None:
    env = Envelope.sign("application/x-test", b"payload", trainer_key)
    with pytest.raises(SignatureError, match="no signature by the trusted trainer key"):
        env.verify(TrainerKey.generate().public)


@pytest.mark.parametrize("field", ["payload", "payloadType"])
def test_changed_payload_or_type_breaks_signature(trainer_key: TrainerKey, field: str) -> None:
    obj = Envelope.sign("application/x-test", b"payload", trainer_key).to_json()
    obj[field] = (
        base64.b64encode(b"payloaD").decode() if field == "payload" else "application/x-other"
    )
    with pytest.raises(SignatureError):
        Envelope.from_json(obj).verify(trainer_key.public)


def test_signature_claiming_the_key_id_but_forged_fails(trainer_key: TrainerKey) -> None:
    obj = Envelope.sign("t", b"p", trainer_key).to_json()
    other = Envelope.sign("t", b"p", TrainerKey.generate()).to_json()
    obj["signatures"][0]["sig"] = other["signatures"][0]["sig"]
    with pytest.raises(SignatureError, match="does not verify"):
        Envelope.from_json(obj).verify(trainer_key.public)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o: o.pop("payload"), "payload must be a base64 string"),
        (lambda o: o.update(payload="***"), "payload is not valid base64"),
        (lambda o: o.update(payloadType=""), "payloadType must be a non-empty string"),
        (lambda o: o.update(signatures=[]), "signatures must be a non-empty list"),
        (lambda o: o.update(extra=1), "unknown fields"),
        (
            lambda o: o["signatures"].__setitem__(0, {"keyid": 3, "sig": ""}),
            "keyid must be a string",
        ),
        (lambda o: o.update(signatures=o["signatures"] * 17), "too many"),
    ],
)
def test_malformed_envelopes_name_the_problem(
    trainer_key: TrainerKey, mutate: object, message: str
) -> None:
    obj = Envelope.sign("t", b"p", trainer_key).to_json()
    mutate(obj)  # type: ignore[operator]
    with pytest.raises(FormatError, match=message):
        Envelope.from_json(obj)
