"""The tamper corpus, end to end: every attack fails the check that should catch it, and honest
runs pass. Attacks by outsiders are caught cryptographically (integrity.* / chain.*); the
trainer's own validly signed forgeries are caught by replay and the from-scratch checks."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from tamper import attacks
from tamper.honest import Facts, RunConfig, Sealed, honest_run, policy_for, seal, train

from attest.keys import TrainerKey
from attest.verifier import Outcome, Verdict, verify_bundle
from attest.verifier.result import Status
from attest.verifier.verdict import OPTIONAL_INPUT


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Sealed:
    return honest_run(tmp_path_factory.mktemp("honest"))


def _verify(sealed: Sealed, bundle: Path | None = None, **kw: object) -> Verdict:
    policy = policy_for(sealed, required_checks=("integrity", "chain", "components"))
    return verify_bundle(bundle or sealed.bundle_path, policy=policy, **kw)  # type: ignore[arg-type]


def _fails(verdict: Verdict, check_id: str, why: str = "") -> None:
    result = verdict.result(check_id)
    assert result is not None, f"{check_id} did not run: {[r.id for r in verdict.results]}"
    assert result.status is Status.FAIL, f"{check_id}: {result.status} {result.why}"
    assert why in result.why


def _resealed(honest: Sealed, facts: Facts, folder: Path) -> Sealed:
    """``facts`` signed and logged again with the honest run's keys (the trainer's own forgery)."""
    return seal(
        facts, folder / "sealed", trainer_key=honest.trainer_key, server_key=honest.server_key
    )


def test_honest_run_passes_every_integrity_chain_and_component_check(honest: Sealed) -> None:
    verdict = _verify(
        honest,
        model=honest.model_path,
        data_dir=honest.facts.data_dir,
        earlier_checkpoints=honest.bundle.checkpoints[:1],
    )
    assert verdict.outcome is Outcome.VERIFIED, verdict.summary
    assert verdict.exit_code == 0
    for r in verdict.results:
        if r.id.split(".")[0] in ("integrity", "chain", "components"):
            assert r.status is Status.PASS, (r.id, r.why)
    assert verdict.summary.startswith("from scratch (policy strict)")


def test_flipped_bit_in_final_weights_fails_chain_model(honest: Sealed, tmp_path: Path) -> None:
    model = attacks.flip_bit_in_weights(honest, tmp_path / "model.safetensors")
    verdict = _verify(honest, model=model)
    _fails(verdict, "chain.model")
    assert verdict.outcome is Outcome.TAMPERED and verdict.exit_code == 1
    diff = verdict.result("chain.model").evidence["diff"]  # type: ignore[union-attr]
    assert diff and all(line.startswith("~ ") for line in diff)


def test_data_files_other_than_the_declared_ones_fail_chain_data_files(
    honest: Sealed, tmp_path: Path
) -> None:
    """Replay and the step-0 loss read whatever --data holds; the manifest (signed) names the
    files the run declared. Different bytes under the declared name are caught."""
    data = tmp_path / "data"
    shutil.copytree(honest.facts.data_dir, data)
    file = data / "data.safetensors"
    raw = bytearray(file.read_bytes())
    raw[-1] ^= 1  # one bit of the last sample
    file.write_bytes(bytes(raw))
    verdict = _verify(honest, data_dir=data)
    _fails(verdict, "chain.data_files")
    result = verdict.result("chain.data_files")
    assert result is not None and result.evidence["files"][0]["path"] == "data.safetensors"
    assert verdict.outcome is Outcome.TAMPERED

    file.unlink()
    missing = _verify(honest, data_dir=data).result("chain.data_files")
    assert missing is not None and missing.status is Status.SKIPPED
    assert "could not check: 1 of 1 shard files are not in" in missing.why
    assert _verify(honest).result("chain.data_files").status is Status.SKIPPED  # type: ignore[union-attr]


@pytest.mark.parametrize("path", ["../secret", "/etc/passwd", "a/../../b", "", "a\\..\\b"])
def test_a_manifest_shard_path_leaving_the_data_folder_is_refused(
    honest: Sealed, tmp_path: Path, path: str
) -> None:
    facts = honest.facts.copy()
    [manifest] = facts.bodies("data.manifest")
    manifest["dataset"]["shards"][0]["path"] = path
    verdict = _verify(_resealed(honest, facts, tmp_path), data_dir=honest.facts.data_dir)
    _fails(verdict, "chain.data_files", "must be a relative path inside the data folder")


def test_edited_loss_without_resigning_fails_signatures(honest: Sealed, tmp_path: Path) -> None:
    verdict = _verify(honest, attacks.edit_loss(honest, tmp_path / "b.json"))
    _fails(verdict, "integrity.signatures")
    _fails(verdict, "integrity.merkle_root")
    assert verdict.outcome is Outcome.TAMPERED


def test_edited_loss_resigned_by_untrusted_key_fails_signatures(
    honest: Sealed, tmp_path: Path
) -> None:
    bundle = attacks.edit_loss(honest, tmp_path / "b.json", resign=TrainerKey.generate())
    verdict = _verify(honest, bundle)
    _fails(verdict, "integrity.signatures")
    assert "not signed by the trusted trainer key" in verdict.result("integrity.signatures").why  # type: ignore[union-attr]


def test_record_signed_by_untrusted_key_fails_signatures(honest: Sealed, tmp_path: Path) -> None:
    bundle = attacks.resign_record_with_untrusted_key(
        honest, tmp_path / "b.json", TrainerKey.generate()
    )
    verdict = _verify(honest, bundle)
    _fails(verdict, "integrity.signatures")
    assert verdict.exit_code == 1


def test_deleted_record_fails_hash_chain_and_seq(honest: Sealed, tmp_path: Path) -> None:
    verdict = _verify(honest, attacks.delete_record(honest, tmp_path / "b.json"))
    _fails(verdict, "integrity.hash_chain")
    _fails(verdict, "integrity.seq")
    _fails(verdict, "integrity.merkle_root")


def test_reordered_records_fail_seq_and_hash_chain(honest: Sealed, tmp_path: Path) -> None:
    verdict = _verify(honest, attacks.reorder_records(honest, tmp_path / "b.json"))
    _fails(verdict, "integrity.seq")
    _fails(verdict, "integrity.hash_chain")


def test_duplicated_record_fails_seq(honest: Sealed, tmp_path: Path) -> None:
    verdict = _verify(honest, attacks.duplicate_record(honest, tmp_path / "b.json"))
    _fails(verdict, "integrity.seq")
    _fails(verdict, "integrity.steps")


def test_truncated_log_fails_statement_binding(honest: Sealed, tmp_path: Path) -> None:
    verdict = _verify(honest, attacks.truncate_log(honest, tmp_path / "b.json"))
    # The shortened log is internally consistent (root and proofs check out) ...
    assert verdict.result("integrity.merkle_root").status is Status.PASS  # type: ignore[union-attr]
    assert verdict.result("integrity.consistency").status is Status.PASS  # type: ignore[union-attr]
    # ... but the signed statement sealed a longer one, and the run has no end.
    _fails(verdict, "integrity.statement_binding")
    _fails(verdict, "integrity.structure")


def test_forked_checkpoint_fails_consistency(honest: Sealed, tmp_path: Path) -> None:
    verdict = _verify(honest, attacks.fork_checkpoint(honest, tmp_path / "b.json"))
    _fails(verdict, "integrity.consistency")
    assert verdict.outcome is Outcome.TAMPERED


def test_checkpoint_signed_by_untrusted_server_fails_checkpoints(
    honest: Sealed, tmp_path: Path
) -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    resealed = seal(honest.facts, tmp_path / "s", trainer_key=honest.trainer_key, server_key=other)
    verdict = verify_bundle(resealed.bundle_path, policy=policy_for(honest))
    _fails(verdict, "integrity.checkpoints")


def test_no_trusted_keys_is_could_not_check(honest: Sealed) -> None:
    from attest.verifier.policy import builtin_policy

    policy = replace(builtin_policy("permissive"), required_checks=("integrity", "chain"))
    verdict = verify_bundle(honest.bundle_path, policy=policy)
    assert verdict.outcome is Outcome.COULD_NOT_CHECK and verdict.exit_code == 2
    assert verdict.result("integrity.signatures").status is Status.SKIPPED  # type: ignore[union-attr]


def test_trusting_bundle_keys_says_self_consistent_only(honest: Sealed) -> None:
    from attest.verifier.policy import builtin_policy

    policy = replace(builtin_policy("permissive"), required_checks=("integrity", "chain"))
    verdict = verify_bundle(honest.bundle_path, policy=policy, trust_bundle_keys=True)
    assert verdict.outcome is Outcome.VERIFIED
    assert verdict.summary.startswith("SELF-CONSISTENT ONLY")
    assert verdict.result("integrity.trust").status is Status.WARN  # type: ignore[union-attr]


def test_sampled_signatures_still_catch_an_untrusted_signer(honest: Sealed, tmp_path: Path) -> None:
    bundle = attacks.resign_record_with_untrusted_key(
        honest, tmp_path / "b.json", TrainerKey.generate()
    )
    verdict = _verify(honest, bundle, signature_mode="sample")
    _fails(verdict, "integrity.signatures")
    ok = _verify(honest, signature_mode="sample")
    assert ok.result("integrity.signatures").evidence["mode"] == "sample"  # type: ignore[union-attr]
    assert ok.outcome is Outcome.VERIFIED


_OUTSIDER_ATTACKS = {
    "edited-loss": (attacks.edit_loss, ("integrity.signatures", "integrity.merkle_root")),
    "edited-loss-resigned": (
        lambda h, p: attacks.edit_loss(h, p, resign=TrainerKey.generate()),
        ("integrity.signatures",),
    ),
    "untrusted-signer": (
        lambda h, p: attacks.resign_record_with_untrusted_key(h, p, TrainerKey.generate()),
        ("integrity.signatures",),
    ),
    "deleted": (
        attacks.delete_record,
        ("integrity.hash_chain", "integrity.seq", "integrity.merkle_root"),
    ),
    "reordered": (attacks.reorder_records, ("integrity.seq", "integrity.hash_chain")),
    "duplicated": (attacks.duplicate_record, ("integrity.seq", "integrity.steps")),
    "truncated": (
        attacks.truncate_log,
        ("integrity.statement_binding", "integrity.structure"),
    ),
    "forked": (attacks.fork_checkpoint, ("integrity.consistency",)),
}


@pytest.mark.parametrize("name", sorted(_OUTSIDER_ATTACKS))
def test_sampled_signatures_catch_every_outsider_attack_with_the_named_check(
    honest: Sealed, tmp_path: Path, name: str
) -> None:
    attack, checks = _OUTSIDER_ATTACKS[name]
    bundle = attack(honest, tmp_path / "b.json")  # type: ignore[operator]
    for mode in ("all", "sample"):
        verdict = _verify(honest, bundle, signature_mode=mode)
        for check_id in checks:
            _fails(verdict, check_id)
        assert verdict.outcome is Outcome.TAMPERED
        sig = verdict.result("integrity.signatures")
        binding = verdict.result("integrity.statement_binding")
        assert sig is not None and binding is not None
        if mode == "sample" and binding.status is not Status.PASS and "mode" in sig.evidence:
            # The statement does not bind the tampered log: nothing was left to it.
            assert sig.evidence["mode"] == "all" and sig.evidence["requested"] == "sample"


def test_auto_mode_samples_only_large_logs_the_statement_binds(
    honest: Sealed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from attest.bundle import Bundle
    from attest.verifier import integrity
    from attest.verifier import signatures as signatures_mod
    from attest.verifier.context import VerifyContext

    def signatures(path: Path) -> dict[str, object]:
        ctx = VerifyContext(
            bundle=Bundle.read(path),
            policy=policy_for(honest),
            trainer_key=honest.trainer_key.public,
            server_verifier=honest.log.signer.verifier,
            signature_mode="auto",
            replay_seed=0,
        )
        result = next(r for r in integrity.check_integrity(ctx) if r.id == "integrity.signatures")
        return {"status": result.status, **result.evidence}

    small = signatures(honest.bundle_path)  # below AUTO_SAMPLE_FROM: every signature
    assert small["status"] is Status.PASS and small["mode"] == "all"
    assert small["requested"] == "auto"
    monkeypatch.setattr(signatures_mod, "AUTO_SAMPLE_FROM", 1)
    large = signatures(honest.bundle_path)
    assert large["status"] is Status.PASS and large["mode"] == "sample"
    truncated = signatures(attacks.truncate_log(honest, tmp_path / "t.json"))
    assert truncated["mode"] == "all"  # the statement seals a longer log: no sampling
    edited = signatures(attacks.edit_loss(honest, tmp_path / "e.json"))
    assert edited["status"] is Status.FAIL and edited["mode"] == "all"


# --- the trainer's own forgeries: every signature valid ------------------------------------


def _needs_origin_checks() -> None:
    for module in ("attest.verifier.replay", "attest.verifier.scratch"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not available in this tree")


def _origin_policy(sealed: Sealed):  # type: ignore[no-untyped-def]
    policy = policy_for(sealed, required_checks=("integrity", "chain", "components", "replay"))
    return replace(policy, replay_segments=8, statistics={"alpha": 0.01, "replay_budget": 1.0})


@pytest.mark.slow
def test_mid_run_checkpoint_swapped_for_another_runs_weights_fails_replay(
    honest: Sealed, tmp_path: Path
) -> None:
    _needs_origin_checks()
    other = train(tmp_path / "other", RunConfig(seed=99), run="other-run")
    facts = train(tmp_path / "mine", RunConfig(seed=0), run="honest-run")
    forged = attacks.swap_mid_run_checkpoint(facts, other, step=8)
    sealed = seal(
        forged, tmp_path / "sealed", trainer_key=honest.trainer_key, server_key=honest.server_key
    )
    verdict = verify_bundle(
        sealed.bundle_path,
        policy=_origin_policy(honest),
        state_dir=forged.state_dir,
        data_dir=forged.data_dir,
        replay=8,
        replay_seed=1,
    )
    # Every signature and the re-linked chain check out ...
    for r in verdict.results:
        if r.id.startswith(("integrity.", "chain.")) and r.id not in OPTIONAL_INPUT:
            assert r.status is Status.PASS, (r.id, r.why)
    # ... but re-executing the training does not reach the swapped weights.
    _fails(verdict, "replay.segments")
    _fails(verdict, "scratch.update_bound")
    assert verdict.outcome is Outcome.NOT_FROM_SCRATCH and verdict.exit_code == 3


@pytest.mark.slow
def test_smoothed_fabricated_loss_curve_with_valid_signatures_fails_replay(
    honest: Sealed, tmp_path: Path
) -> None:
    _needs_origin_checks()
    facts = train(tmp_path / "mine", RunConfig(seed=0), run="honest-run")
    forged = attacks.smooth_loss_curve(facts)
    sealed = seal(
        forged, tmp_path / "sealed", trainer_key=honest.trainer_key, server_key=honest.server_key
    )
    verdict = verify_bundle(
        sealed.bundle_path,
        policy=_origin_policy(honest),
        state_dir=forged.state_dir,
        data_dir=forged.data_dir,
        replay=8,
        replay_seed=1,
    )
    assert verdict.result("integrity.statement_binding").status is Status.PASS  # type: ignore[union-attr]
    _fails(verdict, "replay.segments")
    _fails(verdict, "scratch.step0_loss")
    assert verdict.exit_code == 3


@pytest.mark.slow
def test_honest_runs_over_twenty_seeds_pass_integrity_and_chain(tmp_path: Path) -> None:
    key, server = TrainerKey.generate(), ed25519.Ed25519PrivateKey.generate()
    for seed in range(20):
        sealed = honest_run(
            tmp_path / str(seed),
            RunConfig(seed=seed, steps=6, every=3),
            trainer_key=key,
            server_key=server,
        )
        verdict = _verify(
            sealed,
            model=sealed.model_path,
            data_dir=sealed.facts.data_dir,
            earlier_checkpoints=sealed.bundle.checkpoints[:1],
        )
        for r in verdict.results:
            if r.id.split(".")[0] in ("integrity", "chain", "components"):
                assert r.status is Status.PASS, (seed, r.id, r.why)


def test_a_run_end_in_the_middle_of_the_log_fails_structure(honest: Sealed, tmp_path: Path) -> None:
    """Only a run.end directly followed by the run.resume that extends the run may precede the
    last record; one dropped in among the steps is refused."""
    facts = honest.facts.copy()
    [end] = facts.bodies("run.end")
    middle = next(i for i, (t, _) in enumerate(facts.entries) if t == "train.steps")
    facts.entries.insert(middle + 1, ("run.end", dict(end)))
    verdict = _verify(_resealed(honest, facts, tmp_path))
    _fails(
        verdict, "integrity.structure", "neither closes the log nor is followed by the run.resume"
    )
