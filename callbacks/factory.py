"""Opt-in attestation without code changes: the ``lightning.pytorch.callbacks_factory`` entry point
(REFERENCES "Lightning 2.6"; declared in pyproject.toml).

Lightning calls :func:`callbacks_from_environment` for every ``Trainer``. It returns no callback
unless ``ATTEST_CALLBACK=1``; then it builds a :class:`LineageCallback` from::

    ATTEST_KEY               trainer key file (required)
    ATTEST_DESTINATION       folder, file:// or http(s):// URL (required)
    ATTEST_TOKEN             bearer token for an http(s) destination
    ATTEST_RUN               run id (default: generated)
    ATTEST_CHECKPOINT_EVERY  steps between checkpoint digests (default 50)
    ATTEST_STATE_DIR         where to keep state files for replay (default: none)
    ATTEST_SPOOL_DIR         spool folder base (default ~/.cache/attest/spool)
    ATTEST_EXPORT_BUNDLE     write the run's bundle here at the end

A bad setting raises :class:`~attest.errors.ConfigurationError` naming the variable, so a job
that asked to be attested does not silently run unattested.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from attest.errors import ConfigurationError

__all__ = ["callbacks_from_environment"]


def callbacks_from_environment(environ: Mapping[str, str] | None = None) -> list[object]:
    env = os.environ if environ is None else environ
    if env.get("ATTEST_CALLBACK", "").strip().lower() not in ("1", "true", "yes", "on"):
        return []
    from .lightning import LineageCallback

    for name in ("ATTEST_KEY", "ATTEST_DESTINATION"):
        if not env.get(name):
            raise ConfigurationError(f"ATTEST_CALLBACK=1 needs {name} to be set")
    every = env.get("ATTEST_CHECKPOINT_EVERY", "50")
    try:
        checkpoint_every = int(every)
    except ValueError:
        raise ConfigurationError("ATTEST_CHECKPOINT_EVERY must be an integer", got=every) from None
    try:
        callback = LineageCallback(
            key=env["ATTEST_KEY"],
            destination=env["ATTEST_DESTINATION"],
            token=env.get("ATTEST_TOKEN") or None,
            run=env.get("ATTEST_RUN") or None,
            checkpoint_every=checkpoint_every,
            state_dir=env.get("ATTEST_STATE_DIR") or None,
            spool_dir=env.get("ATTEST_SPOOL_DIR") or None,
            export_bundle=env.get("ATTEST_EXPORT_BUNDLE") or None,
        )
    except ConfigurationError as exc:
        raise ConfigurationError(f"ATTEST_* settings: {exc.message}", got=exc.got) from None
    return [callback]
