"""Demo data: generated English-like text and a character-level dataset over it.

Nothing is downloaded. The text is generated deterministically from a small grammar, so every
machine builds the same corpus and the dataset fingerprint is reproducible.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import torch
from torch.utils.data import Dataset

__all__ = ["TEXT_FILE", "CharDataset", "demo_text", "write_demo_text"]

TEXT_FILE = "demo-text.txt"

_SUBJECTS = ["the model", "a verifier", "the regulator", "our team", "the log", "every record"]
_VERBS = ["checks", "signs", "commits", "replays", "records", "proves", "hashes", "compares"]
_OBJECTS = [
    "the initial weights",
    "each training step",
    "the loss curve",
    "a checkpoint digest",
    "the data order",
    "the final model",
    "a merkle proof",
    "the signed tree head",
]
_TAILS = ["", " before training", " at every step", " offline", " from scratch", " in public"]


def write_demo_text(folder: Path, *, sentences: int = 4000, seed: int = 1234) -> Path:
    """Write :func:`demo_text` to ``folder/demo-text.txt`` (the demo's one data shard)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TEXT_FILE
    path.write_text(demo_text(sentences=sentences, seed=seed), encoding="utf-8")
    return path


def demo_text(*, sentences: int = 4000, seed: int = 1234) -> str:
    """A deterministic corpus of short sentences (about 45 characters each)."""
    rng = random.Random(seed)
    lines = [
        f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_TAILS)}."
        for _ in range(sentences)
    ]
    return "\n".join(lines) + "\n"


class CharDataset(Dataset[tuple[int, torch.Tensor, torch.Tensor]]):
    """Non-overlapping character windows; item ``i`` is ``(i, x, y)`` with ``y`` shifted by one.

    Returning the index lets the lineage callback record exactly which samples each batch held.
    """

    def __init__(
        self,
        *,
        sentences: int = 4000,
        seed: int = 1234,
        block_size: int = 32,
        data_dir: str | None = None,
    ) -> None:
        """With ``data_dir`` the text is read from ``<data_dir>/demo-text.txt`` (the file a demo
        run declares in its data manifest; a verifier passes ``--data``), else generated."""
        if data_dir is not None:
            text = (Path(data_dir) / TEXT_FILE).read_text(encoding="utf-8")
        else:
            text = demo_text(sentences=sentences, seed=seed)
        self.chars = sorted(set(text))
        self.vocab_size = len(self.chars)
        index = {c: i for i, c in enumerate(self.chars)}
        self.data = torch.tensor([index[c] for c in text], dtype=torch.long)
        self.block_size = block_size
        self.fingerprint = "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def __len__(self) -> int:
        return (len(self.data) - 1) // self.block_size

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        start = i * self.block_size
        chunk = self.data[start : start + self.block_size + 1]
        return i, chunk[:-1], chunk[1:]
