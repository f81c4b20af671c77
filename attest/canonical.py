"""Canonical JSON (RFC 8785, JSON Canonicalization Scheme) and the digests taken over it.

Everything attest hashes or signs as JSON is first canonicalised with RFC 8785, so two
implementations that agree on the value agree on the bytes. Floats must be finite (RFC 8785
§3.2.2.3 has no encoding for NaN or infinity): a loss of ``inf`` must be recorded as ``null``
with a reason, never silently altered.

Two paths produce the same bytes. The reference is the ``rfc8785`` package
(:func:`canonical_json_reference`). The fast path serialises with ``msgspec``'s JSON encoder
(keys sorted, no whitespace), which writes exactly the RFC 8785 bytes for the values it is
allowed to handle:

- strings: both escape ``"``, ``\\``, ``\\b \\f \\n \\r \\t`` by name and the other controls below
  U+0020 as ``\\u00xx`` (lowercase hex), and write everything else, U+2028/9 and DEL included,
  as raw UTF-8 (RFC 8785 §3.2.2.2; the tests compare every code point); a lone surrogate cannot
  be encoded as UTF-8 and goes to the reference, which refuses it;
- member order: msgspec sorts names by code point, RFC 8785 §3.2.3 by UTF-16 code unit; the two
  agree unless a name holds a character above U+FFFF, so text with such a character goes to the
  reference;
- numbers: integers print the same in the safe range ``|n| ≤ 2^53 − 1`` (outside it RFC 8785
  refuses them). msgspec writes a finite, non-integral float in the ECMAScript form RFC 8785
  §3.2.2.3 requires (the same shortest round-trip digits, the same exponent thresholds) except
  for ``1e-6 ≤ |x| < 1e-5``, where it picks an exponent that ECMAScript does not: the fast path
  writes those digits itself (learning rates of fine-tunes live there). An integral float in
  the safe range has the digits of the equal integer, so the fast path writes that integer;
  any other number goes to the reference.

Non-finite floats, other types and cycles go to the reference, which raises its error. The
fast path only ever *declines* (conservatively: a character above U+FFFF in a string value
declines too); it never answers differently: ``tests/test_canonical.py`` checks both paths byte
for byte on generated values. :func:`loads_canonical` runs the same test the other way round:
it parses a text and returns the value only when the text is certainly that value's RFC 8785
encoding (then it equals what :func:`strict_json_loads` reads).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import json
import math
import operator
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec
import rfc8785

from attest.errors import FormatError

__all__ = [
    "UNSURE",
    "canonical_json",
    "canonical_json_reference",
    "loads_canonical",
    "loads_canonical_many",
    "parse_sha256_digest",
    "sha256_digest",
    "strict_json_loads",
]

_PREFIX = "sha256:"
_SHA256_NAME = re.compile(r"sha256:[0-9a-f]{64}")

UNSURE: Final = object()
"""What :func:`loads_canonical` returns when it cannot vouch for a text (use the reference)."""

_SAFE_INT = 2**53 - 1
_ASTRAL = re.compile(rb"[\xf0-\xf4]")  # the lead byte of every UTF-8 character above U+FFFF
# Where an integer token of 16 or more digits may start inside a JSON text (a magnitude above
# 2^53 - 1 has at least 16); a match inside a string only sends that text to the reference.
_LONG_INTEGER = re.compile(rb"[-:,\[][0-9]{16}")
_LONG_INTEGER_FIRST = re.compile(rb"-?[0-9]{16}")  # a text that is one such integer
_SCALARS = frozenset({str, int, float, bool, type(None)})
_ENCODER = msgspec.json.Encoder(order="sorted")


def _es_float(value: float) -> bool:
    """Whether msgspec writes ``value`` as RFC 8785 does: finite, not integral, and outside
    ``[1e-6, 1e-5)`` in magnitude (NaN and infinities: False)."""
    return math.isfinite(value) and not value.is_integer() and not 1e-6 <= abs(value) < 1e-5


def _odd_floats(values: Sequence[float]) -> list[int]:
    """The positions of the floats :func:`_es_float` declines, found in C-level passes (a loss
    curve holds 10^5 floats): not finite, integral, or of magnitude in ``[1e-6, 1e-5)``."""
    magnitudes = list(map(abs, values))
    odd = map(
        operator.or_,
        map(
            operator.or_,
            map(operator.not_, map(math.isfinite, values)),
            map(float.is_integer, values),
        ),
        map(operator.and_, map((1e-6).__le__, magnitudes), map((1e-5).__gt__, magnitudes)),
    )
    return list(itertools.compress(itertools.count(), odd))


def _respelled(value: float) -> Any:
    """What the fast path writes for a float :func:`_es_float` declines, or :data:`UNSURE`:

    - an integral float in the safe range: the equal ``int`` (RFC 8785 writes the same digits);
    - ``1e-6 ≤ |x| < 1e-5``: the ECMAScript digits as raw JSON. ``repr`` writes such a value as
      ``D[.DDD]e-06`` and ECMAScript as ``0.00000DDDD`` (the same shortest round-trip digits).
    """
    if value.is_integer():
        return int(value) if abs(value) <= _SAFE_INT else UNSURE
    if not 1e-6 <= abs(value) < 1e-5:
        return UNSURE  # NaN or an infinity
    mantissa, _, exponent = repr(value).partition("e")
    if exponent != "-06":  # unreachable on IEEE 754 doubles; decline rather than guess
        return UNSURE
    sign, digits = ("-", mantissa[1:]) if mantissa[0] == "-" else ("", mantissa)
    return msgspec.Raw(f"{sign}0.00000{digits.replace('.', '')}".encode())


# msgspec's spelling of a float in [1e-6, 1e-5) as a JSON array element or member value.
_MSGSPEC_SMALL_FLOAT = re.compile(rb"(?<=[:,\[])(-?)([1-9])(?:\.([0-9]+))?e-6(?=[,\]}])")


def _encoded(value: Any) -> bytes:
    """msgspec's encoding of ``value`` with its floats in ``[1e-6, 1e-5)`` respelled: the bytes
    are RFC 8785's unless "e-6" stood inside a string, and then they encode another value, so
    they cannot equal a text that encodes ``value``."""
    encoded = _ENCODER.encode(value)
    if b"e-6" in encoded:
        encoded = _MSGSPEC_SMALL_FLOAT.sub(_es_small_float, encoded)
    return encoded


def _es_small_float(match: re.Match[bytes]) -> bytes:
    """The ECMAScript spelling of the float msgspec wrote as ``match`` (see :func:`_respelled`):
    the same digits after ``0.00000``."""
    sign, first, rest = match.groups()
    return sign + b"0.00000" + first + (rest or b"")


def _sorts_alike(data: bytes) -> bool:
    """Whether code point order is UTF-16 order for every name in ``data`` (no character above
    U+FFFF anywhere, checked on the whole UTF-8 text)."""
    return data.isascii() or _ASTRAL.search(data) is None


def _prepare(value: Any) -> Any:
    """``value``, or a copy with the same RFC 8785 bytes, that msgspec writes exactly as RFC
    8785 does; :data:`UNSURE` when that cannot be had (see the module docstring).

    Accepted: exact ``dict`` with ``str`` names, ``list``, ``tuple``, ``str``, ``bool``, ``None``,
    safe-range ``int`` and finite ``float``. A float that :func:`_es_float` declines is replaced
    by what :func:`_respelled` gives for it.
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
    if float in kinds:
        if len(kinds) == 1:
            odd = _odd_floats(items)
        else:
            odd = [i for i, v in enumerate(items) if type(v) is float and not _es_float(v)]
        if odd:
            out = list(items)
            for i in odd:
                out[i] = _respelled(items[i])
                if out[i] is UNSURE:
                    return UNSURE
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


def _token_float(token: str) -> float:
    """msgspec's hook for every float token :func:`loads_canonical` reads. Canonical text writes
    an integral value below 1e21 as an integer token; one at or above 1e21 (``1e+21``) and
    non-finite values are left to the reference (msgspec would spell them otherwise)."""
    value = float(token)
    if not math.isfinite(value) or value.is_integer():
        raise ValueError("a number the fast path does not read")
    return value


_DECODER = msgspec.json.Decoder(float_hook=_token_float)


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
            data = _ENCODER.encode(prepared)
            if _sorts_alike(data):
                return data
    except (TypeError, ValueError, RecursionError):
        pass  # a lone surrogate, a cycle …: the reference decides, with its error
    return canonical_json_reference(value)


def loads_canonical(data: bytes) -> Any:
    """The JSON value ``data`` encodes when ``data`` is certainly its RFC 8785 encoding, else
    :data:`UNSURE` (malformed, or not canonical: the reference then names the problem).

    The value equals what :func:`strict_json_loads` returns for the same bytes. Canonical text
    cannot hold a duplicate name, NaN or an out-of-range number, and any of those (or any other
    spelling) makes the re-encoding differ from ``data``. The common case costs one msgspec
    parse and one encoding; a text with an integer token of 16 or more digits, a float in
    ``[1e-6, 1e-5)`` or a name above U+FFFF is compared with :func:`canonical_json` instead.
    """
    try:
        value = _DECODER.decode(data)
        encoded = _encoded(value)
        if (encoded == data and not _needs_reference(data)) or canonical_json(value) == data:
            return value
    except (msgspec.DecodeError, ValueError, RecursionError, FormatError):
        pass
    return UNSURE


def loads_canonical_many(texts: Sequence[bytes], *, into: Any = Any) -> list[Any]:
    """``[loads_canonical(t) for t in texts]``, for many small texts (a log's records) at once.

    The texts are parsed as one JSON array, ``[t0,t1,...]``, in a single msgspec call, each
    element read as ``into`` (any type msgspec decodes; a Struct reads a record without an
    intermediate dict). A value is kept for ``texts[i]`` only when re-encoding it gives exactly
    ``texts[i]`` and no condition of :func:`_needs_reference` holds in it: then that text is one
    complete JSON value, the one :func:`loads_canonical` reads from it, however the commas fell.
    Every other text (and all of them, when the array does not read as one ``into`` per text) is
    answered by :func:`loads_canonical` alone, with its plain JSON value or :data:`UNSURE`.
    """
    joined = b"[" + b",".join(texts) + b"]"
    try:
        values = _array_decoder(into).decode(joined)
    except (msgspec.DecodeError, ValueError, RecursionError):
        values = None
    if values is None or len(values) != len(texts):
        return [loads_canonical(t) for t in texts]
    encoded = list(map(_ENCODER.encode, values))
    for i in _indices(map(bytes.__contains__, encoded, itertools.repeat(b"e-6"))):
        encoded[i] = _encoded(values[i])
    same = list(map(bytes.__eq__, encoded, texts))
    for i in _doubtful_texts(joined, texts):
        same[i] = False
    for i in _indices(map(operator.not_, same)):
        values[i] = loads_canonical(texts[i])
    return values


def _indices(flags: Iterable[bool]) -> list[int]:
    """The positions of the true flags."""
    return list(itertools.compress(itertools.count(), flags))


@functools.cache
def _array_decoder(element: Any) -> msgspec.json.Decoder[list[Any]]:
    """A reader of ``[element, ...]`` without :func:`_token_float` (a Python call per float):
    :func:`_doubtful_texts` finds the floats that hook would refuse."""
    return msgspec.json.Decoder(list[element])


# Byte classes for finding marks in a large text with bytes.find: a digit becomes "0", a
# character that may precede a number token "p", one that may end it "d", "e" stays, anything
# else becomes "x".
_TOKEN_CLASSES = bytes(
    ord("0")
    if b in b"0123456789"
    else ord("p")
    if b in b"-:,["
    else ord("d")
    if b in b"]}"
    else b
    if b == ord("e")
    else ord("x")
    for b in range(256)
)
_LONG_INTEGER_MARKS = b"p" + b"0" * 16
# msgspec's spelling of an integral float (which RFC 8785 writes as an integer): "<digits>.0",
# found in the text itself, or a positive exponent without a sign ("1e16", "1.5e300", at and
# above 1e16), found among the classes. Each pattern opens with a literal, which re scans for
# at bytes.find's speed; both scans cost less than a Python hook per float.
_INTEGRAL_FLOAT_TEXT = re.compile(rb"\.0[,\]}]")
_INTEGRAL_FLOAT_MARKS = re.compile(rb"e000?[pd]")


def _doubtful_texts(joined: bytes, texts: Sequence[bytes]) -> set[int]:
    """The indices of the texts in ``joined`` (``[t0,t1,...]``) where :func:`_needs_reference`
    may hold or msgspec's spelling of an integral float stands, found by scanning
    ``joined``. A text's first token follows ``[`` or ``,``, so the scans of the classified
    text see it; a match is charged to the texts at both its ends."""
    classes = joined.translate(_TOKEN_CLASSES)
    spans = [(at, at + len(_LONG_INTEGER_MARKS)) for at in _find_all(classes, _LONG_INTEGER_MARKS)]
    spans += [(at, at + 3) for at in _find_all(joined, b"e-6")]
    spans += [m.span() for m in _INTEGRAL_FLOAT_MARKS.finditer(classes)]
    spans += [m.span() for m in _INTEGRAL_FLOAT_TEXT.finditer(joined)]
    if not joined.isascii():
        spans += [m.span() for m in _ASTRAL.finditer(joined)]
    ends = list(itertools.accumulate(map((1).__add__, map(len, texts))))  # each text's comma
    found = {bisect.bisect_right(ends, at) for start, end in spans for at in (start, end - 1)}
    return found - {len(texts)}  # a mark ending on the closing "]" is charged to its start


def _find_all(text: bytes, sub: bytes) -> list[int]:
    found, at = [], text.find(sub)
    while at != -1:
        found.append(at)
        at = text.find(sub, at + 1)
    return found


def _needs_reference(data: bytes) -> bool:
    """Whether msgspec's spelling of a value may differ from RFC 8785's in ``data`` (so equal
    bytes do not prove canonical text): an integer token of 16 or more digits, msgspec's
    exponent form of a float in ``[1e-6, 1e-5)``, or a character above U+FFFF."""
    return (
        _LONG_INTEGER.search(data) is not None
        or _LONG_INTEGER_FIRST.match(data) is not None
        or b"e-6" in data
        or not _sorts_alike(data)
    )


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
