"""C2SP signed notes, checkpoints and timestamped cosignatures.

Known answers come from the C2SP specifications (github.com/C2SP/C2SP): the verifier key and
example note of signed-note.md §Verifier keys/Example, the checkpoint of tlog-checkpoint.md, and
the cosigned checkpoint and signed-message example of tlog-cosignature.md. Attacks are named by
what they do and assert the error that stops them.
"""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from attest.errors import (
    AttestError,
    ConfigurationError,
    FormatError,
    SignatureError,
    VerificationError,
)
from attest.note import (
    MAX_SIGNATURES,
    SIG_TYPE_COSIGNATURE_ED25519,
    SIG_TYPE_ED25519,
    Checkpoint,
    Note,
    NoteSignature,
    NoteSigner,
    NoteVerifier,
    cosignature_message,
    key_id,
    open_checkpoint,
    sign_checkpoint,
    sign_note,
    verify_note,
)

# c2sp.org/signed-note, "Verifier keys" / "Example".
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n"
    "\n"
    "— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKu"
    "wHjG1Yu72IneyaQM=\n"
)
# c2sp.org/tlog-cosignature, the example checkpoint with a log signature and a cosignature.
SPEC_COSIGNED = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2"
    "q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2"
    "oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)
# c2sp.org/tlog-cosignature, "Ed25519 signed message" example.
SPEC_COSIGNED_MESSAGE = (
    b"cosignature/v1\n"
    b"time 1679315147\n"
    b"example.com/behind-the-sofa\n"
    b"20852163\n"
    b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)

SEED = bytes(range(32))
ORIGIN = "log.example.com/run/7"


@pytest.fixture(scope="module")
def signer() -> NoteSigner:
    return NoteSigner("log.example.com", Ed25519PrivateKey.from_private_bytes(SEED))


@pytest.fixture(scope="module")
def checkpoint() -> Checkpoint:
    return Checkpoint(origin=ORIGIN, size=12345, root=bytes(range(100, 132)))


@pytest.fixture(scope="module")
def signed(signer: NoteSigner, checkpoint: Checkpoint) -> str:
    return sign_checkpoint(checkpoint, signer, timestamp=1_700_000_000)


# --- spec known answers ----------------------------------------------------------------------


def test_spec_example_note_verifies_under_spec_vkey() -> None:
    verifier = NoteVerifier.from_vkey(SPEC_VKEY)
    assert verifier.key_id.hex() == "530d903a"
    assert verifier.to_vkey() == SPEC_VKEY
    note = Note.from_text(SPEC_NOTE)
    assert note.text == "This is an example message.\n"
    (sig,) = verify_note(note, [verifier])
    assert sig.name == "example.com/foo"
    assert note.to_text() == SPEC_NOTE


def test_spec_example_note_with_altered_text_is_rejected() -> None:
    verifier = NoteVerifier.from_vkey(SPEC_VKEY)
    forged = Note.from_text(SPEC_NOTE.replace("an example", "a forged"))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_note(forged, [verifier])


def test_spec_cosigned_checkpoint_parses() -> None:
    note = Note.from_text(SPEC_COSIGNED)
    cp = Checkpoint.from_body(note.text)
    assert (cp.origin, cp.size) == ("example.com/behind-the-sofa", 20852163)
    assert cp.to_body() == note.text
    log_sig, witness_sig = note.signatures
    assert len(log_sig.signature) == 64
    # type 0x04 payload: uint64 big-endian timestamp, then the 64-byte Ed25519 signature
    assert witness_sig.key_id.hex() == "8d66cf3f"
    assert len(witness_sig.signature) == 8 + 64
    (timestamp,) = struct.unpack(">Q", witness_sig.signature[:8])
    assert cosignature_message(note.text, timestamp=timestamp) == SPEC_COSIGNED_MESSAGE
    assert note.to_text() == SPEC_COSIGNED


def test_key_id_is_sha256_of_name_type_and_key(signer: NoteSigner) -> None:
    import hashlib

    raw = base64.b64decode(signer.verifier().to_vkey().split("+", 2)[2])[1:]
    expected = hashlib.sha256(b"log.example.com\n\x01" + raw).digest()[:4]
    assert signer.key_id == expected == key_id("log.example.com", SIG_TYPE_ED25519, raw)
    assert signer.verifier().cosignature_key_id == key_id(
        "log.example.com", SIG_TYPE_COSIGNATURE_ED25519, raw
    )
    assert signer.verifier().cosignature_key_id != signer.key_id


# --- checkpoints -----------------------------------------------------------------------------


def test_checkpoint_round_trip(signer: NoteSigner, checkpoint: Checkpoint, signed: str) -> None:
    opened = open_checkpoint(signed, signer.verifier(), origin=ORIGIN)
    assert opened.checkpoint == checkpoint
    assert opened.timestamp == 1_700_000_000
    assert opened.note_text == signed
    lines = signed.splitlines()
    assert lines[:4] == [ORIGIN, "12345", base64.b64encode(checkpoint.root).decode(), ""]
    assert all(line.startswith("— log.example.com ") for line in lines[4:]) and len(lines) == 6


def test_cosignature_is_over_the_spec_message(signer: NoteSigner, signed: str) -> None:
    note = Note.from_text(signed)
    cosig = note.signatures[1]
    assert cosig.key_id == signer.verifier().cosignature_key_id
    timestamp = struct.unpack(">Q", cosig.signature[:8])[0]
    message = b"cosignature/v1\ntime 1700000000\n" + note.text.encode()
    signer.verifier().public_key.verify(cosig.signature[8:], message)  # raises if wrong
    assert timestamp == 1_700_000_000


def test_checkpoint_body_is_exactly_three_lines(checkpoint: Checkpoint) -> None:
    root_b64 = base64.b64encode(checkpoint.root).decode()
    assert checkpoint.to_body() == f"{ORIGIN}\n12345\n{root_b64}\n"
    with_ext = Checkpoint(ORIGIN, 1, bytes(32), extensions=("x ext",))
    assert Checkpoint.from_body(with_ext.to_body()) == with_ext


def test_empty_tree_checkpoint(signer: NoteSigner) -> None:
    import hashlib

    cp = Checkpoint(ORIGIN, 0, hashlib.sha256(b"").digest())
    assert Checkpoint.from_body(cp.to_body()).size == 0
    assert (
        open_checkpoint(sign_checkpoint(cp, signer, timestamp=0), signer.verifier()).timestamp == 0
    )


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("leading-zero-size", "o\n05\n{root}\n", "leading zeros"),
        ("signed-size", "o\n+5\n{root}\n", "decimal"),
        ("spaced-size", "o\n 5\n{root}\n", "decimal"),
        ("non-ascii-digit-size", "o\n\u0665\n{root}\n", "decimal"),
        ("size-over-uint64", f"o\n{1 << 64}\n{{root}}\n", "2\\^64-1"),
        ("empty-origin", "\n5\n{root}\n", "origin"),
        ("missing-root", "o\n5\n", "origin, size and root"),
        ("no-final-newline", "o\n5\n{root}", "end with a newline"),
        ("short-root", "o\n5\n" + base64.b64encode(bytes(31)).decode() + "\n", "32 bytes"),
        ("bad-base64-root", "o\n5\n!!!!\n", "not valid base64"),
        ("non-canonical-root", "o\n5\n{root_nc}\n", "canonical"),
        ("empty-extension-line", "o\n5\n{root}\n\n", "extension line 1 is empty"),
    ],
)
def test_checkpoint_body_rejects(name: str, body: str, message: str) -> None:
    root = base64.b64encode(bytes(32)).decode()
    root_nc = root[:-2] + "B="  # non-zero padding bits: decodes, but is not canonical
    with pytest.raises(FormatError, match=message):
        Checkpoint.from_body(body.format(root=root, root_nc=root_nc))


def test_open_checkpoint_wrong_origin(signer: NoteSigner, signed: str) -> None:
    with pytest.raises(VerificationError, match="another log") as info:
        open_checkpoint(signed, signer.verifier(), origin="log.example.com/run/8")
    assert info.value.expected == "log.example.com/run/8"


def test_open_checkpoint_needs_log_signature(signer: NoteSigner, signed: str) -> None:
    cosig_only = Note.from_text(signed)
    stripped = Note(cosig_only.text, cosig_only.signatures[1:]).to_text()
    with pytest.raises(SignatureError, match="no log signature"):
        open_checkpoint(stripped, signer.verifier())


def test_stripped_cosignature_is_refused_unless_allowed(signer: NoteSigner, signed: str) -> None:
    note = Note.from_text(signed)
    stripped = Note(note.text, note.signatures[:1]).to_text()
    with pytest.raises(SignatureError, match="no timestamped cosignature"):
        open_checkpoint(stripped, signer.verifier())
    assert open_checkpoint(stripped, signer.verifier(), require_timestamp=False).timestamp is None


def test_backdated_cosignature_is_rejected(signer: NoteSigner, signed: str) -> None:
    note = Note.from_text(signed)
    cosig = note.signatures[1]
    backdated = struct.pack(">Q", 1_600_000_000) + cosig.signature[8:]
    forged = Note(
        note.text, (note.signatures[0], NoteSignature(cosig.name, cosig.key_id, backdated))
    )
    with pytest.raises(SignatureError, match="cosignature"):
        open_checkpoint(forged.to_text(), signer.verifier())


def test_signature_types_cannot_be_swapped(signer: NoteSigner, signed: str) -> None:
    note = Note.from_text(signed)
    log_sig, cosig = note.signatures
    v = signer.verifier()
    relabel_log = NoteSignature(log_sig.name, v.cosignature_key_id, log_sig.signature)
    with pytest.raises(FormatError, match="wrong length"):
        open_checkpoint(Note(note.text, (relabel_log,)).to_text(), v)
    relabel_cosig = NoteSignature(cosig.name, v.key_id, cosig.signature[8:])
    with pytest.raises(SignatureError, match="does not verify"):
        open_checkpoint(Note(note.text, (relabel_cosig, cosig)).to_text(), v)


def test_cosignature_cannot_be_relabelled_as_a_note_signature(signer: NoteSigner) -> None:
    # The log key signs both types: a 0x04 signature is an Ed25519 signature over
    # "cosignature/v1\ntime T\n" + body. Presented as a 0x01 signature over that very text it
    # would verify, so such text is never signed or accepted as an ordinary note.
    body = Checkpoint(ORIGIN, 3, bytes(32)).to_body()
    cosig = signer.cosign(body, timestamp=42)
    text = cosignature_message(body, timestamp=42).decode()
    relabelled = NoteSignature(signer.name, signer.key_id, cosig.signature[8:])
    signer.verifier().public_key.verify(relabelled.signature, text.encode())  # the raw sig holds
    with pytest.raises(FormatError, match="reserved for cosignatures"):
        verify_note(Note(text, (relabelled,)), [signer.verifier()])
    with pytest.raises(FormatError, match="reserved for cosignatures"):
        sign_note(text, [signer])


def test_cosignature_timestamp_above_2_63_is_refused(signer: NoteSigner) -> None:
    with pytest.raises(ConfigurationError):
        signer.cosign("o\n1\n" + base64.b64encode(bytes(32)).decode() + "\n", timestamp=1 << 63)


# --- verification rules ----------------------------------------------------------------------


def test_unknown_keys_are_ignored(signer: NoteSigner, signed: str) -> None:
    other = NoteSigner("witness.example.com", Ed25519PrivateKey.from_private_bytes(b"\x07" * 32))
    note = Note.from_text(signed)
    extra = other.cosign(note.text, timestamp=5)
    opened = open_checkpoint(
        Note(note.text, (*note.signatures, extra)).to_text(), signer.verifier()
    )
    assert opened.timestamp == 1_700_000_000


def test_same_name_other_key_is_ignored_not_trusted(
    signer: NoteSigner, checkpoint: Checkpoint
) -> None:
    impostor = NoteSigner(signer.name, Ed25519PrivateKey.from_private_bytes(b"\x09" * 32))
    forged = sign_checkpoint(checkpoint, impostor, timestamp=1)
    with pytest.raises(SignatureError, match="no log signature"):
        open_checkpoint(forged, signer.verifier())


def test_known_key_bad_signature_rejects_the_note(signer: NoteSigner, signed: str) -> None:
    note = Note.from_text(signed)
    log_sig = note.signatures[0]
    bad = NoteSignature(log_sig.name, log_sig.key_id, bytes(64))
    with pytest.raises(SignatureError, match="does not verify"):
        open_checkpoint(Note(note.text, (bad, note.signatures[1])).to_text(), signer.verifier())
    # a bad line next to a good one by the same key still rejects the note
    with pytest.raises(SignatureError, match="does not verify"):
        open_checkpoint(Note(note.text, (*note.signatures, bad)).to_text(), signer.verifier())


def test_no_trusted_signature_is_rejected() -> None:
    a = NoteSigner("a.example", Ed25519PrivateKey.from_private_bytes(b"\x01" * 32))
    b = NoteSigner("b.example", Ed25519PrivateKey.from_private_bytes(b"\x02" * 32))
    note = sign_note("hello\n", [a])
    with pytest.raises(SignatureError, match="no signature by a trusted key"):
        verify_note(note, [b.verifier()])
    assert verify_note(sign_note("hello\n", [a, b]), [b.verifier()])[0].name == "b.example"


def test_vkey_and_skey_round_trip(signer: NoteSigner) -> None:
    vkey = signer.verifier().to_vkey()
    assert NoteVerifier.from_vkey(vkey).key_id == signer.key_id
    restored = NoteSigner.from_skey(signer.to_skey())
    assert restored.verifier().to_vkey() == vkey


@pytest.mark.parametrize(
    ("vkey", "message"),
    [
        ("example.com/foo+530d903a", "<name>"),
        ("example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "does not match"),
        ("example.com/foo+530D903A+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "lowercase hex"),
        ("example.com/bar+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "does not match"),
        ("example.com/foo+530d903a+AukyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "type 0x01"),
        ("example.com/foo+530d903a+Aeky!Rrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "base64"),
        ("+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "non-empty"),
    ],
)
def test_bad_vkeys(vkey: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        NoteVerifier.from_vkey(vkey)


# --- malformed notes -------------------------------------------------------------------------


def _sig_line(name: str = "a.example") -> str:
    return f"— {name} {base64.b64encode(bytes(68)).decode()}\n"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing-blank-line", "hello\n" + _sig_line(), "no blank line"),
        ("truncated-final-newline", "hello\n\n" + _sig_line()[:-1], "end with a newline"),
        ("truncated-mid-signature", "hello\n\n" + _sig_line()[:30] + "\n", "base64"),
        ("no-signature-lines", "hello\n\n", "no signature lines"),
        ("hyphen-not-em-dash", "hello\n\n- a.example " + "A" * 92 + "\n", "em dash"),
        ("en-dash", "hello\n\n– a.example " + "A" * 92 + "\n", "em dash"),
        ("no-space-after-dash", "hello\n\n—a.example AAAAAAAA\n", "em dash"),
        ("no-signature-field", "hello\n\n— a.example\n", "no space"),
        ("bad-base64", "hello\n\n— a.example AAAA*AAA\n", "not valid base64"),
        ("non-canonical-base64", "hello\n\n— a.example AAAAAAB=\n", "canonical"),
        ("signature-too-short", "hello\n\n— a.example AAAAAA==\n", "shorter"),
        ("plus-in-key-name", "hello\n\n— a+b AAAAAAAA\n", "'\\+'"),
        ("empty-key-name", "hello\n\n—  AAAAAAAA\n", "non-empty"),
        ("control-character", "hel\x07lo\n\n" + _sig_line(), "control character"),
        ("carriage-return", "hello\r\n\n" + _sig_line(), "control character"),
        ("too-many-signatures", "hello\n\n" + _sig_line() * (MAX_SIGNATURES + 1), "over the limit"),
    ],
)
def test_malformed_notes_raise_format_error(name: str, text: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        Note.from_text(text)


def test_oversized_note_is_refused() -> None:
    text = "x" * 2000 + "\n\n" + _sig_line()
    with pytest.raises(FormatError, match="over the 1024-byte limit"):
        Note.from_text(text, max_bytes=1024)
    assert Note.from_text(text).text.startswith("x")


def test_invalid_utf8_is_refused() -> None:
    with pytest.raises(FormatError, match="UTF-8"):
        Note.from_text(b"caf\xe9\n\n" + _sig_line().encode())


def test_up_to_max_signatures_are_accepted(signer: NoteSigner) -> None:
    many = [
        NoteSigner(f"w{i}.example", Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32))
        for i in range(MAX_SIGNATURES - 1)
    ]
    note = sign_note("hello\n", [*many, signer])
    assert len(verify_note(Note.from_text(note.to_text()), [signer.verifier()])) == 1


def test_note_text_may_contain_blank_lines(signer: NoteSigner) -> None:
    note = sign_note("para one\n\npara two\n", [signer])
    parsed = Note.from_text(note.to_text())
    assert parsed.text == "para one\n\npara two\n"
    verify_note(parsed, [signer.verifier()])


def test_repeated_signatures_by_known_key(signer: NoteSigner, signed: str) -> None:
    note = sign_note("hello\n", [signer])
    dup = NoteSignature(signer.name, signer.key_id, bytes(64))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_note(Note(note.text, (*note.signatures, dup)), [signer.verifier()])
    same = Note(note.text, note.signatures * 2)
    assert len(verify_note(same, [signer.verifier()])) == 1
    cp = Note.from_text(signed)
    second = signer.cosign(cp.text, timestamp=1_800_000_000)
    with pytest.raises(FormatError, match="different times"):
        open_checkpoint(Note(cp.text, (*cp.signatures, second)).to_text(), signer.verifier())


# --- properties ------------------------------------------------------------------------------

_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, codec="utf-8"),  # no controls, no surrogates
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_TEXT | st.just(""), min_size=1, max_size=6))
def test_note_round_trip(signer: NoteSigner, lines: list[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    note = sign_note(text, [signer])
    parsed = Note.from_text(note.to_text())
    assert parsed == note
    verify_note(parsed, [signer.verifier()])


@settings(max_examples=60, deadline=None)
@given(
    origin=_TEXT,
    size=st.integers(0, (1 << 64) - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(_TEXT, max_size=3),
    timestamp=st.integers(0, (1 << 63) - 1),
)
def test_checkpoint_round_trip_property(
    signer: NoteSigner,
    origin: str,
    size: int,
    root: bytes,
    extensions: list[str],
    timestamp: int,
) -> None:
    cp = Checkpoint(origin, size, root, tuple(extensions))
    opened = open_checkpoint(sign_checkpoint(cp, signer, timestamp=timestamp), signer.verifier())
    assert (opened.checkpoint, opened.timestamp) == (cp, timestamp)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_single_bit_flip_in_a_note_is_detected(signer: NoteSigner, data: st.DataObject) -> None:
    raw = bytearray(sign_note("attest\nnote body\n", [signer]).to_text().encode())
    bit = data.draw(st.integers(0, len(raw) * 8 - 1), label="bit")
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises((FormatError, SignatureError)):
        verify_note(Note.from_text(bytes(raw)), [signer.verifier()])


def test_every_bit_flip_in_a_checkpoint_note_is_detected(signer: NoteSigner, signed: str) -> None:
    raw = signed.encode()
    for bit in range(len(raw) * 8):
        mutated = bytearray(raw)
        mutated[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(AttestError):
            open_checkpoint(bytes(mutated), signer.verifier())
