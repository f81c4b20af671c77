"""Check 3: was the model trained from scratch? (docs/verifying.md, "from scratch")

Four results, ids stable:

``scratch.init_recreated`` (cryptographic) — the model is rebuilt from ``run.start.model``
(import path + init args) with ``run.start.init.seed`` by the recipe ``seed-then-construct``
(:mod:`attest.verifier.rebuild`); every tensor's digest must equal the committed init's
(``weights.init``), except tensors under a declared component's prefix, which check 5 covers.
A class that cannot be imported here is "could not check", naming the module — never a pass.

``scratch.init_random`` (statistical) — the init weights (the rebuilt ones when they matched,
else ``state_dir/step-0/model.safetensors`` or ``<--data>/init.safetensors`` whose digest equals
the committed init) must look like a fresh random init: exact constants, per-tensor
distribution tests against the declared init (the model rebuilt with another seed) combined by
Holm and Fisher at the policy's ``statistics.alpha`` (default 0.01), and no eigenvalue past the
Marchenko–Pastur edge (:mod:`attest.verifier.initstats`). A constructor that quietly loads
trained weights passes ``init_recreated`` (the seed reproduces it) and fails here.

``scratch.step0_loss`` (statistical) — a fresh init predicts no better than chance. With the
init weights and the dataset (``run.start.config.data``), batch 0 is re-run: the recomputed loss
must equal the logged one (within 1e-3 relative: float32 on other hardware), under the RNG state
step 0 began with so that dropout draws the same masks (when the run kept none, or the dataset
draws random augmentation, within the span of 8 seeded draws). It must not sit below the loss
the same logits give a uniformly random label, ``U = mean(logsumexp(z) − mean(z))`` (≈ ln V +
s²/2 for logit spread ``s``), by more than ``0.1·ln V + s``, nor by more than :data:`STEP0_Z`
standard errors of ``d = mean(z) − z[y]`` over the batch's label positions (logits that know
nothing of the labels give ``d`` mean zero, whatever ``V`` and the class balance). Without a
recomputation (or logits), the logged loss must be at least ``ln V − max(0.1·ln V, 0.5)``
(``V`` from ``init_args.vocab_size``; 0.5 nats because one small batch of a few classes strays
further than 0.1·ln V). A warm start sits near its parent's converged loss, far below these.

``scratch.update_bound`` — see :mod:`attest.verifier.updatebound`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from attest.canonical import strict_json_loads
from attest.digest import digest_safetensors, digest_state_dict
from attest.errors import AttestError
from attest.statefiles import load_rng_before_step, restore_rng
from attest.verifier.checkpoint_state import recorded_root, verified_weights
from attest.verifier.context import VerifyContext
from attest.verifier.initstats import assess_init
from attest.verifier.rebuild import (
    RebuildError,
    StepRecipe,
    build_dataset,
    build_model,
    collate,
    draws_from_global_generators,
    preserved_rng,
    seed_everything,
    step_loss,
)
from attest.verifier.result import Basis, CheckResult, Status
from attest.verifier.updatebound import check_update_bound

if TYPE_CHECKING:
    import torch

__all__ = [
    "DRAWS",
    "LOSS_MATCH",
    "STEP0_MARGIN",
    "STEP0_MIN_MARGIN",
    "STEP0_Z",
    "check_from_scratch",
]

STEP0_MARGIN = 0.1  # fraction of ln V a fresh init's step-0 loss may sit below chance
STEP0_MIN_MARGIN = 0.5  # nats: one small batch of a few classes strays further than 0.1·ln V
LOSS_MATCH = 1e-3  # relative: recomputed vs logged step-0 loss
DRAWS = 8  # seeds the step-0 loss is recomputed under when the run kept no RNG state
STEP0_Z = 6.0
"""Standard errors the true-label loss may sit below the random-label loss of the same logits.
``bench/step0_false_failures.py`` (200 seeds each of a TinyGPT, a 2-class and a 10-class MLP):
no honest init goes below −3.5 (positions of one sequence share their context, so the tails are
wider than a normal's); the TinyGPT after 25 to 100 training steps scores −14 to −16."""

_T = {
    "init_recreated": "Init re-created from seed and recipe",
    "init_random": "Init weights look like a fresh random init",
    "step0_loss": "Step-0 loss is that of an untrained model",
    "update_bound": "Updates between checkpoints within what the learning rates allow",
}


def _result(key: str, status: Status, why: str, basis: Basis, **evidence: Any) -> CheckResult:
    return CheckResult(f"scratch.{key}", _T[key], status, why, basis, evidence)


@dataclass
class _Init:
    """What the checks share: the rebuilt model, the init weights and where they came from."""

    model: Any = None  # torch.nn.Module rebuilt with the recorded seed
    matched: bool = False
    problem: str | None = None  # why the rebuild could not run
    module: str | None = None
    weights: dict[str, Any] | None = None  # init state dict (torch tensors)
    source: str | None = None
    exempt: tuple[str, ...] = ()
    # False when the rebuilt weights differ from the committed init in declared-component
    # tensors: right for testing the rest, wrong for recomputing the model's step-0 loss.
    complete: bool = True
    evidence: dict[str, Any] = field(default_factory=dict)


def check_from_scratch(ctx: VerifyContext) -> list[CheckResult]:
    """The four ``scratch.*`` results.

    A fine-tune (``run.start.parent`` set) starts from its parent's final weights by design:
    its init is checked against the parent by ``components.parent``, and its from-scratch
    evidence is the parent bundle's own. The init checks are reported as not applicable; the
    update bound still applies to its own checkpoints.
    """
    init = _Init()
    parent = ctx.run_start.get("parent")
    if isinstance(parent, dict):
        why = (
            f"not applicable: a fine-tune of run {parent.get('run')}; its init is the parent's"
            " final model (components.parent), whose own bundle carries the from-scratch evidence"
        )
        results = [
            _result(
                key,
                Status.SKIPPED,
                why,
                Basis.CRYPTOGRAPHIC if key == "init_recreated" else Basis.STATISTICAL,
            )
            for key in ("init_recreated", "init_random", "step0_loss")
        ]
        results.append(_update_bound(ctx, init))
        return results
    results = [_init_recreated(ctx, init)]
    for fn in (_init_random, _step0_loss, _update_bound):  # each may be "could not check"
        key = fn.__name__[1:]
        try:
            results.append(fn(ctx, init))
        except RebuildError as exc:
            results.append(
                _result(
                    key,
                    Status.SKIPPED,
                    f"could not check: {exc.message}",
                    Basis.STATISTICAL,
                    module=exc.module,
                )
            )
        except AttestError as exc:
            results.append(
                _result(key, Status.SKIPPED, f"could not check: {exc.message}", Basis.STATISTICAL)
            )
    return results


# --- init re-creation ----------------------------------------------------------------------


def _init_recreated(ctx: VerifyContext, init: _Init) -> CheckResult:
    key, basis = "init_recreated", Basis.CRYPTOGRAPHIC
    try:
        start = ctx.run_start
        committed = ctx.init_digest()
    except AttestError as exc:
        init.problem = exc.message
        return _result(key, Status.SKIPPED, f"could not check: {exc.message}", basis)
    init.exempt = tuple(
        str(c["prefix"])
        for c in start.get("components", [])
        if isinstance(c, dict) and isinstance(c.get("prefix"), str)
    )
    spec, recipe = start.get("model", {}), start.get("init", {})
    seed = recipe.get("seed")
    if recipe.get("recipe") != "seed-then-construct" or not isinstance(seed, int):
        init.problem = "no seed-then-construct recipe with a seed"
        return _result(
            key,
            Status.SKIPPED,
            "could not check: the run committed no seed-then-construct recipe with a"
            " seed, so its init cannot be re-created",
            basis,
            init=dict(recipe),
        )
    if ctx.trainer_key is None:
        init.problem = "untrusted bundle"
        return _result(
            key,
            Status.SKIPPED,
            "could not check: not running code named by a bundle whose trainer key is not trusted",
            basis,
        )
    path = str(spec.get("import_path"))
    try:
        init.model = build_model(path, spec.get("init_args", {}), seed=seed)
    except RebuildError as exc:
        init.problem, init.module = exc.message, exc.module
        return _result(
            key,
            Status.SKIPPED,
            f"could not check: {exc.message}",
            basis,
            module=exc.module,
            import_path=path,
        )
    state = {k: v.detach() for k, v in init.model.state_dict().items()}
    got = digest_state_dict(state, algorithm=ctx.algorithm)
    diff = committed.diff(got)
    exempt = [n for n in (*diff.added, *diff.removed, *diff.changed) if n.startswith(init.exempt)]
    bad = [line for line in diff.lines() if not line[2:].startswith(init.exempt)]
    evidence = {
        "import_path": path,
        "seed": seed,
        "expected": committed.hex,
        "got": got.hex,
        "exempt_component_tensors": len(exempt),
    }
    if bad:
        return _result(
            key,
            Status.FAIL,
            f"the model rebuilt with seed {seed} differs from the committed init in"
            f" {len(bad)} tensor(s): the init is not what the recipe produces",
            basis,
            **evidence,
            tensor_diff=bad[:20],
        )
    init.matched = True
    init.weights, init.source = state, "re-created from the recipe"
    init.complete = not exempt
    return _result(
        key,
        Status.PASS,
        f"{path} with seed {seed} re-creates the committed init"
        + (f" (declared component tensors exempt: {len(exempt)})" if exempt else ""),
        basis,
        **evidence,
    )


def _load_init(ctx: VerifyContext, init: _Init) -> None:
    """Init weights from a state file when the rebuild did not produce them."""
    if init.weights is not None:
        return
    from safetensors.torch import load_file

    path, why = verified_weights(ctx, 0)
    if path is None and ctx.data_dir is not None and (ctx.data_dir / "init.safetensors").is_file():
        candidate = ctx.data_dir / "init.safetensors"
        got = digest_safetensors(candidate, algorithm=ctx.algorithm).hex
        path = candidate if got == recorded_root(ctx, 0) else None
        why = why if path is not None else f"{candidate} does not match the committed init"
    if path is None:
        init.evidence["init_weights"] = why
        return
    init.weights, init.source = load_file(str(path)), str(path)


# --- init randomness -----------------------------------------------------------------------


def _init_random(ctx: VerifyContext, init: _Init) -> CheckResult:
    key, basis = "init_random", Basis.STATISTICAL
    _load_init(ctx, init)
    if init.weights is None:
        return _result(
            key,
            Status.SKIPPED,
            "could not check: no init weights (the rebuild did"
            " not match and no state file of step 0 was given)",
            basis,
            **init.evidence,
        )
    reference = parameters = None
    seed = ctx.run_start.get("init", {}).get("seed")
    if init.model is not None:
        spec = ctx.run_start["model"]
        other = build_model(
            str(spec["import_path"]), spec.get("init_args", {}), seed=(int(seed or 0) + 1) % 2**32
        )
        reference = _numpy(other.state_dict())
        parameters = {n for n, _ in init.model.named_parameters()}
    tensors = {k: v for k, v in _numpy(init.weights).items() if not k.startswith(init.exempt)}
    alpha = float(ctx.policy.statistics.get("alpha", 0.01))
    verdict = assess_init(tensors, reference=reference, parameters=parameters, alpha=alpha)
    evidence = verdict.to_json() | {
        "source": init.source,
        "declared_init": "model rebuilt with another seed"
        if reference is not None
        else "zero-centred truncated-normal family (no rebuild available)",
    }
    if not verdict.passed:
        return _result(key, Status.FAIL, "; ".join(verdict.reasons), basis, **evidence)
    return _result(
        key,
        Status.PASS,
        f"{len(tensors)} tensors: exact constants, distribution tests (α={alpha}) and"
        " spectra are those of a fresh random init",
        basis,
        **evidence,
    )


def _numpy(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    for k, v in state.items():
        t = v.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        out[k] = t.numpy()
    return out


# --- step-0 loss ---------------------------------------------------------------------------


def _step0_loss(ctx: VerifyContext, init: _Init) -> CheckResult:
    import torch

    key, basis = "step0_loss", Basis.STATISTICAL
    table = ctx.step_table()
    logged = table.loss[table.step.index(0)] if 0 in table.step else None
    if logged is None:
        return _result(key, Status.SKIPPED, "could not check: no logged loss for step 0", basis)
    args = ctx.run_start.get("model", {}).get("init_args", {})
    vocab = args.get("vocab_size") if isinstance(args, dict) else None
    evidence: dict[str, Any] = {"logged": logged, "margin": STEP0_MARGIN}
    recomputed = uniform = spread = label_z = None
    data = ctx.run_start.get("config", {}).get("data")
    if not init.complete:
        evidence["recompute"] = "skipped: declared components replace part of the re-created init"
    elif init.weights is not None and init.model is not None and isinstance(data, dict):
        ids = ctx.batch_ids(0)
        try:
            dataset = None if ids is None else build_dataset(data, data_dir=ctx.data_dir)
        except RebuildError as exc:  # judged on the logged loss alone, below
            evidence["recompute"] = f"skipped: {exc.message}"
            dataset = None
        if ids is not None and dataset is not None:
            batch = collate(dataset, ids)
            init.model.load_state_dict(init.weights)
            init.model.train()
            try:
                recipe = StepRecipe.of_run(ctx.run_start.get("config", {}), ctx.data_manifest)
            except RebuildError:  # a precision replay cannot reproduce: full precision is
                recipe = StepRecipe()  # within the check's margin of an untrained model's loss
            with torch.no_grad(), preserved_rng():
                recomputed, drawn_as = _recompute_step0(ctx, init, dataset, ids, recipe)
                init.model.load_state_dict(init.weights)  # undo normalisation-statistic updates
                logits = _logit_stats(init.model, batch)
            if logits is not None:
                uniform, spread, vocab = logits.uniform, logits.spread, vocab or logits.vocab
                label_z = logits.z
            evidence |= {
                "recomputed": recomputed,
                "uniform_label_loss": uniform,
                "logit_spread": spread,
                "label_z": label_z,
                "batch_ids": len(ids),
                **drawn_as,
            }
    if not isinstance(vocab, int) or vocab < 2:
        return _result(
            key,
            Status.SKIPPED,
            "could not check: the vocabulary size is unknown"
            " (no init_args.vocab_size and no recomputed logits)",
            basis,
            **evidence,
        )
    ln_v = math.log(vocab)
    floor = ln_v - max(STEP0_MARGIN * ln_v, STEP0_MIN_MARGIN)
    evidence |= {"vocab_size": vocab, "ln_vocab": ln_v, "floor": floor}
    if (recomputed is None or uniform is None or spread is None) and logged < floor:
        return _result(
            key,
            Status.FAIL,
            f"step-0 loss {logged:.4g} is below chance ln V = {ln_v:.4g} by more than"
            f" {ln_v - floor:.3g} nats: the run started from trained weights",
            basis,
            **evidence,
        )
    if recomputed is not None:
        band = evidence.get("draws_span", 0.0)
        if abs(recomputed - logged) > LOSS_MATCH * max(1.0, abs(logged)) + band:
            drawn = f" (± {band:.3g}: {DRAWS} draws of its random layers)" if band else ""
            return _result(
                key,
                Status.FAIL,
                f"batch 0 on the init weights gives loss {recomputed:.6g}{drawn}, the log"
                f" says {logged:.6g}",
                basis,
                **evidence,
            )
        if label_z is not None and label_z < -STEP0_Z:
            return _result(
                key,
                Status.FAIL,
                f"the init predicts batch 0's labels better than chance: their loss is"
                f" {-label_z:.1f} standard errors below the loss of the same logits on random"
                " labels: the run started from trained weights",
                basis,
                **evidence,
            )
        if uniform is not None and spread is not None:
            slack = STEP0_MARGIN * ln_v + spread
            if recomputed < uniform - slack:
                return _result(
                    key,
                    Status.FAIL,
                    f"the init predicts batch 0 far better than chance (loss"
                    f" {recomputed:.4g} vs {uniform:.4g} for random labels)",
                    basis,
                    **evidence,
                )
    how = "recomputed on batch 0 and " if recomputed is not None else ""
    return _result(
        key,
        Status.PASS,
        f"step-0 loss {logged:.4g} ({how}≈ ln V = {ln_v:.4g}) is an untrained model's",
        basis,
        **evidence,
    )


def _recompute_step0(
    ctx: VerifyContext, init: _Init, dataset: Any, ids: list[int], recipe: StepRecipe
) -> tuple[float, dict[str, Any]]:
    """The loss of batch 0 on the init weights in training mode, and how it was had.

    Dropout and other random layers draw from the global generators, so the loss training saw
    depends on their state when step 0 began. The state folder keeps that state
    (``rng-before-step-0.json``, else ``step-0/rng.json``): under it the forward pass draws the
    same masks and the loss is reproduced. Without it — or when loading a sample draws from the
    generators too (random augmentation, drawn while training's loader fetched ahead) — the
    loss is recomputed under :data:`DRAWS` seeds; if they disagree, the check allows their span
    around their mean instead of an exact match (``draws_span`` in the evidence).
    """
    folder = ctx.state_folder(0)
    rng = None if ctx.state_dir is None else load_rng_before_step(ctx.state_dir, 0)
    if rng is None and folder is not None and (folder / "rng.json").is_file():
        rng = strict_json_loads((folder / "rng.json").read_bytes(), what=f"{folder}/rng.json")

    def loss() -> float:
        init.model.load_state_dict(init.weights)
        init.model.train()
        return float(step_loss(init.model, dataset, ids, recipe=recipe).item())

    augmented = draws_from_global_generators(dataset, ids[0])
    if isinstance(rng, dict) and not augmented:
        restore_rng(rng)
        return loss(), {"rng": "the state step 0 started with"}
    draws = []
    for seed in range(DRAWS):
        seed_everything(seed)
        draws.append(loss())
    span = max(draws) - min(draws)
    if span == 0.0:
        return draws[0], {}
    kept = (
        "kept, but loading a sample draws from it (data augmentation)" if augmented else "not kept"
    )
    return sum(draws) / DRAWS, {"rng": kept, "draws": draws, "draws_span": span}


@dataclass(frozen=True)
class _Logits:
    """What batch 0's logits on the init say about chance (see :func:`_logit_stats`)."""

    uniform: float  # mean(lse(z) − mean(z)): the loss of these logits on random labels
    spread: float  # mean standard deviation of a position's logits
    vocab: int
    z: float | None  # true-label loss minus ``uniform``, in standard errors (None: no labels)


def _logit_stats(model: Any, batch: Any) -> _Logits | None:
    """Batch 0's logits on the init, when ``model(x)`` returns them: the uniform-label loss,
    the logit spread, V, and — when the batch's last item holds one class label per position —
    the z-score of ``d = mean(z) − z[y]`` (true-label loss minus random-label loss) over the
    positions. Logits that know nothing of the labels give ``d`` mean zero; a model that has
    learnt the task gives a large negative z."""
    import torch

    if not isinstance(batch, (list, tuple)) or len(batch) not in (2, 3):
        return None
    try:
        z = model(batch[-2])
    except Exception:
        return None
    if not isinstance(z, torch.Tensor) or z.dim() < 2:
        return None
    z = z.reshape(-1, z.shape[-1]).double()
    uniform = float((torch.logsumexp(z, dim=-1) - z.mean(dim=-1)).mean())
    spread = float(z.std(dim=-1).mean())
    score = None
    y = batch[-1]
    if isinstance(y, torch.Tensor) and not y.is_floating_point() and y.numel() == len(z) > 2:
        y = y.reshape(-1, 1).long()
        if bool(((y >= 0) & (y < z.shape[-1])).all()):
            d = z.mean(dim=-1) - z.gather(1, y).squeeze(1)
            sd = float(d.std())
            score = float(d.mean()) / (sd / math.sqrt(len(d))) if sd > 0 else None
    return _Logits(uniform, spread, int(z.shape[-1]), score)


def _update_bound(ctx: VerifyContext, init: _Init) -> CheckResult:
    params = {n for n, _ in init.model.named_parameters()} if init.model is not None else None
    return check_update_bound(ctx, parameters=params)
