"""Leaves, and the per-process Merkle trees that inclusion and consistency proofs are built from.

Leaves are never updated, so a run's tree only ever grows. Each process keeps the trees of the
``tree_cache_runs`` runs used last (an LRU), each behind its own lock so that runs do not wait for
one another. A cached tree grows in place — by the leaf hashes this process commits (right after
the commit, if the tree ends where the append began), else by reading only the leaves it lacks —
and is never rebuilt. :meth:`~TreeStore.cached_tree` answers without waiting for a lock or the
database, for the event loop; when it cannot, :meth:`~TreeStore.tree` does on a worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from sqlalchemy import select

from attest.merkle import MerkleTree
from attest.server.storage.core import StoreCore
from attest.server.storage.runs import RunInfo
from attest.server.storage.tables import leaves_t

__all__ = ["TreeStore"]


class TreeStore(StoreCore):
    """Reading leaves and keeping the runs' Merkle trees."""

    def entries(self, info: RunInfo, start: int, end: int) -> list[bytes]:
        """Leaf bytes ``[start, end)``."""
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(leaves_t.c.data)
                .where(leaves_t.c.run_id == info.pk, leaves_t.c.idx >= start, leaves_t.c.idx < end)
                .order_by(leaves_t.c.idx)
            ).scalars()
            return [bytes(d) for d in rows]

    def _tree_entry(self, pk: int) -> tuple[threading.Lock, MerkleTree]:
        with self._trees_lock:
            entry = self._trees.get(pk)
            if entry is None:
                entry = self._trees[pk] = (threading.Lock(), MerkleTree())
                while len(self._trees) > self._tree_cache_runs:
                    self._trees.popitem(last=False)
            self._trees.move_to_end(pk)
            return entry

    def tree(self, info: RunInfo) -> MerkleTree:
        """The run's Merkle tree with at least ``info.size`` leaves, cached per process.

        A cached tree grows by the leaf hashes this process appends (after their commit) and
        otherwise by reading only the leaves it lacks; it is never rebuilt."""
        lock, tree = self._tree_entry(info.pk)
        with lock:
            if tree.size < info.size:
                with self.reader.connect() as conn:
                    rows = conn.execute(
                        select(leaves_t.c.leaf_hash)
                        .where(
                            leaves_t.c.run_id == info.pk,
                            leaves_t.c.idx >= tree.size,
                            leaves_t.c.idx < info.size,
                        )
                        .order_by(leaves_t.c.idx)
                    ).scalars()
                    for h in rows:
                        tree.append_hash(bytes(h))
            return tree

    def cached_tree(self, info: RunInfo) -> MerkleTree | None:
        """The run's tree if this process holds it with ``info.size`` leaves already, without
        waiting for a lock or the database (``None`` otherwise: call :meth:`tree`)."""
        with self._trees_lock:
            entry = self._trees.get(info.pk)
        if entry is None or entry[1].size < info.size:
            return None
        return entry[1]

    def _extend_cached_tree(self, pk: int, old_size: int, hashes: Sequence[bytes]) -> None:
        """Grow a cached tree by leaves just committed at ``old_size`` (if it ends there)."""
        with self._trees_lock:
            entry = self._trees.get(pk)
        if entry is None:
            return
        lock, tree = entry
        with lock:
            if tree.size == old_size:
                for h in hashes:
                    tree.append_hash(h)
