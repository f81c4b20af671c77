"""Permutation-robust independence tests by unit matching (DESIGN.md §6, Forensics).

Two tests, both with exact p-values under the null "independently trained":

**Matched hidden units** (the constrained test of Zhu et al., ICML 2025). For each MLP layer,
each hidden unit is described by its up-projection row and down-projection column; A's units are
matched to B's with the Hungarian algorithm (maximum total correlation). For independent models,
B's hidden units are exchangeable, so the matching is a uniformly random permutation relative
to the identity: its number of fixed points has the exact rencontres distribution
(:func:`stats.fixed_points_log_sf`), and its Spearman correlation with the identity is reported
beside it. Layers are separate symmetries, so their p-values are independent and Fisher's
method combines them. A fine-tune keeps its units in place (matching = identity); a copier who
permutes hidden units moves the matching off the identity and defeats this test.

**Vocabulary-aligned matching** (survives hidden-unit and head permutations). Token ids mean the
same thing in both models once tokens are matched by string, so a fixed probe of shared tokens
gives activations ``standardise(E[probe]) · Wᵀ`` for every matrix that reads the residual stream
(MLP up/gate, attention Q/K/V). These activations do not depend on how the residual coordinates
are ordered, and B's hidden units/heads are matched to A's on them. With units aligned this way,
every residual-facing tensor (embeddings, positions, norms, MLP in/out, attention in) is stacked
into one profile per residual coordinate, and the residual coordinates of A and B are matched.
For independent models B's residual coordinates are exchangeable and the unit alignment above
is invariant to their order, so the residual matching is again a uniform random permutation:
fixed points give an exact p-value. Per module the same construction localises the evidence.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from . import stats
from .tensors import Model

__all__ = [
    "HiddenLayerMatch",
    "ResidualMatch",
    "hidden_unit_test",
    "module_of",
    "residual_alignment_test",
]

F64 = NDArray[np.floating[Any]]

_UP = re.compile(
    r"(up_proj|gate_proj|c_fc|fc1|\.w1|\.w3|intermediate\.dense|fc_in|dense_h_to_4h)\.weight$"
)
_DOWN = re.compile(
    r"(down_proj|mlp\.c_proj|fc2|\.w2|fc_out|dense_4h_to_h|(?<!attention\.)output\.dense)\.weight$"
)
_ATTN_IN = re.compile(
    r"((q_proj|k_proj|v_proj|query|key|value|c_attn|qkv|wqkv|in_proj)\.weight|in_proj_weight)$",
    re.IGNORECASE,
)


def module_of(name: str) -> str:
    """The submodule a tensor belongs to, for localisation: through the first block index and
    one more component (``blocks.1.mlp``), else the tensor's parent (``tok_emb``)."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():
            return ".".join(parts[: min(i + 2, len(parts) - 1)])
    return ".".join(parts[:-1]) or name


@dataclass(frozen=True, slots=True)
class HiddenLayerMatch:
    """Matched hidden units of one MLP layer."""

    layer: str
    module: str
    units: int
    fixed_points: int
    spearman: float
    log_p: float  # exact, fixed points of a uniform permutation
    spearman_log_p: float


@dataclass(frozen=True, slots=True)
class ResidualMatch:
    """Residual-coordinate matching after vocabulary-aligned unit alignment."""

    dims: int
    fixed_points: int
    spearman: float
    log_p: float
    blocks: int
    modules: dict[str, tuple[int, int, float]]  # module -> (fixed points, blocks, log p)
    probe_tokens: int


def _res_last(model: Model, name: str) -> F64 | None:
    """A 2-D tensor as [units, d_model] (None when the residual axis is unknown)."""
    axis = model.residual_axis(name)
    if axis is None:
        return None
    t = model.tensors[name].astype(np.float32)  # float32 keeps the big products fast
    return np.ascontiguousarray(t if axis == 1 else t.T)


def _unit_rows(x: F64) -> F64:
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.where(norm == 0, 1.0, norm))


def _match(sim: F64) -> NDArray[np.int64]:
    """Hungarian matching maximising total similarity: result[i] = B's unit for A's unit i."""
    rows, cols = linear_sum_assignment(sim, maximize=True)
    out = np.empty(sim.shape[0], dtype=np.int64)
    out[rows] = cols
    return out


def _mlp_layers(a: Model, b: Model) -> dict[tuple[str, int, int], tuple[list[str], list[str]]]:
    """(layer prefix, index, hidden size) -> (up-like names, down-like names) present in both."""
    layers: dict[tuple[str, int, int], tuple[list[str], list[str]]] = {}
    for name, t in a.tensors.items():
        if name not in b.tensors or b.tensors[name].shape != t.shape or t.ndim != 2:
            continue
        is_up, is_down = bool(_UP.search(name)), bool(_DOWN.search(name))
        layer = a.layer_of(name)
        axis = a.residual_axis(name)
        if layer is None or axis is None or not (is_up or is_down):
            continue
        key = (layer[0], layer[1], int(t.shape[1 - axis]))
        ups, downs = layers.setdefault(key, ([], []))
        (ups if is_up else downs).append(name)
    return {k: v for k, v in layers.items() if v[0]}


def hidden_unit_test(a: Model, b: Model) -> list[HiddenLayerMatch]:
    """Per MLP layer: Hungarian matching of hidden units on their weights, tested against the
    identity (see module docstring)."""
    out: list[HiddenLayerMatch] = []
    for (prefix, idx, hidden), (ups, downs) in sorted(_mlp_layers(a, b).items()):
        feats_a, feats_b = [], []
        for name in sorted(ups + downs):
            ta, tb = _res_last(a, name), _res_last(b, name)
            if ta is None or tb is None or ta.shape[0] != hidden:
                continue
            feats_a.append(_unit_rows(ta))
            feats_b.append(_unit_rows(tb))
        ua, ub = np.hstack(feats_a), np.hstack(feats_b)
        if not np.any(ua.std(axis=0)) or not np.any(ub.std(axis=0)):
            continue  # degenerate (constant) weights: no matching can be read from them
        m = _match(ua @ ub.T)
        k = int(np.sum(m == np.arange(hidden)))
        rho, rho_lp = stats.spearman_identity(m)
        out.append(
            HiddenLayerMatch(
                layer=f"{prefix}{idx}",
                module=module_of(sorted(ups)[0]),
                units=hidden,
                fixed_points=k,
                spearman=rho,
                log_p=stats.fixed_points_log_sf(k, hidden),
                spearman_log_p=rho_lp,
            )
        )
    return out


def _standardise_rows(x: F64) -> F64:
    x = x - x.mean(axis=1, keepdims=True)
    sd = x.std(axis=1, keepdims=True)
    return np.asarray(x / np.where(sd == 0, 1.0, sd))


def _block(x: F64) -> F64 | None:
    """Centre a [d, features] block per residual coordinate (or over d for a vector) and scale
    it to unit Frobenius norm; None when it carries no variation."""
    x = np.asarray(x, dtype=np.float32)
    x = x - x.mean(axis=0 if x.shape[1] == 1 else 1, keepdims=True)
    norm = float(np.linalg.norm(x))
    return x / norm if norm > 0 else None


def residual_alignment_test(
    a: Model,
    b: Model,
    a_ids: NDArray[np.int64],
    b_ids: NDArray[np.int64],
    *,
    probe_tokens: int = 2048,
    embed_tokens: int = 8192,
) -> ResidualMatch | None:
    """The vocabulary-aligned test (see module docstring); None without shared embeddings."""
    ea_name, eb_name = a.embedding_name, b.embedding_name
    d = a.d_model
    if ea_name is None or eb_name is None or d is None or d != b.d_model or len(a_ids) < 16:
        return None
    ea = a.tensors[ea_name]
    eb = b.tensors[eb_name]
    pa = _standardise_rows(ea[a_ids[:probe_tokens]])
    pb = _standardise_rows(eb[b_ids[:probe_tokens]])

    blocks: list[tuple[str, F64, F64]] = []

    def add(name: str, xa: F64, xb: F64) -> None:
        ba, bb = _block(xa), _block(xb)
        if ba is not None and bb is not None:
            blocks.append((module_of(name), ba, bb))

    n_emb = min(embed_tokens, len(a_ids))
    add(ea_name, ea[a_ids[:n_emb]].T, eb[b_ids[:n_emb]].T)
    token_names = a.token_axis_names() - {ea_name}
    for name in sorted(token_names & b.token_axis_names()):
        ta, tb = a.tensors[name], b.tensors[name]
        add(name, ta[a_ids[:n_emb]].T, tb[b_ids[:n_emb]].T)

    alignment: dict[tuple[str, int, int], NDArray[np.int64]] = {}
    for name in sorted(a.tensors):
        ta = a.tensors[name]
        if name not in b.tensors or b.tensors[name].shape != ta.shape or name == ea_name:
            continue
        if name in token_names:
            continue
        if ta.ndim == 1 and ta.shape[0] == d:
            add(name, ta[:, None], b.tensors[name][:, None])
            continue
        if ta.ndim != 2:
            continue
        if name in a.position_axis_names():
            wa, wb = _res_last(a, name), _res_last(b, name)
            if wa is not None and wb is not None:
                add(name, wa.T, wb.T)
            continue
        if not (_UP.search(name) or _ATTN_IN.search(name)):
            continue
        wa, wb = _res_last(a, name), _res_last(b, name)
        if wa is None or wb is None:
            continue
        # Probe activations [units, tokens], standardised per unit.
        ha = _standardise_rows((pa @ wa.T).T)
        hb = _standardise_rows((pb @ wb.T).T)
        tau = _match(ha @ hb.T)
        add(name, wa.T, wb[tau].T)
        layer = a.layer_of(name)
        if layer is not None and _UP.search(name):
            alignment.setdefault((layer[0], layer[1], wa.shape[0]), tau)
    for name in sorted(a.tensors):
        if not _DOWN.search(name) or name not in b.tensors:
            continue
        layer = a.layer_of(name)
        wa, wb = _res_last(a, name), _res_last(b, name)
        if layer is None or wa is None or wb is None or wa.shape != wb.shape:
            continue
        tau_down = alignment.get((layer[0], layer[1], wa.shape[0]))
        if tau_down is not None:
            add(name, wa.T, wb[tau_down].T)
    if not blocks:
        return None

    def test(sel: list[tuple[str, F64, F64]]) -> tuple[int, float, float]:
        sim = np.zeros((d, d))
        for _, xa, xb in sel:
            sim += (xa @ xb.T).astype(np.float64)
        m = _match(sim)
        k = int(np.sum(m == np.arange(d)))
        rho, _ = stats.spearman_identity(m)
        return k, rho, stats.fixed_points_log_sf(k, d)

    k, rho, log_p = test(blocks)
    modules: dict[str, tuple[int, int, float]] = {}
    for mod in sorted({blk[0] for blk in blocks}):
        sel = [blk for blk in blocks if blk[0] == mod]
        km, _, lpm = test(sel)
        modules[mod] = (km, len(sel), lpm)
    return ResidualMatch(
        dims=d,
        fixed_points=k,
        spearman=rho if not math.isnan(rho) else 0.0,
        log_p=log_p,
        blocks=len(blocks),
        modules=modules,
        probe_tokens=int(min(probe_tokens, len(a_ids))),
    )
