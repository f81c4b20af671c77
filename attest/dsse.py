"""DSSE envelopes (Dead Simple Signing Envelope, github.com/secure-systems-lab/dsse, protocol v1).

A signature covers ``PAE(payloadType, payload)``::

    "DSSEv1" SP LEN(type) SP type SP LEN(payload) SP payload

with lengths as ASCII decimal byte counts. Envelopes are JSON objects ``{"payload": base64,
"payloadType": str, "signatures": [{"keyid": str, "sig": base64}]}`` (standard base64 with
padding). attest signs with ECDSA P-256 / SHA-256 (:mod:`attest.keys`); the ``keyid`` is the
trainer key ID, which the Sigstore bundle also carries as ``publicKey.hint``.

:meth:`Envelope.from_json` refuses anything malformed, so an :class:`Envelope` that exists is
well formed; whether it is *authentic* is :meth:`Envelope.verify`'s question.

Both classes are msgspec Structs declaring the same rules (a non-empty payload type, 1 to
:data:`MAX_SIGNATURES` signatures, strict standard base64), so msgspec reads a bundle's ~10^5
envelopes in C (:mod:`attest.bundle`); its base64 decoder accepts no text
``base64.b64decode(validate=True)`` refuses, and it requires ``keyid``, which
:meth:`Envelope.from_json` defaults to ``""``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

import msgspec

from attest.errors import FormatError, SignatureError
from attest.keys import TrainerKey, TrainerPublicKey

__all__ = ["Envelope", "EnvelopeSignature", "pae"]

MAX_SIGNATURES = 16


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


class EnvelopeSignature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    keyid: str
    sig: bytes


class Envelope(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename={"payload_type": "payloadType"}
):
    """A DSSE envelope: a typed payload and its signatures."""

    payload_type: Annotated[str, msgspec.Meta(min_length=1)]
    payload: bytes
    signatures: Annotated[
        tuple[EnvelopeSignature, ...], msgspec.Meta(min_length=1, max_length=MAX_SIGNATURES)
    ]

    @classmethod
    def sign(cls, payload_type: str, payload: bytes, key: TrainerKey) -> Envelope:
        sig = key.sign(pae(payload_type, payload))
        return cls(payload_type, payload, (EnvelopeSignature(key.key_id, sig),))

    def verify(self, key: TrainerPublicKey) -> None:
        """Require a valid signature by ``key``; raise :class:`SignatureError` otherwise.

        Signatures under other key IDs are ignored; a signature that claims ``key``'s ID but
        does not verify fails the envelope.
        """
        mine = [s for s in self.signatures if s.keyid == key.key_id]
        if not mine:
            raise SignatureError(
                "envelope has no signature by the trusted trainer key",
                expected=key.key_id,
                got=[s.keyid for s in self.signatures],
            )
        message = pae(self.payload_type, self.payload)
        for s in mine:
            key.verify(s.sig, message)

    def to_json(self) -> dict[str, Any]:
        return {
            "payload": base64.b64encode(self.payload).decode(),
            "payloadType": self.payload_type,
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode()} for s in self.signatures
            ],
        }

    @classmethod
    def from_json(cls, obj: object, *, field: str = "envelope") -> Envelope:
        if not isinstance(obj, dict):
            raise FormatError(f"{field} must be a JSON object", got=type(obj).__name__)
        extra = set(obj) - {"payload", "payloadType", "signatures"}
        if extra:
            raise FormatError(f"{field} has unknown fields {sorted(extra)}")
        payload_type = obj.get("payloadType")
        if not isinstance(payload_type, str) or not payload_type:
            raise FormatError(f"{field}.payloadType must be a non-empty string")
        payload = _b64(obj.get("payload"), field=f"{field}.payload")
        sigs = obj.get("signatures")
        if not isinstance(sigs, list) or not sigs:
            raise FormatError(f"{field}.signatures must be a non-empty list")
        if len(sigs) > MAX_SIGNATURES:
            raise FormatError(
                f"{field}.signatures has too many entries", expected=MAX_SIGNATURES, got=len(sigs)
            )
        parsed = []
        for i, s in enumerate(sigs):
            where = f"{field}.signatures[{i}]"
            if not isinstance(s, dict) or set(s) - {"keyid", "sig"}:
                raise FormatError(f"{where} must be an object with 'keyid' and 'sig'")
            keyid = s.get("keyid", "")
            if not isinstance(keyid, str):
                raise FormatError(f"{where}.keyid must be a string")
            parsed.append(EnvelopeSignature(keyid, _b64(s.get("sig"), field=f"{where}.sig")))
        return cls(payload_type, payload, tuple(parsed))


def _b64(value: object, *, field: str) -> bytes:
    if not isinstance(value, str):
        raise FormatError(f"{field} must be a base64 string", got=type(value).__name__)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"{field} is not valid base64") from None
