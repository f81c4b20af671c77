"""`attest verify`: exit codes, --json document, --html file, usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tamper import attacks
from tamper.honest import Sealed, honest_run

from attest.verifier.cli import verify


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Sealed:
    return honest_run(tmp_path_factory.mktemp("cli"))


@pytest.fixture(scope="module")
def policy_file(sealed: Sealed, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("policy")
    (folder / "trainer.pub").write_text(sealed.trainer_key.public.to_pem())
    doc = {
        "policy": "attest-policy/v1",
        "name": "test",
        "trust": {"trainer_keys": [{"file": "trainer.pub"}], "server_keys": [sealed.server_vkey]},
        "required_checks": ["integrity", "chain", "components"],
    }
    path = folder / "policy.json"
    path.write_text(json.dumps(doc))
    return path


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(verify, list(args))
    return result.exit_code, result.output


def test_honest_bundle_exits_0_with_json_verdict(sealed: Sealed, policy_file: Path) -> None:
    code, out = _run(
        str(sealed.bundle_path),
        "--policy",
        str(policy_file),
        "--json",
        "--model",
        str(sealed.model_path),
    )
    assert code == 0, out
    doc = json.loads(out)
    assert doc["format"] == "attest-verdict/v1" and doc["outcome"] == "verified"
    assert doc["exit_code"] == 0 and doc["policy"]["name"] == "test"
    assert {c["id"] for c in doc["checks"]} >= {"integrity.signatures", "chain.model"}


def test_tampered_bundle_exits_1(sealed: Sealed, policy_file: Path, tmp_path: Path) -> None:
    bundle = attacks.delete_record(sealed, tmp_path / "b.json")
    code, out = _run(str(bundle), "--policy", str(policy_file))
    assert code == 1
    assert "TAMPERED" in out and "integrity.hash_chain" in out


def test_bundle_nested_too_deeply_is_refused_not_a_crash(policy_file: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "deep.json"
    bundle.write_bytes(b'{"records": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    code, out = _run(str(bundle), "--policy", str(policy_file), "--json")
    assert code == 1, out
    [structure] = [c for c in json.loads(out)["checks"] if c["id"] == "integrity.structure"]
    assert (
        structure["status"] == "fail"
        and "nests JSON arrays or objects too deeply" in (structure["why"])
    )


def test_strict_policy_without_keys_exits_2(sealed: Sealed) -> None:
    code, out = _run(str(sealed.bundle_path), "--policy", "strict", "--json")
    assert code == 2
    assert json.loads(out)["outcome"] == "could-not-check"


def test_trust_options_add_keys(sealed: Sealed, tmp_path: Path) -> None:
    pem = tmp_path / "t.pub"
    pem.write_text(sealed.trainer_key.public.to_pem())
    _code, out = _run(
        str(sealed.bundle_path),
        "--policy",
        "permissive",
        "--trust-trainer",
        str(pem),
        "--trust-server",
        sealed.server_vkey,
        "--json",
    )
    doc = json.loads(out)
    assert doc["outcome"] != "tampered"
    integrity = {c["id"]: c["status"] for c in doc["checks"] if c["id"].startswith("integrity.")}
    assert integrity.pop("integrity.earlier_checkpoints") == "skipped"  # none given
    assert set(integrity.values()) == {"pass"}


def test_components_policy_failure_exits_3(
    sealed: Sealed, policy_file: Path, tmp_path: Path
) -> None:
    from tamper.honest import RunConfig

    comp = honest_run(
        tmp_path / "c",
        RunConfig(
            components=(
                {
                    "name": "encoder",
                    "prefix": "encoder.",
                    "source": "hub:enc",
                    "license": "Apache-2.0",
                },
            )
        ),
        trainer_key=sealed.trainer_key,
        server_key=sealed.server_key,
    )
    code, out = _run(str(comp.bundle_path), "--policy", str(policy_file), "--json")
    doc = json.loads(out)
    assert code == 3, doc["summary"]
    assert doc["outcome"] == "not-from-scratch"
    assert "components.policy" in doc["summary"]


def test_missing_bundle_is_a_usage_error(tmp_path: Path) -> None:
    code, out = _run(str(tmp_path / "nope.json"))
    assert code == 2 and "does not exist" in out


def test_malformed_policy_names_the_field(sealed: Sealed, tmp_path: Path) -> None:
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"policy": "attest-policy/v1", "name": "x", "requried_checks": []}))
    code, out = _run(str(sealed.bundle_path), "--policy", str(bad))
    assert code == 2 and "unknown keys" in out


def test_html_option_writes_a_report(sealed: Sealed, policy_file: Path, tmp_path: Path) -> None:
    out_html = tmp_path / "r.html"
    code, _ = _run(str(sealed.bundle_path), "--policy", str(policy_file), "--html", str(out_html))
    assert code == 0
    text = out_html.read_text()
    assert "<svg" in text and "integrity.merkle_root" in text and "<script" not in text
