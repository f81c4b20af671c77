"""Overhead of LineageCallback on the demo tiny GPT on CPU (issue "Benchmark", DESIGN §4).

Trains the same model from the same seed with and without the callback (checkpoint digest every
50 steps, embedded local log), alternating the two so machine noise hits both alike, and reports
the ratio of median step times (time between successive ``on_train_batch_start`` calls, so every
hook and the optimizer step are included), the ratio of whole ``fit`` wall times and the ratio of
process CPU time (all threads: hashing, signing and shipping included; least sensitive to other
load on a shared machine)::

    python bench/callback_overhead.py --steps 200 --pairs 3 --out bench/results/callback_overhead.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from attest.callbacks import LineageCallback
from attest.demo.data import CharDataset
from attest.demo.model import TinyGPT
from attest.keys import TrainerKey


class StepClock(L.Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.starts.append(time.perf_counter())


def one_run(steps: int, attest: bool, tmp: Path, key: Path, tag: str) -> tuple[float, float, float]:
    L.seed_everything(0, verbose=False)
    ds = CharDataset()
    model = TinyGPT(ds.vocab_size)
    clock = StepClock()
    callbacks: list[Any] = [clock]
    if attest:
        callbacks.insert(
            0,
            LineageCallback(
                key=key,
                destination=tmp / "log",
                run=tag,
                checkpoint_every=50,
                spool_dir=tmp / "spool",
            ),
        )
    trainer = L.Trainer(
        max_steps=steps,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.fit(model, DataLoader(ds, batch_size=32, shuffle=True))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    deltas = [b - a for a, b in zip(clock.starts[5:], clock.starts[6:], strict=False)]
    return statistics.median(deltas), wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="attest-bench-"))
    key = tmp / "trainer.pem"
    TrainerKey.generate().save(key)
    base: list[tuple[float, float, float]] = []
    with_cb: list[tuple[float, float, float]] = []
    one_run(20, False, tmp, key, "warm")  # warm-up: imports, allocator, thread pools
    for i in range(args.pairs):
        order = [False, True] if i % 2 == 0 else [True, False]
        for attest in order:
            result = one_run(args.steps, attest, tmp, key, f"bench-{i}")
            (with_cb if attest else base).append(result)
    step_base = statistics.median(r[0] for r in base)
    step_cb = statistics.median(r[0] for r in with_cb)
    wall_base = statistics.median(r[1] for r in base)
    wall_cb = statistics.median(r[1] for r in with_cb)
    cpu_base = statistics.median(r[2] for r in base)
    cpu_cb = statistics.median(r[2] for r in with_cb)
    report = {
        "model": "attest.demo.model:TinyGPT (defaults), CharDataset, batch 32, CPU",
        "parameters": sum(p.numel() for p in TinyGPT(CharDataset().vocab_size).parameters()),
        "steps": args.steps,
        "pairs": args.pairs,
        "checkpoint_every": 50,
        "median_step_s": {"without": step_base, "with": step_cb},
        "step_time_ratio": step_cb / step_base,
        "fit_wall_s": {"without": wall_base, "with": wall_cb},
        "fit_wall_ratio": wall_cb / wall_base,
        "fit_cpu_s": {"without": cpu_base, "with": cpu_cb},
        "fit_cpu_ratio": cpu_cb / cpu_base,
        "runs_step_s": {"without": [r[0] for r in base], "with": [r[0] for r in with_cb]},
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "target_ratio": 1.02,
    }
    print(json.dumps(report, indent=1))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
