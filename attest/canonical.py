"""Canonical JSON (RFC 8785, JSON Canonicalization Scheme) and the digests taken over it.

Everything attest hashes or signs as JSON is first canonicalised with RFC 8785, so two
implementations that agree on the value agree on the bytes. Floats must be finite (RFC 8785
§3.2.2.3 has no encoding for NaN or infinity): a loss of ``inf`` must be recorded as ``null``
with a reason, never silently altered.

Two paths produce the same bytes. The reference is the ``rfc8785`` package
(:func:`canonical_json_reference`). The fast path serialises with the standard library's C JSON
encoder (sorted keys, no whitespace, ``ensure_ascii=False``), which writes exactly the RFC 8785
bytes for the values it is allowed to handle:

- strings: both escape ``"``, ``\\``, ``\\b \\f \\n \\r \\t`` by name and the other controls below
  U+0020 as ``\\u00xx`` (lowercase hex), and write everything else, U+2028/9 and DEL included,
  as raw UTF-8 (RFC 8785 §3.2.2.2); a lone surrogate cannot be encoded as UTF-8 and goes to the
  reference, which refuses it;
- member order: Python sorts names by code point, RFC 8785 §3.2.3 by UTF-16 code unit; the two
  agree unless a name holds a character above U+FFFF, so text with such a character goes to the
  reference;
- numbers: integers print the same in the safe range ``|n| ≤ 2^53 − 1`` (outside it RFC 8785
  refuses them); a float's ``repr`` equals the ECMAScript form RFC 8785 §3.2.2.3 requires (the
  same shortest round-trip digits, no exponent) when ``1e-4 ≤ |x|`` and ``x`` is not integral
  (then ``|x| < 2^52 < 1e16``), and an integral float in the safe range has the digits of the
  equal integer, so the fast path writes that integer; any other number goes to the reference.

Non-finite floats, other types and cycles make the C encoder fail, and the reference then
raises its error. The fast path only ever *declines* (conservatively: a character above U+FFFF
in a string value declines too); it never answers differently: ``tests/test_canonical.py``
checks both paths byte for byte on generated values. :func:`loads_canonical` runs the same test
the other way round: it parses a text and returns the value only when the text is certainly
that value's RFC 8785 encoding (then it equals what :func:`strict_json_loads` reads).
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
import json.scanner
import math
import re
from collections.abc import Callable
from typing import Any, Final

import rfc8785

from attest.errors import FormatError

__all__ = [
    "UNSURE",
    "canonical_json",
    "canonical_json_reference",
    "loads_canonical",
    "parse_sha256_digest",
    "sha256_digest",
    "strict_json_loads",
]

_PREFIX = "sha256:"
_SHA256_NAME = re.compile(r"sha256:[0-9a-f]{64}")

UNSURE: Final = object()
"""What :func:`loads_canonical` returns when it cannot vouch for a text (use the reference)."""

_SAFE_INT = 2**53 - 1
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _no_default(value: Any) -> Any:
    raise TypeError(f"unsupported type: {type(value)}")


def _make_encoder() -> Callable[[Any], str]:
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: the pure-Python encoder writes the same text
        encoder = json.JSONEncoder(
            ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
        )
        return encoder.encode
    # markers=None: no cycle check (callers pass trees: parsed JSON or values _prepare
    # checked); one encoder object serves every call instead of one per call.
    c_encode = make(
        None, _no_default, json.encoder.encode_basestring, None, ":", ",", True, False, False
    )

    def encode(value: Any) -> str:
        return "".join(c_encode(value, 0))

    return encode


_encode = _make_encoder()


def _fixed_float(value: float) -> bool:
    """Whether ``repr(value)`` is the RFC 8785 form: not integral, no exponent (NaN: False)."""
    return abs(value) >= 1e-4 and not value.is_integer()


def _sorts_alike(text: str) -> bool:
    """Whether code point order is UTF-16 order for every name in ``text`` (no character above
    U+FFFF anywhere, checked on the whole text)."""
    return text.isascii() or _ASTRAL.search(text) is None


def _prepare(value: Any) -> Any:
    """``value``, or a copy with the same RFC 8785 bytes, that the C encoder writes exactly as
    RFC 8785 does; :data:`UNSURE` when that cannot be had (see the module docstring).

    Accepted: exact ``dict`` with ``str`` names, ``list``, ``tuple``, ``str``, ``bool``, ``None``,
    safe-range ``int`` and finite ``float``. An integral float of magnitude at most 2^53 − 1 is
    replaced by the equal ``int`` (RFC 8785 writes both as the same digits); other floats must be
    :func:`_fixed_float`.
    """
    kind = type(value)
    if kind is dict:
        if not set(map(type, value)) <= {str}:
            return UNSURE
        values = list(value.values())
        items = _prepare_items(values)
        if items is values:
            return value
        return UNSURE if items is UNSURE else dict(zip(value, items, strict=True))
    if kind is list or kind is tuple:
        return _prepare_items(value)
    if kind not in _SCALARS:
        return UNSURE
    items = _prepare_items((value,))
    return UNSURE if items is UNSURE else items[0]


def _prepare_items(items: Any) -> Any:
    kinds = set(map(type, items))
    if int in kinds:
        ints = items if len(kinds) == 1 else [v for v in items if type(v) is int]
        if min(ints) < -_SAFE_INT or max(ints) > _SAFE_INT:
            return UNSURE
    out = items
    if float in kinds and not all(_fixed_float(v) for v in items if type(v) is float):
        if not all(_fixed_float(v) or _small_integral(v) for v in items if type(v) is float):
            return UNSURE
        out = [int(v) if type(v) is float and _small_integral(v) else v for v in items]
    if kinds <= _SCALARS:
        return out
    for i, v in enumerate(out):
        if type(v) in _SCALARS:
            continue
        new = _prepare(v)
        if new is UNSURE:
            return UNSURE
        if new is not v:
            if out is items:
                out = list(items)
            out[i] = new
    return out


def _small_integral(value: float) -> bool:
    return value.is_integer() and abs(value) <= _SAFE_INT


def _parse_int(token: str) -> int:
    value = int(token)
    if not -_SAFE_INT <= value <= _SAFE_INT:
        raise ValueError("outside the safe integer range")
    return value


def _parse_float(token: str) -> float:
    value = float(token)
    if not _fixed_float(value):
        raise ValueError("a float the fast path does not format")
    return value


# The scanner itself, not JSONDecoder.decode: canonical text has no whitespace to skip, and the
# decode wrapper's two regex matches per call cost as much as parsing a small record.
# (typeshed types make_scanner's argument as a scanner; it takes the decoder holding the hooks.)
_make_scanner: Any = json.scanner.make_scanner
_scan: Callable[[str, int], tuple[Any, int]] = _make_scanner(
    json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float)
)


def canonical_json_reference(value: Any) -> bytes:
    """RFC 8785 bytes of ``value`` through the ``rfc8785`` package (the reference path)."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise FormatError(f"value cannot be canonicalised as RFC 8785 JSON: {exc}") from None
    except RecursionError:
        raise FormatError("value nests too deeply to canonicalise as RFC 8785 JSON") from None


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of ``value``; :class:`FormatError` for values JSON cannot hold."""
    try:
        prepared = _prepare(value)
        if prepared is not UNSURE:
            text = _encode(prepared)
            if _sorts_alike(text):
                return text.encode()
    except (TypeError, ValueError, RecursionError):
        pass  # NaN, a lone surrogate, a cycle …: the reference decides, with its error
    return canonical_json_reference(value)


def loads_canonical(data: bytes) -> Any:
    """The JSON value ``data`` encodes when ``data`` is certainly its RFC 8785 encoding, else
    :data:`UNSURE` (malformed, not canonical, or outside the fast path: ask the reference).

    The value equals what :func:`strict_json_loads` returns for the same bytes. Canonical text
    cannot hold a duplicate name, NaN or an out-of-range number, so the C parser (with number
    hooks that decline the numbers the fast path does not format) is enough: any of those makes
    the re-encoding differ from ``data`` (or fail) and the answer UNSURE.
    """
    try:
        text = data.decode()
        value, end = _scan(text, 0)
        if end == len(text) and _encode(value) == text and _sorts_alike(text):
            return value
    except (ValueError, RecursionError, StopIteration):
        pass
    return UNSURE


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``: how attest names records and blobs."""
    return _PREFIX + hashlib.sha256(data).hexdigest()


def parse_sha256_digest(value: object, *, field: str) -> str:
    """Check that ``value`` is a ``sha256:<64 lowercase hex>`` string and return it."""
    if not isinstance(value, str) or _SHA256_NAME.fullmatch(value) is None:
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
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise FormatError(f"duplicate JSON key {key!r}")
            seen.add(key)
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
    except RecursionError:
        raise FormatError(f"{what} nests JSON arrays or objects too deeply to read") from None
    except ValueError as exc:  # an integer of more digits than Python converts (4300)
        raise FormatError(f"{what} holds a number JSON cannot carry: {exc}") from None
