"""Shared fixtures. Markers that must not be skipped in CI are enforced here.

``ATTEST_REQUIRE_POSTGRES=1`` / ``ATTEST_REQUIRE_CHROMIUM=1`` (set by ``.ci/run``) turn the
corresponding skips into failures, so a CI machine that lost a service cannot pass silently.
"""

from __future__ import annotations

import os

import pytest

from attest.keys import TrainerKey


def require_or_skip(available: bool, *, what: str, env: str) -> None:
    """Skip with a reason when ``what`` is missing, or fail when ``env`` says it is required."""
    if available:
        return
    if os.environ.get(env) == "1":
        pytest.fail(f"{what} is required here ({env}=1) but not available")
    pytest.skip(f"{what} not available (set {env}=1 to make this a failure)")


@pytest.fixture(scope="session")
def trainer_key() -> TrainerKey:
    return TrainerKey.generate()
