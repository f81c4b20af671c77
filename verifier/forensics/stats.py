"""Null distributions and combination rules for model forensics (DESIGN.md §6, Forensics).

The null hypothesis throughout is *the two models were initialised and trained independently*.
Transformers have symmetries that make this null testable without a zoo of other models:
permuting the residual-stream coordinates, the hidden units of an MLP or the heads of an
attention layer (consistently across every tensor that touches them) leaves the function
unchanged, and an i.i.d. initialisation followed by a coordinate-wise optimiser (SGD, Adam)
gives a weight distribution that is invariant under those permutations. So, for independent
models, the way model B's units line up with model A's is a uniformly random permutation, and
every statistic below has a null distribution fixed by that permutation alone:

* :func:`permutation_null` — exact mean and variance of ``Σ a·b`` when B's rows and/or columns
  are permuted at random (Hoeffding's combinatorial CLT; a two-way ANOVA decomposition for a
  double permutation). Cosine and Pearson are both affine in ``Σ a·b`` for fixed marginals, so
  each gets its own null mean and spread, and the same z-score: a raw cosine of 0.97 between
  LayerNorm gains means nothing when the null expects 0.97 ± 0.01.
* :func:`fixed_points_log_sf` — the exact tail of the number of fixed points of a uniformly
  random permutation (rencontres numbers), for matchings tested against the identity.
* :func:`spearman_identity` — rank correlation of a matching against the identity.
* :func:`fisher_log_p`, :func:`holm`, :func:`bonferroni_log_p` — combination rules. Fisher needs
  independent p-values (used across layers: each layer's hidden units are a separate symmetry);
  Bonferroni/Holm hold under any dependence (used across tensors and modules).

p-values are carried as natural logarithms so that a fine-tuned copy (p ≈ 1e-300 and below)
does not underflow to zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import special, stats

__all__ = [
    "NullMoments",
    "bonferroni_log_p",
    "fisher_log_p",
    "fixed_points_log_sf",
    "holm",
    "log_p_to_float",
    "normal_log_sf",
    "permutation_null",
    "spearman_identity",
]

Array = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class NullMoments:
    """Observed ``Σ a·b`` and its permutation-null mean and variance, with the norms needed to
    turn them into cosine and Pearson values."""

    dot: float
    null_mean: float
    null_var: float
    n: int
    norm_a: float
    norm_b: float
    centred_norm_a: float
    centred_norm_b: float
    sum_a: float
    sum_b: float

    @property
    def z(self) -> float:
        """Standardised distance of the observation from the null (nan when degenerate)."""
        if self.null_var <= 0.0:
            return math.nan
        return (self.dot - self.null_mean) / math.sqrt(self.null_var)

    def cosine(self) -> tuple[float, float, float]:
        """(observed cosine, null mean, null standard deviation)."""
        scale = self.norm_a * self.norm_b
        if scale == 0.0:
            return math.nan, math.nan, math.nan
        return self.dot / scale, self.null_mean / scale, math.sqrt(max(self.null_var, 0)) / scale

    def pearson(self) -> tuple[float, float, float]:
        """(observed Pearson r, null mean, null standard deviation)."""
        scale = self.centred_norm_a * self.centred_norm_b
        if scale == 0.0:
            return math.nan, math.nan, math.nan
        shift = self.sum_a * self.sum_b / self.n
        return (
            (self.dot - shift) / scale,
            (self.null_mean - shift) / scale,
            math.sqrt(max(self.null_var, 0)) / scale,
        )


def _ss(x: Array) -> float:
    return float(np.dot(x.ravel(), x.ravel()))


def permutation_null(a: Array, b: Array, *, fixed_axis: int | None = None) -> NullMoments:
    """Moments of ``Σ a·b`` under random re-alignment of ``b``'s units.

    1-D tensors: ``b``'s entries are permuted. 2-D tensors: rows and columns are permuted
    independently (both axes are unit axes), unless ``fixed_axis`` names an axis whose index has
    a meaning shared by both models (token ids, positions): then only the other axis is
    permuted. Tensors of higher rank are flattened to 2-D (first axis, rest).
    """
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim > 2:
        a = a.reshape(a.shape[0], -1)
        b = b.reshape(b.shape[0], -1)
    n = a.size
    dot = float(np.dot(a.ravel(), b.ravel()))
    sa, sb = float(a.sum()), float(b.sum())
    ca, cb = a - sa / n, b - sb / n

    def moments(null_mean: float, null_var: float) -> NullMoments:
        return NullMoments(
            dot=dot,
            null_mean=null_mean,
            null_var=null_var,
            n=n,
            norm_a=math.sqrt(_ss(a)),
            norm_b=math.sqrt(_ss(b)),
            centred_norm_a=math.sqrt(_ss(ca)),
            centred_norm_b=math.sqrt(_ss(cb)),
            sum_a=sa,
            sum_b=sb,
        )

    if a.ndim == 1 or min(a.shape) == 1:
        var = _ss(ca) * _ss(cb) / (n - 1) if n > 1 else 0.0
        return moments(sa * sb / n, var)
    if fixed_axis is not None:
        # Only the other axis is permuted: T = Σ_j f(j, σ(j)), f = Aᵀ B over the fixed axis.
        if fixed_axis == 1:
            a, b = a.T, b.T
        f = a.T @ b
        k = f.shape[0]
        mean = float(f.sum()) / k
        d = f - f.mean(axis=0, keepdims=True) - f.mean(axis=1, keepdims=True) + f.mean()
        return moments(mean, _ss(d) / (k - 1))
    m, k = a.shape
    ga, gb = sa / n, sb / n
    ra, rb = a.mean(axis=1) - ga, b.mean(axis=1) - gb
    cola, colb = a.mean(axis=0) - ga, b.mean(axis=0) - gb
    ea = a - ra[:, None] - cola[None, :] - ga
    eb = b - rb[:, None] - colb[None, :] - gb
    var = (
        k * k * _ss(ra) * _ss(rb) / (m - 1)
        + m * m * _ss(cola) * _ss(colb) / (k - 1)
        + _ss(ea) * _ss(eb) / ((m - 1) * (k - 1))
    )
    return moments(n * ga * gb, var)


def normal_log_sf(z: float) -> float:
    """log P(Z ≥ z) for a standard normal (0 for nan: no evidence)."""
    if math.isnan(z):
        return 0.0
    return float(stats.norm.logsf(z))


def _log_rencontres_pmf(n: int) -> Array:
    """log P(K = k), k = 0..n, K the number of fixed points of a uniform permutation of n."""
    # P(K = k) = (1/k!) Σ_{i=0}^{n-k} (-1)^i / i!  (exact; the sum is ≥ 0, 0 only for n-k = 1).
    inv_fact = np.array([math.exp(-math.lgamma(i + 1)) for i in range(n + 1)])
    partial = np.cumsum(inv_fact * np.where(np.arange(n + 1) % 2 == 0, 1.0, -1.0))
    out = np.full(n + 1, -np.inf)
    for k in range(n + 1):
        s = partial[n - k]
        if s > 1e-300:
            out[k] = math.log(s) - math.lgamma(k + 1)
    return out


def fixed_points_log_sf(k: int, n: int) -> float:
    """Exact log P(K ≥ k) for the fixed points K of a uniform random permutation of n items."""
    if k <= 0:
        return 0.0
    if k > n:
        return -math.inf
    pmf = _log_rencontres_pmf(n)
    return float(min(0.0, special.logsumexp(pmf[k:])))


def spearman_identity(matching: NDArray[np.int64]) -> tuple[float, float]:
    """Spearman correlation of a matching ``i -> matching[i]`` against the identity, and the
    log one-sided p-value of its exact permutation null (normal tail, variance 1/(n-1))."""
    n = len(matching)
    if n < 3:
        return math.nan, 0.0
    rho = float(stats.spearmanr(np.arange(n), matching).statistic)
    return rho, normal_log_sf(rho * math.sqrt(n - 1))


def fisher_log_p(log_ps: list[float]) -> float:
    """Fisher's method for independent p-values: -2 Σ ln p ~ χ²(2k)."""
    if not log_ps:
        return 0.0
    half = -float(np.sum(log_ps))  # the χ² statistic over 2
    if math.isinf(half):
        return -math.inf
    # χ²(2k) survival function in closed form: e^{-x/2} Σ_{i<k} (x/2)^i / i!, in log space.
    i = np.arange(len(log_ps))
    terms = (
        i * math.log(half) - special.gammaln(i + 1) if half > 0 else np.where(i == 0, 0.0, -np.inf)
    )
    return float(min(0.0, -half + special.logsumexp(terms)))


def bonferroni_log_p(log_ps: list[float]) -> float:
    """min p × count, valid under any dependence between the p-values."""
    if not log_ps:
        return 0.0
    return min(0.0, min(log_ps) + math.log(len(log_ps)))


def holm(log_ps: list[float]) -> list[float]:
    """Holm step-down adjusted log p-values (family-wise error control, any dependence)."""
    order = sorted(range(len(log_ps)), key=lambda i: log_ps[i])
    adjusted = [0.0] * len(log_ps)
    running = -math.inf
    m = len(log_ps)
    for rank, i in enumerate(order):
        running = max(running, min(0.0, log_ps[i] + math.log(m - rank)))
        adjusted[i] = running
    return adjusted


def log_p_to_float(log_p: float) -> float:
    """A p-value as a float (0.0 only when it is below the smallest double)."""
    return 0.0 if log_p == -math.inf else math.exp(log_p)
