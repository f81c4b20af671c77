"""Canonical JSON (RFC 8785, JSON Canonicalization Scheme) and the digests taken over it.

Everything attest hashes or signs as JSON is first canonicalised with RFC 8785 (via the
``rfc8785`` package), so two implementations that agree on the value agree on the bytes. Floats
must be finite (RFC 8785 §3.2.2.3 has no encoding for NaN or infinity): a loss of ``inf`` must be
recorded as ``null`` with a reason, never silently altered.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import rfc8785

from attest.errors import FormatError

__all__ = ["canonical_json", "parse_sha256_digest", "sha256_digest", "strict_json_loads"]

_PREFIX = "sha256:"


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of ``value``; :class:`FormatError` for values JSON cannot hold."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise FormatError(f"value cannot be canonicalised as RFC 8785 JSON: {exc}") from None


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``: how attest names records and blobs."""
    return _PREFIX + hashlib.sha256(data).hexdigest()


def parse_sha256_digest(value: object, *, field: str) -> str:
    """Check that ``value`` is a ``sha256:<64 lowercase hex>`` string and return it."""
    if (
        not isinstance(value, str)
        or not value.startswith(_PREFIX)
        or len(value) != len(_PREFIX) + 64
        or any(c not in "0123456789abcdef" for c in value[len(_PREFIX) :])
    ):
        raise FormatError(
            f"{field} must be 'sha256:' followed by 64 lowercase hex digits",
            expected="sha256:<64 hex>",
            got=repr(value)[:80],
        )
    return value


def _reject_constant(name: str) -> Any:
    raise FormatError(f"JSON constant {name} is not allowed (RFC 8785 has no encoding for it)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise FormatError(f"number {text[:20]} is out of range (RFC 8785 has no encoding for it)")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise FormatError(f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def strict_json_loads(data: bytes | str, *, what: str) -> Any:
    """Parse JSON refusing duplicate keys and NaN/Infinity, naming ``what`` on failure."""
    try:
        return json.loads(
            data,
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except FormatError as exc:
        raise FormatError(f"{what}: {exc.message}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{what} is not valid JSON: {exc}") from None
