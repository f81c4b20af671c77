"""The log in SQL (DESIGN §5 "Storage"): runs, leaves, signed tree heads, blobs, statements, tokens.

Callers import from here: :class:`Store` (one per process), the :class:`RunInfo` and
:class:`TokenRow` values it returns, :func:`unknown_run`, and the schema's :data:`metadata`. Each
module underneath holds one noun — its rows, and the SQL and transactions that read and write
them:

=================  ===============================================================================
``tables``         the schema (every ``attest_`` table) and the token-and-run statement
``core``           engines and their pools, the caches' state, schema creation, the server key
``runs``           registering runs; :class:`RunInfo`
``tokens``         bearer tokens, stored as SHA-256 only; :class:`TokenRow`
``request_reads``  the token-and-run read every run request makes, and its reuse on PostgreSQL
``appends``        the append transaction
``heads``          signed tree heads, cached per process
``trees``          leaves, and the Merkle trees cached per process
``documents``      content-addressed blobs and the signed statement
``verdicts``       verdicts posted back by verifiers
``mirror_state``   how far the MLflow mirror got
=================  ===============================================================================

:class:`Store` is their sum. Each noun is a class over :class:`~.core.StoreCore`, which owns what
they share (the engines, the signer and batch checker, the caches); a noun that builds on another
inherits it (an append reads runs and fills the head and tree caches). Callers keep one object
with one set of methods, and each method's SQL sits with its noun.

Every request reads its token and run rows (one statement, one round trip), so a revocation or
another replica's append is seen by the next request — with one bounded exception: on
PostgreSQL, a proof request may reuse a read made up to :data:`RECENT_READ_SECONDS` earlier by
this process (a revocation or append through this process is seen at once; one through another,
within that second; see :mod:`.request_reads`).
"""

from __future__ import annotations

from attest.server.storage.appends import AppendStore
from attest.server.storage.core import RECENT_READ_SECONDS as RECENT_READ_SECONDS
from attest.server.storage.documents import DocumentStore
from attest.server.storage.mirror_state import MirrorStateStore
from attest.server.storage.request_reads import RequestReadStore
from attest.server.storage.runs import RunInfo, unknown_run
from attest.server.storage.tables import metadata
from attest.server.storage.tokens import TokenRow
from attest.server.storage.verdicts import VerdictStore

__all__ = ["RunInfo", "Store", "TokenRow", "metadata", "unknown_run"]
# Importable from here as before, outside the public surface: RECENT_READ_SECONDS (the redundant
# alias marks the re-export).


class Store(AppendStore, RequestReadStore, DocumentStore, VerdictStore, MirrorStateStore):
    """SQL storage for every run's log. Thread-safe; one per process.

    ``recent_read_seconds`` (PostgreSQL only): how long a proof request may reuse another's
    read of its token and run (see :meth:`~.request_reads.RequestReadStore.token_and_run_async`).
    """
