"""Policies, components and fine-tune lineage: the verdict in the policy's terms."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from tamper.honest import RunConfig, Sealed, honest_run, policy_for

from attest.errors import FormatError
from attest.verifier import Outcome, verify_bundle
from attest.verifier.policy import POLICY_FORMAT, Policy, builtin_policy
from attest.verifier.result import Status

ENCODER = {
    "name": "encoder",
    "prefix": "encoder.0.",
    "source": "hub:tiny-encoder",
    "license": "Apache-2.0",
}
REQUIRED = ("integrity", "chain", "components")


@pytest.fixture(scope="module")
def with_component(tmp_path_factory: pytest.TempPathFactory) -> Sealed:
    return honest_run(tmp_path_factory.mktemp("comp"), RunConfig(components=(ENCODER,)))


def test_builtin_policies_parse() -> None:
    strict, permissive = builtin_policy("strict"), builtin_policy("permissive")
    assert not strict.components.allowed and not strict.finetune.allowed
    assert permissive.components.allowed and "Apache-2.0" in permissive.components.licenses
    assert strict.requires("scratch.init_random") and not permissive.requires("scratch.init_random")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"policy": "other/v1", "name": "x"}, "unknown format"),
        ({"policy": POLICY_FORMAT, "name": "x", "extra": 1}, "unknown keys"),
        (
            {"policy": POLICY_FORMAT, "name": "x", "required_checks": ["nonsense"]},
            "no check family",
        ),
        ({"policy": POLICY_FORMAT, "name": "x", "components": {"max_share": 2}}, "max_share"),
        ({"policy": POLICY_FORMAT, "name": "x", "trust": {"trainer_keys": ["not a pem"]}}, "PEM"),
        ({"policy": POLICY_FORMAT, "name": "x", "trust": {"server_keys": ["bad"]}}, "verifier key"),
    ],
)
def test_malformed_policies_are_refused(doc: dict[str, object], message: str) -> None:
    with pytest.raises(Exception) as info:
        Policy.from_json(doc)
    assert message in str(info.value)


def test_policy_file_keys_resolve_relative_to_the_file(
    with_component: Sealed, tmp_path: Path
) -> None:
    (tmp_path / "k.pub").write_text(with_component.trainer_key.public.to_pem())
    (tmp_path / "s.vkey").write_text(with_component.server_vkey + "\n")
    doc = {
        "policy": POLICY_FORMAT,
        "name": "files",
        "trust": {
            "trainer_keys": [{"file": "k.pub", "key_id": with_component.trainer_key.key_id}],
            "server_keys": [{"file": "s.vkey"}],
        },
    }
    (tmp_path / "p.json").write_text(json.dumps(doc))
    policy = Policy.load(tmp_path / "p.json")
    assert policy.trainer_keys[0].key_id == with_component.trainer_key.key_id
    bad = dict(doc, trust={"trainer_keys": [{"file": "k.pub", "key_id": "00"}]})
    with pytest.raises(FormatError, match="key_id does not match"):
        Policy.from_json(bad, base=tmp_path)


def test_declared_component_is_stated_in_the_permissive_verdict(with_component: Sealed) -> None:
    policy = policy_for(with_component, base="permissive", required_checks=REQUIRED)
    verdict = verify_bundle(with_component.bundle_path, policy=policy)
    assert verdict.outcome is Outcome.VERIFIED, verdict.summary
    share = verdict.result("components.policy").evidence["share"]  # type: ignore[union-attr]
    assert 0 < share < 0.9
    assert verdict.summary == (
        f"from scratch except declared components: encoder, {100 * share:.1f} % of parameters,"
        " Apache-2.0 (policy permissive)"
    )


def test_strict_policy_refuses_any_component(with_component: Sealed) -> None:
    verdict = verify_bundle(
        with_component.bundle_path, policy=policy_for(with_component, required_checks=REQUIRED)
    )
    assert verdict.result("components.policy").status is Status.FAIL  # type: ignore[union-attr]
    assert verdict.outcome is Outcome.NOT_FROM_SCRATCH and verdict.exit_code == 3


def test_component_over_the_share_limit_fails(with_component: Sealed) -> None:
    policy = policy_for(with_component, base="permissive", required_checks=REQUIRED)
    policy = replace(policy, components=replace(policy.components, max_share=0.05))
    verdict = verify_bundle(with_component.bundle_path, policy=policy)
    assert verdict.result("components.policy").status is Status.FAIL  # type: ignore[union-attr]
    assert "more than the policy's 5.0 %" in verdict.summary


def test_component_licence_not_on_the_allowlist_fails(with_component: Sealed) -> None:
    policy = policy_for(with_component, base="permissive", required_checks=REQUIRED)
    policy = replace(policy, components=replace(policy.components, licenses=("MIT",)))
    verdict = verify_bundle(with_component.bundle_path, policy=policy)
    assert "licence Apache-2.0" in verdict.summary


def test_component_declared_over_fewer_tensors_than_its_prefix_fails(tmp_path: Path) -> None:
    from tamper.honest import seal, train

    facts = train(tmp_path / "t", RunConfig(components=(ENCODER,)))
    start = facts.bodies("run.start")[0]
    comp = start["components"][0]
    doc = facts.blobs[comp["tensors"]]
    from attest.digest import ModelDigest

    d = ModelDigest.from_json(doc)
    part = ModelDigest.from_tensors(d.algorithm, d.tensors[:1])  # claims only one tensor
    comp["tensors"] = facts.blob(part.to_json())
    comp["digest"] = {"algorithm": part.algorithm, "root": part.hex}
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from attest.keys import TrainerKey

    sealed = seal(
        facts,
        tmp_path / "s",
        trainer_key=TrainerKey.generate(),
        server_key=ed25519.Ed25519PrivateKey.generate(),
    )
    policy = policy_for(sealed, base="permissive", required_checks=REQUIRED)
    verdict = verify_bundle(sealed.bundle_path, policy=policy)
    assert verdict.result("components.declared").status is Status.FAIL  # type: ignore[union-attr]


def _finetune(parent: Sealed, folder: Path, *, bundle_bytes: bytes | None = None) -> Sealed:
    data = bundle_bytes if bundle_bytes is not None else parent.bundle_path.read_bytes()
    end = parent.facts.bodies("run.end")[0]
    cfg = RunConfig(
        seed=5,
        init_state=parent.facts.final_state,
        parent={
            "run": parent.facts.run,
            "model": end["model"],
            "bundle": "sha256:" + hashlib.sha256(data).hexdigest(),
        },
    )
    return honest_run(
        folder, cfg, run="child-run", trainer_key=parent.trainer_key, server_key=parent.server_key
    )


def test_finetune_chains_to_a_verified_parent(with_component: Sealed, tmp_path: Path) -> None:
    parent = honest_run(
        tmp_path / "p",
        run="parent-run",
        trainer_key=with_component.trainer_key,
        server_key=with_component.server_key,
    )
    child = _finetune(parent, tmp_path / "c")
    policy = policy_for(child, base="permissive", required_checks=REQUIRED)
    verdict = verify_bundle(child.bundle_path, policy=policy, parent=parent.bundle_path)
    assert verdict.result("components.parent").status is Status.PASS, verdict.summary  # type: ignore[union-attr]
    assert verdict.summary.startswith("fine-tune of verified parent run parent-run")
    # Found through the policy's parent_bundles folder as well.
    policy = replace(
        policy, finetune=replace(policy.finetune, parent_bundles=(parent.bundle_path.parent,))
    )
    assert verify_bundle(child.bundle_path, policy=policy).ok
    # Strict does not count fine-tunes.
    strict = policy_for(child, required_checks=REQUIRED)
    verdict = verify_bundle(child.bundle_path, policy=strict, parent=parent.bundle_path)
    assert verdict.result("components.parent").status is Status.FAIL  # type: ignore[union-attr]


def test_finetune_of_a_tampered_parent_fails(tmp_path: Path) -> None:
    from tamper import attacks

    parent = honest_run(tmp_path / "p", run="parent-run")
    bad = attacks.delete_record(parent, tmp_path / "bad-parent.json")
    child = _finetune(parent, tmp_path / "c", bundle_bytes=bad.read_bytes())
    policy = policy_for(child, base="permissive", required_checks=REQUIRED)
    verdict = verify_bundle(child.bundle_path, policy=policy, parent=bad)
    result = verdict.result("components.parent")
    assert result is not None and result.status is Status.FAIL
    assert "does not verify" in result.why


def test_finetune_without_its_parent_bundle_could_not_check(tmp_path: Path) -> None:
    parent = honest_run(tmp_path / "p", run="parent-run")
    child = _finetune(parent, tmp_path / "c")
    policy = policy_for(child, base="permissive", required_checks=REQUIRED)
    verdict = verify_bundle(child.bundle_path, policy=policy)
    assert verdict.outcome is Outcome.COULD_NOT_CHECK
    assert "--parent" in verdict.summary
