"""docs/formats.md must name everything the parsers accept, so the spec cannot drift from them.

Each record type of :data:`attest.records.BODY_FIELDS` needs its own ``#### `<type>``` section
that names every required body member; every media and payload type constant, the tensor-digest
algorithm prefix, every dtype tag and the leaf size limit must appear verbatim.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from attest.bundle import BUNDLE_MEDIA_TYPE
from attest.digest_format import DTYPE_SIZES, FORMAT
from attest.records import BODY_FIELDS, MAX_LEAF_BYTES, MAX_STEPS_PER_RECORD, RECORD_PAYLOAD_TYPE
from attest.statement import (
    INTOTO_PAYLOAD_TYPE,
    LINEAGE_PREDICATE_TYPE,
    SIGSTORE_BUNDLE_MEDIA_TYPE,
)

FORMATS = Path(__file__).resolve().parent.parent / "docs" / "formats.md"


@pytest.fixture(scope="module")
def text() -> str:
    return FORMATS.read_text(encoding="utf-8")


def _type_section(text: str, rtype: str) -> str:
    """The body of the ``#### `rtype``` section, up to the next heading."""
    match = re.search(rf"^#### `{re.escape(rtype)}`\n(.*?)(?=^#{{1,4}} |\Z)", text, re.M | re.S)
    assert match is not None, f"docs/formats.md has no '#### `{rtype}`' section"
    return match.group(1)


@pytest.mark.parametrize("rtype", sorted(BODY_FIELDS))
def test_every_record_type_has_a_section_naming_its_fields(text: str, rtype: str) -> None:
    section = _type_section(text, rtype)
    missing = [f for f in BODY_FIELDS[rtype] if f"`{f}`" not in section and f'"{f}"' not in section]
    assert not missing, f"section `{rtype}` does not name body members {missing}"


@pytest.mark.parametrize(
    "constant",
    [
        RECORD_PAYLOAD_TYPE,
        INTOTO_PAYLOAD_TYPE,
        LINEAGE_PREDICATE_TYPE,
        SIGSTORE_BUNDLE_MEDIA_TYPE,
        BUNDLE_MEDIA_TYPE,
        FORMAT + "/",
        str(MAX_LEAF_BYTES),
        str(MAX_STEPS_PER_RECORD),
    ],
)
def test_constants_appear_verbatim(text: str, constant: str) -> None:
    assert constant in text, f"docs/formats.md does not mention {constant!r}"


@pytest.mark.parametrize("dtype", sorted(DTYPE_SIZES))
def test_every_dtype_tag_is_listed_with_its_size(text: str, dtype: str) -> None:
    assert f"| `{dtype}` | {DTYPE_SIZES[dtype]} |" in text, f"dtype {dtype} missing from §2.3"


def test_section_finder_rejects_an_undocumented_type(text: str) -> None:
    with pytest.raises(AssertionError):
        _type_section(text, "weights.undocumented")
