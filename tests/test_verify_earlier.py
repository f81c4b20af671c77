"""``integrity.earlier_checkpoints``: a tree head the verifier fetched before rules out a history
re-signed since. The attack it stops is one the bundle alone cannot reveal: the trainer and the
log server together re-sign a rewritten log, so every signature, root and proof in the new bundle
is valid."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ed25519
from tamper import attacks
from tamper.honest import Sealed, honest_run, policy_for, seal

from attest.log import LogSigner
from attest.verifier import Outcome, Verdict, verify_bundle
from attest.verifier.cli import verify
from attest.verifier.result import Status
from attest.verifier.verdict import OPTIONAL_INPUT

CHECK = "integrity.earlier_checkpoints"


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Sealed:
    return honest_run(tmp_path_factory.mktemp("honest"))


@pytest.fixture(scope="module")
def rewritten(honest: Sealed, tmp_path_factory: pytest.TempPathFactory) -> Sealed:
    """The same run re-signed by the same trainer and server keys with a smoothed loss curve."""
    return seal(
        attacks.smooth_loss_curve(honest.facts),
        tmp_path_factory.mktemp("rewritten"),
        trainer_key=honest.trainer_key,
        server_key=honest.server_key,
    )


def _verify(sealed: Sealed, bundle: Path, earlier: list[str]) -> Verdict:
    policy = policy_for(sealed, required_checks=("integrity", "chain"))
    return verify_bundle(bundle, policy=policy, earlier_checkpoints=earlier)


def test_honest_log_extends_its_earlier_tree_heads(honest: Sealed) -> None:
    earlier = list(honest.bundle.checkpoints[:2])
    verdict = _verify(honest, honest.bundle_path, earlier)
    result = verdict.result(CHECK)
    assert result is not None and result.status is Status.PASS, result
    sizes = [int(note.splitlines()[1]) for note in earlier]
    assert result.evidence["sizes"] == sizes
    assert verdict.outcome is Outcome.VERIFIED


def test_without_earlier_heads_the_check_is_skipped_and_not_required(honest: Sealed) -> None:
    verdict = _verify(honest, honest.bundle_path, [])
    result = verdict.result(CHECK)
    assert result is not None and result.status is Status.SKIPPED
    assert "--checkpoint" in result.why
    assert verdict.outcome is Outcome.VERIFIED


def test_history_resigned_by_trainer_and_server_fails(honest: Sealed, rewritten: Sealed) -> None:
    # On its own the rewritten bundle passes every integrity and chain check.
    alone = _verify(honest, rewritten.bundle_path, [])
    for r in alone.results:
        if r.id.split(".")[0] in ("integrity", "chain") and r.id not in OPTIONAL_INPUT:
            assert r.status is Status.PASS, (r.id, r.why)
    verdict = _verify(honest, rewritten.bundle_path, [honest.bundle.checkpoints[1]])
    result = verdict.result(CHECK)
    assert result is not None and result.status is Status.FAIL
    assert "rewritten" in result.why
    assert verdict.outcome is Outcome.TAMPERED and verdict.exit_code == 1


def test_a_head_larger_than_the_bundle_means_missing_records(honest: Sealed) -> None:
    n = len(honest.bundle.records)
    signer = LogSigner(honest.log.signer.name, honest.server_key)
    longer = signer.sign(honest.facts.run, n + 1, hashlib.sha256(b"more").digest())
    verdict = _verify(honest, honest.bundle_path, [longer])
    result = verdict.result(CHECK)
    assert result is not None and result.status is Status.FAIL
    assert result.evidence["got"] == n + 1 and "missing" in result.why
    assert verdict.outcome is Outcome.TAMPERED


def test_a_head_that_cannot_be_opened_is_could_not_check(honest: Sealed) -> None:
    stranger = LogSigner(honest.log.signer.name, ed25519.Ed25519PrivateKey.generate())
    n = len(honest.bundle.records)
    foreign = stranger.sign(honest.facts.run, n, hashlib.sha256(b"x").digest())
    verdict = _verify(honest, honest.bundle_path, [foreign])
    result = verdict.result(CHECK)
    assert result is not None and result.status is Status.SKIPPED
    assert verdict.outcome is Outcome.COULD_NOT_CHECK and verdict.exit_code == 2


def test_cli_checkpoint_option(honest: Sealed, rewritten: Sealed, tmp_path: Path) -> None:
    earlier = tmp_path / "earlier.note"
    earlier.write_text(honest.bundle.checkpoints[1])
    trainer = tmp_path / "trainer.pub"
    trainer.write_text(honest.trainer_key.public.to_pem())
    base = [
        "--policy",
        "permissive",
        "--trust-trainer",
        str(trainer),
        "--trust-server",
        honest.log.signer.verifier.to_vkey(),
        "--checkpoint",
        str(earlier),
        "--json",
    ]
    ok = CliRunner().invoke(verify, [str(honest.bundle_path), *base])
    assert ok.exit_code in (0, 3), ok.output  # origin checks are not this test's concern
    assert '"integrity.earlier_checkpoints"' in ok.output
    bad = CliRunner().invoke(verify, [str(rewritten.bundle_path), *base])
    assert bad.exit_code == 1, bad.output
