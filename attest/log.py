"""Sequencing a run's log, and the embedded local log (DESIGN §3 "Log", §5).

One append-only RFC 6962 Merkle log per run; each leaf is a trainer-signed record
(:class:`~attest.records.SignedRecord`). Appending a batch is all-or-nothing:
:func:`sequence_batch` parses every leaf, checks its signature against the run's registered
trainer key and requires the batch to continue the record chain (``seq`` and ``prev``); only then
is anything stored. After each batch the log signs a C2SP checkpoint (Ed25519 signature plus a
timestamped cosignature carrying the receive time) over the new tree head and returns it in a
:class:`Receipt`.

The log server (``attest.server``) runs the same sequencing inside a database transaction.
:class:`LocalLog` is the embedded destination: a folder, no server, same formats, so a training job
and the demo can attest without any service running. Its files per run::

    runs/<run>/run.json            trainer public key and run metadata
    runs/<run>/entries             leaves, each as a 4-byte big-endian length and the bytes
    runs/<run>/checkpoints.jsonl   every signed checkpoint, one JSON line each
    runs/<run>/blobs/<hex>.json    blobs, named by the SHA-256 of their canonical bytes
    runs/<run>/statement.json      the trainer-signed lineage statement, once the run ends

Every write is fsync'd before an append is acknowledged; a torn tail of ``entries`` left by a
crash is cut off on open (it was never acknowledged).
"""

from __future__ import annotations

import itertools
import json
import os
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from attest.bundle import Bundle
from attest.canonical import canonical_json, sha256_digest, strict_json_loads
from attest.durable import append_synced, truncate_synced, write_atomic
from attest.errors import ChainError, ConfigurationError, FormatError
from attest.keys import TrainerPublicKey, load_server_key, save_server_key
from attest.merkle import MerkleTree
from attest.note import Checkpoint, NoteSigner, NoteVerifier, sign_checkpoint
from attest.records import SignedRecord, check_chain

__all__ = [
    "MAX_BATCH",
    "LocalLog",
    "LogSigner",
    "Receipt",
    "build_bundle",
    "sequence_batch",
]

MAX_BATCH = 1000


class LogSigner:
    """Signs a server's tree heads. Origins are ``<name>/runs/<run>``."""

    def __init__(self, name: str, key: ed25519.Ed25519PrivateKey) -> None:
        if not name or any(c.isspace() for c in name) or "+" in name:
            raise ConfigurationError(
                f"log name {name!r} must be a schemeless URL without spaces or '+'"
            )
        self.name = name
        self._signer = NoteSigner(name, key)

    @property
    def verifier(self) -> NoteVerifier:
        return self._signer.verifier()

    def origin(self, run: str) -> str:
        return f"{self.name}/runs/{run}"

    def sign(self, run: str, size: int, root: bytes, *, timestamp: int | None = None) -> str:
        checkpoint = Checkpoint(origin=self.origin(run), size=size, root=root)
        ts = int(time.time()) if timestamp is None else timestamp
        return sign_checkpoint(checkpoint, self._signer, timestamp=ts)


@dataclass(frozen=True)
class Receipt:
    """What an append returns: where the batch landed and the signed tree head covering it."""

    run: str
    first_index: int
    count: int
    checkpoint: str

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "first_index": self.first_index,
            "count": self.count,
            "checkpoint": self.checkpoint,
        }

    @classmethod
    def from_json(cls, obj: object) -> Receipt:
        if not isinstance(obj, dict):
            raise FormatError("receipt must be a JSON object")
        try:
            run, first, count, note = (
                obj["run"],
                obj["first_index"],
                obj["count"],
                obj["checkpoint"],
            )
        except KeyError as exc:
            raise FormatError(f"receipt lacks {exc.args[0]!r}") from None
        if not (isinstance(run, str) and isinstance(first, int) and isinstance(count, int)):
            raise FormatError("receipt fields have the wrong types")
        if not isinstance(note, str):
            raise FormatError("receipt.checkpoint must be signed-note text")
        return cls(run, first, count, note)


def sequence_batch(
    leaves: Sequence[bytes],
    *,
    run: str,
    key: TrainerPublicKey,
    next_seq: int,
    prev: str | None,
) -> list[SignedRecord]:
    """Parse, authenticate and chain-check a batch of leaves; store nothing.

    Raises :class:`FormatError` (malformed or oversize leaf), :class:`SignatureError` (not signed
    by the run's trainer key) or :class:`ChainError` (wrong run, seq gap/repeat, wrong ``prev``).
    """
    if not leaves:
        raise FormatError("an append needs at least one record")
    if len(leaves) > MAX_BATCH:
        raise FormatError(
            "too many records in one append", expected=f"<= {MAX_BATCH}", got=len(leaves)
        )
    records = [SignedRecord.from_leaf(leaf, field=f"records[{i}]") for i, leaf in enumerate(leaves)]
    for r in records:
        r.verify(key)
    check_chain((r.record for r in records), run=run, start_seq=next_seq, start_prev=prev)
    return records


def build_bundle(
    *,
    run: str,
    origin: str,
    tree: MerkleTree,
    leaves: Sequence[bytes],
    checkpoints: Sequence[tuple[int, str]],
    blobs: Mapping[str, Any],
    statement: Mapping[str, Any] | None,
    keys: Mapping[str, str],
) -> Bundle:
    """Assemble a run's bundle: every leaf, blob and distinct signed checkpoint, with a
    consistency proof between each pair of successive checkpoints."""
    heads: list[tuple[int, str]] = []
    for size, note in sorted(checkpoints, key=lambda c: c[0]):
        if size > 0 and (not heads or heads[-1][0] != size):
            heads.append((size, note))
    proofs = tuple(
        tuple(tree.consistency_proof(a, b)) for (a, _), (b, _) in itertools.pairwise(heads)
    )
    return Bundle(
        run=run,
        origin=origin,
        statement=statement,
        records=tuple(SignedRecord.from_leaf(leaf) for leaf in leaves),
        blobs=dict(blobs),
        checkpoints=tuple(note for _, note in heads),
        consistency=proofs,
        keys=dict(keys),
    )


class _RunFiles:
    """One run's folder in a :class:`LocalLog`, loaded into memory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        meta = strict_json_loads((folder / "run.json").read_bytes(), what=f"{folder}/run.json")
        self.meta: dict[str, Any] = meta
        self.key = TrainerPublicKey.from_pem(meta["trainer_key"])
        self.tree = MerkleTree()
        self.leaves: list[bytes] = []
        self.next_seq = 0
        self.prev: str | None = None
        self._load_entries()
        self.checkpoints: list[tuple[int, str]] = []
        self._load_checkpoints()

    def _load_checkpoints(self) -> None:
        path = self.folder / "checkpoints.jsonl"
        data = path.read_bytes() if path.exists() else b""
        pos = 0
        while (end := data.find(b"\n", pos)) != -1:
            item = json.loads(data[pos:end])
            self.checkpoints.append((int(item["size"]), str(item["note"])))
            pos = end + 1
        if pos != len(data):  # a torn line from a crash: its head is signed again below
            truncate_synced(path, pos)

    def sign_head(self, signer: LogSigner) -> str:
        """Sign and durably record a checkpoint at the current size."""
        note = signer.sign(self.meta["run"], self.tree.size, self.tree.root())
        line = json.dumps({"size": self.tree.size, "note": note}) + "\n"
        append_synced(self.folder / "checkpoints.jsonl", line.encode())
        self.checkpoints.append((self.tree.size, note))
        return note

    def _load_entries(self) -> None:
        path = self.folder / "entries"
        data = path.read_bytes() if path.exists() else b""
        pos = 0
        while pos + 4 <= len(data):
            (n,) = struct.unpack(">I", data[pos : pos + 4])
            if pos + 4 + n > len(data):
                break
            self._add(data[pos + 4 : pos + 4 + n])
            pos += 4 + n
        if pos != len(data):  # a torn write from a crash: never acknowledged, drop it
            truncate_synced(path, pos)

    def _add(self, leaf: bytes) -> None:
        record = SignedRecord.from_leaf(leaf).record
        self.leaves.append(leaf)
        self.tree.append(leaf)
        self.next_seq, self.prev = record.seq + 1, record.digest


class LocalLog:
    """An embedded, folder-backed log with the same behaviour as the log server.

    Safe for several threads of one process. The server key lives in ``<folder>/server.key``
    (created on first use) unless one is passed in.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        name: str = "localhost/attest",
        server_key: ed25519.Ed25519PrivateKey | None = None,
    ) -> None:
        self.folder = Path(folder)
        (self.folder / "runs").mkdir(parents=True, exist_ok=True)
        if server_key is None:
            key_path = self.folder / "server.key"
            if not key_path.exists():
                save_server_key(ed25519.Ed25519PrivateKey.generate(), key_path)
            server_key = load_server_key(key_path)
        self.signer = LogSigner(name, server_key)
        self._lock = threading.Lock()
        self._runs: dict[str, _RunFiles] = {}

    def _run(self, run: str) -> _RunFiles:
        if run not in self._runs:
            folder = self.folder / "runs" / run
            if not (folder / "run.json").exists():
                raise ConfigurationError(f"unknown run {run!r}: create it first")
            state = _RunFiles(folder)
            if state.tree.size and (
                not state.checkpoints or state.checkpoints[-1][0] < state.tree.size
            ):
                # A crash between the durable entries write and its head: the entries were
                # sequenced and may have been acknowledged, so the log signs for them now
                # (else a sender retrying that batch finds no head covering it, forever).
                state.sign_head(self.signer)
            self._runs[run] = state
        return self._runs[run]

    def create_run(
        self, run: str, trainer_key: TrainerPublicKey, meta: Mapping[str, Any] | None = None
    ) -> None:
        """Register ``run`` with its trainer key; idempotent for the same key."""
        with self._lock:
            folder = self.folder / "runs" / run
            if (folder / "run.json").exists():
                existing = self._run(run)
                if existing.key.key_id != trainer_key.key_id:
                    raise ChainError(
                        f"run {run!r} is registered to another trainer key",
                        expected=existing.key.key_id,
                        got=trainer_key.key_id,
                    )
                return
            (folder / "blobs").mkdir(parents=True, exist_ok=True)
            body = {"run": run, "trainer_key": trainer_key.to_pem(), "meta": dict(meta or {})}
            write_atomic(folder / "run.json", json.dumps(body, indent=1).encode())

    def append(self, run: str, leaves: Sequence[bytes]) -> Receipt:
        """Sequence a batch; durable on return."""
        with self._lock:
            state = self._run(run)
            sequence_batch(leaves, run=run, key=state.key, next_seq=state.next_seq, prev=state.prev)
            first = state.tree.size
            blob = b"".join(struct.pack(">I", len(leaf)) + leaf for leaf in leaves)
            append_synced(state.folder / "entries", blob)
            for leaf in leaves:
                state._add(leaf)
            return Receipt(run, first, len(leaves), state.sign_head(self.signer))

    def put_blob(self, run: str, document: Any) -> str:
        """Store a JSON document; returns its ``sha256:`` name."""
        data = canonical_json(document)
        digest = sha256_digest(data)
        with self._lock:
            state = self._run(run)
            write_atomic(state.folder / "blobs" / f"{digest[7:]}.json", data)
        return digest

    def put_statement(self, run: str, statement: Mapping[str, Any]) -> None:
        with self._lock:
            state = self._run(run)
            write_atomic(state.folder / "statement.json", canonical_json(dict(statement)))

    def checkpoint(self, run: str) -> str:
        """The latest signed checkpoint of ``run``."""
        with self._lock:
            state = self._run(run)
            if not state.checkpoints:
                return self.signer.sign(run, 0, state.tree.root())
            return state.checkpoints[-1][1]

    def export(self, run: str) -> Bundle:
        """The run's bundle, as a verifier would receive it."""
        with self._lock:
            state = self._run(run)
            blobs = {
                "sha256:" + p.stem: strict_json_loads(p.read_bytes(), what=str(p))
                for p in sorted((state.folder / "blobs").glob("*.json"))
            }
            path = state.folder / "statement.json"
            statement = (
                strict_json_loads(path.read_bytes(), what=str(path)) if path.exists() else None
            )
            return build_bundle(
                run=run,
                origin=self.signer.origin(run),
                tree=state.tree,
                leaves=state.leaves,
                checkpoints=state.checkpoints,
                blobs=blobs,
                statement=statement,
                keys={"trainer": state.key.to_pem(), "server": self.signer.verifier.to_vkey()},
            )
