"""The C2SP signed-note text format: a note's text and its signature lines (c2sp.org/signed-note).

A note is UTF-8 text ending in a newline, a blank line, then one or more lines
``— <key name> base64(key ID ‖ signature)``. No ASCII control characters other than newline.
:class:`Note` and :class:`NoteSignature` hold a parsed note; :meth:`Note.from_text` reads one
strictly and raises :class:`FormatError` naming the problem. At most :data:`MAX_SIGNATURES`
signature lines are read, and a note is at most :data:`MAX_NOTE_BYTES` unless the caller says
otherwise.

This module knows the layout only: which signatures are valid, and whose, is the business of
the keys in :mod:`attest.note_keys`. The strict base64, key-name and note-text rules below are
shared with them and with the checkpoint body of :mod:`attest.note`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from attest.errors import FormatError

__all__ = ["MAX_NOTE_BYTES", "MAX_SIGNATURES", "Note", "NoteSignature"]

MAX_SIGNATURES = 100
"""Most signature lines read from one note (the spec requires accepting at least 16)."""
MAX_NOTE_BYTES = 1 << 20
"""Largest note accepted by default, in UTF-8 bytes."""

_DASH = "\u2014 "  # em dash and space open every signature line
_CONTROL_RE = re.compile(r"[\x00-\x09\x0b-\x1f]")


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
