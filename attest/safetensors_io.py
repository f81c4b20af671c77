"""Strict, zero-copy reading of safetensors files (DESIGN.md §3, "Tensor digest").

A safetensors file is ``u64le(N) ‖ header ‖ data``: an 8-byte little-endian length, ``N`` bytes
of UTF-8 JSON, then the tensor bytes. The header maps each tensor name to ``{"dtype", "shape",
"data_offsets": [begin, end]}`` (offsets relative to the start of ``data``) and may hold one
``"__metadata__"`` object of string to string. Trailing spaces after the JSON object are padding.

This module parses that header itself, strictly, rather than trusting a loader: a digest must be
taken over exactly the bytes a loader would read, and a file that two loaders could read
differently must be refused. :func:`parse_header` therefore rejects, with a
:class:`~attest.errors.FormatError` naming the problem:

- a file shorter than 8 bytes, a header length over :data:`MAX_HEADER_BYTES`, or one running
  past the end of the file;
- a header that is not UTF-8, not a JSON object, has duplicate keys, or non-finite constants;
- an entry with unknown keys, an unknown dtype, a malformed shape or offsets, or a byte length
  that differs from ``prod(shape) × itemsize``;
- offsets that run past the data, overlap, leave holes, or leave trailing bytes (the data must
  be covered exactly once, as the safetensors specification requires, so no byte of the file
  escapes the digest).

:class:`SafetensorsFile` maps the file read-only with :mod:`mmap` and hands out ``memoryview``
slices, so a model is never loaded whole. Neither numpy nor torch is imported.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from attest.errors import FormatError

__all__ = [
    "DTYPE_SIZES",
    "MAX_HEADER_BYTES",
    "SafetensorsEntry",
    "SafetensorsFile",
    "SafetensorsHeader",
    "parse_header",
]

MAX_HEADER_BYTES = 100_000_000
"""Largest header accepted (the limit the reference safetensors loader applies)."""

DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
}
"""The safetensors dtype tags attest-tensors-v1 accepts, with their item sizes in bytes."""

_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})
_MAX_U64 = 2**64 - 1


@dataclass(frozen=True)
class SafetensorsEntry:
    """One tensor of a safetensors header; ``begin``/``end`` are relative to the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SafetensorsHeader:
    """A parsed, checked header. ``data_start`` is the file offset of the data section."""

    entries: tuple[SafetensorsEntry, ...]
    metadata: dict[str, str] | None
    data_start: int
    data_size: int


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise FormatError(f"safetensors header: duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise FormatError(f"safetensors header: JSON constant {name} is not allowed")


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_U64


def _parse_entry(name: str, value: object, data_size: int) -> SafetensorsEntry:
    where = f"safetensors header: tensor {name!r}"
    if not name:
        raise FormatError("safetensors header: a tensor has an empty name")
    if not isinstance(value, dict):
        raise FormatError(f"{where} must be a JSON object", got=type(value).__name__)
    if set(value) != _ENTRY_KEYS:
        raise FormatError(
            f"{where} must have exactly the keys dtype, shape, data_offsets",
            expected=sorted(_ENTRY_KEYS),
            got=sorted(value),
        )
    dtype = value["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise FormatError(f"{where}: unknown dtype", expected=sorted(DTYPE_SIZES), got=dtype)
    shape = value["shape"]
    if not isinstance(shape, list) or not all(_is_uint(d) for d in shape) or len(shape) > 255:
        raise FormatError(f"{where}: shape must be a list of at most 255 non-negative integers")
    offsets = value["data_offsets"]
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_uint(o) for o in offsets):
        raise FormatError(f"{where}: data_offsets must be [begin, end], non-negative integers")
    begin, end = offsets
    if begin > end:
        raise FormatError(f"{where}: data_offsets begin {begin} is after end {end}")
    if end > data_size:
        raise FormatError(
            f"{where}: data_offsets end {end} is beyond the data section ({data_size} bytes);"
            " the file is truncated or the header is wrong",
            expected=f"<= {data_size}",
            got=end,
        )
    count = 1
    for dim in shape:
        count *= dim
    expected = count * DTYPE_SIZES[dtype]
    if end - begin != expected:
        raise FormatError(
            f"{where}: data_offsets span {end - begin} bytes but {dtype} {shape} needs {expected}",
            expected=expected,
            got=end - begin,
        )
    return SafetensorsEntry(name=name, dtype=dtype, shape=tuple(shape), begin=begin, end=end)


def parse_header(prefix: bytes, *, file_size: int) -> SafetensorsHeader:
    """Parse and check the header of a safetensors file of ``file_size`` bytes.

    ``prefix`` holds at least the first ``8 + N`` bytes of the file (more is ignored).
    """
    if file_size < 8 or len(prefix) < 8:
        raise FormatError(
            f"safetensors file is truncated: {file_size} bytes, shorter than the 8-byte"
            " header length"
        )
    (header_len,) = struct.unpack("<Q", prefix[:8])
    if header_len > MAX_HEADER_BYTES:
        raise FormatError(
            f"safetensors header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit",
            expected=f"<= {MAX_HEADER_BYTES}",
            got=header_len,
        )
    if 8 + header_len > file_size:
        raise FormatError(
            f"safetensors header length {header_len} runs past the end of the file"
            f" ({file_size} bytes); the file is truncated or not safetensors",
            expected=f"<= {file_size - 8}",
            got=header_len,
        )
    if len(prefix) < 8 + header_len:
        raise FormatError("safetensors header: prefix shorter than the header length")
    raw = bytes(prefix[8 : 8 + header_len])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"safetensors header is not UTF-8: {exc.reason}") from None
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise FormatError(f"safetensors header is not valid JSON: {exc}") from None
    except RecursionError:
        raise FormatError("safetensors header nests JSON too deeply to read") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise FormatError(f"safetensors header holds a number JSON cannot carry: {exc}") from None
    if not isinstance(header, dict):
        raise FormatError("safetensors header must be a JSON object", got=type(header).__name__)

    data_start = 8 + header_len
    data_size = file_size - data_start
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise FormatError("safetensors header: __metadata__ must map strings to strings")
    entries = [_parse_entry(name, value, data_size) for name, value in header.items()]

    # The data section must be covered exactly once: no overlap, no hole, no trailing bytes.
    cursor = 0
    previous = "<start of data>"
    for entry in sorted(entries, key=lambda e: (e.begin, e.end)):
        if entry.begin < cursor:
            raise FormatError(
                f"safetensors header: tensors {previous!r} and {entry.name!r} have overlapping"
                " data_offsets",
                expected=f"begin >= {cursor}",
                got=entry.begin,
            )
        if entry.begin > cursor:
            raise FormatError(
                f"safetensors header: bytes {cursor}..{entry.begin} of the data section belong"
                f" to no tensor (hole before {entry.name!r})"
            )
        cursor = entry.end
        previous = entry.name
    if cursor != data_size:
        raise FormatError(
            f"safetensors file has {data_size - cursor} trailing bytes after the last tensor",
            expected=cursor,
            got=data_size,
        )
    return SafetensorsHeader(
        entries=tuple(entries), metadata=metadata, data_start=data_start, data_size=data_size
    )


class SafetensorsFile:
    """A safetensors file mapped read-only; use as a context manager.

    ``view(entry)`` returns a ``memoryview`` of one tensor's bytes; release every view before
    the file is closed (``close`` raises :class:`BufferError` otherwise).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            size = os.fstat(fd).st_size
            if size < 8:
                parse_header(os.pread(fd, 8, 0) if size else b"", file_size=size)
            self._mmap = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        try:
            (header_len,) = struct.unpack("<Q", self._mmap[:8])
            end = min(8 + header_len, size)
            self.header = parse_header(self._mmap[:end], file_size=size)
        except BaseException:
            self._mmap.close()
            raise
        self._view = memoryview(self._mmap)

    def view(self, entry: SafetensorsEntry) -> memoryview:
        start = self.header.data_start
        return self._view[start + entry.begin : start + entry.end]

    def close(self) -> None:
        self._view.release()
        self._mmap.close()

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
