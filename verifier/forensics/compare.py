"""`attest compare A B`: was B derived from A? (DESIGN.md §6, Forensics).

The comparison runs four families of evidence and one decision rule:

1. **Per tensor** (same name and shape in both): cosine and Pearson side by side, each with its
   permutation-null mean and spread (:func:`stats.permutation_null`) and the shared z-score and
   one-sided p-value. Token- and position-indexed tensors keep their rows aligned (tokens matched
   by string) and only the residual axis is permuted by the null.
2. **Matched hidden units** per MLP layer, Fisher-combined (:func:`matching.hidden_unit_test`).
3. **Vocabulary-aligned matching**, robust to hidden-unit/head permutation
   (:func:`matching.residual_alignment_test`).
4. **Per module**: tensor p-values (Bonferroni within the module), the layer's matched-units p
   and the module's vocabulary-aligned p, combined by Bonferroni; modules are then adjusted
   together by Holm. A module is *derived* when its adjusted p < α.

Decision: the three global p-values (hidden units, vocabulary-aligned, best module) are combined
by Bonferroni into one p. ``derived`` when it is below α (naming the derived modules),
``inconclusive`` when no test had anything to compare, ``independent`` otherwise — which means
"no evidence of derivation at this α", not proof of independence. Tokenizer overlap and the
config diff are reported as context only: neither is evidence of copying.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from . import stats
from .config import ConfigDiff, config_diff
from .matching import (
    HiddenLayerMatch,
    ResidualMatch,
    hidden_unit_test,
    module_of,
    residual_alignment_test,
)
from .tensors import Model
from .tokenizer import VocabOverlap, shared_token_ids

__all__ = ["CompareResult", "ModuleResult", "TensorResult", "Verdict", "compare_models"]


@dataclass(frozen=True, slots=True)
class TensorResult:
    """Similarity of one tensor pair against its permutation null."""

    name: str
    module: str
    shape: tuple[int, ...]
    null: str
    cosine: float
    cosine_null_mean: float
    cosine_null_sd: float
    pearson: float
    pearson_null_mean: float
    pearson_null_sd: float
    z: float
    log_p: float
    zoo_pearson_mean: float | None = None
    zoo_pearson_sd: float | None = None


@dataclass(frozen=True, slots=True)
class ModuleResult:
    """All evidence about one submodule."""

    name: str
    tensors: int
    cosine: float
    pearson: float
    z: float
    log_p_tensors: float
    log_p_hidden: float | None
    log_p_aligned: float | None
    log_p: float
    log_p_adjusted: float
    derived: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision: ``independent``, ``derived`` (with modules) or ``inconclusive``."""

    label: str
    modules: tuple[str, ...]
    log_p: float
    alpha: float
    reason: str


@dataclass(frozen=True)
class CompareResult:
    """Everything `attest compare` found."""

    a: str
    b: str
    alpha: float
    tensors: tuple[TensorResult, ...]
    not_comparable: tuple[str, ...]
    modules: tuple[ModuleResult, ...]
    hidden: tuple[HiddenLayerMatch, ...]
    hidden_log_p: float | None
    aligned: ResidualMatch | None
    vocab: VocabOverlap | None
    embedding_rsa: float | None
    config: ConfigDiff
    verdict: Verdict
    zoo: tuple[str, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)


def _tensor_pair(
    a: Model, b: Model, name: str, a_ids: np.ndarray, b_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int | None, str] | None:
    ta, tb = a.tensors[name], b.tensors.get(name)
    if tb is None:
        return None
    if name in a.token_axis_names() and name in b.token_axis_names():
        if ta.shape[1] != tb.shape[1] or len(a_ids) < 2:
            return None
        return ta[a_ids], tb[b_ids], 0, "tokens aligned by string; residual axis permuted"
    if ta.shape != tb.shape:
        return None
    if name in a.position_axis_names():
        return ta, tb, 0, "positions aligned; residual axis permuted"
    if ta.ndim == 1 or min(ta.shape) == 1:
        return ta, tb, None, "entries permuted"
    return ta, tb, None, "rows and columns permuted"


def _tensor_result(
    name: str, xa: np.ndarray, xb: np.ndarray, fixed: int | None, null: str
) -> tuple[TensorResult, stats.NullMoments]:
    mom = stats.permutation_null(xa.astype(np.float64), xb.astype(np.float64), fixed_axis=fixed)
    cos, cos_mu, cos_sd = mom.cosine()
    r, r_mu, r_sd = mom.pearson()
    z = mom.z
    return (
        TensorResult(
            name=name,
            module=module_of(name),
            shape=tuple(int(s) for s in xa.shape),
            null=null,
            cosine=cos,
            cosine_null_mean=cos_mu,
            cosine_null_sd=cos_sd,
            pearson=r,
            pearson_null_mean=r_mu,
            pearson_null_sd=r_sd,
            z=z,
            log_p=stats.normal_log_sf(z),
        ),
        mom,
    )


def _embedding_rsa(a: Model, b: Model, a_ids: np.ndarray, b_ids: np.ndarray) -> float | None:
    """Correlation of token-token cosine similarities over shared tokens (basis-free)."""
    ea, eb = a.embedding_name, b.embedding_name
    if ea is None or eb is None or len(a_ids) < 8:
        return None
    n = min(512, len(a_ids))
    xa = a.tensors[ea][a_ids[:n]].astype(np.float64)
    xb = b.tensors[eb][b_ids[:n]].astype(np.float64)
    xa /= np.maximum(np.linalg.norm(xa, axis=1, keepdims=True), 1e-12)
    xb /= np.maximum(np.linalg.norm(xb, axis=1, keepdims=True), 1e-12)
    iu = np.triu_indices(n, 1)
    ga, gb = (xa @ xa.T)[iu], (xb @ xb.T)[iu]
    if ga.std() == 0 or gb.std() == 0:
        return None
    return float(np.corrcoef(ga, gb)[0, 1])


def compare_models(
    a: Model, b: Model, *, alpha: float = 0.01, zoo: list[Model] | None = None
) -> CompareResult:
    """Compare a reference model ``a`` with a suspect ``b`` (see module docstring)."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    rows_a = a.tensors[a.embedding_name].shape[0] if a.embedding_name else 0
    rows_b = b.tensors[b.embedding_name].shape[0] if b.embedding_name else 0
    a_ids, b_ids, overlap = shared_token_ids(a.vocab, b.vocab, rows_a, rows_b)
    vocab = overlap if (a.vocab or b.vocab or rows_a) else None

    tensors: list[TensorResult] = []
    moments: dict[str, stats.NullMoments] = {}
    missing: list[str] = []
    for name in sorted(a.tensors):
        pair = _tensor_pair(a, b, name, a_ids, b_ids)
        if pair is None:
            missing.append(name)
            continue
        res, mom = _tensor_result(name, *pair)
        if zoo:
            rs = []
            for z_model in zoo:
                zp = _tensor_pair(z_model, b, name, a_ids, b_ids)
                if zp is not None and zp[0].shape == zp[1].shape:
                    rs.append(
                        stats.permutation_null(
                            zp[0].astype(np.float64), zp[1].astype(np.float64)
                        ).pearson()[0]
                    )
            if len(rs) >= 2:
                res = _replace_zoo(res, float(np.mean(rs)), float(np.std(rs, ddof=1)))
        tensors.append(res)
        moments[name] = mom
    missing += [f"(only in B) {n}" for n in sorted(set(b.tensors) - set(a.tensors))]
    timings["tensors"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    hidden = hidden_unit_test(a, b)
    hidden_lp = stats.fisher_log_p([h.log_p for h in hidden]) if hidden else None
    timings["hidden_units"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    aligned = residual_alignment_test(a, b, a_ids, b_ids)
    timings["vocabulary_aligned"] = time.perf_counter() - t2

    modules = _modules(tensors, moments, hidden, aligned, alpha)
    verdict = _verdict(modules, hidden_lp, aligned, alpha, tensors)
    timings["total"] = time.perf_counter() - t0
    return CompareResult(
        a=a.name,
        b=b.name,
        alpha=alpha,
        tensors=tuple(tensors),
        not_comparable=tuple(missing),
        modules=tuple(modules),
        hidden=tuple(hidden),
        hidden_log_p=hidden_lp,
        aligned=aligned,
        vocab=vocab,
        embedding_rsa=_embedding_rsa(a, b, a_ids, b_ids),
        config=config_diff(a.config, b.config, a.tensors, b.tensors),
        verdict=verdict,
        zoo=tuple(m.name for m in zoo or []),
        seconds=timings,
    )


def _replace_zoo(res: TensorResult, mean: float, sd: float) -> TensorResult:
    from dataclasses import replace

    return replace(res, zoo_pearson_mean=mean, zoo_pearson_sd=sd)


def _modules(
    tensors: list[TensorResult],
    moments: dict[str, stats.NullMoments],
    hidden: list[HiddenLayerMatch],
    aligned: ResidualMatch | None,
    alpha: float,
) -> list[ModuleResult]:
    names = sorted(
        {t.module for t in tensors}
        | {h.module for h in hidden}
        | set(aligned.modules if aligned else ())
    )
    hidden_by = {h.module: h.log_p for h in hidden}
    raw: list[tuple[str, int, float, float, float, float, float | None, float | None, float]] = []
    for mod in names:
        ts = [t for t in tensors if t.module == mod]
        moms = [moments[t.name] for t in ts]
        dot = sum(m.dot for m in moms)
        na = math.sqrt(sum(m.norm_a**2 for m in moms))
        nb = math.sqrt(sum(m.norm_b**2 for m in moms))
        n = sum(m.n for m in moms)
        sa, sb = sum(m.sum_a for m in moms), sum(m.sum_b for m in moms)
        ca = math.sqrt(max(na**2 - sa * sa / n, 0.0)) if n else 0.0
        cb = math.sqrt(max(nb**2 - sb * sb / n, 0.0)) if n else 0.0
        cos = dot / (na * nb) if na * nb > 0 else math.nan
        r = (dot - sa * sb / n) / (ca * cb) if ca * cb > 0 else math.nan
        var = sum(m.null_var for m in moms)
        z = (dot - sum(m.null_mean for m in moms)) / math.sqrt(var) if var > 0 else math.nan
        lp_t = stats.bonferroni_log_p([t.log_p for t in ts]) if ts else 0.0
        lp_h = hidden_by.get(mod)
        lp_a = aligned.modules[mod][2] if aligned and mod in aligned.modules else None
        parts = [lp_t] + [p for p in (lp_h, lp_a) if p is not None]
        raw.append((mod, len(ts), cos, r, z, lp_t, lp_h, lp_a, stats.bonferroni_log_p(parts)))
    adjusted = stats.holm([row[-1] for row in raw])
    log_alpha = math.log(alpha)
    return [
        ModuleResult(
            name=row[0],
            tensors=row[1],
            cosine=row[2],
            pearson=row[3],
            z=row[4],
            log_p_tensors=row[5],
            log_p_hidden=row[6],
            log_p_aligned=row[7],
            log_p=row[8],
            log_p_adjusted=adj,
            derived=adj < log_alpha,
        )
        for row, adj in zip(raw, adjusted, strict=True)
    ]


def _verdict(
    modules: list[ModuleResult],
    hidden_lp: float | None,
    aligned: ResidualMatch | None,
    alpha: float,
    tensors: list[TensorResult],
) -> Verdict:
    families = {}
    if hidden_lp is not None:
        families["matched hidden units"] = hidden_lp
    if aligned is not None:
        families["vocabulary-aligned matching"] = aligned.log_p
    if modules and tensors:
        families["per-module similarity"] = min(m.log_p_adjusted for m in modules)
    if not families:
        return Verdict(
            "inconclusive",
            (),
            0.0,
            alpha,
            "no tensor, MLP layer or shared vocabulary could be compared",
        )
    log_p = stats.bonferroni_log_p(list(families.values()))
    best = min(families, key=lambda k: families[k])
    if log_p < math.log(alpha):
        derived = tuple(m.name for m in modules if m.derived)
        where = ", ".join(derived) if derived else "not localised to a module"
        return Verdict(
            "derived", derived, log_p, alpha, f"strongest evidence: {best}; modules: {where}"
        )
    return Verdict(
        "independent",
        (),
        log_p,
        alpha,
        f"no test rejects independence at α = {alpha:g} ({len(families)} tests, Bonferroni)",
    )
