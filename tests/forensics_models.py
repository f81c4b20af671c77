"""Small transformer families built in-process for the forensics calibration tests.

Nothing is downloaded: every model is a tiny GPT (learned positions, pre-LayerNorm blocks,
4x GELU MLP, tied LM head) initialised from a seed and trained for a few steps of Adam on
synthetic token streams drawn from a fixed random bigram chain (the "corpus"). Families:

* independent: different init seeds and data orders, same corpus and tokenizer;
* fine-tuned child: the parent trained further on a different corpus;
* permuted child: the child with MLP hidden units and attention heads permuted consistently, so
  its function is unchanged while every MLP/attention matrix is reordered;
* partial reuse: an independent model carrying one submodule copied from the parent and
  perturbed slightly.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attest.verifier.forensics.tensors import Model

__all__ = [
    "Spec",
    "TinyGPT",
    "copy_submodule",
    "finetune",
    "permute_units",
    "save_folder",
    "to_model",
    "train_model",
]


@dataclass(frozen=True)
class Spec:
    vocab: int = 256
    d: int = 64
    heads: int = 4
    layers: int = 2
    ctx: int = 16


class Block(nn.Module):
    def __init__(self, s: Spec) -> None:
        super().__init__()
        self.heads = s.heads
        self.ln1 = nn.LayerNorm(s.d)
        self.attn = nn.ModuleDict(
            {k: nn.Linear(s.d, s.d) for k in ("q_proj", "k_proj", "v_proj", "o_proj")}
        )
        self.ln2 = nn.LayerNorm(s.d)
        self.mlp = nn.ModuleDict(
            {"up_proj": nn.Linear(s.d, 4 * s.d), "down_proj": nn.Linear(4 * s.d, s.d)}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.ln1(x)
        q, k, v = (
            self.attn[n](h).view(b, t, self.heads, d // self.heads).transpose(1, 2)
            for n in ("q_proj", "k_proj", "v_proj")
        )
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn["o_proj"](y.transpose(1, 2).reshape(b, t, d))
        out: torch.Tensor = x + self.mlp["down_proj"](
            nn.functional.gelu(self.mlp["up_proj"](self.ln2(x)))
        )
        return out


class TinyGPT(nn.Module):
    def __init__(self, s: Spec) -> None:
        super().__init__()
        self.spec = s
        self.tok_emb = nn.Embedding(s.vocab, s.d)
        self.pos_emb = nn.Embedding(s.ctx, s.d)
        self.blocks = nn.ModuleList([Block(s) for _ in range(s.layers)])
        self.ln_f = nn.LayerNorm(s.d)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(idx.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        out: torch.Tensor = self.ln_f(x) @ self.tok_emb.weight.T
        return out


def _corpus(s: Spec, corpus_seed: int) -> torch.Tensor:
    """A bigram transition matrix: each token prefers a handful of successors."""
    g = torch.Generator().manual_seed(corpus_seed)
    logits = torch.randn(s.vocab, s.vocab, generator=g) * 3.0
    return torch.softmax(logits, dim=1)


@functools.lru_cache(maxsize=4)
def _pool(s: Spec, corpus_seed: int, size: int = 256) -> torch.Tensor:
    """``size`` sequences of ``ctx + 1`` tokens drawn from corpus ``corpus_seed``."""
    probs = _corpus(s, corpus_seed)
    g = torch.Generator().manual_seed(corpus_seed + 1)
    seq = [torch.randint(0, s.vocab, (size,), generator=g)]
    for _ in range(s.ctx):
        seq.append(torch.multinomial(probs[seq[-1]], 1, generator=g)[:, 0])
    return torch.stack(seq, dim=1)


def _train(model: TinyGPT, corpus: int, seed: int, steps: int, lr: float) -> TinyGPT:
    """Adam on batches of 8 sequences drawn from the corpus pool in a seed-given order."""
    pool = _pool(model.spec, corpus)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        batch = pool[torch.randint(0, len(pool), (8,), generator=g)]
        loss = nn.functional.cross_entropy(
            model(batch[:, :-1]).reshape(-1, model.spec.vocab), batch[:, 1:].reshape(-1)
        )
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    return model


def train_model(
    seed: int, *, steps: int = 30, spec: Spec | None = None, corpus: int = 0
) -> TinyGPT:
    """A model initialised from ``seed`` and trained on corpus ``corpus``."""
    s = spec or Spec()
    torch.manual_seed(seed)
    model = TinyGPT(s)
    return _train(model, corpus, seed + 10_000, steps, 3e-3)


def finetune(parent: TinyGPT, *, steps: int = 100, corpus: int = 1, seed: int = 7) -> TinyGPT:
    """The parent trained further, on a different corpus."""
    child = copy.deepcopy(parent)
    return _train(child, corpus, seed, steps, 1e-3)


@torch.no_grad()
def permute_units(model: TinyGPT, *, seed: int = 3) -> TinyGPT:
    """The same function with every MLP's hidden units and every attention's heads reordered."""
    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    s = model.spec
    hd = s.d // s.heads
    prm = dict(out.named_parameters())

    def take(name: str, index: torch.Tensor, dim: int = 0) -> None:
        prm[name].copy_(prm[name].index_select(dim, index))

    for i in range(s.layers):
        b = f"blocks.{i}."
        p = torch.randperm(4 * s.d, generator=g)
        take(b + "mlp.up_proj.weight", p)
        take(b + "mlp.up_proj.bias", p)
        take(b + "mlp.down_proj.weight", p, 1)
        heads = torch.randperm(s.heads, generator=g)
        heads = torch.roll(heads, 1)[torch.argsort(heads)]  # a derangement: no head stays put
        rows = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in heads.tolist()])
        for n in ("q_proj", "k_proj", "v_proj"):
            take(b + f"attn.{n}.weight", rows)
            take(b + f"attn.{n}.bias", rows)
        take(b + "attn.o_proj.weight", rows, 1)
    return out


@torch.no_grad()
def copy_submodule(
    target: TinyGPT, source: TinyGPT, prefix: str, *, noise: float = 0.01, seed: int = 5
) -> TinyGPT:
    """``target`` with the tensors under ``prefix`` copied from ``source`` plus noise of
    ``noise`` × each tensor's standard deviation."""
    out = copy.deepcopy(target)
    g = torch.Generator().manual_seed(seed)
    src = dict(source.named_parameters())
    for name, p in out.named_parameters():
        if name.startswith(prefix):
            s = src[name]
            p.copy_(s + noise * s.std() * torch.randn(s.shape, generator=g))
    return out


def vocab(spec: Spec | None = None) -> dict[str, int]:
    s = spec or Spec()
    return {f"tok{i:03d}": i for i in range(s.vocab)}


def to_model(model: TinyGPT, name: str) -> Model:
    """The numpy view forensics reads."""
    tensors = {
        k: v.detach().numpy().astype(np.float32).copy() for k, v in model.state_dict().items()
    }
    s = model.spec
    config = {
        "model_type": "tinygpt",
        "vocab_size": s.vocab,
        "hidden_size": s.d,
        "num_attention_heads": s.heads,
        "num_hidden_layers": s.layers,
        "n_positions": s.ctx,
    }
    return Model(name=name, tensors=tensors, config=config, vocab=vocab(s))


def save_folder(model: TinyGPT, folder: Path, *, bf16: bool = False) -> Path:
    """Write config.json, model.safetensors and tokenizer.json as a model folder."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    dtype = torch.bfloat16 if bf16 else torch.float32
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    m = to_model(model, str(folder))
    (folder / "config.json").write_text(json.dumps(m.config))
    tok = {"version": "1.0", "model": {"type": "WordLevel", "vocab": m.vocab}, "added_tokens": []}
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    return folder


def logits(model: TinyGPT, seed: int = 0) -> torch.Tensor:
    """Outputs on a fixed random input, for function-equality checks."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, model.spec.vocab, (2, model.spec.ctx), generator=g)
    with torch.no_grad():
        out: torch.Tensor = model(idx)
    return out
