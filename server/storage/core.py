"""What every part of the store shares: engines, the signer, the caches, the schema's life cycle.

A database is reached through three engines with separate pools, so that one kind of work never
waits for another's connections:

- ``engine``, the writer. SQLite runs every transaction as ``BEGIN IMMEDIATE`` (one writer at a
  time, taken before the first read) in WAL mode with ``synchronous=FULL``, so acknowledged means
  committed; PostgreSQL uses a pinging pool whose transactions lock rows (``FOR UPDATE``).
- ``reader``: each statement on its own (autocommit), one round trip over committed rows, without
  the BEGIN and ROLLBACK a transaction would add; in WAL mode a SQLite read never waits for the
  writer.
- the per-request look-up (:mod:`attest.server.lookup`), on its own pool: the event loop must
  never wait for a connection that a long read on a worker thread holds. On PostgreSQL it skips
  the pre-ping (a second round trip); a connection found dead sends that request to the reader.

:class:`StoreCore` owns that state and the per-process caches the other modules fill (trainer
keys by PEM, Merkle trees by run, signed tree heads by ``(run, size)``). The classes of the other
modules add methods only, so the constructor here is the whole of a store's set-up, and
:meth:`~StoreCore.dispose` its tear-down. Creating the schema is idempotent and safe to race
between replicas; the note verifier key is bound to the database on first start, and a replica
started with another is refused.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, insert, select
from sqlalchemy.exc import IntegrityError

from attest.keys import TrainerPublicKey
from attest.log import LogSigner
from attest.merkle import MerkleTree
from attest.server.errors import ConflictError
from attest.server.lookup import AsyncQuery, DriverQuery, RecentReads
from attest.server.storage.tables import TOKEN_AND_RUN, metadata, server_t
from attest.server.verifying import BatchChecker

__all__ = ["RECENT_READ_SECONDS", "StoreCore"]

RECENT_READ_SECONDS = 1.0
"""How long, on PostgreSQL, a proof request may reuse another's read of its token and run."""
_AUTOCOMMIT_POOL: dict[str, Any] = {
    "pool_size": 4,
    "max_overflow": 12,
    "isolation_level": "AUTOCOMMIT",
    "pool_reset_on_return": None,
}


class StoreCore:
    """The engines, signer, batch checker and caches of one store; see the module docstring.

    ``recent_read_seconds`` (PostgreSQL only): how long a proof request may reuse another's
    read of its token and run (see :meth:`~.request_reads.RequestReadStore.token_and_run_async`).
    """

    def __init__(
        self,
        url: str,
        *,
        signer: LogSigner,
        tree_cache_runs: int = 16,
        checker: BatchChecker | None = None,
        recent_read_seconds: float = RECENT_READ_SECONDS,
    ) -> None:
        self.url = url
        self.signer = signer
        self.checker = checker or BatchChecker(workers=0)
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = _sqlite_engine(url, immediate=True)
            self.reader = _sqlite_engine(url, immediate=False)
            # Its own pool: the event loop must never wait for a connection that a long read
            # on a worker thread (a bundle, a tree load) holds.
            lookups = _sqlite_engine(url, immediate=False)
            self._async_lookup: AsyncQuery | None = None
            self._recent: RecentReads | None = None
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)
            # Reads are single statements over committed rows: in autocommit mode each is one
            # round trip, without the BEGIN and ROLLBACK a transaction would add.
            self.reader = create_engine(url, pool_pre_ping=True, **_AUTOCOMMIT_POOL)
            # The per-request look-up skips the pre-ping (a second round trip); a connection
            # found dead is discarded and that request falls back to the pinging reader.
            lookups = create_engine(url, **_AUTOCOMMIT_POOL)
            self._async_lookup = AsyncQuery(lookups, TOKEN_AND_RUN)
            self._recent = RecentReads(recent_read_seconds)
        self._lookup = DriverQuery(lookups, TOKEN_AND_RUN)
        self._keys: dict[str, TrainerPublicKey] = {}
        self._trees: OrderedDict[int, tuple[threading.Lock, MerkleTree]] = OrderedDict()
        self._trees_lock = threading.Lock()
        self._tree_cache_runs = tree_cache_runs
        # Signed tree heads never change once committed ((run, size) is their primary key), so
        # the notes a proof or checkpoint request hands out are kept in a bounded LRU.
        self._notes: OrderedDict[tuple[int, int], str] = OrderedDict()
        self._notes_lock = threading.Lock()

    # --- schema and server facts ------------------------------------------------------------

    def create_schema(self) -> None:
        """Create missing tables (idempotent; safe to race between replicas)."""
        try:
            metadata.create_all(self.engine)
        except IntegrityError:  # another replica created them at the same moment
            metadata.create_all(self.engine)

    def bind_server_key(self, vkey: str) -> None:
        """Record the note verifier key on first start; refuse a different one afterwards."""
        with self.engine.begin() as conn:
            row = conn.execute(select(server_t.c.value).where(server_t.c.key == "vkey")).first()
            if row is None:
                conn.execute(insert(server_t).values(key="vkey", value=vkey))
                return
        if row[0] != vkey:
            raise ConflictError(
                "this database's logs are signed by another server key; every replica must use "
                "the same --server-key and log name",
                expected=row[0],
                got=vkey,
            )

    def ping(self) -> None:
        with self.reader.connect() as conn:
            conn.execute(select(1))

    # --- recent reads and shutdown --------------------------------------------------------

    def _forget_recent_reads(self) -> None:
        """After a revocation or an append: reads made before it no longer stand in for one."""
        if self._recent is not None:
            self._recent.clear()

    async def close_async(self) -> None:
        """Close the event loop's connections (call on the loop, before :meth:`dispose`)."""
        if self._async_lookup is not None:
            await self._async_lookup.close()

    def dispose(self) -> None:
        for engine in {self.engine, self.reader, self._lookup.engine}:
            engine.dispose()


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    """A SQLite engine in WAL mode. Writers run every transaction as ``BEGIN IMMEDIATE`` (one
    writer at a time, taken before the first read); readers run each statement on its own
    (autocommit), which in WAL mode never waits for the writer."""
    engine = create_engine(
        url,
        connect_args={"timeout": 60, "check_same_thread": False},
        pool_reset_on_return="rollback" if immediate else None,
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    if immediate:

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
