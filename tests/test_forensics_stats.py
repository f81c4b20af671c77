"""Unit tests of the forensics null distributions, combination rules and loaders.

Each closed form is checked against a naive reference: Monte Carlo permutations for the
permutation-null moments, brute-force enumeration for the fixed-point tail, scipy's χ² for
Fisher.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sst

from attest.errors import FormatError
from attest.verifier.forensics import stats
from attest.verifier.forensics.matching import module_of
from attest.verifier.forensics.tensors import read_safetensors
from attest.verifier.forensics.tokenizer import load_vocab, vocab_overlap


def _mc(a: np.ndarray, b: np.ndarray, fixed: int | None, reps: int = 4000) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    vals = []
    for _ in range(reps):
        if a.ndim == 1:
            bb = b[rng.permutation(b.size)]
        elif fixed == 0:
            bb = b[:, rng.permutation(b.shape[1])]
        else:
            bb = b[rng.permutation(b.shape[0])][:, rng.permutation(b.shape[1])]
        vals.append(float(np.sum(a * bb)))
    return float(np.mean(vals)), float(np.var(vals))


@pytest.mark.parametrize("shape,fixed", [((50,), None), ((12, 9), None), ((15, 7), 0)])
def test_permutation_null_moments_match_monte_carlo(
    shape: tuple[int, ...], fixed: int | None
) -> None:
    rng = np.random.default_rng(1)
    # Structured inputs (row and column effects, non-zero mean) exercise every variance term.
    a = rng.normal(size=shape) + 0.5
    b = rng.normal(size=shape) * 2 - 0.3
    if len(shape) == 2:
        a += rng.normal(size=(shape[0], 1)) + rng.normal(size=(1, shape[1]))
        b += rng.normal(size=(shape[0], 1)) * 3 + rng.normal(size=(1, shape[1]))
    mom = stats.permutation_null(a, b, fixed_axis=fixed)
    mean, var = _mc(a, b, fixed)
    assert mom.null_mean == pytest.approx(mean, abs=4 * math.sqrt(var / 4000))
    assert mom.null_var == pytest.approx(var, rel=0.1)


def test_layernorm_like_vectors_have_high_cosine_but_null_z() -> None:
    rng = np.random.default_rng(2)
    a, b = 1 + 0.05 * rng.normal(size=512), 1 + 0.05 * rng.normal(size=512)
    mom = stats.permutation_null(a, b)
    cos, cos_mu, cos_sd = mom.cosine()
    r, r_mu, r_sd = mom.pearson()
    assert cos > 0.99 and cos_mu > 0.99  # the null expects the same high cosine
    assert abs(r) < 0.2 and r_mu == pytest.approx(0.0, abs=1e-12)
    assert r_sd == pytest.approx(1 / math.sqrt(511))
    assert (cos - cos_mu) / cos_sd == pytest.approx(mom.z) == pytest.approx((r - r_mu) / r_sd)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6])
def test_fixed_points_tail_is_exact(n: int) -> None:
    counts = [sum(p[i] == i for i in range(n)) for p in itertools.permutations(range(n))]
    for k in range(n + 2):
        exact = sum(c >= k for c in counts) / len(counts)
        got = math.exp(stats.fixed_points_log_sf(k, n))
        assert got == pytest.approx(exact, abs=1e-12)


def test_fixed_points_tail_of_full_identity_is_one_over_n_factorial() -> None:
    assert stats.fixed_points_log_sf(64, 64) == pytest.approx(-math.lgamma(65))
    assert stats.fixed_points_log_sf(63, 64) == pytest.approx(-math.lgamma(65))  # 63 forces 64


def test_fisher_matches_chi2_and_does_not_underflow() -> None:
    lps = [math.log(0.2), math.log(0.03), math.log(0.7)]
    assert stats.fisher_log_p(lps) == pytest.approx(sst.chi2.logsf(-2 * sum(lps), 6))
    assert math.isfinite(stats.fisher_log_p([-2000.0, -1500.0]))
    assert stats.fisher_log_p([0.0, 0.0]) == pytest.approx(0.0)


def test_holm_and_bonferroni() -> None:
    lps = [math.log(p) for p in (0.01, 0.04, 0.03, 0.5)]
    adj = [math.exp(x) for x in stats.holm(lps)]
    assert adj == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert math.exp(stats.bonferroni_log_p(lps)) == pytest.approx(0.04)


def test_spearman_identity() -> None:
    rho, lp = stats.spearman_identity(np.arange(100))
    assert rho == pytest.approx(1.0) and lp < math.log(1e-20)
    rho, lp = stats.spearman_identity(np.arange(100)[::-1].copy())
    assert rho == pytest.approx(-1.0) and lp > math.log(0.99)


def test_module_of() -> None:
    assert module_of("blocks.1.mlp.up_proj.weight") == "blocks.1.mlp"
    assert module_of("model.layers.0.self_attn.q_proj.weight") == "model.layers.0.self_attn"
    assert module_of("blocks.1.ln1.weight") == "blocks.1.ln1"
    assert module_of("tok_emb.weight") == "tok_emb"
    assert module_of("h.3.weight") == "h.3"


def _write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], bytes]]) -> None:
    header, blob, off = {}, b"", 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        blob += data
        off += len(data)
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + blob)


def test_safetensors_reader_widens_bf16_and_f16_and_skips_integers(tmp_path: Path) -> None:
    x = np.array([1.0, -2.5, 3.140625, 0.0], dtype=np.float32)
    bf16 = (x.view(np.uint32) >> 16).astype("<u2").tobytes()
    f = tmp_path / "m.safetensors"
    _write_safetensors(
        f,
        {
            "w": ("BF16", [2, 2], bf16),
            "h": ("F16", [4], x.astype("<f2").tobytes()),
            "ids": ("I64", [2], np.arange(2, dtype="<i8").tobytes()),
        },
    )
    out = read_safetensors(f)
    assert set(out) == {"w", "h"}
    assert out["w"].dtype == np.float32 and np.array_equal(out["w"].ravel(), x)
    assert np.array_equal(out["h"], x)


def test_safetensors_reader_rejects_garbage(tmp_path: Path) -> None:
    f = tmp_path / "bad.safetensors"
    f.write_bytes(struct.pack("<Q", 5) + b"nope!")
    with pytest.raises(FormatError):
        read_safetensors(f)


def test_vocab_formats_and_overlap(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "vocab.txt").write_text("x\ny\nz\n")
    (tmp_path / "b").mkdir()
    tok = {
        "model": {"vocab": [["y", 0.0], ["z", -1.0], ["w", -2.0]]},
        "added_tokens": [{"id": 3, "content": "<s>"}],
    }
    (tmp_path / "b" / "tokenizer.json").write_text(json.dumps(tok))
    va, vb = load_vocab(tmp_path / "a"), load_vocab(tmp_path / "b")
    assert va == {"x": 0, "y": 1, "z": 2}
    assert vb == {"y": 0, "z": 1, "w": 2, "<s>": 3}
    ov = vocab_overlap(va, vb)
    assert (ov.shared, ov.same_id) == (2, 0)
    assert ov.jaccard == pytest.approx(2 / 5)
