"""Model forensics without logs: was model B derived from model A? (DESIGN.md §6, Forensics).

``compare_models(load_model(a), load_model(b))`` runs per-tensor similarity against permutation
nulls, matched-hidden-unit tests with exact p-values, a vocabulary-aligned matching test that
survives permuted units and heads, per-module localisation, tokenizer overlap and a config
diff, and returns a :class:`CompareResult` with a verdict; :mod:`.report` renders it.
"""

from __future__ import annotations

from .compare import CompareResult, ModuleResult, TensorResult, Verdict, compare_models
from .report import format_p, to_html, to_json, to_jsonable, to_text
from .tensors import Model, load_model, read_safetensors

__all__ = [
    "CompareResult",
    "Model",
    "ModuleResult",
    "TensorResult",
    "Verdict",
    "compare_models",
    "format_p",
    "load_model",
    "read_safetensors",
    "to_html",
    "to_json",
    "to_jsonable",
    "to_text",
]
