"""The one database read every run request makes, at the cost of the query (DESIGN §5).

Each request to a run reads its token's row and the run's row (one statement, see
:mod:`attest.server.storage.request_reads`), so a revocation or another replica's append is seen
by the very next request. Through SQLAlchemy's execution and result layers, and with a hand-over to a worker
thread and back, that read cost several times the query itself. Here it runs:

- :class:`DriverQuery`: compiled once for the engine's driver and executed on a pooled DBAPI
  connection, returning a plain tuple (SQLite answers it on the event loop: a local indexed
  read that in WAL mode never waits for a writer);
- :class:`AsyncQuery`: on PostgreSQL, over psycopg's asyncio connections awaited on the event
  loop itself, so no thread is involved. When it cannot answer (every connection busy, the
  database dropped one, another event loop) it says so with :class:`LookupUnavailable` and the
  caller takes the thread path (where a driver error sends the read through SQLAlchemy, whose
  pool pings connections before use);
- :class:`RecentReads`: on PostgreSQL, where even that read is a round trip to another process
  (and, on a busy machine, a wait for it to be scheduled), the proof routes may reuse a read
  for up to a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable
from typing import Any

from sqlalchemy import Engine, Select

__all__ = ["AsyncQuery", "DriverQuery", "LookupUnavailable", "RecentReads"]


class LookupUnavailable(Exception):
    """The event-loop path cannot answer this read; use :class:`DriverQuery` on a thread."""


class DriverQuery:
    """A SELECT compiled once for one engine's driver, run straight on a pooled DBAPI connection.

    For the per-request read, SQLAlchemy's execution and result layers cost more than the query
    (about 100 µs against 30 µs on SQLite here). Rows come back as tuples in the statement's
    column order.
    """

    def __init__(self, engine: Engine, statement: Select[Any]) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self.engine = engine
        self.sql = compiled.string
        self.positions = compiled.positiontup  # None for drivers that take named parameters
        self.errors: type[Exception] = engine.dialect.loaded_dbapi.Error

    def first(self, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row, or ``None``. On a driver error (a connection the database dropped,
        say) the connection is discarded and the error raised: the caller retries through
        SQLAlchemy, which pings and replaces connections."""
        bound: Any = params if self.positions is None else [params[k] for k in self.positions]
        conn = self.engine.raw_connection()
        try:
            cursor = conn.cursor()
            cursor.execute(self.sql, bound)
            row = cursor.fetchone()
            cursor.close()
        except self.errors:
            conn.invalidate()
            raise
        finally:
            conn.close()
        return None if row is None else tuple(row)


class AsyncQuery:
    """A SELECT on PostgreSQL over psycopg's asyncio connections, awaited on the event loop.

    On loopback a read costs about 250 µs and 160 µs of CPU this way, against 450 µs and twice
    the CPU through a worker thread. At most ``connections`` are open; they belong to the event
    loop that opened them (a server has one). They are opened as SQLAlchemy would open them for
    ``engine`` (same host, credentials and options), in autocommit mode: a read is one round
    trip.
    """

    def __init__(self, engine: Engine, statement: Select[Any], *, connections: int = 4) -> None:
        import psycopg

        compiled = statement.compile(dialect=engine.dialect)
        if compiled.positiontup is not None:
            raise ValueError("AsyncQuery needs a driver with named parameters (psycopg)")
        self._psycopg = psycopg
        self._sql = compiled.string
        self._connect_args = engine.dialect.create_connect_args(engine.url)[1]
        self._limit = connections
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[Any] = []
        self._open = 0

    async def first(self, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row, or ``None``; :class:`LookupUnavailable` when this path cannot answer."""
        conn = await self._take()
        try:
            cursor = await conn.execute(self._sql, params)
            row = await cursor.fetchone()
        except BaseException as exc:  # a dropped connection, or the request cancelled mid-read
            self._open -= 1
            await conn.close()
            if isinstance(exc, self._psycopg.Error):
                raise LookupUnavailable(f"database read failed: {exc}") from exc
            raise
        self._idle.append(conn)
        return None if row is None else tuple(row)

    async def _take(self) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None and not self._loop.is_closed():
                raise LookupUnavailable("connections belong to another event loop")
            await self.close()
            self._loop, self._open = loop, 0
        if self._idle:
            return self._idle.pop()
        if self._open >= self._limit:
            raise LookupUnavailable("every connection is busy")
        self._open += 1
        try:
            return await self._psycopg.AsyncConnection.connect(
                autocommit=True, **self._connect_args
            )
        except BaseException as exc:
            self._open -= 1
            if isinstance(exc, self._psycopg.Error):
                raise LookupUnavailable(f"cannot connect: {exc}") from exc
            raise

    async def close(self) -> None:
        """Close the idle connections (at shutdown, or once their event loop has closed)."""
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for conn in idle:
            await conn.close()


class RecentReads:
    """Values read in the last ``ttl`` seconds, by key; at most ``limit`` are kept.

    Safe to share between the event loop and worker threads: each operation is a single dict
    operation under the GIL, and :meth:`clear` replaces the dict rather than emptying it.
    """

    def __init__(self, ttl: float, *, limit: int = 4096) -> None:
        self.ttl = ttl
        self._limit = limit
        self._values: dict[Hashable, tuple[float, Any]] = {}
        self.generation = 0
        """Counts :meth:`clear` calls: take it before a read, give it to :meth:`put` after."""

    def get(self, key: Hashable) -> Any:
        """The value read for ``key`` less than ``ttl`` seconds ago, else ``None``."""
        hit = self._values.get(key)
        if hit is None or hit[0] <= time.monotonic():
            return None
        return hit[1]

    def put(self, key: Hashable, value: Any, generation: int) -> None:
        """Keep ``value``, read after :attr:`generation` was ``generation`` — unless a
        :meth:`clear` came since: the read may predate the write that caused it."""
        values = self._values  # before the check: a clear from here on discards this dict
        if generation != self.generation:
            return
        if len(values) >= self._limit:
            values = self._values = {}
        values[key] = (time.monotonic() + self.ttl, value)

    def discard(self, key: Hashable) -> None:
        """Forget the value for ``key`` (a newer read found it no longer stands)."""
        self._values.pop(key, None)

    def clear(self) -> None:
        """Forget every value (after a write that reads made before it may predate)."""
        self.generation += 1
        self._values = {}
