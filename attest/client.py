"""Shipping records to a log: the local spool and its background sender
(DESIGN §4 "upload never blocks training").

A training job never talks to the log directly. Every record, blob and the final statement is
first appended to a :class:`Spool` — an append-only JSON-lines file in a local folder, fsync'd
before ``add`` returns — and a background thread ships the spool to a :class:`LogDestination` in
order, retrying with exponential backoff while the destination is unreachable. Training never
waits on the network and never fails because the server is down; :meth:`Spool.flush` waits (with
a timeout) at the end of a run.

Files in the spool folder::

    spool.jsonl      one item per line: {"k": "create", "key": PEM, "meta": {...}}
                                        {"k": "leaf", "seq": n, "env": <DSSE envelope JSON>}
                                        {"k": "blob", "doc": <JSON document>}
                                        {"k": "statement", "doc": <Sigstore bundle JSON>}
    shipped          the number of leading items the destination acknowledged (replaced durably)
    receipts.jsonl   every receipt the destination returned

Reopening the folder resumes after the last acknowledged item, so nothing is sent twice on
purpose. A send whose answer was lost (the server committed, then died) is retried; the log
refuses a repeated ``seq`` with a :class:`ChainError` (HTTP 409), and the sender then reads the
log's tree size from its latest checkpoint and skips the leaves already there (a run's leaf index
equals the record ``seq``). When the server's note key is known, each receipt's checkpoint
signature is verified and its tree size must cover the batch.

Destinations — :class:`attest.log.LocalLog`, :class:`HttpDestination`, :func:`open_destination`
— live in :mod:`attest.destination` and are re-exported here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from attest.canonical import canonical_json, sha256_digest
from attest.destination import (
    DestinationUnavailable,
    HttpDestination,
    LogDestination,
    open_destination,
    tree_size_of,
)
from attest.durable import append_synced, truncate_synced, write_atomic
from attest.errors import AttestError, ChainError, FormatError, ProofError, VerificationError
from attest.keys import TrainerPublicKey
from attest.log import Receipt
from attest.note import NoteVerifier
from attest.records import SignedRecord

__all__ = [
    "DestinationUnavailable",
    "HttpDestination",
    "LogDestination",
    "Spool",
    "open_destination",
    "tree_size_of",
    "yielding_to_training",
]

log = logging.getLogger("attest.client")


_SWITCH_INTERVAL = 0.0005
_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.0


@contextlib.contextmanager
def yielding_to_training() -> Iterator[None]:
    """Run background Python work (hashing bookkeeping, JSON, signing, shipping) so that it
    delays the training thread as little as possible.

    The training thread releases the GIL inside every torch operation and must take it back
    afterwards; while a background thread runs Python it only hands the GIL over every
    ``sys.getswitchinterval()`` seconds (5 ms by default), which stalls each operation of the
    training step. While at least one background section is active the interval is lowered to
    0.5 ms, and restored when the last one ends.
    """
    global _switch_users, _switch_saved
    with _switch_lock:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_saved, _SWITCH_INTERVAL))
        _switch_users += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


_RETRYABLE = (DestinationUnavailable, OSError)
Listener = Callable[[Receipt], None]


class Spool:
    """The append-only local spool of one run and its background sender.

    ``add_*`` methods return once the item is durable on local disk. The sender thread starts
    with the spool (``start=False`` to drive it with :meth:`ship_once`, as tests do).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        destination: LogDestination,
        run: str,
        *,
        verifier: NoteVerifier | None = None,
        max_batch: int = 256,
        backoff: tuple[float, float] = (0.05, 5.0),
        start: bool = True,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.destination = destination
        self.run = run
        self.verifier = verifier
        self.max_batch = max_batch
        self.backoff = backoff
        self.receipts: list[Receipt] = []
        self.errors: list[AttestError] = []
        self.last_error: Exception | None = None
        self._listeners: list[Listener] = []
        self._cond = threading.Condition()
        self._stop = False
        self._items: list[dict[str, Any]] = []  # items from index self._shipped on
        self._shipped = 0
        self._total = 0
        self._load()
        self._file = open(self.folder / "spool.jsonl", "ab")  # noqa: SIM115 (kept open)
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._loop, name="attest-sender", daemon=True)
            self._thread.start()

    # --- local durability -------------------------------------------------------------------

    def _load(self) -> None:
        path = self.folder / "spool.jsonl"
        shipped_path = self.folder / "shipped"
        self._shipped = int(shipped_path.read_text()) if shipped_path.exists() else 0
        data = path.read_bytes() if path.exists() else b""
        good = data.rfind(b"\n") + 1  # a torn last line was never acknowledged to the caller
        if good != len(data):
            truncate_synced(path, good)
        lines = data[:good].splitlines()
        self._total = len(lines)
        self._items = [json.loads(line) for line in lines[self._shipped :]]
        rpath = self.folder / "receipts.jsonl"
        if rpath.exists():
            for line in rpath.read_text().splitlines():
                if line.strip():
                    self.receipts.append(Receipt.from_json(json.loads(line)))

    def _add(self, items: Sequence[dict[str, Any]]) -> None:
        data = b"".join(json.dumps(i, separators=(",", ":")).encode() + b"\n" for i in items)
        with self._cond:
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._items.extend(items)
            self._total += len(items)
            self._cond.notify_all()

    def add_create(self, trainer_key: TrainerPublicKey, meta: Mapping[str, Any]) -> None:
        self._add([{"k": "create", "key": trainer_key.to_pem(), "meta": dict(meta)}])

    def add_records(self, records: Sequence[SignedRecord]) -> None:
        self._add([{"k": "leaf", "seq": r.record.seq, "env": r.to_json()} for r in records])

    def add_blob(self, document: Any, *, canonical: bytes | None = None) -> str:
        """Spool a blob; ``canonical``, when the caller already has the document's RFC 8785
        bytes, saves canonicalising it again."""
        digest = sha256_digest(canonical if canonical is not None else canonical_json(document))
        self._add([{"k": "blob", "doc": document}])
        return digest

    def add_statement(self, statement: Mapping[str, Any]) -> None:
        self._add([{"k": "statement", "doc": dict(statement)}])

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(receipt)`` on the sender thread after each acknowledged append."""
        self._listeners.append(listener)

    @property
    def pending(self) -> int:
        with self._cond:
            return self._total - self._shipped

    def last_leaf(self) -> dict[str, Any] | None:
        """The last record envelope ever added to this spool (shipped or not), or None."""
        path = self.folder / "spool.jsonl"
        with self._cond:
            if not path.exists():
                return None
            for line in reversed(path.read_bytes().splitlines()):
                item = json.loads(line)
                if item["k"] == "leaf":
                    return dict(item["env"])
        return None

    @property
    def latest_checkpoint(self) -> str | None:
        return self.receipts[-1].checkpoint if self.receipts else None

    def _mark(self, count: int, receipt: Receipt | None) -> None:
        with self._cond:
            self._shipped += count
            del self._items[:count]
            write_atomic(self.folder / "shipped", str(self._shipped).encode())
            if receipt is not None:
                self.receipts.append(receipt)
                line = json.dumps(receipt.to_json()) + "\n"
                append_synced(self.folder / "receipts.jsonl", line.encode())
            self._cond.notify_all()
        if receipt is not None:
            for listener in list(self._listeners):
                listener(receipt)

    # --- shipping ---------------------------------------------------------------------------

    def ship_once(self) -> bool:
        """Ship the next item or batch of leaves; False when nothing is pending.

        Raises what the destination raised; the item stays pending.
        """
        with self._cond:
            if not self._items:
                return False
            first = self._items[0]
            batch = [first]
            if first["k"] == "leaf":
                for item in self._items[1 : self.max_batch]:
                    if item["k"] != "leaf":
                        break
                    batch.append(item)
        kind = first["k"]
        if kind == "create":
            self.destination.create_run(
                self.run, TrainerPublicKey.from_pem(first["key"]), first["meta"]
            )
            self._mark(1, None)
        elif kind == "blob":
            self.destination.put_blob(self.run, first["doc"])
            self._mark(1, None)
        elif kind == "statement":
            self.destination.put_statement(self.run, first["doc"])
            self._mark(1, None)
        elif kind == "leaf":
            self._ship_leaves(batch)
        else:
            raise FormatError(f"spool item of unknown kind {kind!r}")
        return True

    def _ship_leaves(self, batch: list[dict[str, Any]]) -> None:
        leaves = [canonical_json(item["env"]) for item in batch]
        first_seq = int(batch[0]["seq"])
        try:
            receipt = self.destination.append(self.run, leaves)
        except ChainError:
            # The log refused the batch; maybe an earlier try landed and its answer was lost.
            # Skip only the leading leaves the log holds byte for byte: never drop a record.
            note = self.destination.checkpoint(self.run)
            size = tree_size_of(note, self.verifier)
            if size <= first_seq:
                raise
            held = self.destination.export(self.run).records[first_seq:size]
            done = 0
            for mine, theirs in zip(leaves, held, strict=False):
                if mine != theirs.leaf_data():
                    break
                done += 1
            if done == 0:
                raise ChainError(
                    f"the log holds other records at seq {first_seq}: is the run id reused?",
                    expected=sha256_digest(leaves[0]),
                    got=sha256_digest(held[0].leaf_data()) if held else None,
                ) from None
            log.info(
                "log already holds records %d..%d; skipping them", first_seq, first_seq + done - 1
            )
            self._mark(done, Receipt(self.run, first_seq, done, note))
            return
        self._check_receipt(receipt, first_seq, len(leaves))
        self._mark(len(batch), receipt)

    def _check_receipt(self, receipt: Receipt, first_seq: int, count: int) -> None:
        if receipt.first_index != first_seq or receipt.count != count:
            self.errors.append(
                ProofError(
                    "receipt does not place the batch where it was sent",
                    expected=(first_seq, count),
                    got=(receipt.first_index, receipt.count),
                )
            )
        if self.verifier is None:
            return
        try:
            size = tree_size_of(receipt.checkpoint, self.verifier)
        except (VerificationError, FormatError) as exc:
            self.errors.append(exc)
            log.warning("receipt checkpoint does not verify: %s", exc)
            return
        if size < first_seq + count:
            self.errors.append(
                ProofError(
                    "receipt checkpoint does not cover the batch",
                    expected=f">= {first_seq + count}",
                    got=size,
                )
            )

    def _loop(self) -> None:
        delay = self.backoff[0]
        while True:
            with self._cond:
                while not self._items and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
            try:
                with yielding_to_training():
                    self.ship_once()
                delay = self.backoff[0]
                self.last_error = None
            except Exception as exc:  # never let the sender die: keep the item and retry
                self.last_error = exc
                if not isinstance(exc, _RETRYABLE):
                    log.warning("shipping to the log failed, will retry: %s", exc)
                with self._cond:
                    if self._stop:
                        return
                    self._cond.wait(delay)
                delay = min(delay * 2, self.backoff[1])

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every item is acknowledged; False if ``timeout`` (seconds) passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._total > self._shipped:
                if self._thread is None or not self._thread.is_alive():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.05 if left is None else min(left, 0.05))
            return True

    def close(self, timeout: float | None = 0.0) -> bool:
        """Flush up to ``timeout`` seconds, stop the sender and close the file.

        Returns True if nothing was left pending; what is left stays in the spool folder and
        ships when a spool is opened on it again.
        """
        done = self.flush(timeout)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(self.backoff[1], 1.0) + 10)
        self._file.close()
        return done
