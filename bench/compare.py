"""Benchmark: `attest compare` on a pair of ~100M-parameter GPT-like models on CPU.

Random-init weights (GPT-2-like layout with torch.nn.Linear orientation: d_model 768, 12 layers,
4x MLP, vocabulary 32,000 → about 110M parameters) are written as safetensors into a temporary
folder with a shared tokenizer; then two comparisons are timed end to end (load + all tests):
an independent pair (different seeds) and a derived pair (A plus small noise, with its MLP
hidden units permuted). `--small` runs a ~7M-parameter version in seconds.

    .venv/bin/python bench/compare.py [--small] [--out bench/results/compare.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from attest.verifier.forensics import compare_models, load_model


def gpt_weights(seed: int, *, d: int, layers: int, vocab: int, ctx: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    std = 0.02

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32)

    t: dict[str, np.ndarray] = {"tok_emb.weight": w(vocab, d), "pos_emb.weight": w(ctx, d)}
    for i in range(layers):
        p = f"blocks.{i}."
        for n in ("ln1", "ln2"):
            t[p + n + ".weight"] = (1 + 0.05 * rng.standard_normal(d)).astype(np.float32)
            t[p + n + ".bias"] = (0.02 * rng.standard_normal(d)).astype(np.float32)
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            t[p + f"attn.{n}.weight"] = w(d, d)
            t[p + f"attn.{n}.bias"] = w(d)
        t[p + "mlp.up_proj.weight"] = w(4 * d, d)
        t[p + "mlp.up_proj.bias"] = w(4 * d)
        t[p + "mlp.down_proj.weight"] = w(d, 4 * d)
        t[p + "mlp.down_proj.bias"] = w(d)
    t["ln_f.weight"] = (1 + 0.05 * rng.standard_normal(d)).astype(np.float32)
    t["ln_f.bias"] = (0.02 * rng.standard_normal(d)).astype(np.float32)
    return t


def derive(t: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """A copy with 10 % noise and every MLP's hidden units permuted."""
    rng = np.random.default_rng(seed)
    out = {
        k: (v + 0.1 * v.std() * rng.standard_normal(v.shape, dtype=np.float32)).astype(np.float32)
        for k, v in t.items()
    }
    i = 0
    while f"blocks.{i}.mlp.up_proj.weight" in out:
        p = f"blocks.{i}.mlp."
        perm = rng.permutation(out[p + "up_proj.weight"].shape[0])
        out[p + "up_proj.weight"] = np.ascontiguousarray(out[p + "up_proj.weight"][perm])
        out[p + "up_proj.bias"] = np.ascontiguousarray(out[p + "up_proj.bias"][perm])
        out[p + "down_proj.weight"] = np.ascontiguousarray(out[p + "down_proj.weight"][:, perm])
        i += 1
    return out


def write(folder: Path, tensors: dict[str, np.ndarray], cfg: dict[str, int]) -> None:
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(cfg))
    vocab = {f"tok{i}": i for i in range(cfg["vocab_size"])}
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"vocab": vocab}}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="~7M parameters instead of ~110M")
    ap.add_argument("--out", type=Path, default=Path("bench/results/compare.json"))
    args = ap.parse_args()
    cfg = (
        dict(hidden_size=256, num_hidden_layers=4, vocab_size=8000, n_positions=256)
        if args.small
        else dict(hidden_size=768, num_hidden_layers=12, vocab_size=32000, n_positions=1024)
    )
    shape = dict(
        d=cfg["hidden_size"],
        layers=cfg["num_hidden_layers"],
        vocab=cfg["vocab_size"],
        ctx=cfg["n_positions"],
    )
    results: dict[str, object] = {
        "config": cfg,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        a = gpt_weights(0, **shape)
        write(root / "a", a, cfg)
        write(root / "b", gpt_weights(1, **shape), cfg)
        write(root / "c", derive(a, 2), cfg)
        del a
        results["generate_s"] = round(time.perf_counter() - t0, 2)
        for label, other in (("independent", "b"), ("derived_permuted", "c")):
            t1, c1 = time.perf_counter(), time.process_time()
            ma, mb = load_model(root / "a"), load_model(root / other)
            load_s = time.perf_counter() - t1
            r = compare_models(ma, mb)
            total = time.perf_counter() - t1
            cpu = time.process_time() - c1
            params = sum(v.size for v in ma.tensors.values())
            results[label] = {
                "params_per_model": int(params),
                "load_s": round(load_s, 2),
                "compare_s": {k: round(v, 2) for k, v in r.seconds.items()},
                "total_s": round(total, 2),
                "cpu_s": round(cpu, 2),
                "verdict": r.verdict.label,
                "log10_p": r.verdict.log_p / np.log(10),
            }
            print(
                f"{label:>17}: {params / 1e6:.1f}M params/model  load {load_s:.1f}s  "
                f"compare {r.seconds['total']:.1f}s (tensors {r.seconds['tensors']:.1f}s, "
                f"hidden units {r.seconds['hidden_units']:.1f}s, vocabulary-aligned "
                f"{r.seconds['vocabulary_aligned']:.1f}s), CPU time {cpu:.1f}s  "
                f"verdict {r.verdict.label}"
            )
            del ma, mb
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
