"""Tokenizer vocabularies and their overlap (DESIGN.md §6, Forensics).

Two models can only be compared token by token through the tokens they share, matched by their
string, not their id. This module reads a vocabulary from ``tokenizer.json`` (BPE/WordPiece
``model.vocab`` as a mapping, Unigram as a list of ``[piece, score]``, plus ``added_tokens``),
``vocab.json`` or ``vocab.txt``, and reports the overlap: counts, Jaccard index, and how many
shared tokens also share their id. A shared vocabulary is common between unrelated models
(tokenizers are reused all the time); it says nothing about the weights by itself.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from attest.errors import FormatError

__all__ = ["VocabOverlap", "load_vocab", "shared_token_ids", "vocab_overlap"]


def load_vocab(folder: Path) -> dict[str, int] | None:
    """token string -> id from the tokenizer files in ``folder`` (None when there are none)."""
    tj = folder / "tokenizer.json"
    if tj.exists():
        try:
            doc = json.loads(tj.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise FormatError(f"{tj}: not JSON ({exc})") from exc
        vocab: dict[str, int] = {}
        model = doc.get("model", {}) if isinstance(doc, dict) else {}
        raw = model.get("vocab") if isinstance(model, dict) else None
        if isinstance(raw, dict):
            vocab.update({str(k): int(v) for k, v in raw.items()})
        elif isinstance(raw, list):
            vocab.update({str(item[0]): i for i, item in enumerate(raw)})
        for added in doc.get("added_tokens", []) if isinstance(doc, dict) else []:
            if isinstance(added, dict) and "content" in added and "id" in added:
                vocab[str(added["content"])] = int(added["id"])
        return vocab or None
    vj = folder / "vocab.json"
    if vj.exists():
        raw = json.loads(vj.read_text(encoding="utf-8"))
        return {str(k): int(v) for k, v in raw.items()} if isinstance(raw, dict) else None
    vt = folder / "vocab.txt"
    if vt.exists():
        lines = vt.read_text(encoding="utf-8").splitlines()
        return {tok: i for i, tok in enumerate(lines)}
    return None


@dataclass(frozen=True, slots=True)
class VocabOverlap:
    """How much two vocabularies share."""

    size_a: int
    size_b: int
    shared: int
    jaccard: float
    same_id: int
    source: str  # "tokenizer" when both vocabularies were read, else "assumed-identical-ids"


def shared_token_ids(
    vocab_a: dict[str, int] | None,
    vocab_b: dict[str, int] | None,
    rows_a: int,
    rows_b: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64], VocabOverlap]:
    """Row indices (into A's and B's token-indexed tensors) of the shared tokens, ordered by a
    hash of the token string so that any prefix is a fixed pseudo-random sample of them."""
    if vocab_a is None or vocab_b is None:
        n = min(rows_a, rows_b)
        ids = np.arange(n, dtype=np.int64)
        order = np.argsort([hashlib.sha256(str(i).encode()).digest() for i in range(n)])
        ov = VocabOverlap(rows_a, rows_b, n, n / max(rows_a, rows_b, 1), n, "assumed-identical-ids")
        return ids[order], ids[order], ov
    pairs = [
        (tok, ia, vocab_b[tok])
        for tok, ia in vocab_a.items()
        if tok in vocab_b and ia < rows_a and vocab_b[tok] < rows_b
    ]
    pairs.sort(key=lambda p: hashlib.sha256(p[0].encode("utf-8")).digest())
    a_ids = np.array([p[1] for p in pairs], dtype=np.int64)
    b_ids = np.array([p[2] for p in pairs], dtype=np.int64)
    return a_ids, b_ids, vocab_overlap(vocab_a, vocab_b)


def vocab_overlap(vocab_a: dict[str, int], vocab_b: dict[str, int]) -> VocabOverlap:
    """Counts, Jaccard index and same-id count of two vocabularies."""
    shared = vocab_a.keys() & vocab_b.keys()
    union = len(vocab_a.keys() | vocab_b.keys())
    same = sum(1 for t in shared if vocab_a[t] == vocab_b[t])
    return VocabOverlap(
        len(vocab_a),
        len(vocab_b),
        len(shared),
        len(shared) / union if union else 0.0,
        same,
        "tokenizer",
    )
