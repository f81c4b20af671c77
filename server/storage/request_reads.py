"""The read every run request makes: its token's row and the run's row, in one statement.

One round trip (:data:`~.tables.TOKEN_AND_RUN`: LEFT JOINs from a one-row table, so either row
may be missing) means a revocation or another replica's append is seen by the very next request.
How the read runs is :mod:`attest.server.lookup`'s business: compiled once and executed straight
on a pooled DBAPI connection, falling back to SQLAlchemy's pinging reader on a driver error; for a
request on the event loop, SQLite answers in place and PostgreSQL through psycopg's asyncio
connections, else on a worker thread.

One bounded exception: on PostgreSQL, a proof request may reuse a valid token and its run as
read up to :data:`~.core.RECENT_READ_SECONDS` earlier by this process. A revocation or an append
made through this process clears those reads at once; one made through another replica is seen
within that time. Only a valid token and an existing run are reused, never a refusal.
"""

from __future__ import annotations

from typing import Any

import anyio

from attest.server.lookup import LookupUnavailable
from attest.server.storage.runs import RunInfo, RunStore
from attest.server.storage.tables import TOKEN_AND_RUN, TOKEN_COLUMNS
from attest.server.storage.tokens import TokenRow, TokenStore

__all__ = ["RequestReadStore"]


class RequestReadStore(RunStore, TokenStore):
    """A request's token and run, read together."""

    def token_and_run(self, token_hash: str, name: str) -> tuple[TokenRow | None, RunInfo | None]:
        """A request's two look-ups in one statement: the token's row and the run."""
        params = {"b_hash": token_hash, "b_name": name}
        try:
            row = self._lookup.first(params)
        except self._lookup.errors:
            with self.reader.connect() as conn:
                row = tuple(conn.execute(TOKEN_AND_RUN, params).one())
        return self._token_and_run_row(row)

    async def token_and_run_async(
        self, token_hash: str, name: str, *, recent: bool = False
    ) -> tuple[TokenRow | None, RunInfo | None]:
        """:meth:`token_and_run` for a request on the event loop, without a worker thread where
        that is safe: SQLite answers in place (an indexed read of a local file, about 60 µs,
        that in WAL mode never waits for a writer); PostgreSQL through asyncio connections,
        else on a worker thread (the network must not stall the event loop).

        ``recent``: on PostgreSQL, a valid token and its run as read by an earlier request up
        to :data:`~.core.RECENT_READ_SECONDS` ago will do. A revocation or append made through
        this process is seen at once; one made elsewhere, within that time. SQLite always reads.
        """
        lookup, recent_reads = self._async_lookup, self._recent
        if lookup is None or recent_reads is None:  # SQLite
            return self.token_and_run(token_hash, name)
        key = (token_hash, name)
        if recent:
            hit: tuple[TokenRow, RunInfo] | None = recent_reads.get(key)
            if hit is not None:
                return hit
        generation = recent_reads.generation
        try:
            row = await lookup.first({"b_hash": token_hash, "b_name": name})
        except LookupUnavailable:
            token, run = await anyio.to_thread.run_sync(self.token_and_run, token_hash, name)
        else:
            token, run = self._token_and_run_row(row)
        if token is not None and token.revoked_at is None and run is not None:
            recent_reads.put(key, (token, run), generation)
        else:  # only a valid token and an existing run are reused, never a refusal
            recent_reads.discard(key)
        return token, run

    def _token_and_run_row(
        self, row: tuple[Any, ...] | None
    ) -> tuple[TokenRow | None, RunInfo | None]:
        if row is None:  # the one-row table always yields a row
            raise RuntimeError("the token-and-run look-up returned no row")
        token, run = row[: len(TOKEN_COLUMNS)], row[len(TOKEN_COLUMNS) :]
        return (
            None if token[0] is None else self._token_row(*token),
            None if run[0] is None else self._run_info(*run),
        )
