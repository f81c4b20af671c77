"""attest: signed, checkable records of how a model was trained.

The core (this package) holds the formats every part speaks: canonical tensor digests
(:mod:`attest.digest`), signed hash-chained records (:mod:`attest.records`), RFC 6962 Merkle logs
(:mod:`attest.merkle`, :mod:`attest.proof`), C2SP signed checkpoints (:mod:`attest.note`), DSSE
(:mod:`attest.dsse`), the lineage statement (:mod:`attest.statement`) and the bundle
(:mod:`attest.bundle`). The Lightning callback, the log server and the verifier live in
``attest.callbacks``, ``attest.server`` and ``attest.verifier``; each imports only this core.
"""

from __future__ import annotations

from attest.errors import AttestError, FormatError, VerificationError

__all__ = ["AttestError", "FormatError", "VerificationError", "__version__"]

__version__ = "0.1.0"
