"""False-failure rate of ``scratch.init_random`` on honest inits (docs/verifying.md, check 3).

For each seed, a fresh model is built exactly as the recipe ``seed-then-construct`` does and
judged by :func:`attest.verifier.initstats.assess_init` — with the declared init (the model
rebuilt with the next seed) and without it (truncated-normal family) — at α = 0.01. Models: the
demo TinyGPT (vocab 65, d 64, 2 layers) and a 3-layer MLP (32-128-128-10). Prints the rates
and writes ``bench/results/init_false_failures.json``.

    .venv/bin/python bench/init_false_failures.py [--seeds 200]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attest.demo.model import TinyGPT
from attest.verifier.initstats import assess_init


def _build(kind: str, seed: int) -> nn.Module:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if kind == "tinygpt":
        return TinyGPT(65, 64, 2, 4, 32)
    return nn.Sequential(
        nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )


def _state(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--alpha", type=float, default=0.01)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out: dict[str, object] = {"alpha": args.alpha, "seeds": args.seeds, "results": []}
    start = time.perf_counter()
    for kind in ("tinygpt", "mlp"):
        for mode in ("reference", "family"):
            failures, worst = [], 0.0
            for seed in range(args.seeds):
                model = _build(kind, seed)
                ref = _state(_build(kind, seed + 1_000_003)) if mode == "reference" else None
                params = {n for n, _ in model.named_parameters()}
                verdict = assess_init(
                    _state(model), reference=ref, parameters=params, alpha=args.alpha
                )
                worst = max(
                    worst, max(s.lambda_max / s.threshold for s in verdict.spectra.values())
                )
                if not verdict.passed:
                    failures.append({"seed": seed, "reasons": list(verdict.reasons)})
            rate = len(failures) / args.seeds
            print(
                f"{kind:8s} {mode:9s} false failures {len(failures)}/{args.seeds} = {rate:.2%}"
                f"  max λmax/threshold {worst:.3f}"
            )
            out["results"].append(
                {
                    "model": kind,
                    "mode": mode,
                    "failures": len(failures),
                    "rate": rate,
                    "max_lambda_over_threshold": worst,
                    "failed": failures,
                }
            )
    total = sum(r["failures"] for r in out["results"])  # type: ignore[index]
    runs = 4 * args.seeds
    print(f"overall {total}/{runs} = {total / runs:.2%} ({time.perf_counter() - start:.0f} s)")
    out["overall_rate"] = total / runs
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/init_false_failures.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
