"""The one error tree of attest.

Every failure attest raises on purpose is an :class:`AttestError`. The tree::

    AttestError
    ├── FormatError            input could not be parsed (names the field and the problem)
    ├── KeyError_              a key is missing, of the wrong kind, or unreadable
    ├── VerificationError      parsed fine, but a signature, proof or digest does not check out
    │   ├── SignatureError     a signature does not verify under the key given
    │   ├── ProofError         an inclusion or consistency proof does not verify
    │   └── DigestMismatchError  a digest differs from the one committed
    ├── ChainError             records out of order: seq gap, wrong ``prev``, wrong run
    └── ConfigurationError     a caller passed options that cannot work (names the argument)

Verification failures are never ``ValueError``: a caller that catches ``VerificationError``
catches every "this is not authentic" outcome and nothing else. Errors that compare two values
carry both as ``expected`` and ``got`` so reports can show the evidence.
"""

from __future__ import annotations

__all__ = [
    "AttestError",
    "ChainError",
    "ConfigurationError",
    "DigestMismatchError",
    "FormatError",
    "KeyError_",
    "ProofError",
    "SignatureError",
    "VerificationError",
]


class AttestError(Exception):
    """Root of every error attest raises on purpose."""

    def __init__(self, message: str, *, expected: object = None, got: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.expected = expected
        self.got = got

    def diagnostics(self) -> str:
        """A human explanation: the message, and the evidence when there is some."""
        lines = [self.message]
        if self.expected is not None or self.got is not None:
            lines.append(f"  expected: {self.expected}")
            lines.append(f"  got:      {self.got}")
        return "\n".join(lines)


class FormatError(AttestError):
    """Input that cannot be parsed. The message names the field (``bundle.records[3].seq``)."""


class KeyError_(AttestError):
    """A key that is missing, unreadable or of the wrong algorithm."""


class VerificationError(AttestError):
    """Well-formed input that is not authentic or not consistent."""


class SignatureError(VerificationError):
    """A signature that does not verify under the key it claims."""


class ProofError(VerificationError):
    """An inclusion or consistency proof that does not verify."""


class DigestMismatchError(VerificationError):
    """A digest that differs from the committed one (``expected`` vs ``got``)."""


class ChainError(VerificationError):
    """Records that do not continue the chain: wrong run, seq gap or ``prev`` mismatch."""


class ConfigurationError(AttestError):
    """Options that cannot work; the message names the argument and the fix."""
