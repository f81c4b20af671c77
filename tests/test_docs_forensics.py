"""docs/forensics.md must document every key of the `attest compare --json` report and every exit
code, so the user documentation cannot drift from :mod:`attest.verifier.forensics.report`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from attest.verifier.cli_compare import EXIT
from attest.verifier.forensics import Model, compare_models, to_jsonable

DOC = Path(__file__).resolve().parent.parent / "docs" / "forensics.md"


def _tiny(seed: int) -> Model:
    rng = np.random.default_rng(seed)
    tensors = {
        "tok_emb.weight": rng.normal(size=(64, 16)),
        "blocks.0.ln1.weight": 1 + 0.05 * rng.normal(size=16),
        "blocks.0.mlp.up_proj.weight": rng.normal(size=(32, 16)),
        "blocks.0.mlp.down_proj.weight": rng.normal(size=(16, 32)),
    }
    vocab = {f"t{i}": i for i in range(64)}
    cfg = {"hidden_size": 16, "num_hidden_layers": 1}
    return Model(
        "m", {k: v.astype(np.float32) for k, v in tensors.items()}, config=cfg, vocab=vocab
    )


def _keys(doc: Any, out: set[str], *, free: bool = False) -> set[str]:
    """Every key in a JSON document, except the free-form names under dicts keyed by data."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            if not free:
                out.add(k)
            # module names, config keys: their children are data, their own names are not schema
            _keys(
                v,
                out,
                free=k in ("modules", "same", "different", "only_a", "only_b")
                and not free
                and isinstance(v, dict),
            )
    elif isinstance(doc, list):
        for item in doc:
            _keys(item, out)
    return out


def test_every_json_key_is_documented_in_the_schema_block() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("## JSON report (`attest-compare/v1`)", 1)[1].split("\n## ", 1)[0]
    doc = to_jsonable(compare_models(_tiny(0), _tiny(1)))
    assert doc["schema"] in block
    documented = set(re.findall(r"[a-z_0-9]+", block))
    missing = sorted(_keys(doc, set()) - documented)
    assert not missing, f"docs/forensics.md JSON section does not name {missing}"


@pytest.mark.parametrize("label", sorted(EXIT))
def test_every_exit_code_is_in_the_table(label: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    assert f"| {EXIT[label]} | `{label}` |" in text
