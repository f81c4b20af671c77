"""`attest demo`, the README's first command, in a shortened configuration: each variant ends
with the verdict it exists to show, and the files it leaves reproduce that verdict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from model_signing import verifying

pytestmark = pytest.mark.slow

SHORT = ["--steps", "40", "--checkpoint-every", "10", "--replay", "1", "--quiet"]


def run_demo(out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "attest.cli", "demo", "--out", str(out), *SHORT, *flags],
        capture_output=True,
        text=True,
        timeout=600,
    )


def verify_json(out: Path, *extra: str) -> tuple[int, dict[str, object]]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "attest.cli",
            "verify",
            str(out / "bundle.json"),
            "--model",
            str(out / "model.safetensors"),
            "--policy",
            str(out / "policy.json"),
            "--state-dir",
            str(out / "state"),
            "--json",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc.returncode, json.loads(proc.stdout)


def failed_checks(verdict: dict[str, object]) -> set[str]:
    results = verdict["checks"]
    assert isinstance(results, list)
    return {r["id"] for r in results if r["status"] == "fail"}


def test_from_scratch_demo_verifies_and_leaves_what_a_verifier_needs(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = run_demo(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "VERIFIED" in proc.stdout
    for name in ["bundle.json", "model.safetensors", "policy.json", "report.html"]:
        assert (out / name).is_file(), name
    code, verdict = verify_json(out)
    assert code == 0 and verdict["outcome"] == "verified"
    assert failed_checks(verdict) == set()
    # the training text the demo declares is the file it leaves, byte for byte
    code, verdict = verify_json(out, "--data", str(out / "data"))
    data_files = next(c for c in verdict["checks"] if c["id"] == "chain.data_files")
    assert code == 0 and data_files["status"] == "pass", data_files
    # the final weights also carry a stock OpenSSF model signature
    verifying.Config().use_elliptic_key_verifier(public_key=out / "keys" / "trainer.pub").verify(
        out / "model.safetensors", out / "model.safetensors.sig"
    )


def test_warm_start_is_rejected_as_not_from_scratch(tmp_path: Path) -> None:
    out = tmp_path / "warm"
    proc = run_demo(out, "--warm-start")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    code, verdict = verify_json(out)
    assert code == 3
    assert "scratch.init_recreated" in failed_checks(verdict)
    assert failed_checks(verdict) & {"scratch.step0_loss", "scratch.init_random"}
    assert "scratch.init_recreated" in (out / "report.html").read_text()


def test_declared_component_verifies_as_scratch_except_the_component(tmp_path: Path) -> None:
    out = tmp_path / "component"
    proc = run_demo(out, "--declared-component")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, verdict = verify_json(out)
    summary = str(verdict["summary"])
    assert "except declared components" in summary and "encoder" in summary, summary


def test_finetune_walks_to_its_parent(tmp_path: Path) -> None:
    out = tmp_path / "finetune"
    proc = run_demo(out, "--finetune")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, verdict = verify_json(out, "--parent", str(out / "parent" / "bundle.json"))
    assert "fine-tune" in str(verdict["summary"]).lower(), verdict["summary"]
