"""The log's schema in SQL (DESIGN §5 "Storage"), and the one statement every run request reads.

Tables (prefixed ``attest_`` so they can share a database with MLflow's)::

    attest_runs        one row per run: trainer key, owner, and the log state — size, the last
                       record's digest (``prev``), the compact range (one hash per set bit of the
                       size, RFC 9162 subtree hashes) and the root
    attest_leaves      (run, idx) primary key: leaf bytes and leaf hash; never updated
    attest_tree_heads  (run, size) primary key: every checkpoint an append handed out
    attest_blobs       (run, "sha256:<hex>") → canonical JSON bytes
    attest_statements  run → the trainer-signed Sigstore bundle
    attest_tokens      bearer tokens, stored as SHA-256 only
    attest_mirror      per run: the MLflow run id and how far the mirror got
    attest_verdicts    verdict documents posted back by verifiers, with who posted them and the
                       tree size then; only ever inserted
    attest_server      server facts shared by replicas (the note verifier key)

The primary keys back the log's guarantees: with the append's row lock (:mod:`.appends`),
``(run, idx)`` makes a gap or a duplicate leaf impossible whatever several replicas do, and
``(run, size)`` makes a signed tree head a fact that, once committed, never changes (so each
process may cache it, :mod:`.heads`).

Statements on the request path are built once, at import, beside the code that runs them:
SQLAlchemy then only binds parameters (building and keying a statement per call costs about three
times the SQLite query itself). The one built here, :data:`TOKEN_AND_RUN`, is shared: the
store compiles it for its look-up paths (:mod:`attest.server.lookup`) and decodes its rows by
:data:`TOKEN_COLUMNS` and :data:`RUN_COLUMNS` (:mod:`.request_reads`).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    literal_column,
    select,
)

__all__ = [
    "RUN_COLUMNS",
    "TOKEN_AND_RUN",
    "TOKEN_COLUMNS",
    "blobs_t",
    "heads_t",
    "leaves_t",
    "metadata",
    "mirror_t",
    "runs_t",
    "server_t",
    "statements_t",
    "tokens_t",
    "verdicts_t",
]

metadata = MetaData()

runs_t = Table(
    "attest_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("owner", String(200), nullable=False),
    Column("trainer_key", Text, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("meta", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("prev", String(71), nullable=True),
    Column("compact", LargeBinary, nullable=False),
    Column("root", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)
leaves_t = Table(
    "attest_leaves",
    metadata,
    Column("run_id", Integer, ForeignKey("attest_runs.id"), primary_key=True),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("data", LargeBinary, nullable=False),
    Column("leaf_hash", LargeBinary, nullable=False),
)
heads_t = Table(
    "attest_tree_heads",
    metadata,
    Column("run_id", Integer, ForeignKey("attest_runs.id"), primary_key=True),
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary, nullable=False),
    Column("note", Text, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
)
blobs_t = Table(
    "attest_blobs",
    metadata,
    Column("run_id", Integer, ForeignKey("attest_runs.id"), primary_key=True),
    Column("digest", String(71), primary_key=True),
    Column("body", LargeBinary, nullable=False),
)
statements_t = Table(
    "attest_statements",
    metadata,
    Column("run_id", Integer, ForeignKey("attest_runs.id"), primary_key=True),
    Column("body", LargeBinary, nullable=False),
    Column("stored_at", BigInteger, nullable=False),
)
tokens_t = Table(
    "attest_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("runs", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)
mirror_t = Table(
    "attest_mirror",
    metadata,
    Column("run_id", Integer, ForeignKey("attest_runs.id"), primary_key=True),
    Column("mlflow_run_id", String(64), nullable=True),
    Column("size", BigInteger, nullable=False),
    Column("bundle_size", BigInteger, nullable=False),
)
verdicts_t = Table(
    "attest_verdicts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("attest_runs.id"), nullable=False, index=True),
    Column("posted_by", String(200), nullable=False),
    Column("posted_at", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("policy", String(200), nullable=False),
    Column("document", LargeBinary, nullable=False),
)
server_t = Table(
    "attest_server",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)


# The look-up every run request makes: the caller's token row and the run's row in one statement,
# so one database round trip (LEFT JOINs from a one-row table: either may be missing).
TOKEN_COLUMNS = (
    tokens_t.c.id,
    tokens_t.c.name,
    tokens_t.c.role,
    tokens_t.c.runs,
    tokens_t.c.created_at,
    tokens_t.c.revoked_at,
)
RUN_COLUMNS = (
    runs_t.c.id,
    runs_t.c.name,
    runs_t.c.owner,
    runs_t.c.trainer_key,
    runs_t.c.meta,
    runs_t.c.size,
    runs_t.c.prev,
    runs_t.c.root,
    runs_t.c.created_at,
)
_ONE_ROW = select(literal_column("1").label("one")).subquery("one")
TOKEN_AND_RUN = select(*TOKEN_COLUMNS, *RUN_COLUMNS).select_from(
    _ONE_ROW.outerjoin(tokens_t, tokens_t.c.token_hash == bindparam("b_hash")).outerjoin(
        runs_t, runs_t.c.name == bindparam("b_name")
    )
)
