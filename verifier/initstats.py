"""Statistics that tell a fresh random init from trained weights (docs/verifying.md, check 3).

Pure functions over numpy arrays; no torch, no I/O. :func:`assess_init` runs three kinds of test
on every tensor of a claimed init and combines them into one decision:

**Exact values.** A tensor whose entries are all equal (LayerNorm weights, most biases) is
checked for exactness: against the same tensor of a *reference* init (the model rebuilt with
another seed) when there is one, otherwise it must be all zeros or all ones. A trained LayerNorm
weight is never constant, so this cannot be fooled by matching statistics.

**Distribution.** A random tensor is compared with the declared init distribution by a
Kolmogorov–Smirnov test. With a reference init the test is two-sample against the reference
tensor: the declared distribution is whatever the constructor draws, scale included, so
trained weights whose spread has grown fail even when their shape still looks normal. Without a
reference the family is the zero-centred truncated normal ``TN(0, s², ±b)`` with ``b`` the
largest magnitude and ``s`` matched to the second moment — a family that contains the normal
(``b → ∞``) and the uniform (``s → ∞``) inits frameworks use; fitting ``s`` and ``b`` from the
data makes the p-value conservative (Lilliefors), never anti-conservative. Per-tensor p-values
are combined with both Holm's step-down rule and Fisher's method, each at ``α/4`` (a Bonferroni
split: ``α/2`` for the distribution tests, ``α/2`` reserved for the spectral rule, so the whole
check's false-failure rate is at most ``α``; the spectral rule's own is far below its share). Fisher is the
powerful one when every tensor is a little off (a whole trained model), Holm when one tensor is
badly off. Tensors that alias each other (tied weights) are tested once.

**Spectrum.** For a 2-D weight ``W`` (``n × m``, ``n ≤ m`` after transposing; higher-rank
tensors are flattened to ``shape[0] × rest``) with i.i.d. zero-mean entries of variance
``σ²``, the eigenvalues of ``W Wᵀ / m`` fill the Marchenko–Pastur law whose upper edge is
``λ+ = σ²(1 + √(n/m))²``; the largest one fluctuates around the finite-size centring
``μ = σ²(√(m−1) + √n)² / m`` on the Tracy–Widom scale
``s = σ²(√(m−1) + √n)(1/√(m−1) + 1/√n)^{1/3} / m`` (Johnstone 2001), i.e. a relative width of
order ``n^{-2/3}``. ``σ²`` is the tensor's own mean square (uncentred, so a shifted mean shows
up as an outlier too). An eigenvalue above ``μ + k·s`` (``k`` = :data:`TW_MARGIN`, calibrated so
honest inits almost never cross it) is an *outlier*: the low-rank structure training writes
into weights, which survives any reshuffling of values that keeps positions' ranks. Any outlier
fails the check. The tail index of the top of the spectrum (Hill estimator) is reported beside
it: around 2–4 for trained layers, above 10 for a fresh init.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MIN_SPECTRAL_DIM",
    "TW_MARGIN",
    "Combination",
    "InitAssessment",
    "SpectralResult",
    "TensorTest",
    "assess_init",
    "combine_pvalues",
    "ks_family",
    "ks_reference",
    "marchenko_pastur",
    "tail_index",
]

TW_MARGIN = 6.0
"""Tracy–Widom scales past the finite-size centring before an eigenvalue counts as an outlier.
P(TW₁ > 6) is below 10⁻⁶; the margin also absorbs the error of estimating σ² from the tensor
and the slow convergence of small matrices (measured by bench/init_false_failures.py)."""

MIN_SPECTRAL_DIM = 8
"""Matrices with a smaller side are too small for the spectral test (the edge is not sharp)."""

MAX_SPECTRAL_ROWS = 2048
"""Larger matrices are tested on a seeded sample of this many rows (still i.i.d. under H0)."""

MIN_KS_SIZE = 8
_P_FLOOR = 1e-300

Array = NDArray[Any]


# --- per-tensor tests ----------------------------------------------------------------------


def _tn_variance_ratio(beta: float) -> float:
    """Var of TN(0, 1, ±β) divided by β²: decreasing from 1/3 (β→0) to 0 (β→∞)."""
    from scipy.stats import norm

    if beta < 1e-4:
        return 1.0 / 3.0
    mass = 2.0 * norm.cdf(beta) - 1.0
    var = 1.0 - 2.0 * beta * norm.pdf(beta) / mass
    return float(var / beta**2)


def ks_family(values: Array) -> tuple[float, float, str]:
    """KS test of ``values`` against the zero-centred truncated normal fitted to them.

    Returns ``(statistic, p_value, family)`` where ``family`` describes the fitted law.
    """
    from scipy.optimize import brentq
    from scipy.stats import kstest, truncnorm, uniform

    x = np.asarray(values, dtype=np.float64).ravel()
    n = x.size
    bound = float(np.max(np.abs(x))) * (1.0 + 1.0 / n)
    rms = float(np.sqrt(np.mean(x * x)))
    target = (rms / bound) ** 2
    if target >= 1.0 / 3.0 - 1e-9:
        res = kstest(x, uniform(loc=-bound, scale=2 * bound).cdf)
        return float(res.statistic), float(res.pvalue), f"uniform(±{bound:.4g})"
    beta = float(brentq(lambda b: _tn_variance_ratio(b) - target, 1e-4, 1e3))
    scale = bound / beta
    res = kstest(x, truncnorm(-beta, beta, loc=0.0, scale=scale).cdf)
    return (
        float(res.statistic),
        float(res.pvalue),
        f"normal(0, {scale:.4g}) truncated at ±{bound:.4g}",
    )


def ks_reference(values: Array, reference: Array) -> tuple[float, float]:
    """Two-sample KS test of ``values`` against a reference draw of the declared init."""
    from scipy.stats import ks_2samp

    res = ks_2samp(np.asarray(values).ravel(), np.asarray(reference).ravel())
    return float(res.statistic), float(res.pvalue)


@dataclass(frozen=True)
class SpectralResult:
    """Marchenko–Pastur test of one matrix (see the module docstring for the formulas)."""

    n: int
    m: int
    sigma2: float
    edge: float  # asymptotic MP edge σ²(1+√(n/m))²
    threshold: float  # finite-size centring + TW_MARGIN Tracy–Widom scales
    lambda_max: float
    outliers: int
    tail_alpha: float | None

    @property
    def ratio(self) -> float:
        """λmax / edge: about 1 for a fresh init, well above for trained weights."""
        return self.lambda_max / self.edge if self.edge > 0 else math.inf

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": [self.n, self.m],
            "lambda_max_over_edge": round(self.ratio, 4),
            "threshold_over_edge": round(self.threshold / self.edge, 4) if self.edge else None,
            "outliers": self.outliers,
            "tail_alpha": None if self.tail_alpha is None else round(self.tail_alpha, 2),
        }


def tail_index(eigenvalues: Array, *, k: int | None = None) -> float | None:
    """Hill estimate of the power-law exponent of the density of the top eigenvalues.

    ``α = 1 + k / Σ_{i<k} ln(λ_i / λ_k)`` over the ``k`` largest (default: a tenth, at least 5).
    ``None`` when there are too few positive eigenvalues.
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    lam = lam[lam > 0]
    if k is None:
        k = max(5, lam.size // 10)
    if lam.size <= k:
        return None
    logs = np.log(lam[:k] / lam[k])
    total = float(np.sum(logs))
    return math.inf if total <= 0 else 1.0 + k / total


def marchenko_pastur(
    matrix: Array, *, margin: float = TW_MARGIN, seed: int = 0
) -> SpectralResult | None:
    """Count eigenvalues of ``W Wᵀ/m`` past the Marchenko–Pastur edge plus a TW margin.

    ``None`` when the matrix is too small or constant. Higher-rank tensors are flattened to
    ``shape[0] × rest``.
    """
    w = np.asarray(matrix, dtype=np.float64)
    w = w.reshape(w.shape[0], -1)
    if w.shape[0] > w.shape[1]:
        w = w.T
    if w.shape[0] > MAX_SPECTRAL_ROWS:
        rows = np.random.default_rng(seed).choice(w.shape[0], MAX_SPECTRAL_ROWS, replace=False)
        w = w[np.sort(rows)]
    n, m = w.shape
    if n < MIN_SPECTRAL_DIM:
        return None
    sigma2 = float(np.mean(w * w))
    if sigma2 == 0.0 or not math.isfinite(sigma2):
        return None
    eig = np.linalg.eigvalsh(w @ w.T / m)
    edge = sigma2 * (1.0 + math.sqrt(n / m)) ** 2
    root = math.sqrt(m - 1) + math.sqrt(n)
    centre = sigma2 * root**2 / m
    scale = sigma2 * root * (1.0 / math.sqrt(m - 1) + 1.0 / math.sqrt(n)) ** (1.0 / 3.0) / m
    threshold = centre + margin * scale
    return SpectralResult(
        n=n,
        m=m,
        sigma2=sigma2,
        edge=edge,
        threshold=threshold,
        lambda_max=float(eig[-1]),
        outliers=int(np.sum(eig > threshold)),
        tail_alpha=tail_index(eig),
    )


# --- combination ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Combination:
    """Holm and Fisher over per-tensor p-values, each at ``α/4`` (see the module docstring)."""

    alpha: float
    count: int
    min_p: float
    holm_rejected: tuple[str, ...]  # tensors Holm's step-down rejects at α/4
    fisher_statistic: float
    fisher_p: float

    @property
    def reject(self) -> bool:
        return bool(self.holm_rejected) or self.fisher_p <= self.alpha / 4

    def to_json(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "tests": self.count,
            "min_p": self.min_p,
            "holm_rejected": list(self.holm_rejected),
            "fisher_statistic": round(self.fisher_statistic, 3),
            "fisher_p": self.fisher_p,
            "reject": self.reject,
        }


def combine_pvalues(p_values: Mapping[str, float], *, alpha: float = 0.01) -> Combination:
    """Holm step-down at ``α/4`` and Fisher's ``−2 Σ ln p ~ χ²(2k)`` at ``α/4``.

    Under the null every p-value is uniform or conservative and the tensors are independent
    draws, so the probability that either rule rejects is at most ``α/2``.
    """
    from scipy.stats import chi2

    k = len(p_values)
    if k == 0:
        return Combination(alpha, 0, 1.0, (), 0.0, 1.0)
    ordered = sorted(p_values.items(), key=lambda kv: kv[1])
    rejected: list[str] = []
    for i, (name, p) in enumerate(ordered):
        if p <= (alpha / 4) / (k - i):
            rejected.append(name)
        else:
            break
    stat = float(-2.0 * sum(math.log(max(p, _P_FLOOR)) for p in p_values.values()))
    fisher_p = float(chi2.sf(stat, 2 * k))
    return Combination(alpha, k, ordered[0][1], tuple(rejected), stat, fisher_p)


# --- the whole init ------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorTest:
    """What was tested on one tensor, and how it came out."""

    name: str
    kind: str  # "random" | "constant" | "deterministic" | "alias" | "skipped"
    test: str
    p_value: float | None = None
    statistic: float | None = None
    ok: bool = True
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "test": self.test}
        if self.p_value is not None:
            out["p"] = self.p_value
        if self.statistic is not None:
            out["statistic"] = round(self.statistic, 5)
        if not self.ok:
            out["ok"] = False
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass(frozen=True)
class InitAssessment:
    """Every per-tensor result, the spectra and the combined decision."""

    tests: tuple[TensorTest, ...]
    spectra: Mapping[str, SpectralResult]
    combination: Combination
    reasons: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return not self.reasons

    def to_json(self, *, limit: int = 12) -> dict[str, Any]:
        worst = sorted(
            (t for t in self.tests if t.p_value is not None), key=lambda t: t.p_value or 0.0
        )
        flagged = [t for t in self.tests if not t.ok]
        top = sorted(self.spectra.items(), key=lambda kv: -kv[1].ratio)
        return {
            "tensors": len(self.tests),
            "kinds": _count(t.kind for t in self.tests),
            "combination": self.combination.to_json(),
            "lowest_p": [t.to_json() for t in worst[:limit]],
            "flagged": [t.to_json() for t in flagged[:limit]],
            "spectra_tested": len(self.spectra),
            "spectral_outliers": {k: v.outliers for k, v in top if v.outliers} or {},
            "largest_lambda_ratio": {k: v.to_json() for k, v in top[:limit]},
            "reasons": list(self.reasons),
        }


def _count(kinds: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in kinds:
        out[k] = out.get(k, 0) + 1
    return out


def _is_float(a: Array) -> bool:
    return bool(np.issubdtype(a.dtype, np.floating))


def assess_init(
    tensors: Mapping[str, Array],
    *,
    reference: Mapping[str, Array] | None = None,
    parameters: Collection[str] | None = None,
    alpha: float = 0.01,
    margin: float = TW_MARGIN,
) -> InitAssessment:
    """Decide whether ``tensors`` look like a fresh random init.

    ``reference``: the same model rebuilt with another seed (the declared init distribution);
    ``parameters``: the names that are trainable parameters (the rest are buffers). Fails when
    an exact-value check fails, a parameter does not depend on the seed, the combined
    distribution tests reject at ``alpha`` or any matrix has a spectral outlier.
    """
    tests: list[TensorTest] = []
    spectra: dict[str, SpectralResult] = {}
    pvals: dict[str, float] = {}
    seen: dict[str, str] = {}
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        key = hashlib.sha256(
            a.dtype.str.encode() + str(a.shape).encode() + np.ascontiguousarray(a).tobytes()
        ).hexdigest()
        ref = None if reference is None else reference.get(name)
        ref = None if ref is None or np.shape(ref) != a.shape else np.asarray(ref)
        is_param = parameters is None or name in parameters
        if a.size == 0 or not _is_float(a):
            tests.append(_exact(name, a, ref, kind="skipped" if ref is None else "deterministic"))
            continue
        if key in seen and a.size > 1 and np.ptp(a) > 0:
            tests.append(TensorTest(name, "alias", "same values as " + seen[key]))
            continue
        seen.setdefault(key, name)
        flat = a.astype(np.float64).ravel()
        if np.ptp(flat) == 0:
            tests.append(_constant(name, flat, ref))
            continue
        if ref is not None and np.array_equal(a, ref):
            # Identical under another seed: not random. Fine for a buffer (a fixed table),
            # never for a trainable parameter.
            tests.append(
                TensorTest(
                    name,
                    "deterministic",
                    "equal to the rebuild with another seed",
                    ok=not is_param,
                    detail="" if not is_param else "a parameter that does not depend on the seed",
                )
            )
        elif flat.size >= MIN_KS_SIZE:
            if ref is not None and _is_float(ref) and np.ptp(ref) > 0:
                stat, p = ks_reference(flat, ref.astype(np.float64))
                tests.append(TensorTest(name, "random", "ks-2sample-vs-reference", p, stat))
            else:
                stat, p, family = ks_family(flat)
                tests.append(TensorTest(name, "random", "ks-vs-" + family, p, stat))
            pvals[name] = p
        else:
            tests.append(TensorTest(name, "random", "too small to test"))
        if a.ndim >= 2 and is_param:
            spec = marchenko_pastur(a, margin=margin)
            if spec is not None:
                spectra[name] = spec
    combination = combine_pvalues(pvals, alpha=alpha)
    reasons: list[str] = []
    bad = [t.name for t in tests if not t.ok]
    if bad:
        reasons.append(
            f"{len(bad)} tensor(s) fail exact-value or seed-dependence checks: "
            + ", ".join(bad[:5])
        )
    if combination.reject:
        names = ", ".join(combination.holm_rejected[:5]) or "many tensors slightly"
        reasons.append(
            f"distribution tests reject a random init (Holm {len(combination.holm_rejected)}"
            f" tensor(s), Fisher p={combination.fisher_p:.2g}, α={alpha}): {names}"
        )
    outl = {k: v for k, v in spectra.items() if v.outliers}
    if outl:
        worst = max(outl.items(), key=lambda kv: kv[1].ratio)
        reasons.append(
            f"{len(outl)} matri{'x has' if len(outl) == 1 else 'ces have'} eigenvalues past the"
            f" Marchenko–Pastur edge (worst {worst[0]}: λmax/edge={worst[1].ratio:.2f},"
            f" {worst[1].outliers} outlier(s))"
        )
    return InitAssessment(tuple(tests), spectra, combination, tuple(reasons))


def _constant(name: str, flat: Array, ref: Array | None) -> TensorTest:
    value = float(flat[0])
    if ref is not None:
        ok = bool(np.array_equal(flat, np.asarray(ref, dtype=np.float64).ravel()))
        return TensorTest(
            name,
            "constant",
            "equal to the declared init",
            ok=ok,
            detail=f"all {value:g}" + ("" if ok else "; the declared init differs"),
        )
    # Without a reference a constant other than 0 or 1 (a layer-scale init, say) is reported,
    # not failed: it may be what the constructor declares.
    usual = value in (0.0, 1.0)
    return TensorTest(
        name,
        "constant",
        "zeros or ones",
        detail=f"all {value:g}" + ("" if usual else " (not a standard constant init)"),
    )


def _exact(name: str, a: Array, ref: Array | None, *, kind: str) -> TensorTest:
    if ref is None:
        return TensorTest(name, kind, "not a float tensor; not tested")
    ok = bool(np.array_equal(a, ref))
    return TensorTest(name, kind, "equal to the declared init", ok=ok)
