"""The verdict: one outcome and exit code, stated in the policy's terms (docs/verifying.md).

The verdict is computed from the check results and the policy, never written by hand:

==================  ====  ===================================================================
outcome             exit  when
==================  ====  ===================================================================
``verified``         0    no check failed and every check the policy requires ran
``tampered``         1    an ``integrity.*`` or ``chain.*`` check failed: the bundle, or the
                          model file given, is not what the trainer signed and the log sealed
``could-not-check``  2    a required check was skipped or missing (no trusted key, torch not
                          installed, no data …); also used by the CLI for usage errors
``not-from-scratch`` 3    the records are authentic but an origin check failed (``scratch.*``,
                          ``replay.*``, ``components.*``) under the policy
==================  ====  ===================================================================

With ``fail_on_warn`` a warning counts as a failure of its family. The verdict keeps three
lists apart — what is **proven** cryptographically, what is **supported** statistically or by
replay, and what was **not checked** — and says what no weight check can see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from attest.verifier.policy import Policy
from attest.verifier.result import Basis, CheckResult, Status

__all__ = ["LIMITS", "OPTIONAL_INPUT", "Outcome", "Verdict", "judge"]


class Outcome(StrEnum):
    VERIFIED = "verified"
    TAMPERED = "tampered"
    COULD_NOT_CHECK = "could-not-check"
    NOT_FROM_SCRATCH = "not-from-scratch"

    @property
    def exit_code(self) -> int:
        return {"verified": 0, "tampered": 1, "could-not-check": 2, "not-from-scratch": 3}[
            self.value
        ]


LIMITS = (
    "Distillation is invisible to weight checks: a model trained from scratch on another model's "
    "outputs (soft labels, synthetic data) passes every check here. The data manifest names the "
    "data; it cannot say where labels came from.",
    "Signatures prove what the trainer's key signed and when the log sealed it, not that the "
    "key holder ran the training honestly; replay and the statistical checks are what test that.",
    "Statistical checks (init randomness, step-0 loss, update bounds) bound error rates at the "
    "policy's alpha; they support, they do not prove.",
    "Replay re-executes only the segments it ran; other steps are covered by the checkpoint "
    "chain and the update bounds, not by re-execution.",
    "Without --data, or when the manifest names its data by fingerprint alone, the committed "
    "batches are checked as sample ids only: the verifier cannot open the declared files to see "
    "what the samples held.",
)

_TAMPER_FAMILIES = ("integrity", "chain")
OPTIONAL_INPUT = frozenset({"chain.model", "chain.data_files", "integrity.earlier_checkpoints"})
"""Checks that need an input the verifier may not have (the model file, the data files, earlier
tree heads): skipping one makes the verdict "could not check" only when the policy names the
check itself, not just its family (:func:`attest.verifier.verify_bundle` names
``integrity.earlier_checkpoints`` when earlier heads are given). A failure always counts."""


@dataclass(frozen=True)
class Verdict:
    """The outcome of one verification, with the results it rests on."""

    outcome: Outcome
    summary: str
    run: str
    policy: str
    policy_source: str
    results: tuple[CheckResult, ...]
    proven: tuple[str, ...]
    supported: tuple[str, ...]
    not_checked: tuple[str, ...]
    limits: tuple[str, ...] = LIMITS
    facts: Mapping[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return self.outcome.exit_code

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.VERIFIED

    def result(self, check_id: str) -> CheckResult | None:
        return next((r for r in self.results if r.id == check_id), None)

    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status is Status.FAIL]

    def to_json(self) -> dict[str, Any]:
        """The stable ``--json`` document (docs/verifying.md, "JSON output")."""
        return {
            "format": "attest-verdict/v1",
            "outcome": self.outcome.value,
            "exit_code": self.exit_code,
            "summary": self.summary,
            "run": self.run,
            "policy": {"name": self.policy, "source": self.policy_source},
            "proven": list(self.proven),
            "supported": list(self.supported),
            "not_checked": list(self.not_checked),
            "limits": list(self.limits),
            "facts": dict(self.facts),
            "checks": [r.to_json() for r in self.results],
        }


def _family(check_id: str) -> str:
    return check_id.split(".", 1)[0]


def _counts_as_failure(r: CheckResult, policy: Policy) -> bool:
    return r.status is Status.FAIL or (policy.fail_on_warn and r.status is Status.WARN)


def judge(
    results: Sequence[CheckResult],
    policy: Policy,
    *,
    run: str,
    facts: Mapping[str, Any] | None = None,
    note: str | None = None,
) -> Verdict:
    """Turn check results into the verdict under ``policy``.

    ``facts`` carries what the summary states (components and their share, the parent run);
    ``note`` a caveat prefixed to the summary (keys taken from the bundle, for instance).
    """
    facts = dict(facts or {})
    failing = [r for r in results if _counts_as_failure(r, policy)]
    tampered = [r for r in failing if _family(r.id) in _TAMPER_FAMILIES]
    origin = [r for r in failing if _family(r.id) not in _TAMPER_FAMILIES]
    ran = {r.id for r in results if r.status is not Status.SKIPPED}
    missing = [
        req
        for req in policy.required_checks
        if not any(cid == req or cid.startswith(req + ".") for cid in ran)
    ]
    skipped_required = [
        r
        for r in results
        if r.status is Status.SKIPPED
        and policy.requires(r.id)
        and (r.id not in OPTIONAL_INPUT or r.id in policy.required_checks)
    ]
    if tampered:
        outcome = Outcome.TAMPERED
        first = tampered[0]
        summary = f"tampered — {first.id}: {first.why}"
    elif origin:
        outcome = Outcome.NOT_FROM_SCRATCH
        first = origin[0]
        summary = f"not from scratch under policy {policy.name} — {first.id}: {first.why}"
    elif missing or skipped_required:
        outcome = Outcome.COULD_NOT_CHECK
        names = sorted({r.id for r in skipped_required} | set(missing))
        reason = skipped_required[0].why if skipped_required else "no such check ran"
        summary = (
            f"could not check under policy {policy.name}: required {', '.join(names)} did not"
            f" run ({reason})"
        )
    else:
        outcome = Outcome.VERIFIED
        summary = _verified_summary(policy, facts)
    if note:
        summary = f"{note} — {summary}"
    proven = tuple(
        f"{r.title}: {r.why}"
        for r in results
        if r.status is Status.PASS and r.basis is Basis.CRYPTOGRAPHIC
    )
    supported = tuple(
        f"{r.title} ({r.basis.value}): {r.why}"
        for r in results
        if r.status in (Status.PASS, Status.WARN) and r.basis is not Basis.CRYPTOGRAPHIC
    )
    not_checked = tuple(f"{r.id}: {r.why}" for r in results if r.status is Status.SKIPPED)
    return Verdict(
        outcome=outcome,
        summary=summary,
        run=run,
        policy=policy.name,
        policy_source=policy.source,
        results=tuple(results),
        proven=proven,
        supported=supported,
        not_checked=not_checked,
        facts=facts,
    )


def _verified_summary(policy: Policy, facts: Mapping[str, Any]) -> str:
    parts: list[str] = []
    comps = facts.get("components") or []
    parent = facts.get("parent")
    if parent:
        parts.append(
            f"fine-tune of verified parent run {parent.get('run')} (root {str(parent.get('root'))[:16]}…)"
        )
    if comps:
        names = ", ".join(str(c["name"]) for c in comps)
        share = sum(float(c.get("share", 0.0)) for c in comps)
        licences = ", ".join(sorted({str(c.get("license")) for c in comps}))
        parts.append(
            f"from scratch except declared components: {names}, {100 * share:.1f} % of"
            f" parameters, {licences}"
        )
    if not parts:
        parts.append("from scratch")
    return f"{'; '.join(parts)} (policy {policy.name})"
