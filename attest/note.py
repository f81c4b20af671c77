"""C2SP signed notes, tlog checkpoints and timestamped cosignatures (Ed25519).

Implements, strictly:

- c2sp.org/signed-note — a note is UTF-8 text ending in a newline, a blank line, then one or
  more lines ``— <key name> base64(key ID ‖ signature)``. No ASCII control characters other
  than newline. Key ID = SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4]. Ed25519 is type 0x01 and
  signs the note text. Verifier keys read ``<name>+<hex key ID>+base64(type ‖ public key)``.
- c2sp.org/tlog-checkpoint — the note text of a checkpoint is the origin, the tree size (decimal,
  no leading zeros) and the base64 root hash, one per line, then optional extension lines.
- c2sp.org/tlog-cosignature — type 0x04 timestamped Ed25519 cosignatures: the signature payload
  is timestamp (uint64 big-endian) ‖ Ed25519 signature, over
  ``"cosignature/v1\\ntime <timestamp>\\n" ‖ checkpoint body``.

:func:`sign_checkpoint` signs a checkpoint twice with one key and name: an ordinary note
signature (0x01), which makes it the log's checkpoint, and a timestamped cosignature (0x04),
which signs the log's receive time in the form monitors can audit. The two key IDs differ (the
type byte is hashed in), and the two signed messages cannot be confused: the 0x01 message is a
checkpoint body, whose second line is a decimal size, while every 0x04 message has
``time <n>`` as its second line; and no 0x01 signature is made or accepted over text that
begins ``cosignature/v1``, so neither signature can be relabelled as the other.

Verification rules (signed-note §Signatures): signatures by unknown keys (name and key ID not
both matching) are ignored; a known key whose signature fails rejects the whole note; at least
one signature by a known key must verify. At most :data:`MAX_SIGNATURES` signature lines are
read. Parsing failures raise :class:`FormatError`, signature failures :class:`SignatureError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attest.errors import ConfigurationError, FormatError, SignatureError, VerificationError

__all__ = [
    "COSIGNATURE_HEADER",
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "SIG_TYPE_COSIGNATURE_ED25519",
    "SIG_TYPE_ED25519",
    "Checkpoint",
    "Note",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "SignedCheckpoint",
    "cosignature_message",
    "key_id",
    "open_checkpoint",
    "sign_checkpoint",
    "sign_note",
    "verify_note",
]

SIG_TYPE_ED25519 = 0x01
"""Signature type byte of ordinary Ed25519 note signatures (c2sp.org/signed-note)."""
SIG_TYPE_COSIGNATURE_ED25519 = 0x04
"""Signature type byte of timestamped Ed25519 cosignatures (c2sp.org/tlog-cosignature)."""
COSIGNATURE_HEADER = "cosignature/v1"
"""First line of the message a v1 Ed25519 cosignature signs."""
MAX_SIGNATURES = 100
"""Most signature lines read from one note (the spec requires accepting at least 16)."""
MAX_NOTE_BYTES = 1 << 20
"""Largest note accepted by default, in UTF-8 bytes."""

_DASH = "\u2014 "  # em dash and space open every signature line
_MAX_TIMESTAMP = (1 << 63) - 1
_MAX_TREE_SIZE = (1 << 64) - 1
_SIZE_RE = re.compile(r"0|[1-9][0-9]*")
_CONTROL_RE = re.compile(r"[\x00-\x09\x0b-\x1f]")
_HASH_SIZE = 32


def _b64decode(text: str, what: str) -> bytes:
    """Strict standard base64: valid alphabet, padding, and canonical trailing bits."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise FormatError(f"{what} is not valid base64", got=text) from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise FormatError(f"{what} is not canonical base64", got=text)
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _check_key_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise FormatError("key name must be a non-empty string", got=name)
    if "+" in name or any(c.isspace() for c in name) or _CONTROL_RE.search(name):
        raise FormatError("key name must not contain spaces, '+' or control characters", got=name)
    return name


def _check_text(text: str, what: str) -> None:
    """Note-text rules: UTF-8 encodable, no control characters but newline."""
    m = _CONTROL_RE.search(text)
    if m:
        raise FormatError(
            f"{what} contains control character {m.group()!r} at offset {m.start()}",
            got=repr(m.group()),
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FormatError(f"{what} is not valid UTF-8 text", got=str(exc)) from exc


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """SHA-256(name ‖ 0x0A ‖ sig_type ‖ public_key)[:4], the signed-note key ID."""
    data = name.encode("utf-8") + b"\n" + bytes([sig_type]) + public_key
    return hashlib.sha256(data).digest()[:4]


def cosignature_message(body: str, *, timestamp: int) -> bytes:
    """The message a v1 Ed25519 cosignature signs (c2sp.org/tlog-cosignature)."""
    return f"{COSIGNATURE_HEADER}\ntime {timestamp}\n{body}".encode()


# --- notes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: the key's name, its 4-byte key ID and the signature bytes."""

    name: str
    key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_key_name(self.name)
        if not isinstance(self.key_id, bytes) or len(self.key_id) != 4:
            raise FormatError("key ID must be 4 bytes", expected=4, got=self.key_id)
        if not isinstance(self.signature, bytes) or not self.signature:
            raise FormatError("signature must be non-empty bytes", got=self.signature)

    def to_line(self) -> str:
        """``— <name> base64(key ID ‖ signature)`` with its newline."""
        return f"{_DASH}{self.name} {_b64(self.key_id + self.signature)}\n"

    @classmethod
    def from_line(cls, line: str, *, where: str = "signature line") -> NoteSignature:
        """Parse one signature line (without its newline)."""
        if not line.startswith(_DASH):
            raise FormatError(
                f"{where} does not start with an em dash (U+2014) and a space", got=line[:20]
            )
        name, sep, encoded = line[len(_DASH) :].partition(" ")
        if not sep:
            raise FormatError(f"{where} has no space between key name and signature", got=line)
        try:
            _check_key_name(name)
        except FormatError as exc:
            raise FormatError(f"{where}: {exc.message}", got=name) from None
        raw = _b64decode(encoded, f"{where} signature")
        if len(raw) < 5:
            raise FormatError(
                f"{where} signature is shorter than a key ID and one byte",
                expected=">= 5 bytes",
                got=len(raw),
            )
        return cls(name=name, key_id=raw[:4], signature=raw[4:])


@dataclass(frozen=True)
class Note:
    """A signed note: ``text`` (ending in a newline) and one or more signatures."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.endswith("\n"):
            raise FormatError("note text must end with a newline", got=repr(self.text[-20:]))
        _check_text(self.text, "note text")
        if not self.signatures:
            raise FormatError("a note needs at least one signature line", expected=">= 1", got=0)
        if len(self.signatures) > MAX_SIGNATURES:
            raise FormatError(
                f"note has more than {MAX_SIGNATURES} signature lines",
                expected=f"<= {MAX_SIGNATURES}",
                got=len(self.signatures),
            )

    def to_text(self) -> str:
        """The serialised note: text, blank line, signature lines."""
        return self.text + "\n" + "".join(s.to_line() for s in self.signatures)

    @classmethod
    def from_text(cls, data: str | bytes, *, max_bytes: int = MAX_NOTE_BYTES) -> Note:
        """Parse a note, strictly. Raises :class:`FormatError` naming the problem."""
        size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "replace"))
        if size > max_bytes:
            raise FormatError(
                f"note is {size} bytes, over the {max_bytes}-byte limit",
                expected=f"<= {max_bytes}",
                got=size,
            )
        if isinstance(data, bytes):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FormatError("note is not valid UTF-8", got=str(exc)) from exc
        else:
            text = data
        _check_text(text, "note")
        split = text.rfind("\n\n")
        if split < 0:
            raise FormatError("note has no blank line before its signatures", got=text[-40:])
        body, block = text[: split + 1], text[split + 2 :]
        if not block:
            raise FormatError("note has no signature lines after its blank line", got=0)
        if not block.endswith("\n"):
            raise FormatError("note does not end with a newline", got=repr(block[-20:]))
        lines = block[:-1].split("\n")
        if len(lines) > MAX_SIGNATURES:
            raise FormatError(
                f"note has {len(lines)} signature lines, over the limit of {MAX_SIGNATURES}",
                expected=f"<= {MAX_SIGNATURES}",
                got=len(lines),
            )
        sigs = tuple(
            NoteSignature.from_line(line, where=f"signature line {i + 1}")
            for i, line in enumerate(lines)
        )
        return cls(text=body, signatures=sigs)


# --- keys ------------------------------------------------------------------------------------


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


# --- checkpoints -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint body: origin, tree size, root hash, optional extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise FormatError("checkpoint origin must be a non-empty line", got=self.origin)
        if "\n" in self.origin:
            raise FormatError("checkpoint origin must be one line", got=self.origin)
        _check_text(self.origin, "checkpoint origin")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise FormatError("checkpoint size must be an integer", got=self.size)
        if not 0 <= self.size <= _MAX_TREE_SIZE:
            raise FormatError("checkpoint size must be in [0, 2^64-1]", got=self.size)
        if not isinstance(self.root, bytes) or len(self.root) != _HASH_SIZE:
            raise FormatError(
                "checkpoint root must be a 32-byte hash",
                expected=_HASH_SIZE,
                got=len(self.root) if isinstance(self.root, bytes) else self.root,
            )
        for i, ext in enumerate(self.extensions):
            if not isinstance(ext, str) or not ext or "\n" in ext:
                raise FormatError(f"checkpoint extension line {i + 1} must be a non-empty line")
            _check_text(ext, f"checkpoint extension line {i + 1}")

    def to_body(self) -> str:
        """The note text: ``origin\\nsize\\nbase64(root)\\n`` then extension lines."""
        lines = [self.origin, str(self.size), _b64(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def from_body(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body strictly; raises :class:`FormatError` naming the line."""
        if not text.endswith("\n"):
            raise FormatError("checkpoint body must end with a newline", got=repr(text[-20:]))
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise FormatError(
                "checkpoint body needs origin, size and root lines",
                expected=">= 3 lines",
                got=len(lines),
            )
        origin, size_text, root_text, *extensions = lines
        if not origin:
            raise FormatError("checkpoint origin line is empty")
        if not _SIZE_RE.fullmatch(size_text):
            raise FormatError(
                "checkpoint size must be a decimal number without leading zeros", got=size_text
            )
        root = _b64decode(root_text, "checkpoint root")
        if len(root) != _HASH_SIZE:
            raise FormatError("checkpoint root must be 32 bytes", expected=32, got=len(root))
        for i, ext in enumerate(extensions):
            if not ext:
                raise FormatError(f"checkpoint extension line {i + 1} is empty")
        return cls(origin=origin, size=int(size_text), root=root, extensions=tuple(extensions))


@dataclass(frozen=True)
class SignedCheckpoint:
    """A verified checkpoint, the verified cosignature time (if any) and the note it came from."""

    checkpoint: Checkpoint
    timestamp: int | None
    note_text: str


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner, *, timestamp: int) -> str:
    """The checkpoint note, signed by ``signer`` as log (0x01) and timestamped cosigner (0x04)."""
    body = checkpoint.to_body()
    note = Note(text=body, signatures=(signer.sign(body), signer.cosign(body, timestamp=timestamp)))
    return note.to_text()


def open_checkpoint(
    note_text: str | bytes,
    verifier: NoteVerifier,
    *,
    origin: str | None = None,
    require_timestamp: bool = True,
) -> SignedCheckpoint:
    """Parse and verify a checkpoint note signed by ``verifier``'s key.

    The log signature (type 0x01) is required. With ``require_timestamp`` (the default) the
    timestamped cosignature (type 0x04) by the same key is required too, so a note whose
    cosignature line was removed or altered is refused rather than read as "no time signed".
    ``origin``, when given, must equal the checkpoint's origin line.
    """
    note = Note.from_text(note_text)
    checkpoint = Checkpoint.from_body(note.text)
    result = _check_signatures(note, [verifier])
    if not any(s.key_id == verifier.key_id for s in result.signatures):
        raise SignatureError(
            f"checkpoint carries no log signature by {verifier.name}",
            expected=f"{verifier.name}+{verifier.key_id.hex()}",
            got=", ".join(f"{s.name}+{s.key_id.hex()}" for s in note.signatures),
        )
    timestamp = result.timestamps.get((verifier.name, verifier.cosignature_key_id))
    if timestamp is None and require_timestamp:
        raise SignatureError(
            f"checkpoint carries no timestamped cosignature by {verifier.name}",
            expected=f"{verifier.name}+{verifier.cosignature_key_id.hex()}",
            got=", ".join(f"{s.name}+{s.key_id.hex()}" for s in note.signatures),
        )
    if origin is not None and checkpoint.origin != origin:
        raise VerificationError(
            "checkpoint is for another log", expected=origin, got=checkpoint.origin
        )
    text = note_text.decode("utf-8") if isinstance(note_text, bytes) else note_text
    return SignedCheckpoint(checkpoint=checkpoint, timestamp=timestamp, note_text=text)
