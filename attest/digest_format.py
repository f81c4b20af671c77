"""The ``attest-tensors-v1`` tensor digest format (DESIGN.md §3, "Tensor digest").

Normative description
=====================

A *model* is a finite set of named tensors. Its digest does not depend on file layout, on the
order of a safetensors header, on device or on strides; any change to a name, dtype, shape or
byte of any tensor changes it; and one tensor can be proven part of a model with an RFC 6962
inclusion proof.

**Algorithm string.** ``attest-tensors-v1/<hash>/chunk=<C>``, for example
``attest-tensors-v1/sha256/chunk=16777216``. ``<hash>`` is ``sha256`` (the default) or
``blake3`` (32-byte output). ``<C>`` is the chunk size in bytes, a decimal integer without sign or
leading zeros, ``1 <= C <= 2^32``; the default is 16777216 (16 MiB). The three fields are
separated by ``/`` and nothing else may appear. A digest is written ``<algorithm>:<hex root>``.

**Merkle hashing.** ``MTH`` is the RFC 9162 §2.1.1 Merkle Tree Hash with the chosen hash ``H``:
a leaf hash is ``H(0x00 ‖ data)``, an interior node ``H(0x01 ‖ left ‖ right)``, the split is at
the largest power of two below ``n``, and the root of zero leaves is ``H("")``.

**Tensor bytes.** The tensor's elements in C (row-major) order, each in little-endian byte order,
with no padding: exactly ``nbytes = prod(shape) × itemsize(dtype)`` bytes, hashed as stored (a
safetensors data section already holds tensors in this form). A 0-dimensional tensor has one
element; a tensor with a zero in its shape has no bytes.

**Content root.** The bytes are cut into consecutive chunks of ``C`` bytes (the last one may be
shorter, and none is empty); ``content_root = MTH(chunks)``. A tensor with no bytes has the
empty-tree root ``H("")``.

**Dtype tags** (safetensors names) and item sizes: ``BOOL`` 1, ``U8`` 1, ``I8``
1, ``F8_E4M3`` 1, ``F8_E5M2`` 1, ``U16`` 2, ``I16`` 2, ``F16`` 2, ``BF16`` 2, ``U32`` 4, ``I32``
4, ``F32`` 4, ``U64`` 8, ``I64`` 8, ``F64`` 8. Other tags are refused.

**Tensor leaf.** For a tensor with UTF-8 name ``N`` (non-empty, at most 65535 bytes), dtype tag
``T`` (ASCII), shape ``(d1, …, dk)`` (``k <= 255``, each ``0 <= di < 2^64``)::

    leaf = b"attest-tensor-v1\\x00" ‖ u16be(len N) ‖ N ‖ u8(len T) ‖ T
           ‖ u8(k) ‖ u64be(d1) ‖ … ‖ u64be(dk) ‖ u64be(nbytes) ‖ content_root

**Model root.** Names are unique. The leaves are sorted by name in UTF-8 byte order and
``root = MTH(leaves)``; the tensor with the ``i``-th smallest name is leaf ``i`` of a tree of
``size`` = number of tensors, so ``verify_inclusion`` (RFC 9162 §2.1.3.2) of
``H(0x00 ‖ leaf)`` at that index proves one tensor is part of the model. A model with no
tensors has root ``H("")``. Only tensors are covered: a safetensors ``__metadata__`` object,
header order, padding and the split into shard files are not part of the digest.

**Blob.** The per-tensor digests travel as JSON (:meth:`ModelDigest.to_json`)::

    {"algorithm": "...", "root": "<hex>",
     "tensors": [{"name", "dtype", "shape": [int, ...], "nbytes", "content_root": "<hex>"}, ...]}

with tensors in leaf order and lowercase hex. :meth:`ModelDigest.from_json` refuses unknown or
missing keys, wrong types, unsorted or duplicate names, and a root that is not the Merkle root of
the listed leaves.

This module holds the format itself: algorithm strings, the frozen values that are hashed
(:class:`TensorDigest`, :class:`ModelDigest`) and pure inclusion verification. Hashing tensors
from files and state dicts is :mod:`attest.digest`, which re-exports everything here.
"""

from __future__ import annotations

import itertools
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from attest.errors import ConfigurationError, FormatError
from attest.merkle import BLAKE3, SHA256, Hasher, MerkleTree, root_from_leaf_hashes
from attest.safetensors_io import DTYPE_SIZES

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DTYPE_SIZES",
    "FORMAT",
    "LEAF_TAG",
    "MAX_CHUNK_SIZE",
    "ModelDigest",
    "TensorAlgorithm",
    "TensorDiff",
    "TensorDigest",
    "parse_algorithm",
    "resolve_algorithm",
    "verify_tensor_inclusion",
]

FORMAT = "attest-tensors-v1"
DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024
LEAF_TAG = b"attest-tensor-v1\x00"
MAX_CHUNK_SIZE = 2**32
_HASHERS: dict[str, Hasher] = {"sha256": SHA256, "blake3": BLAKE3}
_CHUNK_RE = re.compile(r"chunk=([1-9][0-9]*)")
_HEX_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class TensorAlgorithm:
    """The parameters of ``attest-tensors-v1``: hash name and chunk size."""

    hash: str = "sha256"
    chunk_size: int = DEFAULT_CHUNK_SIZE

    def __post_init__(self) -> None:
        if self.hash not in _HASHERS:
            raise ConfigurationError(
                f"algorithm hash {self.hash!r} is not supported; use sha256 or blake3",
                expected=sorted(_HASHERS),
                got=self.hash,
            )
        c = self.chunk_size
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_CHUNK_SIZE:
            raise ConfigurationError(
                f"chunk_size must be an integer in [1, {MAX_CHUNK_SIZE}]", got=c
            )

    @property
    def hasher(self) -> Hasher:
        return _HASHERS[self.hash]

    def __str__(self) -> str:
        return f"{FORMAT}/{self.hash}/chunk={self.chunk_size}"


def parse_algorithm(text: object) -> TensorAlgorithm:
    """Parse ``attest-tensors-v1/<hash>/chunk=<C>`` strictly; :class:`FormatError` names the field."""
    if not isinstance(text, str):
        raise FormatError("algorithm must be a string", got=type(text).__name__)
    parts = text.split("/")
    if len(parts) != 3:
        raise FormatError(
            "algorithm must have three '/'-separated fields: format, hash, chunk",
            expected=f"{FORMAT}/sha256/chunk={DEFAULT_CHUNK_SIZE}",
            got=text,
        )
    fmt, hash_name, chunk = parts
    if fmt != FORMAT:
        raise FormatError("algorithm format field is unknown", expected=FORMAT, got=fmt)
    if hash_name not in _HASHERS:
        raise FormatError(
            "algorithm hash field is unknown", expected=sorted(_HASHERS), got=hash_name
        )
    match = _CHUNK_RE.fullmatch(chunk)
    if match is None or int(match.group(1)) > MAX_CHUNK_SIZE:
        raise FormatError(
            f"algorithm chunk field must be chunk=<integer in [1, {MAX_CHUNK_SIZE}], no leading"
            " zeros>",
            got=chunk,
        )
    return TensorAlgorithm(hash=hash_name, chunk_size=int(match.group(1)))


def resolve_algorithm(algorithm: str, chunk_size: int | None) -> TensorAlgorithm:
    """``algorithm`` is a hash name (``sha256``) or a full algorithm string."""
    if algorithm.startswith(FORMAT + "/"):
        spec = parse_algorithm(algorithm)
        if chunk_size is not None and chunk_size != spec.chunk_size:
            raise ConfigurationError(
                "chunk_size contradicts the chunk in the algorithm string",
                expected=spec.chunk_size,
                got=chunk_size,
            )
        return spec
    return TensorAlgorithm(
        hash=algorithm, chunk_size=DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size
    )


def _hex_field(value: object, field: str) -> bytes:
    if not isinstance(value, str) or not _HEX_RE.fullmatch(value):
        raise FormatError(f"{field} must be 64 lowercase hex digits", got=repr(value)[:80])
    return bytes.fromhex(value)


def _uint_field(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise FormatError(f"{field} must be an integer in [0, 2^64)", got=repr(value)[:80])
    return value


def _name_key(name: str) -> bytes:
    return name.encode("utf-8")


@dataclass(frozen=True)
class TensorDigest:
    """One tensor's metadata and content root; ``leaf()`` is its canonical encoding."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    content_root: bytes

    def __post_init__(self) -> None:
        where = f"tensor {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise FormatError("tensor name must be a non-empty string", got=repr(self.name))
        try:
            encoded = self.name.encode("utf-8")
        except UnicodeEncodeError:
            raise FormatError(f"{where}: name is not encodable as UTF-8") from None
        if len(encoded) > 0xFFFF:
            raise FormatError(f"{where}: name is longer than 65535 UTF-8 bytes")
        if self.dtype not in DTYPE_SIZES:
            raise FormatError(
                f"{where}: unknown dtype", expected=sorted(DTYPE_SIZES), got=self.dtype
            )
        if not isinstance(self.shape, tuple) or len(self.shape) > 255:
            raise FormatError(f"{where}: shape must be a tuple of at most 255 dimensions")
        count = 1
        for i, dim in enumerate(self.shape):
            count *= _uint_field(dim, f"{where}: shape[{i}]")
        expected = count * DTYPE_SIZES[self.dtype]
        if self.nbytes != expected:
            raise FormatError(
                f"{where}: nbytes does not match dtype {self.dtype} and shape {list(self.shape)}",
                expected=expected,
                got=self.nbytes,
            )
        if not isinstance(self.content_root, bytes) or len(self.content_root) != 32:
            raise FormatError(f"{where}: content_root must be 32 bytes")

    def leaf(self) -> bytes:
        """The canonical tensor leaf of ``attest-tensors-v1``."""
        name = self.name.encode("utf-8")
        dtype = self.dtype.encode("ascii")
        return b"".join(
            (
                LEAF_TAG,
                struct.pack(">H", len(name)),
                name,
                struct.pack(">B", len(dtype)),
                dtype,
                struct.pack(f">B{len(self.shape)}Q", len(self.shape), *self.shape),
                struct.pack(">Q", self.nbytes),
                self.content_root,
            )
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "nbytes": self.nbytes,
            "content_root": self.content_root.hex(),
        }

    @classmethod
    def from_json(cls, obj: object, *, field: str = "tensor") -> TensorDigest:
        keys = {"name", "dtype", "shape", "nbytes", "content_root"}
        if not isinstance(obj, dict) or set(obj) != keys:
            got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise FormatError(f"{field} must be an object with keys {sorted(keys)}", got=got)
        if not isinstance(obj["name"], str) or not isinstance(obj["dtype"], str):
            raise FormatError(f"{field}.name and {field}.dtype must be strings")
        shape = obj["shape"]
        if not isinstance(shape, list):
            raise FormatError(f"{field}.shape must be a list of integers")
        return cls(
            name=obj["name"],
            dtype=obj["dtype"],
            shape=tuple(_uint_field(d, f"{field}.shape[{i}]") for i, d in enumerate(shape)),
            nbytes=_uint_field(obj["nbytes"], f"{field}.nbytes"),
            content_root=_hex_field(obj["content_root"], f"{field}.content_root"),
        )


@dataclass(frozen=True)
class TensorDiff:
    """Tensor names only in the new model, only in the old one, and in both but different."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def lines(self) -> list[str]:
        """``+ name`` / ``- name`` / ``~ name``, in name order."""
        out = [f"+ {n}" for n in self.added] + [f"- {n}" for n in self.removed]
        out += [f"~ {n}" for n in self.changed]
        return sorted(out, key=lambda line: (_name_key(line[2:]), line[0]))


@dataclass(frozen=True)
class ModelDigest:
    """A model's ``attest-tensors-v1`` digest with its per-tensor leaves (in leaf order).

    Construction checks that ``tensors`` are sorted and unique and that ``root`` is their
    Merkle root, so an inconsistent digest cannot exist.
    """

    algorithm: str
    root: bytes
    tensors: tuple[TensorDigest, ...]

    def __post_init__(self) -> None:
        spec = parse_algorithm(self.algorithm)
        if not isinstance(self.tensors, tuple) or not all(
            isinstance(t, TensorDigest) for t in self.tensors
        ):
            raise FormatError("tensors must be a tuple of TensorDigest")
        keys = [_name_key(t.name) for t in self.tensors]
        for i in range(1, len(keys)):
            if keys[i - 1] >= keys[i]:
                raise FormatError(
                    "tensors must be sorted by UTF-8 name with no duplicates",
                    expected=f"name after {self.tensors[i - 1].name!r}",
                    got=self.tensors[i].name,
                )
        if not isinstance(self.root, bytes) or len(self.root) != 32:
            raise FormatError("root must be 32 bytes")
        computed = _model_root(self.tensors, spec.hasher)
        if computed != self.root:
            raise FormatError(
                "root is not the Merkle root of the tensor leaves",
                expected=computed.hex(),
                got=self.root.hex(),
            )

    @classmethod
    def from_tensors(cls, algorithm: str, tensors: Iterable[TensorDigest]) -> ModelDigest:
        """Sort ``tensors``, check names are unique, and compute the root."""
        ordered = sorted(tensors, key=lambda t: _name_key(t.name))
        for a, b in itertools.pairwise(ordered):
            if a.name == b.name:
                raise FormatError(f"duplicate tensor name {a.name!r}")
        spec = parse_algorithm(algorithm)
        return cls(algorithm, _model_root(ordered, spec.hasher), tuple(ordered))

    @property
    def spec(self) -> TensorAlgorithm:
        return parse_algorithm(self.algorithm)

    @property
    def hex(self) -> str:
        return self.root.hex()

    @property
    def qualified(self) -> str:
        """``<algorithm>:<hex root>``, as ``attest hash`` prints it."""
        return f"{self.algorithm}:{self.hex}"

    def __str__(self) -> str:
        return self.qualified

    def index(self, name: str) -> int:
        """The leaf index of tensor ``name``."""
        lo, hi, key = 0, len(self.tensors), _name_key(name)
        while lo < hi:
            mid = (lo + hi) // 2
            if _name_key(self.tensors[mid].name) < key:
                lo = mid + 1
            else:
                hi = mid
        if lo == len(self.tensors) or self.tensors[lo].name != name:
            raise ConfigurationError(f"the model has no tensor named {name!r}", got=name)
        return lo

    def tensor(self, name: str) -> TensorDigest:
        return self.tensors[self.index(name)]

    def inclusion_proof(self, name: str) -> list[bytes]:
        """RFC 9162 audit path of tensor ``name`` (leaf ``index(name)`` of ``len(tensors)``)."""
        index = self.index(name)
        hasher = self.spec.hasher
        tree = MerkleTree.from_leaf_hashes(
            [hasher.hash_leaf(t.leaf()) for t in self.tensors], hasher=hasher
        )
        return tree.inclusion_proof(index, len(self.tensors))

    def diff(self, other: ModelDigest) -> TensorDiff:
        """What changed from ``self`` (old) to ``other`` (new), by tensor name."""
        if other.algorithm != self.algorithm:
            raise ConfigurationError(
                "cannot compare digests taken with different algorithms",
                expected=self.algorithm,
                got=other.algorithm,
            )
        old = {t.name: t for t in self.tensors}
        new = {t.name: t for t in other.tensors}
        return TensorDiff(
            added=tuple(n for n in new if n not in old),
            removed=tuple(n for n in old if n not in new),
            changed=tuple(n for n in new if n in old and new[n] != old[n]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "root": self.hex,
            "tensors": [t.to_json() for t in self.tensors],
        }

    @classmethod
    def from_json(cls, obj: object) -> ModelDigest:
        """Parse a digest blob strictly (see the module docstring)."""
        keys = {"algorithm", "root", "tensors"}
        if not isinstance(obj, dict) or set(obj) != keys:
            got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise FormatError(f"model digest must be an object with keys {sorted(keys)}", got=got)
        parse_algorithm(obj["algorithm"])
        if not isinstance(obj["tensors"], list):
            raise FormatError("model digest tensors must be a list")
        tensors = tuple(
            TensorDigest.from_json(t, field=f"tensors[{i}]") for i, t in enumerate(obj["tensors"])
        )
        return cls(obj["algorithm"], _hex_field(obj["root"], "root"), tensors)


def _model_root(tensors: Sequence[TensorDigest], hasher: Hasher) -> bytes:
    return root_from_leaf_hashes([hasher.hash_leaf(t.leaf()) for t in tensors], hasher=hasher)


def verify_tensor_inclusion(
    *,
    algorithm: str,
    model_root: bytes,
    tensor: TensorDigest,
    index: int,
    size: int,
    proof: Sequence[bytes],
) -> None:
    """Check that ``tensor`` is leaf ``index`` of the model tree of ``size`` tensors with
    ``model_root``. Pure; raises :class:`~attest.errors.ProofError` when it is not."""
    from attest.proof import verify_inclusion

    hasher = parse_algorithm(algorithm).hasher
    verify_inclusion(
        index=index,
        size=size,
        leaf_hash=hasher.hash_leaf(tensor.leaf()),
        proof=list(proof),
        root=model_root,
        hasher=hasher,
    )
