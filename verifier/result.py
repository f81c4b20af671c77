"""Check results and the verdict vocabulary shared by every verifier step (docs/verifying.md).

Each check reports a :class:`CheckResult`: a stable id (``integrity.signatures``), a status, a
one-line *why*, the kind of evidence it rests on (:class:`Basis`) and the evidence itself
(expected vs got). The verdict is computed from the results and the policy, never stored by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "Basis",
    "CheckResult",
    "Reporter",
    "Status",
    "failed",
    "passed",
    "reporter",
    "skipped",
    "warned",
]


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIPPED = "skipped"


class Basis(StrEnum):
    """What a passing check establishes."""

    CRYPTOGRAPHIC = "cryptographic"  # signatures, Merkle proofs, digests: proven
    STATISTICAL = "statistical"  # distribution tests, loss levels: supported, not proven
    REPLAY = "replay"  # re-executed training segments: reproduced


@dataclass(frozen=True)
class CheckResult:
    id: str
    title: str
    status: Status
    why: str
    basis: Basis
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status.value,
            "why": self.why,
            "basis": self.basis.value,
            "evidence": dict(self.evidence),
        }


def passed(id: str, title: str, why: str, basis: Basis, **evidence: Any) -> CheckResult:
    """A passing result."""
    return CheckResult(id, title, Status.PASS, why, basis, evidence)


def failed(id: str, title: str, why: str, basis: Basis, **evidence: Any) -> CheckResult:
    """A failing result; ``evidence`` should carry ``expected`` and ``got``."""
    return CheckResult(id, title, Status.FAIL, why, basis, evidence)


def warned(id: str, title: str, why: str, basis: Basis, **evidence: Any) -> CheckResult:
    """A result that holds with a caveat the reader should see."""
    return CheckResult(id, title, Status.WARN, why, basis, evidence)


def skipped(id: str, title: str, why: str, basis: Basis, **evidence: Any) -> CheckResult:
    """A check that could not run; ``why`` says what it needed."""
    return CheckResult(id, title, Status.SKIPPED, why, basis, evidence)


class Reporter(Protocol):
    """``report(status, check_id, why, **evidence)``: see :func:`reporter`."""

    def __call__(self, status: str, cid: str, why: str, /, **evidence: Any) -> CheckResult: ...


def reporter(titles: Mapping[str, str], basis: Basis) -> Reporter:
    """The result maker of one check module: ``status`` is ``"pass"``, ``"fail"`` or ``"skip"``,
    the title is ``titles[cid]`` and every result rests on ``basis``."""
    makers = {"pass": passed, "fail": failed, "skip": skipped}

    def report(status: str, cid: str, why: str, /, **evidence: Any) -> CheckResult:
        return makers[status](cid, titles[cid], why, basis, **evidence)

    return report
