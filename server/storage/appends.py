"""Appends (DESIGN §5 "Storage"): a batch of signed records becomes leaves and one tree head.

An append is one transaction: lock the run row (``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite
every write transaction is ``BEGIN IMMEDIATE``), check that the batch continues the chain, insert
the leaves (the primary key refuses duplicate indices), sign and insert the tree head, update the
run row, commit. Signatures are checked before the lock is taken (the trainer key of a run never
changes), so the lock is held only for the chain check and the writes. Several server replicas on
one PostgreSQL database may append concurrently: the row lock orders them and the unique keys make
a gap or a duplicate impossible. Acknowledged means committed (SQLite: WAL, ``synchronous=FULL``).

A batch that repeats records the log already holds byte for byte (a client retrying after a lost
response) is acknowledged again, with only its new tail appended; a repeated ``seq`` with other
bytes is a chain break (409).

The records of a batch are parsed once, and their signatures verified by the store's
:class:`~attest.server.verifying.BatchChecker` (worker processes for large batches). Once the
transaction has committed, this process's caches learn the new facts: recent reads are cleared
(:mod:`.request_reads`), the new head is remembered (:mod:`.heads`) and a cached tree grows by the
new leaf hashes (:mod:`.trees`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import Connection, bindparam, insert, select, update

from attest.errors import FormatError
from attest.log import MAX_BATCH, Receipt
from attest.merkle import SHA256, CompactRange
from attest.records import check_chain
from attest.server.errors import ConflictError
from attest.server.storage.heads import TreeHeadStore
from attest.server.storage.runs import RunInfo, RunStore
from attest.server.storage.tables import heads_t, leaves_t, runs_t
from attest.server.storage.trees import TreeStore

__all__ = ["AppendStore"]

# Built once at import, so a call only binds parameters: the statements of the append transaction.
_LOCK_RUN = (
    select(runs_t.c.size, runs_t.c.prev, runs_t.c.compact)
    .where(runs_t.c.id == bindparam("b_run"))
    .with_for_update()
)
_INSERT_LEAVES = insert(leaves_t)
_INSERT_HEAD = insert(heads_t)
_ADVANCE_RUN = (
    update(runs_t)
    .where(runs_t.c.id == bindparam("b_run"), runs_t.c.size == bindparam("b_size"))
    .values(
        size=bindparam("b_new_size"),
        prev=bindparam("b_prev"),
        compact=bindparam("b_compact"),
        root=bindparam("b_root"),
    )
)


def _split(blob: bytes) -> list[bytes]:
    return [blob[i : i + 32] for i in range(0, len(blob), 32)]


class AppendStore(RunStore, TreeHeadStore, TreeStore):
    """Appending a batch to a run's log."""

    def append(
        self, run: str | RunInfo, envelopes: Sequence[object], *, now: int | None = None
    ) -> Receipt:
        """Append a batch of DSSE envelope JSON objects to a run's log; durable on return.

        ``run`` is the run's name, or its :class:`RunInfo` as just read (its trainer key and row
        id never change; the log state is re-read under the row lock)."""
        if not envelopes:
            raise FormatError("an append needs at least one record in 'records'")
        if len(envelopes) > MAX_BATCH:
            raise FormatError(
                "too many records in one append; split the batch",
                expected=f"<= {MAX_BATCH}",
                got=len(envelopes),
            )
        info = self.get_run(run) if isinstance(run, str) else run
        name = info.name
        signed = self.checker.check(name, info.key, envelopes)
        leaves = [s.leaf_data() for s in signed]
        hashes = [SHA256.hash_leaf(leaf) for leaf in leaves]
        first = signed[0].record.seq
        with self.engine.begin() as conn:
            row = conn.execute(_LOCK_RUN, {"b_run": info.pk}).one()
            size, prev = int(row.size), row.prev
            skip = self._repeated_prefix(conn, info.pk, first, size, hashes)
            if skip == len(leaves):
                note = self._head_note(conn, info.pk, size)
                return Receipt(name, first, len(leaves), note)
            fresh = signed[skip:]
            check_chain((s.record for s in fresh), run=name, start_seq=size, start_prev=prev)
            rng = CompactRange.from_state(size=size, hashes=_split(row.compact))
            rng.extend(hashes[skip:])
            conn.execute(
                _INSERT_LEAVES,
                [
                    {"run_id": info.pk, "idx": size + i, "data": leaf, "leaf_hash": h}
                    for i, (leaf, h) in enumerate(zip(leaves[skip:], hashes[skip:], strict=True))
                ],
            )
            root = rng.root()
            ts = int(time.time()) if now is None else now
            note = self.signer.sign(name, rng.size, root, timestamp=ts)
            conn.execute(
                _INSERT_HEAD,
                {"run_id": info.pk, "size": rng.size, "root": root, "note": note, "timestamp": ts},
            )
            done = conn.execute(
                _ADVANCE_RUN,
                {
                    "b_run": info.pk,
                    "b_size": size,
                    "b_new_size": rng.size,
                    "b_prev": fresh[-1].record.digest,
                    "b_compact": b"".join(rng.hashes),
                    "b_root": root,
                },
            )
            if done.rowcount != 1:  # cannot happen under the row lock; refuse rather than fork
                raise ConflictError("the run changed during the append; retry", got=size)
        # Committed: the new leaves and head are now facts every reader sees.
        self._forget_recent_reads()
        self._remember_note(info.pk, rng.size, note)
        self._extend_cached_tree(info.pk, size, hashes[skip:])
        return Receipt(name, first, len(leaves), note)

    def _repeated_prefix(
        self, conn: Connection, pk: int, first: int, size: int, hashes: Sequence[bytes]
    ) -> int:
        """How many leading records of the batch the log already holds byte for byte."""
        if not 0 <= first < size:
            return 0
        end = min(size, first + len(hashes))
        stored = conn.execute(
            select(leaves_t.c.leaf_hash)
            .where(leaves_t.c.run_id == pk, leaves_t.c.idx >= first, leaves_t.c.idx < end)
            .order_by(leaves_t.c.idx)
        ).scalars()
        n = 0
        for have, want in zip(stored, hashes, strict=False):
            if bytes(have) != want:
                return 0  # same seq, other bytes: let the chain check report the break
            n += 1
        return n if n == end - first else 0
