"""RFC 8785: the fast serialiser and the canonical-text parser against the rfc8785 reference.

The fast paths (``canonical_json``, ``loads_canonical``) may decline and hand a value to the
reference, but must never give other bytes or another answer: these tests compare them with
``canonical_json_reference`` (the ``rfc8785`` package) on generated values, including every
shape that the fast path has to recognise as outside its reach.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from attest.canonical import (
    UNSURE,
    canonical_json,
    canonical_json_reference,
    loads_canonical,
    loads_canonical_many,
    strict_json_loads,
)
from attest.errors import FormatError

SAFE = 2**53 - 1

# Floats near every formatting boundary (exponent ranges of repr and ECMAScript, integral
# values, subnormals) plus arbitrary ones.
_EDGE_FLOATS = [
    0.0, -0.0, 1.0, -1.0, 0.1, 0.5, 1e-4, 1e-5, 1e-6, 1e-7, 9.999e-5, 1.5e-6, 1e15, 1e16, 1e17,
    1.5e16, 9007199254740991.0, 9007199254740992.0, 1e20, 1e21, 1e22, 123456789012345680000.0,
    5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.30000000000000004,
    1234567890123456.7, 333333333.3333333, 100.0, 1e300, math.nextafter(1e-4, 0),
    math.nextafter(1e-4, 1), 2.0**53 - 1, -(2.0**53 - 1), 2.0**53, -(2.0**53), 2.0,
]  # fmt: skip
floats = st.one_of(
    st.sampled_from(_EDGE_FLOATS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e-3, max_value=1e-3),
    st.integers(-(10**22), 10**22).map(float),
)
ints = st.one_of(
    st.integers(-SAFE, SAFE),
    st.integers(-(2**60), 2**60),
    st.sampled_from([SAFE, -SAFE, SAFE + 1, -SAFE - 1, 10**15, 10**16, 0]),
)
text = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(max_codepoint=0x7F)),
    st.sampled_from(["", "\u2028\u2029", "\x7f", "\x00\x1f\b\f\n\r\t\"\\/", "é€😀", "\ufffd",
                     "\ue000", "\U0001f600", "sha256:" + "1" * 64, "v1.0", "3e-5", "x.0]", ":3e-6,",
                     "[1.5e-6]", ",12345678901234567"]),
)  # fmt: skip
keys = st.one_of(text, st.sampled_from(["\ue000", "\U0001f600", "\uffff", "a", "A", "é"]))
scalars = st.one_of(st.none(), st.booleans(), ints, floats, text)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(keys, inner, max_size=5),
    ),
    max_leaves=30,
)


def _reference(value: Any) -> bytes | None:
    try:
        return canonical_json_reference(value)
    except FormatError:
        return None


def _fast(value: Any) -> bytes | None:
    try:
        return canonical_json(value)
    except FormatError:
        return None


@settings(max_examples=1500, deadline=None)
@given(values)
@example({"\ue000": 1, "\U0001f600": 2})  # code point order differs from UTF-16 order
@example([1e-7, 1e21, 100.0, -0.0, 1e16, 1.5e-5])
@example([SAFE + 1])
@example(["\ud800"])
@example({"loss": float("nan")})
def test_canonical_json_equals_the_reference(value: Any) -> None:
    assert _fast(value) == _reference(value)


@settings(max_examples=1500, deadline=None)
@given(values)
def test_loads_canonical_accepts_exactly_canonical_text(value: Any) -> None:
    canonical = _reference(value)
    if canonical is None:
        return
    got = loads_canonical(canonical)
    if got is not UNSURE:  # accepted: the same value the strict parser reads
        assert got == strict_json_loads(canonical, what="x")
        assert canonical_json_reference(got) == canonical
    # Any other encoding of the same value is never accepted.
    for other in (
        json.dumps(value, sort_keys=True).encode(),
        json.dumps(value, separators=(",", ":")).encode(),
        json.dumps(value, ensure_ascii=True, separators=(",", ":"), sort_keys=True).encode(),
    ):
        if other != canonical:
            assert loads_canonical(other) is UNSURE, other


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64) | values.map(lambda v: json.dumps(v).encode()))
@example(b'{"a":1.5e-6}')  # msgspec's own spellings, which RFC 8785 does not use
@example(b"[1e16]")
@example(b"[1e21]")
@example(b"[1.6185490451792715e178]")
@example(b"[1.0]")
@example(b"9007199254740993")
@example(b'{"a":[-9007199254740993]}')
def test_loads_canonical_never_vouches_for_non_canonical_bytes(data: bytes) -> None:
    got = loads_canonical(data)
    if got is UNSURE:
        return
    assert canonical_json_reference(strict_json_loads(data, what="x")) == data


_texts = st.one_of(
    values.map(_reference).filter(lambda t: t is not None),
    values.map(lambda v: json.dumps(v, separators=(",", ":")).encode()),
    st.binary(max_size=24),
    st.sampled_from([b"1,2", b"[3", b"4]", b"", b'{"a":[1', b"2]}", b'"x",', b"[1.5e-6]",
                     b"[0.0000015]", b'[":1.5e-6,"]', b"12345678901234567", b"[1.0]", b" [1]"]),
)  # fmt: skip


@settings(max_examples=800, deadline=None)
@given(st.lists(_texts, max_size=8))
@example([b"1,2", b"[3", b"4]"])  # three values when joined, none of them any text's own
@example([b'{"a":[1', b"2]}"])
@example([b"[0.0000015]", b'[":1.5e-6,"]', b'{"k":12345678901234567}'])
@example([b"[2.0]", b'{"a":1.5e300}', b"-0.0", b"1e16", b'{"a":[1.0]}'])  # integral floats
def test_loads_canonical_many_answers_as_loads_canonical(texts: list[bytes]) -> None:
    got = loads_canonical_many(texts)
    want = [loads_canonical(t) for t in texts]
    assert [g is UNSURE for g in got] == [w is UNSURE for w in want]
    assert repr([g for g in got if g is not UNSURE]) == repr([w for w in want if w is not UNSURE])


@settings(max_examples=3000, deadline=None)
@given(floats)
def test_loads_canonical_reads_every_float_spelled_by_rfc8785_and_no_other_spelling(
    x: float,
) -> None:
    canonical = canonical_json_reference([x])
    got = loads_canonical(canonical)
    if not x.is_integer():  # integral floats are integer tokens: read back as ints, or refused
        assert got == [x]
    for other in (
        msgspec.json.encode([x]),
        json.dumps([x]).encode(),
        repr([x]).replace(" ", "").encode(),
    ):
        if other != canonical:
            assert loads_canonical(other) is UNSURE, other


@pytest.mark.parametrize(
    "text",
    [
        b'{"a":1,"a":1}',  # a duplicate re-encodes shorter
        b'{"a":NaN}',
        b'{"a":1e400}',
        b'{"a":-0}',
        b'{"a":1.0}',
        b'{"a":1.5e-6}',  # msgspec's spelling; ECMAScript writes 0.0000015
        b'{"a":1E+21}',
        b'{"a":9007199254740992}',
        b'{"b":1,"a":2}',
        b' {"a":1}',
        b'{"a":"\\u00e9"}',
        b'{"a":"\\ud800"}',
        b'\xef\xbb\xbf{"a":1}',
        b'{"a":"\xed\xa0\x80"}',  # an encoded surrogate
        b'{"\xee\x80\x80":1,"\xf0\x9f\x98\x80":2}',  # sorted by code point, not UTF-16
    ],
)
def test_loads_canonical_declines(text: bytes) -> None:
    assert loads_canonical(text) is UNSURE


def test_loads_canonical_accepts_a_record_shape() -> None:
    doc = {"body": {"loss": [0.25, None], "n": 3, "s": "é\n"}, "seq": 7, "type": "t"}
    data = canonical_json_reference(doc)
    assert loads_canonical(data) == doc
    assert canonical_json(doc) == data


def test_every_bmp_character_is_written_as_rfc8785_writes_it() -> None:
    """The fast path's string escaping, checked on every code point it may write (characters
    above U+FFFF always go to the reference; lone surrogates cannot be encoded)."""
    bmp = "".join(chr(c) for c in range(0x10000) if not 0xD800 <= c < 0xE000)
    assert canonical_json([bmp]) == canonical_json_reference([bmp])
    assert loads_canonical(canonical_json_reference({"s": bmp})) == {"s": bmp}


def test_small_learning_rates_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Warm-up and fine-tuning learning rates (1e-7 … 1e-4) are common in train.steps records,
    including [1e-6, 1e-5), where the fast path writes the ECMAScript digits itself."""
    lrs = [3e-5, 1e-7, 2.5e-8, 5e-05, 0.0001, 1.5e-6, -9.999999999999999e-06, 1e-6, 2e-6]
    doc = {"lr": lrs, "n": 1}
    data = canonical_json_reference(doc)
    assert data == (
        b'{"lr":[0.00003,1e-7,2.5e-8,0.00005,0.0001,0.0000015,-0.000009999999999999999,'
        b'0.000001,0.000002],"n":1}'
    )

    def refuse(value: Any) -> bytes:
        raise AssertionError(f"reference used for {value!r}")

    monkeypatch.setattr("attest.canonical.rfc8785.dumps", refuse)
    assert canonical_json(doc) == data
    assert loads_canonical(data) == doc


def test_rfc8785_number_examples() -> None:
    # RFC 8785 Appendix B (a selection): IEEE 754 value -> ECMAScript text.
    cases = [
        (0.0, "0"), (-0.0, "0"), (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (9007199254740992.0, "9007199254740992"), (1e21, "1e+21"),
        (999999999999999900000.0, "999999999999999900000"), (1e23, "1e+23"),
        (0.000001, "0.000001"), (1e-7, "1e-7"), (295147905179352830000.0, "295147905179352830000"),
        (4.5, "4.5"), (2e-3, "0.002"), (0.000012345, "0.000012345"),
    ]  # fmt: skip
    for value, want in cases:
        assert canonical_json(value) == want.encode(), value
        assert canonical_json([value]) == f"[{want}]".encode()
    assert math.isclose(float(canonical_json(1.5e16)), 1.5e16)


def test_the_fast_path_serves_record_shaped_values(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(value: Any) -> bytes:
        raise AssertionError(f"reference used for {value!r}")

    monkeypatch.setattr("attest.canonical.rfc8785.dumps", refuse)
    doc = {
        "body": {"batch": ["sha256:" + "ab" * 32], "first_step": 3, "loss": [0.25, None],
                 "lr": [0.001, 0.5], "grad_norm": [12.5, 0.0001, 2.0, -0.0], "note": "é ☃ \u2028"},
        "prev": None, "run": "r", "seq": 9, "time": "2026-01-01T00:00:00.123456Z", "type": "t",
    }  # fmt: skip
    data = canonical_json(doc)
    assert b'"grad_norm":[12.5,0.0001,2,0]' in data
    assert loads_canonical(data) == doc
    assert canonical_json({"first_step": 0, "loss": [2.0, 1.5, None] * 1000}).startswith(
        b'{"first_step":0,"loss":[2,1.5,null,'
    )
    assert canonical_json({"epoch": 0, "ids": list(range(10_000))}).startswith(b'{"epoch":0,')


def test_json_nested_too_deeply_is_a_format_error_not_a_crash() -> None:
    """A bundle, request body or blob of 10^5 nested arrays must be refused with a message,
    not end the verifier or the server in a RecursionError."""
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(FormatError, match="blob nests JSON arrays or objects too deeply"):
        strict_json_loads(deep, what="blob")
    value: Any = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(FormatError, match="nests too deeply"):
        canonical_json(value)
    assert loads_canonical(deep) is UNSURE


def test_an_integer_of_thousands_of_digits_is_a_format_error() -> None:
    with pytest.raises(FormatError, match="record holds a number JSON cannot carry"):
        strict_json_loads(b'{"seq": ' + b"1" * 5000 + b"}", what="record")
