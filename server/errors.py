"""HTTP-facing errors of the log server and their status codes (DESIGN §5 "Bad input").

Every error response is one JSON object ``{"error": "<what is wrong and how to fix it>",
"expected": ..., "got": ...}`` (``expected``/``got`` only when there is evidence). The core's
:mod:`attest.errors` map as::

    FormatError, KeyError_, ConfigurationError   400  (malformed input)
    SignatureError, DigestMismatchError          400  (not signed by the run's trainer key)
    ChainError, ConflictError                    409  (seq/prev do not continue the log)
    NotFoundError                                404
    UnauthenticatedError / ForbiddenError        401 / 403
    PayloadTooLargeError                         413

Anything else is a server bug and is answered 500 without details.
"""

from __future__ import annotations

from typing import Any

from attest.errors import (
    AttestError,
    ChainError,
    ConfigurationError,
    FormatError,
    KeyError_,
    VerificationError,
)

__all__ = [
    "ConflictError",
    "ForbiddenError",
    "NotFoundError",
    "PayloadTooLargeError",
    "UnauthenticatedError",
    "error_body",
    "status_for",
]


class NotFoundError(AttestError):
    """The run (or leaf, tree head, blob) does not exist."""


class ConflictError(AttestError):
    """The request contradicts what is stored (another key for an existing run, say)."""


class UnauthenticatedError(AttestError):
    """No bearer token, or one the server does not know."""


class ForbiddenError(AttestError):
    """A valid token whose role or grants do not allow the request."""


class PayloadTooLargeError(AttestError):
    """A request body above the configured limit."""


_STATUS: tuple[tuple[type[AttestError], int], ...] = (
    (NotFoundError, 404),
    (ConflictError, 409),
    (ChainError, 409),
    (UnauthenticatedError, 401),
    (ForbiddenError, 403),
    (PayloadTooLargeError, 413),
    (FormatError, 400),
    (KeyError_, 400),
    (ConfigurationError, 400),
    (VerificationError, 400),
)


def status_for(exc: AttestError) -> int:
    """The HTTP status for an attest error (400 for any unlisted kind: it is about the input)."""
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 400


def error_body(exc: AttestError, **extra: Any) -> dict[str, Any]:
    """The JSON error object for ``exc``."""
    body: dict[str, Any] = {"error": exc.message}
    if exc.expected is not None:
        body["expected"] = _jsonable(exc.expected)
    if exc.got is not None:
        body["got"] = _jsonable(exc.got)
    body.update(extra)
    return body


def _jsonable(value: object) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
