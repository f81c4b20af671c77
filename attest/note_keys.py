"""Ed25519 note keys: signing notes, timestamped cosignatures, and the rules for verifying them.

- c2sp.org/signed-note — Key ID = SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4]. Ed25519 is type
  0x01 and signs the note text. Verifier keys read ``<name>+<hex key ID>+base64(type ‖ public
  key)``; signer keys ``PRIVATE+KEY+<name>+<hex key ID>+base64(type ‖ seed)``.
- c2sp.org/tlog-cosignature — type 0x04 timestamped Ed25519 cosignatures: the signature payload
  is timestamp (uint64 big-endian) ‖ Ed25519 signature, over
  ``"cosignature/v1\\ntime <timestamp>\\n" ‖ checkpoint body``.

Verification rules (signed-note §Signatures): signatures by unknown keys (name and key ID not
both matching) are ignored; a known key whose signature fails rejects the whole note; at least
one signature by a known key must verify. Parsing failures raise :class:`FormatError`, signature
failures :class:`SignatureError`.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attest.errors import ConfigurationError, FormatError, SignatureError
from attest.signed_note import Note, NoteSignature, _b64, _b64decode, _check_key_name

__all__ = [
    "COSIGNATURE_HEADER",
    "SIG_TYPE_COSIGNATURE_ED25519",
    "SIG_TYPE_ED25519",
    "NoteSigner",
    "NoteVerifier",
    "cosignature_message",
    "key_id",
    "sign_note",
    "verify_note",
]

SIG_TYPE_ED25519 = 0x01
"""Signature type byte of ordinary Ed25519 note signatures (c2sp.org/signed-note)."""
SIG_TYPE_COSIGNATURE_ED25519 = 0x04
"""Signature type byte of timestamped Ed25519 cosignatures (c2sp.org/tlog-cosignature)."""
COSIGNATURE_HEADER = "cosignature/v1"
"""First line of the message a v1 Ed25519 cosignature signs."""

_MAX_TIMESTAMP = (1 << 63) - 1


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """SHA-256(name ‖ 0x0A ‖ sig_type ‖ public_key)[:4], the signed-note key ID."""
    data = name.encode("utf-8") + b"\n" + bytes([sig_type]) + public_key
    return hashlib.sha256(data).digest()[:4]


def cosignature_message(body: str, *, timestamp: int) -> bytes:
    """The message a v1 Ed25519 cosignature signs (c2sp.org/tlog-cosignature)."""
    return f"{COSIGNATURE_HEADER}\ntime {timestamp}\n{body}".encode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


class NoteVerifier:
    """An Ed25519 note verifier: checks type 0x01 signatures and type 0x04 cosignatures."""

    __slots__ = ("cosignature_key_id", "key_id", "name", "public_key")

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        if not isinstance(public_key, Ed25519PublicKey):
            raise ConfigurationError("public_key must be an Ed25519PublicKey", got=public_key)
        self.name = _check_key_name(name)
        self.public_key = public_key
        raw = _raw_public(public_key)
        self.key_id = key_id(name, SIG_TYPE_ED25519, raw)
        self.cosignature_key_id = key_id(name, SIG_TYPE_COSIGNATURE_ED25519, raw)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``."""
        if len(signature) != 64:
            return False
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def verify_cosignature(self, body: str, payload: bytes) -> int:
        """Check a type 0x04 payload (timestamp ‖ signature) over ``body``; return the time."""
        if len(payload) != 8 + 64:
            raise FormatError(
                f"cosignature by {self.name} has the wrong length",
                expected=72,
                got=len(payload),
            )
        (timestamp,) = struct.unpack(">Q", payload[:8])
        if timestamp > _MAX_TIMESTAMP:
            raise FormatError(f"cosignature timestamp by {self.name} exceeds 2^63-1", got=timestamp)
        if not self.verify(cosignature_message(body, timestamp=timestamp), payload[8:]):
            raise SignatureError(
                f"timestamped cosignature by {self.name} does not verify",
                expected=self.cosignature_key_id.hex(),
                got=f"time {timestamp}",
            )
        return int(timestamp)

    def to_vkey(self) -> str:
        """``<name>+<hex key ID>+base64(0x01 ‖ public key)``."""
        raw = bytes([SIG_TYPE_ED25519]) + _raw_public(self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{_b64(raw)}"

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse a verifier key; only Ed25519 (type 0x01) keys are accepted."""
        parts = vkey.strip().split("+", 2)  # base64 may contain "+"; a name may not
        if len(parts) != 3:
            raise FormatError("verifier key must be <name>+<hex key ID>+<base64 key>", got=vkey)
        name, hex_id, encoded = parts
        _check_key_name(name)
        if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
            raise FormatError("verifier key ID must be 8 lowercase hex digits", got=hex_id)
        raw = _b64decode(encoded, "verifier key")
        if len(raw) != 33 or raw[0] != SIG_TYPE_ED25519:
            raise FormatError(
                "verifier key must be an Ed25519 key (type 0x01 and 32 bytes)",
                expected="01 + 32 bytes",
                got=f"{raw[:1].hex() or 'nothing'} + {max(len(raw) - 1, 0)} bytes",
            )
        verifier = cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
        if verifier.key_id.hex() != hex_id:
            raise FormatError(
                "verifier key ID does not match its name and key",
                expected=verifier.key_id.hex(),
                got=hex_id,
            )
        return verifier

    def __repr__(self) -> str:
        return f"NoteVerifier({self.to_vkey()!r})"


class NoteSigner:
    """An Ed25519 note signer: type 0x01 signatures and type 0x04 timestamped cosignatures."""

    __slots__ = ("_private_key", "_verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise ConfigurationError("private_key must be an Ed25519PrivateKey", got=private_key)
        self._private_key = private_key
        self._verifier = NoteVerifier(name, private_key.public_key())

    @property
    def name(self) -> str:
        """The key name written on signature lines."""
        return self._verifier.name

    @property
    def key_id(self) -> bytes:
        """Key ID of the ordinary (0x01) signatures."""
        return self._verifier.key_id

    def verifier(self) -> NoteVerifier:
        """The matching verifier (publish ``verifier().to_vkey()``)."""
        return self._verifier

    def sign(self, text: str) -> NoteSignature:
        """An ordinary Ed25519 note signature (type 0x01) over ``text``.

        Text that starts like a cosignature message is refused: one key signs both types, so a
        0x01 signature over such text would double as a 0x04 cosignature.
        """
        _refuse_cosignature_lookalike(text)
        sig = self._private_key.sign(text.encode("utf-8"))
        return NoteSignature(name=self.name, key_id=self.key_id, signature=sig)

    def cosign(self, body: str, *, timestamp: int) -> NoteSignature:
        """A timestamped cosignature (type 0x04) over a checkpoint ``body``."""
        if isinstance(timestamp, bool) or not isinstance(timestamp, int):
            raise ConfigurationError("timestamp must be an integer (Unix seconds)", got=timestamp)
        if not 0 <= timestamp <= _MAX_TIMESTAMP:
            raise ConfigurationError("timestamp must be in [0, 2^63-1]", got=timestamp)
        sig = self._private_key.sign(cosignature_message(body, timestamp=timestamp))
        payload = struct.pack(">Q", timestamp) + sig
        return NoteSignature(
            name=self.name, key_id=self._verifier.cosignature_key_id, signature=payload
        )

    def to_skey(self) -> str:
        """``PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 ‖ seed)`` — keep it secret."""
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        seed = self._private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        raw = bytes([SIG_TYPE_ED25519]) + seed
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{_b64(raw)}"

    @classmethod
    def from_skey(cls, skey: str) -> NoteSigner:
        """Parse a signer key written by :meth:`to_skey`."""
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise FormatError("signer key must be PRIVATE+KEY+<name>+<hex ID>+<base64>", got="…")
        _, _, name, hex_id, encoded = parts
        raw = _b64decode(encoded, "signer key")
        if len(raw) != 33 or raw[0] != SIG_TYPE_ED25519:
            raise FormatError("signer key must be an Ed25519 key (type 0x01 and a 32-byte seed)")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.key_id.hex() != hex_id:
            raise FormatError(
                "signer key ID does not match its name and key",
                expected=signer.key_id.hex(),
                got=hex_id,
            )
        return signer

    def __repr__(self) -> str:
        return f"NoteSigner(name={self.name!r}, key_id={self.key_id.hex()})"


def _refuse_cosignature_lookalike(text: str) -> None:
    if text.startswith(COSIGNATURE_HEADER + "\n"):
        raise FormatError(
            f"note text starting with {COSIGNATURE_HEADER!r} is reserved for cosignatures",
            got=text[:40],
        )


def sign_note(text: str, signers: Sequence[NoteSigner]) -> Note:
    """Sign ``text`` (which must end in a newline) with each signer's 0x01 signature."""
    if not signers:
        raise ConfigurationError("sign_note needs at least one signer", got=0)
    return Note(text=text, signatures=tuple(s.sign(text) for s in signers))


@dataclass(frozen=True)
class _Verified:
    signatures: tuple[NoteSignature, ...]
    timestamps: dict[tuple[str, bytes], int]  # (name, key ID) -> verified cosignature time


def _check_signatures(note: Note, verifiers: Iterable[NoteVerifier]) -> _Verified:
    by_id: dict[tuple[str, bytes], tuple[NoteVerifier, bool]] = {}
    for v in verifiers:
        by_id[(v.name, v.key_id)] = (v, False)
        by_id[(v.name, v.cosignature_key_id)] = (v, True)
    seen: set[tuple[str, bytes, bytes]] = set()
    verified: list[NoteSignature] = []
    timestamps: dict[tuple[str, bytes], int] = {}
    message = note.text.encode("utf-8")
    for sig in note.signatures:
        ident = (sig.name, sig.key_id)
        entry = by_id.get(ident)
        if entry is None:
            continue  # unknown key (name and ID not both matching): ignored, per the spec
        if (*ident, sig.signature) in seen:
            continue  # an identical repeated line adds nothing
        seen.add((*ident, sig.signature))
        verifier, is_cosignature = entry
        if is_cosignature:
            timestamp = verifier.verify_cosignature(note.text, sig.signature)
            if timestamps.setdefault(ident, timestamp) != timestamp:
                raise FormatError(
                    f"two timestamped cosignatures by {sig.name} with different times",
                    expected=timestamps[ident],
                    got=timestamp,
                )
        else:
            _refuse_cosignature_lookalike(note.text)
            if not verifier.verify(message, sig.signature):
                raise SignatureError(
                    f"signature by {sig.name} ({sig.key_id.hex()}) does not verify",
                    expected="a valid Ed25519 signature over the note text",
                    got=_b64(sig.signature)[:16] + "…",
                )
        verified.append(sig)
    return _Verified(signatures=tuple(verified), timestamps=timestamps)


def verify_note(note: Note, verifiers: Sequence[NoteVerifier]) -> tuple[NoteSignature, ...]:
    """Verify ``note`` and return the signatures by known keys (all of which verified).

    Raises :class:`SignatureError` when a known key's signature fails, or when no signature by
    a known key is present.
    """
    result = _check_signatures(note, verifiers)
    if not result.signatures:
        raise SignatureError(
            "note carries no signature by a trusted key",
            expected=", ".join(f"{v.name}+{v.key_id.hex()}" for v in verifiers),
            got=", ".join(f"{s.name}+{s.key_id.hex()}" for s in note.signatures),
        )
    return result.signatures
