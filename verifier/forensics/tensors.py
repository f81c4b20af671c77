"""Loading models for forensics: safetensors files or model folders, as float32 numpy arrays.

A model is given as one ``.safetensors`` file or a folder holding ``config.json``, one or more
``*.safetensors`` shards and a tokenizer (``tokenizer.json``, ``vocab.json`` or ``vocab.txt``).
The safetensors container (8-byte little-endian header length, JSON header, raw little-endian
data) is read directly with numpy memory maps, so no framework is needed and nothing touches
the network. bf16 and fp16 are widened to float32 (bf16 by shifting its 16 bits into the top of
a float32); integer and boolean tensors are skipped, they carry no learned weights.

:class:`Model` also recognises the roles forensics needs (DESIGN.md §6): the model width
``d_model``, the token embedding, tensors indexed by token or position (whose axis means the
same thing in both models and must not be permuted by a null), and the residual axis of each
matrix.
"""

from __future__ import annotations

import json
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from attest.errors import FormatError

from .tokenizer import load_vocab

__all__ = ["Model", "load_model", "read_safetensors"]

F32 = NDArray[np.float32]

_DTYPES: dict[str, str] = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}
_SKIPPED = {"I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL"}

_EMBED = re.compile(r"(embed_tokens|wte|word_embeddings|tok_emb|token_embedding|embed_in)\b")
_HEAD = re.compile(r"(lm_head|embed_out)\b")
_POS = re.compile(r"(wpe|pos_emb|position_embeddings|pos_embed|position_embedding)\b")
_LAYER = re.compile(r"^(.*?\.)?(\d+)\.")


def read_safetensors(path: Path) -> dict[str, F32]:
    """Every floating-point tensor of one safetensors file, as float32 arrays."""
    raw = path.read_bytes() if path.stat().st_size < 1 << 20 else None
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise FormatError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", head)
        try:
            header = json.loads(fh.read(n))
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, or a huge integer
            raise FormatError(f"{path}: safetensors header is not JSON ({exc})") from exc
        except RecursionError:
            raise FormatError(f"{path}: safetensors header nests JSON too deeply") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: safetensors header is not an object")
    data = (
        np.frombuffer(raw, dtype=np.uint8, offset=8 + n)
        if raw is not None
        else np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    )
    out: dict[str, F32] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info.get("dtype")
        if dtype in _SKIPPED:
            continue
        if dtype not in _DTYPES:
            raise FormatError(
                f"{path}: tensor {name} has unsupported dtype", expected=list(_DTYPES), got=dtype
            )
        start, end = info["data_offsets"]
        arr = data[start:end].view(_DTYPES[dtype]).reshape(info["shape"])
        if dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = np.ascontiguousarray(arr, dtype=np.float32)
    return out


@dataclass
class Model:
    """A model's float tensors, optional config and vocabulary, and recognised roles."""

    name: str
    tensors: dict[str, F32]
    config: dict[str, object] = field(default_factory=dict)
    vocab: dict[str, int] | None = None

    @property
    def d_model(self) -> int | None:
        """The residual-stream width: from the config, else the commonest 1-D tensor length."""
        for key in ("hidden_size", "n_embd", "d_model", "dim", "embed_dim"):
            value = self.config.get(key)
            if isinstance(value, int):
                return value
        emb = self.embedding_name
        if emb is not None:
            return int(self.tensors[emb].shape[1])
        sizes = Counter(t.shape[0] for t in self.tensors.values() if t.ndim == 1)
        return sizes.most_common(1)[0][0] if sizes else None

    @property
    def embedding_name(self) -> str | None:
        """The token-embedding matrix ([vocab, d_model])."""
        cands = [n for n, t in self.tensors.items() if t.ndim == 2 and _EMBED.search(n)]
        return min(cands, key=len) if cands else None

    def token_axis_names(self) -> set[str]:
        """Tensors whose first axis is indexed by token id (embedding, untied LM head)."""
        emb = self.embedding_name
        if emb is None:
            return set()
        rows = self.tensors[emb].shape[0]
        return {
            n
            for n, t in self.tensors.items()
            if t.ndim == 2 and t.shape[0] == rows and (n == emb or _HEAD.search(n))
        }

    def position_axis_names(self) -> set[str]:
        """Tensors whose first axis is indexed by position."""
        return {n for n, t in self.tensors.items() if t.ndim == 2 and _POS.search(n)}

    def residual_axis(self, name: str) -> int | None:
        """Which axis of a 2-D tensor runs over the residual stream (None if unknown)."""
        d = self.d_model
        t = self.tensors[name]
        if d is None or t.ndim != 2:
            return None
        if t.shape[0] == d and t.shape[1] != d:
            return 0
        if t.shape[1] == d and t.shape[0] != d:
            return 1
        if t.shape == (d, d):
            # torch.nn.Linear stores [out, in]; GPT-2's Conv1D stores [in, out].
            conv1d = any(".c_attn." in n or ".c_fc." in n for n in self.tensors)
            return 0 if conv1d else 1
        return None

    def layer_of(self, name: str) -> tuple[str, int] | None:
        """(prefix, index) for a tensor inside a numbered block, e.g. ("blocks.", 3)."""
        m = _LAYER.match(name)
        return ((m.group(1) or ""), int(m.group(2))) if m else None


def load_model(path: str | Path) -> Model:
    """Load a safetensors file or a model folder (config.json, *.safetensors, tokenizer)."""
    p = Path(path)
    if not p.exists():
        raise FormatError(
            f"{p}: no such file or folder; give a .safetensors file or a model folder"
        )
    if p.is_file():
        files = [p]
        folder = p.parent if (p.parent / "config.json").exists() else None
    else:
        files = sorted(p.glob("*.safetensors"))
        folder = p
        if not files:
            raise FormatError(f"{p}: folder holds no *.safetensors file")
    tensors: dict[str, F32] = {}
    for f in files:
        tensors.update(read_safetensors(f))
    config: dict[str, object] = {}
    vocab = None
    if folder is not None:
        cfg = folder / "config.json"
        if cfg.exists():
            try:
                loaded = json.loads(cfg.read_text())
            except json.JSONDecodeError as exc:
                raise FormatError(f"{cfg}: not JSON ({exc})") from exc
            if isinstance(loaded, dict):
                config = loaded
        vocab = load_vocab(folder)
    return Model(name=str(p), tensors=tensors, config=config, vocab=vocab)
