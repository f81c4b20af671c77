"""Signed tree heads: every checkpoint an append handed out, by ``(run, size)``.

A head is inserted in the same transaction that grows its run to that size, and ``(run, size)``
is its primary key, so once committed it never changes — and a size the run has reached without
a head never gets one later. Both answers are facts, so each process keeps them in a bounded LRU
(the note, or ``""`` for a head known to be absent), and a note the proof and checkpoint routes
hand out is read from the database once; :meth:`~TreeHeadStore.cached_head_at` answers from
memory alone, for the event loop. Only a miss at a size the run has not reached yet stays
uncached: an append may still make it. An empty log's checkpoint is signed afresh, never stored.
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, select

from attest.server.errors import NotFoundError
from attest.server.storage.core import StoreCore
from attest.server.storage.runs import RunInfo
from attest.server.storage.tables import heads_t

__all__ = ["TreeHeadStore"]

_NOTE_CACHE = 4096
# Built once at import, so a call only binds parameters: the note at one size.
_NOTE_AT = select(heads_t.c.note).where(
    heads_t.c.run_id == bindparam("b_run"), heads_t.c.size == bindparam("b_size")
)


class TreeHeadStore(StoreCore):
    """Reading signed tree heads, through the per-process note cache."""

    def _head_note(self, conn: Connection, pk: int, size: int) -> str:
        note = self._cached_note(pk, size)
        if note is None:
            note = self._read_note(conn, pk, size)
        if not note:
            raise NotFoundError(f"no tree head at size {size}")
        return note

    def _read_note(self, conn: Connection, pk: int, size: int, *, reached: bool = True) -> str:
        """The note at ``size`` read from the database, ``""`` if none. When the run has
        ``reached`` that size (committed), a missing head stays missing — a head is inserted in
        the same transaction that grows the run to its size, never later — so that is cached
        too."""
        note = conn.execute(_NOTE_AT, {"b_run": pk, "b_size": size}).scalar()
        text = "" if note is None else str(note)
        if text or reached:
            self._remember_note(pk, size, text)
        return text

    def _cached_note(self, pk: int, size: int) -> str | None:
        """The cached note, ``""`` if known to be absent, ``None`` if not cached."""
        with self._notes_lock:
            note = self._notes.get((pk, size))
            if note is not None:
                self._notes.move_to_end((pk, size))
            return note

    def _remember_note(self, pk: int, size: int, note: str) -> None:
        with self._notes_lock:
            self._notes[(pk, size)] = note
            if len(self._notes) > _NOTE_CACHE:
                self._notes.popitem(last=False)

    def latest_checkpoint(self, info: RunInfo) -> str:
        """The newest signed tree head; for an empty log a fresh size-0 checkpoint."""
        if info.size == 0:
            return self.signer.sign(info.name, 0, info.root)
        with self.reader.connect() as conn:
            return self._head_note(conn, info.pk, info.size)

    def tree_heads(self, info: RunInfo) -> list[tuple[int, str]]:
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(heads_t.c.size, heads_t.c.note)
                .where(heads_t.c.run_id == info.pk, heads_t.c.size <= info.size)
                .order_by(heads_t.c.size)
            ).all()
        return [(int(s), str(n)) for s, n in rows]

    def head_at(self, info: RunInfo, size: int) -> str | None:
        """The checkpoint signed at ``size``, if an append made one."""
        note = self._cached_note(info.pk, size)
        if note is None:
            with self.reader.connect() as conn:
                note = self._read_note(conn, info.pk, size, reached=size <= info.size)
        return note or None

    def cached_head_at(self, info: RunInfo, size: int) -> tuple[bool, str | None]:
        """:meth:`head_at` from memory only: ``(known, note)``; ``known`` is False when the
        answer needs the database."""
        note = self._cached_note(info.pk, size)
        return (note is not None, note or None)
