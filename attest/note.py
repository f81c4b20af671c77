"""C2SP signed notes, tlog checkpoints and timestamped cosignatures (Ed25519).

Implements, strictly:

- c2sp.org/signed-note — the note text and its signature lines in :mod:`attest.signed_note`,
  the Ed25519 keys that sign and verify them in :mod:`attest.note_keys`.
- c2sp.org/tlog-checkpoint — the note text of a checkpoint is the origin, the tree size (decimal,
  no leading zeros) and the base64 root hash, one per line, then optional extension lines
  (:class:`Checkpoint`, here).
- c2sp.org/tlog-cosignature — type 0x04 timestamped Ed25519 cosignatures
  (:meth:`NoteSigner.cosign`, :meth:`NoteVerifier.verify_cosignature`).

This module is the one to import: it re-exports the names of the other two.

:func:`sign_checkpoint` signs a checkpoint twice with one key and name: an ordinary note
signature (0x01), which makes it the log's checkpoint, and a timestamped cosignature (0x04),
which signs the log's receive time in the form monitors can audit. The two key IDs differ (the
type byte is hashed in), and the two signed messages cannot be confused: the 0x01 message is a
checkpoint body, whose second line is a decimal size, while every 0x04 message has
``time <n>`` as its second line; and no 0x01 signature is made or accepted over text that
begins ``cosignature/v1``, so neither signature can be relabelled as the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from attest.errors import FormatError, SignatureError, VerificationError
from attest.note_keys import (
    COSIGNATURE_HEADER,
    SIG_TYPE_COSIGNATURE_ED25519,
    SIG_TYPE_ED25519,
    NoteSigner,
    NoteVerifier,
    _check_signatures,
    cosignature_message,
    key_id,
    sign_note,
    verify_note,
)
from attest.signed_note import (
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    Note,
    NoteSignature,
    _b64,
    _b64decode,
    _check_text,
)

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

_MAX_TREE_SIZE = (1 << 64) - 1
_SIZE_RE = re.compile(r"0|[1-9][0-9]*")
_HASH_SIZE = 32


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
