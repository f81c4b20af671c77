"""Check 3, ``scratch.update_bound``: weights moved no more than the logged learning rates allow
(docs/verifying.md, "from scratch").

Statistical, and a proof where it fails: between successive checkpoints
with state files, every parameter moved no more than the logged learning rates allow. For
Adam/AdamW, ``|m̂_t/√v̂_t| ≤ C_t = (1−β₁)/(1−β₁ᵗ)·√((1−β₂ᵗ)/(1−β₂))·√((1−γᵗ)/(1−γ))``,
``γ = β₁²/β₂`` (Cauchy–Schwarz; 1 at t = 1, ≈ 7.3 for the default betas), so
``|Δθᵢ| ≤ Σ_t lr_t·(C_t + wd·Mᵢ)`` with ``Mᵢ`` bounding ``|θᵢ|`` over the interval; any
coordinate past it is a jump no Adam trajectory can make. For SGD the whole-model bound is
``‖Δθ‖ ≤ Σ_t lr_t‖u_t‖`` with ``‖u_t‖`` built from the logged gradient norms and the momentum
recursion. RMSprop (not centred) and Adagrad normalise each coordinate too:
``v_t ≥ (1−α)g_t²`` bounds RMSprop's normalised gradient by ``1/√(1−α)`` (times the momentum
sum ``Σ μ^k``), and ``Σ g² ≥ g_t²`` bounds Adagrad's by 1, so they take the per-coordinate rule
with those constants; NAdam and Adamax have per-coordinate bounds of the same kind
(:func:`nadam_step_bound`, :func:`adamax_step_bound`). RAdam's rectified steps are Adam's times
a rectification factor below 1, and its first steps (variance not yet tractable) move by the
bias-corrected momentum alone, a weighted mean of past gradients, so by at most the largest
logged gradient norm so far (:func:`radam_step_bound`). Other optimizers (centred RMSprop,
Lion, …) step by other rules: the check is skipped for them rather than judged by a bound that
does not hold. The RMS
movement per tensor over ``Σ lr`` is reported; for Adam, above 1.5 (faster than Adam moves in
practice) it is a warning.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from attest.verifier.checkpoint_state import verified_weights
from attest.verifier.context import VerifyContext
from attest.verifier.result import Basis, CheckResult, Status

if TYPE_CHECKING:
    import torch

__all__ = [
    "UPDATE_WARN",
    "adam_step_bound",
    "adamax_step_bound",
    "check_update_bound",
    "nadam_step_bound",
    "radam_step_bound",
    "rmsprop_step_bound",
]

_NAMES = {
    "adam": "Adam",
    "nadam": "NAdam",
    "adamax": "Adamax",
    "rmsprop": "RMSprop",
    "adagrad": "Adagrad",
    "radam": "RAdam",
}
UPDATE_WARN = 1.5  # RMS |Δθ| / Σ lr above which a tensor moved faster than Adam normally does
_ROUNDING = 1e-6  # float32 rounding allowance per unit of |θ| and step
_TITLE = "Updates between checkpoints within what the learning rates allow"


def _result(key: str, status: Status, why: str, basis: Basis, **evidence: Any) -> CheckResult:
    return CheckResult("scratch.update_bound", _TITLE, status, why, basis, evidence)


def adam_step_bound(t: int, beta1: float, beta2: float) -> float:
    """Largest ``|m̂_t / √v̂_t|`` any gradient sequence can give at Adam step ``t ≥ 1``."""
    gamma = beta1 * beta1 / beta2
    series = t if abs(1 - gamma) < 1e-12 else (1 - gamma**t) / (1 - gamma)
    return (
        (1 - beta1) / (1 - beta1**t) * math.sqrt((1 - beta2**t) / (1 - beta2)) * math.sqrt(series)
    )


def check_update_bound(ctx: VerifyContext, *, parameters: set[str] | None) -> CheckResult:
    """The ``scratch.update_bound`` result (``parameters``: trainable names, when known)."""
    from safetensors.torch import load_file

    from attest.statefiles import load_state

    key, basis = "update_bound", Basis.STATISTICAL
    marks = [(0, None)] + [(int(c["step"]), c) for c in ctx.checkpoints()]
    have = [(s, c) for s, c in marks if verified_weights(ctx, s)[0] is not None]
    if len(have) < 2:
        return _result(
            key,
            Status.SKIPPED,
            "could not check: fewer than two checkpoints with"
            " state files whose digests match the log",
            basis,
        )
    rows = {r.step: r for r in ctx.steps()}
    params = parameters
    intervals: list[dict[str, Any]] = []
    failures: list[str] = []
    warnings: list[str] = []
    for (a, _), (b, body_b) in itertools.pairwise(have):
        folder = ctx.state_folder(b)
        assert folder is not None
        groups = load_state(folder).optimizer["param_groups"] if body_b is not None else []
        wa = load_file(str(verified_weights(ctx, a)[0]))
        wb = load_file(str(verified_weights(ctx, b)[0]))
        lrs = [rows[t].lr for t in range(a, b) if t in rows]
        if len(lrs) != b - a or not groups:
            return _result(
                key,
                Status.SKIPPED,
                f"could not check: steps {a}–{b} lack logged learning rates or optimizer state",
                basis,
            )
        scale = max(float(g.get("lr", 0)) for g in groups) / max(
            float(groups[0].get("lr", 0)), 1e-300
        )
        scale = max(scale, 1.0)
        names = [
            k
            for k in wb
            if k in wa
            and (params is None or k in params)
            and wb[k].is_floating_point()
            and not _is_buffer(k)
        ]
        report: dict[str, Any] = {"from": a, "to": b, "sum_lr": sum(lrs)}
        kind = _kind(groups)
        peaks = _radam_gradient_peaks(rows, groups, a, b) if kind == "radam" else {}
        if peaks is None:
            return _result(
                key,
                Status.SKIPPED,
                "could not check: RAdam's first steps are bounded by the logged gradient norms,"
                f" and steps before {b} lack them",
                basis,
            )
        if kind in _NAMES:
            worst, rms = _per_coordinate_interval(
                kind, groups, lrs, a, scale, {k: (wa[k], wb[k]) for k in names}, peaks
            )
            report |= {
                "optimizer": kind,
                "worst_ratio": worst[1],
                "worst_tensor": worst[0],
                "max_rms_ratio": max(rms.values(), default=0.0),
            }
            if worst[1] > 1.0:
                failures.append(
                    f"steps {a}→{b}: {worst[0]} moved {worst[1]:.2f}× the most {_NAMES[kind]}"
                    " can move with the logged learning rates"
                )
            loud = [k for k, v in rms.items() if v > UPDATE_WARN]
            if loud and kind == "adam":  # the RMS rule of thumb is Adam's
                warnings.append(f"steps {a}→{b}: {loud[0]} moved {rms[loud[0]]:.2f}× Σlr (RMS)")
        elif kind == "sgd":
            norms = [rows[t].grad_norm for t in range(a, b)]
            if any(g is None for g in norms):
                return _result(
                    key,
                    Status.SKIPPED,
                    "could not check: SGD bound needs logged gradient norms",
                    basis,
                )
            ratio = _sgd_interval(
                groups,
                lrs,
                [float(g or 0) for g in norms],
                scale,
                {k: (wa[k], wb[k]) for k in names},
                rows,
                a,
            )
            report |= {"optimizer": "sgd", "ratio": ratio}
            if ratio > 1.0:
                failures.append(f"steps {a}→{b}: ‖Δθ‖ is {ratio:.2f}× what SGD can move")
        else:
            return _result(
                key,
                Status.SKIPPED,
                "could not check: no update bound for an"
                f" optimizer with parameters {sorted(groups[0])}",
                basis,
            )
        intervals.append(report)
    evidence = {"intervals": intervals, "constant_rms_warn": UPDATE_WARN}
    if failures:
        return _result(key, Status.FAIL, failures[0], basis, **evidence, failures=failures)
    if warnings:
        return _result(key, Status.WARN, warnings[0], basis, **evidence, warnings=warnings)
    return _result(
        key,
        Status.PASS,
        f"{len(intervals)} checkpoint interval(s) move within the logged learning rates",
        basis,
        **evidence,
    )


def _kind(groups: list[Mapping[str, Any]]) -> str | None:
    """Which bound applies, told apart by the hyperparameters each torch optimizer keeps in its
    parameter groups: ``"adam"`` (Adam, AdamW, amsgrad or not), ``"nadam"``, ``"adamax"``,
    ``"radam"``, ``"rmsprop"`` (not centred), ``"adagrad"``, ``"sgd"`` (with or without momentum
    and Nesterov), or ``None``. Optimizers that keep ``betas`` or ``momentum`` too but step by
    other rules (centred RMSprop, Lion, …) get no bound rather than a wrong one."""
    keys = set(groups[0])
    if {"betas", "amsgrad"} <= keys and not keys & {"momentum_decay", "alpha"}:
        return "adam"
    if {"betas", "momentum_decay"} <= keys:
        return "nadam"
    if {"betas", "decoupled_weight_decay"} <= keys and not keys & {"amsgrad", "alpha"}:
        return "radam"
    if {"betas", "eps", "capturable"} <= keys and not keys & {
        "amsgrad",
        "decoupled_weight_decay",
        "alpha",
    }:
        return "adamax"
    if {"alpha", "centered", "momentum"} <= keys and not any(g["centered"] for g in groups):
        return "rmsprop"
    if {"lr_decay", "initial_accumulator_value"} <= keys:
        return "adagrad"
    if {"momentum", "dampening", "nesterov"} <= keys and not keys & {"alpha", "betas"}:
        return "sgd"
    return None


def nadam_step_bound(
    t: int, beta1: float, beta2: float, momentum_decay: float, *, product: float | None = None
) -> float:
    """Largest per-coordinate step of NAdam at step ``t ≥ 1`` over ``lr`` (torch's update: a
    gradient term and a momentum term over ``√(v_t/(1−β₂ᵗ))``, with momentum coefficients
    ``μ_t = β₁(1 − 0.96^(tψ)/2)``). ``v_t ≥ (1−β₂)g_t²`` bounds the first term's ratio and
    Cauchy–Schwarz the second's, as for Adam. ``product`` is ``μ_1⋯μ_t`` when the caller keeps
    it (computed here otherwise)."""

    def mu(i: int) -> float:
        return beta1 * (1 - 0.5 * math.pow(0.96, i * momentum_decay))

    if product is None:
        product = math.prod(mu(i) for i in range(1, t + 1))
    gamma = beta1 * beta1 / beta2
    series = t if abs(1 - gamma) < 1e-12 else (1 - gamma**t) / (1 - gamma)
    unbias = math.sqrt((1 - beta2**t) / (1 - beta2))
    grad_term = (1 - mu(t)) / (1 - product) * unbias
    momentum_term = mu(t + 1) / (1 - product * mu(t + 1)) * unbias * (1 - beta1) * math.sqrt(series)
    return grad_term + momentum_term


class _NAdamBound:
    """:func:`nadam_step_bound` for steps asked in increasing order, keeping ``μ_1⋯μ_t``."""

    def __init__(self, beta1: float, beta2: float, momentum_decay: float) -> None:
        self.args = (beta1, beta2, momentum_decay)
        self.t, self.product = 0, 1.0

    def __call__(self, t: int) -> float:
        beta1, beta2, psi = self.args
        if t < self.t:
            self.t, self.product = 0, 1.0
        while self.t < t:
            self.t += 1
            self.product *= beta1 * (1 - 0.5 * math.pow(0.96, self.t * psi))
        return nadam_step_bound(t, beta1, beta2, psi, product=self.product)


def adamax_step_bound(t: int, beta1: float, beta2: float) -> float:
    """Largest per-coordinate step of Adamax at step ``t ≥ 1`` over ``lr``: its infinity norm
    ``u_t ≥ β₂^(t−k)|g_k|`` for every earlier ``k``, so ``|m_t|/u_t ≤ (1−β₁)Σ(β₁/β₂)^j``,
    divided by the bias correction ``1 − β₁ᵗ``."""
    ratio = beta1 / beta2
    series = t if abs(1 - ratio) < 1e-12 else (1 - ratio**t) / (1 - ratio)
    return (1 - beta1) / (1 - beta1**t) * series


def radam_step_bound(t: int, beta1: float, beta2: float, largest_grad: float) -> float:
    """Largest per-coordinate step of RAdam at step ``t ≥ 1`` over ``lr`` (torch's rule). While
    the variance's length ``ρ_t = ρ_∞ − 2tβ₂ᵗ/(1−β₂ᵗ)`` is at most 5 the step is the
    bias-corrected momentum, a weighted mean of the gradients so far: at most
    ``largest_grad``, the largest gradient norm up to ``t``. After that it is Adam's step times
    the rectification ``r_t = √((ρ_t−4)(ρ_t−2)ρ_∞ / ((ρ_∞−4)(ρ_∞−2)ρ_t)) ≤ 1``."""
    rho_inf, rho_t = _radam_rho(t, beta2)
    if rho_t <= 5:
        return largest_grad
    rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
    return rect * adam_step_bound(t, beta1, beta2)


def _radam_rho(t: int, beta2: float) -> tuple[float, float]:
    """RAdam's ``ρ_∞`` and ``ρ_t``: it rectifies step ``t`` only when ``ρ_t > 5``."""
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf, rho_inf - 2 * t * beta2**t / (1 - beta2**t)


def rmsprop_step_bound(t: int, alpha: float, momentum: float) -> float:
    """Largest per-coordinate step of (non-centred) RMSprop at step ``t ≥ 1`` over ``lr``:
    ``v_t ≥ (1−α)·g_t²`` bounds each normalised gradient by ``1/√(1−α)``, and the momentum
    buffer sums ``t`` of them with weights ``μ^k``."""
    terms = t if momentum == 0 else (1 - momentum**t) / (1 - momentum)
    return max(terms, 1.0) / math.sqrt(1 - alpha)


def _radam_gradient_peaks(
    rows: Mapping[int, Any], groups: list[dict[str, Any]], a: int, b: int
) -> dict[int, float] | None:
    """For each optimizer step ``t`` in ``(a, b]`` that some group of RAdam takes unrectified,
    the largest gradient norm logged up to ``t`` (logged step ``t − 1``); ``None`` when a norm
    it needs is missing. ``ρ_t`` grows with ``t``, so the unrectified steps are the first few."""
    beta2s = {float(g["betas"][1]) for g in groups}
    peaks: dict[int, float] = {}
    peak = 0.0
    for t in range(1, b + 1):
        if all(_radam_rho(t, beta2)[1] > 5 for beta2 in beta2s):
            break
        norm = rows[t - 1].grad_norm if t - 1 in rows else None
        if norm is None:
            return None
        peak = max(peak, float(norm))
        if t > a:
            peaks[t] = peak
    return peaks


def _step_bound(
    kind: str, groups: list[dict[str, Any]], peaks: Mapping[int, float]
) -> Callable[[int], float]:
    """``t ↦`` the largest ``|Δθᵢ| / lr_t`` at step ``t`` for a per-coordinate optimizer
    (worst case over the groups). Adagrad: ``Σg² ≥ g_t²`` bounds its normalised gradient by 1,
    and its decayed rate is at most the logged ``lr``. RAdam's unrectified steps take
    ``peaks[t]`` (:func:`_radam_gradient_peaks`, which holds every one of them)."""
    if kind == "adam":
        beta1 = max(float(g["betas"][0]) for g in groups)
        beta2 = min(float(g["betas"][1]) for g in groups)
        return lambda t: adam_step_bound(t, beta1, beta2)
    if kind in ("nadam", "adamax", "radam"):
        pairs = [(float(g["betas"][0]), float(g["betas"][1])) for g in groups]
        if kind == "radam":  # only rectified steps lack a peak, and they do not use it
            return lambda t: max(
                radam_step_bound(t, b1, b2, peaks.get(t, math.inf)) for b1, b2 in pairs
            )
        if kind == "adamax":
            return lambda t: max(adamax_step_bound(t, b1, b2) for b1, b2 in pairs)
        decays = [float(g["momentum_decay"]) for g in groups]
        bounds = [_NAdamBound(b1, b2, psi) for (b1, b2), psi in zip(pairs, decays, strict=True)]
        return lambda t: max(bound(t) for bound in bounds)
    if kind == "rmsprop":
        alpha = max(float(g["alpha"]) for g in groups)
        mu = max(float(g.get("momentum", 0.0)) for g in groups)
        return lambda t: rmsprop_step_bound(t, alpha, mu)
    return lambda t: 1.0


def _is_buffer(name: str) -> bool:
    return name.endswith(("running_mean", "running_var", "num_batches_tracked"))


def _per_coordinate_interval(
    kind: str,
    groups: list[dict[str, Any]],
    lrs: list[float],
    a: int,
    scale: float,
    pairs: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    peaks: Mapping[int, float],
) -> tuple[tuple[str, float], dict[str, float]]:
    bound = _step_bound(kind, groups, peaks)
    wd = max(float(g.get("weight_decay", 0.0)) for g in groups)
    # Coupled decay (Adam, RMSprop, Adagrad) goes through the gradient, which the step bound
    # already covers; decoupled decay (AdamW, or an Adam group that does not say) shrinks θ by
    # lr·wd·θ per step on top. RAdam's first steps take their bound from the logged gradient
    # norm, which does not hold coupled decay's wd·θ, so its decay is always counted.
    coupled = kind in ("rmsprop", "adagrad", "adamax") or (
        kind != "radam" and all(g.get("decoupled_weight_decay") is False for g in groups)
    )
    move = sum(lr * scale * bound(a + i + 1) for i, lr in enumerate(lrs))
    decay = 0.0 if coupled else sum(lrs) * scale * wd
    worst = ("", 0.0)
    rms: dict[str, float] = {}
    total_lr = sum(lrs) * scale
    for name, (ta, tb) in pairs.items():
        x, y = ta.double(), tb.double()
        delta = (y - x).abs()
        mag = x.abs() + move  # |θ_t| over the interval: decay only shrinks it
        allowed = move * (1 + 1e-5) + decay * mag + _ROUNDING * (len(lrs) + 1) * mag
        ratio = float((delta / allowed).max()) if delta.numel() else 0.0
        if ratio > worst[1]:
            worst = (name, ratio)
        if total_lr > 0 and delta.numel():
            rms[name] = float(delta.pow(2).mean().sqrt()) / total_lr
    return worst, rms


def _sgd_interval(
    groups: list[dict[str, Any]],
    lrs: list[float],
    norms: list[float],
    scale: float,
    pairs: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    rows: Mapping[int, Any],
    a: int,
) -> float:
    mu = max(float(g.get("momentum", 0.0)) for g in groups)
    damp = min(float(g.get("dampening", 0.0)) for g in groups)
    nesterov = any(g.get("nesterov") for g in groups)
    wd = max(float(g.get("weight_decay", 0.0)) for g in groups)
    na = math.sqrt(sum(float(p[0].double().pow(2).sum()) for p in pairs.values()))
    nb = math.sqrt(sum(float(p[1].double().pow(2).sum()) for p in pairs.values()))
    delta = math.sqrt(
        sum(float((p[1].double() - p[0].double()).pow(2).sum()) for p in pairs.values())
    )
    # Momentum carried into the interval is bounded by the logged norms since step 0.
    buf = 0.0
    for t in range(a):
        g = rows[t].grad_norm if t in rows else None
        buf = mu * buf + (1 - damp if t else 1.0) * (float(g) if g is not None else math.inf)
    theta = max(na, nb)
    total = 0.0
    for i, (lr, g) in enumerate(zip(lrs, norms, strict=True)):
        geff = g + wd * (theta + total)
        buf = mu * buf + (1 - damp if a + i else 1.0) * geff if mu else geff
        step = geff + mu * buf if nesterov else buf
        total += lr * scale * step
    allowed = total * (1 + _ROUNDING) + _ROUNDING * theta
    return delta / allowed if allowed > 0 else (math.inf if delta > 0 else 0.0)
