"""Canonical tensor digests (DESIGN.md §3, "Tensor digest"): hashing models.

The format, ``attest-tensors-v1``, is specified in :mod:`attest.digest_format` (and
``docs/formats.md``); this module computes it and re-exports the format's values, so
``from attest.digest import ModelDigest, digest_safetensors`` is the one import callers need.

All sources (a safetensors file or folder of shards, a torch ``state_dict``, raw buffers) go
through :func:`digest_arrays`. Each tensor's bytes are cut into chunks of the algorithm's chunk
size and the chunks are hashed in a thread pool over all cores: hashlib and blake3 release the
GIL on large buffers. A chunk's leaf hash is taken by streaming ``0x00`` and then the chunk into
one hash object, so no chunk is ever copied. Tensors under 1 MiB are hashed on the calling
thread. Items are consumed in order with a bounded window of bytes in flight, so a generator that
copies tensors to host memory (from a GPU, or to make a view contiguous) holds little at once.

A safetensors file is memory-mapped (:mod:`attest.safetensors_io`), so it is never loaded whole.
torch and numpy are imported only by :func:`digest_state_dict`; ``attest hash`` never loads them.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from attest.digest_format import (
    DEFAULT_CHUNK_SIZE,
    DTYPE_SIZES,
    FORMAT,
    ModelDigest,
    TensorAlgorithm,
    TensorDiff,
    TensorDigest,
    parse_algorithm,
    resolve_algorithm,
    verify_tensor_inclusion,
)
from attest.errors import ConfigurationError, FormatError
from attest.merkle import LEAF_PREFIX, root_from_leaf_hashes
from attest.safetensors_io import SafetensorsFile

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DTYPE_SIZES",
    "FORMAT",
    "ArrayItem",
    "ModelDigest",
    "Progress",
    "TensorAlgorithm",
    "TensorDiff",
    "TensorDigest",
    "digest_arrays",
    "digest_safetensors",
    "digest_state_dict",
    "parse_algorithm",
    "verify_tensor_inclusion",
]

_INLINE_BYTES = 1 << 20  # smaller tensors are hashed on the calling thread

Progress = Callable[[int, int], None]
"""``progress(bytes_done, bytes_total)``, called on the calling thread as chunks finish."""


class _Stream(Protocol):
    def update(self, data: memoryview, /) -> object: ...
    def digest(self) -> bytes: ...


def _leaf_stream(spec: TensorAlgorithm) -> Callable[[], _Stream]:
    """A factory of hash objects already fed the RFC 6962 leaf prefix."""
    if spec.hash == "sha256":
        return lambda: hashlib.sha256(LEAF_PREFIX)
    import blake3

    return lambda: blake3.blake3(LEAF_PREFIX)


ArrayItem = tuple[str, str, Sequence[int], Any]
"""``(name, dtype tag, shape, buffer)``; the buffer is any C-contiguous buffer of the bytes."""


def _byte_view(buffer: Any, where: str) -> memoryview:
    try:
        view = memoryview(buffer)
    except TypeError:
        raise ConfigurationError(f"{where}: data does not support the buffer protocol") from None
    if not view.c_contiguous:
        raise ConfigurationError(f"{where}: data must be C-contiguous")
    if view.nbytes == 0:
        return memoryview(b"")
    if view.ndim != 1 or view.format not in ("B", "b", "c"):
        view = view.cast("B")
    return view


def _hash_chunk(new: Callable[[], _Stream], piece: memoryview) -> bytes:
    try:
        stream = new()
        stream.update(piece)
        return stream.digest()
    finally:
        piece.release()


def _default_workers() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def digest_arrays(
    items: Iterable[ArrayItem],
    *,
    algorithm: str = "sha256",
    chunk_size: int | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    total_bytes: int | None = None,
) -> ModelDigest:
    """The model digest of ``items``; the common path of every source.

    ``algorithm`` is ``sha256``, ``blake3`` or a full algorithm string. Items are consumed in
    order, and at most a few chunks per worker are in flight, so a generator that copies each
    tensor (from a GPU, say) holds little memory at once. ``total_bytes`` is passed to
    ``progress`` (0 when unknown).
    """
    spec = resolve_algorithm(algorithm, chunk_size)
    if workers is None:
        workers = _default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigurationError("workers must be a positive integer", got=workers)
    hasher, chunk, new = spec.hasher, spec.chunk_size, _leaf_stream(spec)
    window = max(4 * workers * chunk, 64 << 20)
    pending: deque[tuple[TensorDigest, list[tuple[Future[bytes] | bytes, int]]]] = deque()
    results: list[TensorDigest] = []
    seen: set[str] = set()
    state = {"inflight": 0, "done": 0}
    total = total_bytes or 0

    def finish() -> None:
        meta, parts = pending.popleft()
        hashes = []
        for part, size in parts:
            hashes.append(part.result() if isinstance(part, Future) else part)
            state["done"] += size
            if progress is not None:
                progress(state["done"], total)
        state["inflight"] -= meta.nbytes
        root = root_from_leaf_hashes(hashes, hasher=hasher)
        results.append(
            TensorDigest(meta.name, meta.dtype, meta.shape, meta.nbytes, content_root=root)
        )

    pool = ThreadPoolExecutor(workers, thread_name_prefix="attest-hash") if workers > 1 else None
    try:
        for name, dtype, shape, buffer in items:
            if name in seen:
                raise FormatError(f"duplicate tensor name {name!r}")
            seen.add(name)
            view = _byte_view(buffer, f"tensor {name!r}")
            # Validates name, dtype, shape and length before any hashing.
            meta = TensorDigest(name, dtype, tuple(shape), view.nbytes, hasher.empty_root())
            parts: list[tuple[Future[bytes] | bytes, int]] = []
            inline = pool is None or view.nbytes < _INLINE_BYTES
            for offset in range(0, view.nbytes, chunk):
                piece = view[offset : offset + chunk]
                size = piece.nbytes
                if inline or pool is None:
                    parts.append((_hash_chunk(new, piece), size))
                else:
                    parts.append((pool.submit(_hash_chunk, new, piece), size))
            view.release()
            pending.append((meta, parts))
            state["inflight"] += meta.nbytes
            while state["inflight"] > window and pending:
                finish()
        while pending:
            finish()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return ModelDigest.from_tensors(str(spec), results)


def _safetensors_paths(path: Path) -> list[Path]:
    if path.is_dir():
        shards = sorted(p for p in path.glob("*.safetensors") if p.is_file())
        if not shards:
            raise FormatError(f"{path} holds no *.safetensors files")
        return shards
    if not path.exists():
        raise FormatError(f"{path} does not exist")
    return [path]


def digest_safetensors(
    path: str | os.PathLike[str],
    *,
    algorithm: str = "sha256",
    chunk_size: int | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> ModelDigest:
    """The digest of a safetensors file, or of every ``*.safetensors`` shard in a folder.

    Headers are parsed strictly (:mod:`attest.safetensors_io`); files are memory-mapped. Shards
    of one folder form one model: a tensor name found in two shards is a :class:`FormatError`.
    """
    files: list[SafetensorsFile] = []
    try:
        owner: dict[str, Path] = {}
        for shard in _safetensors_paths(Path(path)):
            sf = SafetensorsFile(shard)
            files.append(sf)
            for entry in sf.header.entries:
                if entry.name in owner:
                    raise FormatError(
                        f"tensor {entry.name!r} appears in both {owner[entry.name].name} and"
                        f" {shard.name}"
                    )
                owner[entry.name] = shard
        total = sum(e.nbytes for sf in files for e in sf.header.entries)

        def items() -> Iterator[ArrayItem]:
            for sf in files:
                # In file order, so the pages are read front to back.
                for e in sorted(sf.header.entries, key=lambda e: e.begin):
                    yield e.name, e.dtype, e.shape, sf.view(e)

        return digest_arrays(
            items(),
            algorithm=algorithm,
            chunk_size=chunk_size,
            workers=workers,
            progress=progress,
            total_bytes=total,
        )
    finally:
        for sf in files:
            sf.close()


_TORCH_DTYPES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
}


def digest_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    algorithm: str = "sha256",
    chunk_size: int | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> ModelDigest:
    """The digest of a torch ``state_dict``: equal to that of the safetensors file
    ``safetensors.torch.save_file(state_dict, ...)`` writes. Any device, strides or views;
    each tensor is copied to contiguous host memory only when it is not already."""
    import torch

    if sys.byteorder != "little":
        raise ConfigurationError("digest_state_dict needs a little-endian host")
    dtypes = {getattr(torch, k): v for k, v in _TORCH_DTYPES.items() if hasattr(torch, k)}
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise ConfigurationError(f"state_dict[{name!r}] is not a torch.Tensor")
        if tensor.dtype not in dtypes:
            raise ConfigurationError(
                f"state_dict[{name!r}] has dtype {tensor.dtype}, which attest-tensors-v1 lacks",
                expected=sorted(_TORCH_DTYPES),
                got=str(tensor.dtype),
            )
        if tensor.layout != torch.strided or tensor.is_meta or tensor.is_quantized:
            raise ConfigurationError(f"state_dict[{name!r}] must be a dense tensor with data")
    total = sum(t.numel() * t.element_size() for t in state_dict.values())

    def items() -> Iterator[ArrayItem]:
        for name, tensor in state_dict.items():
            flat = tensor.detach().to("cpu").resolve_conj().resolve_neg().contiguous().reshape(-1)
            yield name, dtypes[tensor.dtype], tuple(tensor.shape), flat.view(torch.uint8).numpy()

    return digest_arrays(
        items(),
        algorithm=algorithm,
        chunk_size=chunk_size,
        workers=workers,
        progress=progress,
        total_bytes=total,
    )
