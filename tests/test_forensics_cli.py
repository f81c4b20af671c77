"""`attest compare` on model folders: bf16 safetensors, JSON keys, HTML, exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import forensics_models as fm
import pytest
import torch
from click.testing import CliRunner

from attest.verifier.cli_compare import compare


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    parent = fm.train_model(0, steps=20)
    out = {
        "parent": fm.save_folder(parent, root / "parent"),
        "child": fm.save_folder(fm.finetune(parent, steps=30), root / "child", bf16=True),
        "other": fm.save_folder(fm.train_model(9, steps=20), root / "other"),
    }
    yield out
    torch.set_num_threads(before)


def test_derived_pair_json_html_and_exit_code(folders: dict[str, Path], tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    res = CliRunner().invoke(
        compare, [str(folders["parent"]), str(folders["child"]), "--json", "--html", str(html)]
    )
    assert res.exit_code == 1, res.output
    doc = json.loads(res.output)
    assert doc["schema"] == "attest-compare/v1"
    assert set(doc) >= {"verdict", "tests", "modules", "tensors", "vocabulary", "config", "alpha"}
    assert doc["verdict"]["label"] == "derived" and doc["verdict"]["log10_p"] < -6
    t = doc["tensors"][0]
    assert set(t["cosine"]) == set(t["pearson"]) == {"value", "null_mean", "null_sd"}
    assert doc["vocabulary"]["jaccard"] == 1.0
    assert "not shared weights" in doc["config"]["note"]
    page = html.read_text()
    assert page.startswith("<!doctype html>") and "VERDICT: derived" in page


def test_independent_pair_text_report(folders: dict[str, Path]) -> None:
    res = CliRunner().invoke(compare, [str(folders["parent"]), str(folders["other"])])
    assert res.exit_code == 0, res.output
    assert "VERDICT: independent" in res.output
    assert "A shared architecture is not shared weights" in res.output
    assert "null" in res.output  # every similarity is printed with its null


def test_single_file_and_reference_zoo(folders: dict[str, Path]) -> None:
    zoo = folders["other"].parent
    res = CliRunner().invoke(
        compare,
        [
            str(folders["parent"] / "model.safetensors"),
            str(folders["child"]),
            "--reference-zoo",
            str(zoo),
            "--json",
        ],
    )
    assert res.exit_code == 1, res.output
    doc = json.loads(res.output)
    assert len(doc["zoo"]) == 3
    assert any(t["zoo_pearson"] is not None for t in doc["tensors"])


def test_unreadable_input_names_the_fix(tmp_path: Path, folders: dict[str, Path]) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00nope!")
    res = CliRunner().invoke(compare, [str(bad), str(folders["parent"])])
    assert res.exit_code == 2
    assert "error:" in res.output and "safetensors" in res.output
    res = CliRunner().invoke(
        compare, [str(folders["parent"]), str(folders["child"]), "--alpha", "2"]
    )
    assert res.exit_code == 2 and "--alpha" in res.output


def test_malformed_vocab_is_bad_input_not_a_finding(
    tmp_path: Path, folders: dict[str, Path]
) -> None:
    """Exit 1 means "derived": a broken input file must never produce it."""
    (tmp_path / "model.safetensors").write_bytes(
        next(folders["parent"].glob("*.safetensors")).read_bytes()
    )
    (tmp_path / "vocab.json").write_text("{bad")
    result = CliRunner().invoke(compare, [str(tmp_path), str(folders["parent"])])
    assert result.exit_code == 2, result.output
