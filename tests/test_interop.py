"""Interoperability with independent implementations of the specs attest speaks.

- C2SP signed-note: the known-answer vector of Go's ``golang.org/x/mod/sumdb/note`` (the
  reference implementation the C2SP spec grew from) signs and verifies byte for byte;
- our tree heads are read by sigstore-python's own signed-note and checkpoint parser, and their
  Ed25519 signature verifies under a key ID computed here straight from C2SP signed-note
  (first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key));
- the lineage statement's Sigstore bundle parses with ``sigstore_models`` (the protobuf-specs
  bundle model), and its payload is an in-toto Statement v1 that ``in_toto_attestation`` (the
  in-toto reference bindings) parses and validates.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attest.errors import AttestError
from attest.keys import TrainerKey
from attest.log import LogSigner
from attest.note import Note, NoteSigner, NoteVerifier, sign_note, verify_note
from attest.statement import Dependency, LineageStatement, sign_statement

# golang.org/x/mod/sumdb/note, note.go package documentation and note_test.go.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT
    + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqf"
    "qdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_go_sumdb_note_vector_verifies() -> None:
    verifier = NoteVerifier.from_vkey(GO_VKEY)
    assert verifier.key_id.hex() == "c74f20a3"
    assert verifier.to_vkey() == GO_VKEY
    verified = verify_note(Note.from_text(GO_NOTE), [verifier])
    assert [s.name for s in verified] == ["PeterNeumann"]
    with pytest.raises(AttestError):
        verify_note(Note.from_text(GO_NOTE.replace("problem is", "problem was")), [verifier])


def test_go_sumdb_note_vector_signs_byte_for_byte() -> None:
    signer = NoteSigner.from_skey(GO_SKEY)
    assert signer.to_skey() == GO_SKEY
    assert signer.verifier().to_vkey() == GO_VKEY
    assert sign_note(GO_TEXT, [signer]).to_text() == GO_NOTE


def test_tree_heads_read_by_sigstore_python_and_verify_under_the_spec_key_id() -> None:
    from sigstore._internal.rekor.checkpoint import LogCheckpoint, SignedNote

    key = ed25519.Ed25519PrivateKey.generate()
    signer = LogSigner("log.example/attest", key)
    root = hashlib.sha256(b"root").digest()
    text = signer.sign("run-1", 42, root, timestamp=1_800_000_000)

    note = SignedNote.from_text(text)
    checkpoint = LogCheckpoint.from_text(note.note)
    assert checkpoint.origin == "log.example/attest/runs/run-1"
    assert checkpoint.log_size == 42 and checkpoint.log_hash == root.hex()

    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    spec_key_id = hashlib.sha256(b"log.example/attest\n\x01" + public).digest()[:4]
    ours = [s for s in note.signatures if s.sig_hash == spec_key_id]
    assert len(ours) == 1, "no signature line carries the C2SP key ID"
    key.public_key().verify(base64.b64decode(ours[0].signature), note.note.encode())


def _statement_bundle() -> dict[str, object]:
    statement = LineageStatement(
        run="run-1",
        model_sha256="ab" * 32,
        digest_algorithm="attest-tensors-v1/sha256/chunk=16777216",
        external_parameters={"seed": 0},
        internal_parameters={},
        dependencies=(Dependency("init-weights", "cd" * 32, {}),),
        byproducts=(Dependency("loss-curve", "ef" * 32, {}),),
        log_checkpoint="log.example/attest/runs/run-1\n1\n" + "A" * 43 + "=\n",
        started="2026-01-01T00:00:00Z",
        finished="2026-01-01T00:00:01Z",
    )
    return sign_statement(statement, TrainerKey.generate())


def test_statement_bundle_parses_with_sigstore_models() -> None:
    from sigstore_models.bundle.v1 import Bundle

    doc = _statement_bundle()
    parsed = Bundle.from_json(json.dumps(doc))
    envelope = doc["dsseEnvelope"]
    assert isinstance(envelope, dict)
    assert parsed.dsse_envelope is not None
    assert parsed.dsse_envelope.payload_type == "application/vnd.in-toto+json"
    assert base64.b64encode(parsed.dsse_envelope.payload).decode() == envelope["payload"]


def test_statement_payload_is_a_valid_in_toto_statement() -> None:
    from google.protobuf import json_format
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    doc = _statement_bundle()
    envelope = doc["dsseEnvelope"]
    assert isinstance(envelope, dict)
    payload = base64.b64decode(envelope["payload"])
    pb = json_format.Parse(payload, statement_pb2.Statement())
    Statement.copy_from_pb(pb).validate()
    assert pb.predicate_type == "https://attest.dev/training-lineage/v1"
    assert pb.subject[0].digest["sha256"] == "ab" * 32
