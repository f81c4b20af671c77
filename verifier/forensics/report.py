"""Reports for `attest compare`: terminal text, JSON (stable keys) and a standalone HTML page.

Every figure comes with one line saying what it means, for readers who are not statisticians.
p-values are printed from their logarithm (a copied model's p is far below 1e-300).

JSON layout (``"schema": "attest-compare/v1"``; keys are only ever added)::

    schema, a, b, alpha,
    verdict:   {label, modules[], p, log10_p, reason}
    tests:     {hidden_units: {p, log10_p, layers[{layer, module, units, fixed_points,
                               spearman, p, log10_p, spearman_log10_p}]} | null,
                vocabulary_aligned: {dims, fixed_points, spearman, p, log10_p, blocks,
                                     probe_tokens, modules{name: {fixed_points, blocks, log10_p}}}
                                    | null}
    modules[]: {name, tensors, cosine, pearson, z, log10_p_tensors, log10_p_hidden,
                log10_p_aligned, log10_p, log10_p_adjusted, derived}
    tensors[]: {name, module, shape, null, cosine{value, null_mean, null_sd},
                pearson{value, null_mean, null_sd}, z, p, log10_p, zoo_pearson{mean, sd} | null}
    not_comparable[], vocabulary: {size_a, size_b, shared, jaccard, same_id, source,
                                   embedding_rsa} | null,
    config: {same{}, different{key: [a, b]}, only_a{}, only_b{}, tensors_a, tensors_b,
             tensors_same_shape, params_a, params_b, note},
    zoo[], seconds{}
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

from .compare import CompareResult
from .config import ARCHITECTURE_NOTE

__all__ = ["format_p", "to_html", "to_json", "to_jsonable", "to_text"]

_LN10 = math.log(10.0)

EXPLAIN = {
    "verdict": "derived = the models share trained weights beyond chance at level α; "
    "independent = no test found such evidence; inconclusive = nothing could be compared.",
    "hidden": "Each MLP's hidden units are matched across models; unrelated models match at "
    "random (≈1 unit in place), a copy keeps its units in place. Exact p, layers combined by Fisher.",
    "aligned": "Units are aligned through shared tokens first, so reordering hidden units or "
    "heads cannot hide a copy; then residual coordinates are matched. Exact p.",
    "tensor": "Cosine and Pearson each next to what unrelated models would give (null mean ± sd); "
    "z = how many sd above chance. A high raw cosine alone means nothing.",
    "module": "Per submodule, all its evidence combined; 'derived' after correcting for the "
    "number of modules tested (Holm).",
    "vocab": "Shared tokens are common between unrelated models; this only enables the "
    "token-aligned tests.",
    "rsa": "Similar token geometry is expected from similar training data; not lineage evidence.",
}


def _log10(log_p: float | None) -> float | None:
    return None if log_p is None else (log_p / _LN10 if math.isfinite(log_p) else -math.inf)


def format_p(log_p: float | None) -> str:
    """A p-value for people: 0.0312, 3.1e-09, 10^-2326.8."""
    if log_p is None:
        return "n/a"
    if log_p == -math.inf:
        return "0 (below any float)"
    if log_p > math.log(1e-4):
        return f"{math.exp(log_p):.4f}"
    l10 = log_p / _LN10
    if l10 > -300:
        return f"{math.exp(log_p):.1e}"
    return f"10^{l10:.1f}"


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def _p(log_p: float | None) -> dict[str, float | None]:
    if log_p is None:
        return {"p": None, "log10_p": None}
    l10 = _log10(log_p)
    return {
        "p": math.exp(log_p),
        "log10_p": None if l10 is None or not math.isfinite(l10) else round(l10, 4),
    }


def to_jsonable(r: CompareResult) -> dict[str, Any]:
    """The documented JSON object (see module docstring)."""
    v = r.verdict
    hidden = None
    if r.hidden_log_p is not None:
        hidden = {
            **_p(r.hidden_log_p),
            "layers": [
                {
                    "layer": h.layer,
                    "module": h.module,
                    "units": h.units,
                    "fixed_points": h.fixed_points,
                    "spearman": _num(h.spearman),
                    **_p(h.log_p),
                    "spearman_log10_p": _num(_log10(h.spearman_log_p)),
                }
                for h in r.hidden
            ],
        }
    aligned = None
    if r.aligned is not None:
        al = r.aligned
        aligned = {
            "dims": al.dims,
            "fixed_points": al.fixed_points,
            "spearman": _num(al.spearman),
            **_p(al.log_p),
            "blocks": al.blocks,
            "probe_tokens": al.probe_tokens,
            "modules": {
                name: {"fixed_points": k, "blocks": n, "log10_p": _num(_log10(lp))}
                for name, (k, n, lp) in al.modules.items()
            },
        }
    c = r.config
    return {
        "schema": "attest-compare/v1",
        "a": r.a,
        "b": r.b,
        "alpha": r.alpha,
        "verdict": {
            "label": v.label,
            "modules": list(v.modules),
            **_p(v.log_p),
            "reason": v.reason,
        },
        "tests": {"hidden_units": hidden, "vocabulary_aligned": aligned},
        "modules": [
            {
                "name": m.name,
                "tensors": m.tensors,
                "cosine": _num(m.cosine),
                "pearson": _num(m.pearson),
                "z": _num(m.z),
                "log10_p_tensors": _num(_log10(m.log_p_tensors)),
                "log10_p_hidden": _num(_log10(m.log_p_hidden)),
                "log10_p_aligned": _num(_log10(m.log_p_aligned)),
                "log10_p": _num(_log10(m.log_p)),
                "log10_p_adjusted": _num(_log10(m.log_p_adjusted)),
                "derived": m.derived,
            }
            for m in r.modules
        ],
        "tensors": [
            {
                "name": t.name,
                "module": t.module,
                "shape": list(t.shape),
                "null": t.null,
                "cosine": {
                    "value": _num(t.cosine),
                    "null_mean": _num(t.cosine_null_mean),
                    "null_sd": _num(t.cosine_null_sd),
                },
                "pearson": {
                    "value": _num(t.pearson),
                    "null_mean": _num(t.pearson_null_mean),
                    "null_sd": _num(t.pearson_null_sd),
                },
                "z": _num(t.z),
                **_p(t.log_p),
                "zoo_pearson": None
                if t.zoo_pearson_mean is None
                else {"mean": _num(t.zoo_pearson_mean), "sd": _num(t.zoo_pearson_sd)},
            }
            for t in r.tensors
        ],
        "not_comparable": list(r.not_comparable),
        "vocabulary": None
        if r.vocab is None
        else {
            "size_a": r.vocab.size_a,
            "size_b": r.vocab.size_b,
            "shared": r.vocab.shared,
            "jaccard": _num(r.vocab.jaccard),
            "same_id": r.vocab.same_id,
            "source": r.vocab.source,
            "embedding_rsa": _num(r.embedding_rsa),
        },
        "config": {
            "same": c.same,
            "different": {k: list(v) for k, v in c.different.items()},
            "only_a": c.only_a,
            "only_b": c.only_b,
            "tensors_a": c.tensors_a,
            "tensors_b": c.tensors_b,
            "tensors_same_shape": c.tensors_same_shape,
            "params_a": c.params_a,
            "params_b": c.params_b,
            "note": ARCHITECTURE_NOTE,
        },
        "zoo": list(r.zoo),
        "seconds": {k: round(v, 4) for k, v in r.seconds.items()},
    }


def to_json(r: CompareResult) -> str:
    """JSON text with sorted keys."""
    return json.dumps(to_jsonable(r), indent=2, sort_keys=True, default=str)


def _verdict_line(r: CompareResult) -> str:
    v = r.verdict
    label = v.label
    if label == "derived":
        label += f" ({', '.join(v.modules) if v.modules else 'not localised'})"
    return f"VERDICT: {label} — p = {format_p(v.log_p)} at α = {v.alpha:g}"


def _f(x: float, spec: str = ".3f") -> str:
    return "n/a" if not math.isfinite(x) else format(x, spec)


def to_text(r: CompareResult, *, max_tensors: int = 40) -> str:
    """The terminal report."""
    out = [
        f"attest compare  A = {r.a}  B = {r.b}",
        "",
        _verdict_line(r),
        f"  {r.verdict.reason}",
        f"  ({EXPLAIN['verdict']})",
        "",
    ]
    out.append("Matched hidden units (Hungarian on MLP weights vs identity)")
    out.append(f"  {EXPLAIN['hidden']}")
    if r.hidden_log_p is None:
        out.append("  not run: no MLP layer with the same shape in both models")
    else:
        for h in r.hidden:
            out.append(
                f"  {h.layer:<24} {h.fixed_points:>5}/{h.units} units in place  "
                f"Spearman {_f(h.spearman)}  p = {format_p(h.log_p)}"
            )
        out.append(f"  combined (Fisher): p = {format_p(r.hidden_log_p)}")
    out.append("")
    out.append("Vocabulary-aligned matching (robust to permuted units/heads)")
    out.append(f"  {EXPLAIN['aligned']}")
    if r.aligned is None:
        out.append("  not run: needs token embeddings of the same width and shared tokens")
    else:
        al = r.aligned
        out.append(
            f"  {al.fixed_points}/{al.dims} residual coordinates in place over "
            f"{al.blocks} tensors, {al.probe_tokens} probe tokens: p = {format_p(al.log_p)}"
        )
    out.append("")
    out.append("Modules")
    out.append(f"  {EXPLAIN['module']}")
    out.append(f"  {'module':<28}{'cosine':>8}{'pearson':>9}{'z':>9}  {'adj. p':<14} derived")
    for m in r.modules:
        out.append(
            f"  {m.name:<28}{_f(m.cosine):>8}{_f(m.pearson):>9}{_f(m.z, '.1f'):>9}  "
            f"{format_p(m.log_p_adjusted):<14} {'YES' if m.derived else 'no'}"
        )
    out.append("")
    out.append("Tensors (cosine | Pearson, each with its null mean ± sd)")
    out.append(f"  {EXPLAIN['tensor']}")
    shown = sorted(r.tensors, key=lambda t: t.log_p)[:max_tensors]
    for t in shown:
        out.append(
            f"  {t.name:<36} cos {_f(t.cosine)} (null {_f(t.cosine_null_mean)}±"
            f"{_f(t.cosine_null_sd)})  r {_f(t.pearson)} (null {_f(t.pearson_null_mean)}±"
            f"{_f(t.pearson_null_sd)})  z {_f(t.z, '.1f')}  p = {format_p(t.log_p)}"
        )
    if len(r.tensors) > len(shown):
        out.append(f"  ... {len(r.tensors) - len(shown)} more in --json")
    if r.not_comparable:
        out.append(f"  not comparable (missing or different shape): {len(r.not_comparable)}")
    out.append("")
    if r.vocab is not None:
        vo = r.vocab
        out.append(
            f"Tokenizer: {vo.shared} shared of {vo.size_a} / {vo.size_b} tokens, "
            f"Jaccard {vo.jaccard:.3f}, {vo.same_id} with the same id ({vo.source})"
        )
        out.append(f"  {EXPLAIN['vocab']}")
        if r.embedding_rsa is not None:
            out.append(f"  token-geometry correlation {r.embedding_rsa:.3f}: {EXPLAIN['rsa']}")
        out.append("")
    c = r.config
    out.append(
        f"Config: {len(c.same)} keys equal, {len(c.different)} differ, "
        f"{len(c.only_a)} only in A, {len(c.only_b)} only in B; "
        f"{c.tensors_same_shape} tensors share name and shape"
    )
    for k, (va, vb) in c.different.items():
        out.append(f"  {k}: {va!r} vs {vb!r}")
    out.append(f"  {ARCHITECTURE_NOTE}")
    return "\n".join(out)


def to_html(r: CompareResult) -> str:
    """A standalone HTML page (no scripts, no external resources)."""
    e = html.escape
    rows_m = "".join(
        f"<tr class={'derived' if m.derived else 'ok'}><td>{e(m.name)}</td><td>{_f(m.cosine)}</td>"
        f"<td>{_f(m.pearson)}</td><td>{_f(m.z, '.1f')}</td><td>{e(format_p(m.log_p_adjusted))}</td>"
        f"<td>{'YES' if m.derived else 'no'}</td></tr>"
        for m in r.modules
    )
    rows_t = "".join(
        f"<tr><td>{e(t.name)}</td><td>{_f(t.cosine)}</td><td>{_f(t.cosine_null_mean)} ± "
        f"{_f(t.cosine_null_sd)}</td><td>{_f(t.pearson)}</td><td>{_f(t.pearson_null_mean)} ± "
        f"{_f(t.pearson_null_sd)}</td><td>{_f(t.z, '.1f')}</td><td>{e(format_p(t.log_p))}</td>"
        f"<td>{e(t.null)}</td></tr>"
        for t in r.tensors
    )
    text = e(to_text(r, max_tensors=0))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>attest compare</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}tr.derived{background:#fdd}"
        "pre{background:#f6f6f6;padding:1em}</style></head><body>"
        f"<h1>attest compare</h1><p><b>A</b> {e(r.a)}<br><b>B</b> {e(r.b)}</p>"
        f"<h2>{e(_verdict_line(r))}</h2><p>{e(EXPLAIN['verdict'])}</p>"
        f"<pre>{text}</pre>"
        f"<h2>Modules</h2><p>{e(EXPLAIN['module'])}</p><table><tr><th>module</th><th>cosine</th>"
        f"<th>Pearson</th><th>z</th><th>adjusted p</th><th>derived</th></tr>{rows_m}</table>"
        f"<h2>Tensors</h2><p>{e(EXPLAIN['tensor'])}</p><table><tr><th>tensor</th><th>cosine</th>"
        "<th>cosine null</th><th>Pearson</th><th>Pearson null</th><th>z</th><th>p</th>"
        f"<th>null</th></tr>{rows_t}</table>"
        f"<p>{e(ARCHITECTURE_NOTE)}</p></body></html>"
    )
