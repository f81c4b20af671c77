"""The log in SQL (DESIGN §5 "Storage"): runs, leaves, signed tree heads, blobs, statements, tokens.

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
    attest_server      server facts shared by replicas (the note verifier key)

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
:class:`~attest.server.verifying.BatchChecker` (worker processes for large batches). Each process
caches what never changes once committed: a run's Merkle tree (grown in place by the leaf hashes
this process commits, else by reading only the leaves it lacks — never rebuilt) and signed tree
heads by ``(run, size)``. Every request reads its token and run rows (one statement, one round
trip), so a revocation or another replica's append is seen by the next request — with one
bounded exception: on PostgreSQL, a proof request may reuse a read made up to
:data:`RECENT_READ_SECONDS` earlier by this process (a revocation or append through this process
is seen at once; one through another, within that second; see :meth:`Store.token_and_run_async`).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from attest.canonical import canonical_json, sha256_digest
from attest.errors import FormatError
from attest.keys import TrainerPublicKey
from attest.log import MAX_BATCH, LogSigner, Receipt
from attest.merkle import SHA256, CompactRange, MerkleTree
from attest.records import check_chain
from attest.server.errors import ConflictError, NotFoundError
from attest.server.lookup import AsyncQuery, DriverQuery, LookupUnavailable, RecentReads
from attest.server.verifying import BatchChecker

__all__ = ["RunInfo", "Store", "TokenRow", "metadata", "unknown_run"]

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


# Statements on the request path, built once: SQLAlchemy then only binds parameters (building
# and keying a statement per call costs about three times the SQLite query itself).
_RUN_BY_NAME = select(runs_t).where(runs_t.c.name == bindparam("b_name"))
_TOKEN_BY_HASH = select(tokens_t).where(tokens_t.c.token_hash == bindparam("b_hash"))
# The look-up every run request makes: the caller's token row and the run's row in one statement,
# so one database round trip (LEFT JOINs from a one-row table: either may be missing).
_TOKEN_COLUMNS = (
    tokens_t.c.id,
    tokens_t.c.name,
    tokens_t.c.role,
    tokens_t.c.runs,
    tokens_t.c.created_at,
    tokens_t.c.revoked_at,
)
_RUN_COLUMNS = (
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
_TOKEN_AND_RUN = select(*_TOKEN_COLUMNS, *_RUN_COLUMNS).select_from(
    _ONE_ROW.outerjoin(tokens_t, tokens_t.c.token_hash == bindparam("b_hash")).outerjoin(
        runs_t, runs_t.c.name == bindparam("b_name")
    )
)
_NOTE_AT = select(heads_t.c.note).where(
    heads_t.c.run_id == bindparam("b_run"), heads_t.c.size == bindparam("b_size")
)
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


def unknown_run(name: str) -> NotFoundError:
    """The 404 for a run id that is not registered."""
    return NotFoundError(f"unknown run {name!r}: create it with POST /v1/runs first")


@dataclass(frozen=True)
class RunInfo:
    """A run's registration and log state as of one read."""

    pk: int
    name: str
    owner: str
    key: TrainerPublicKey
    meta: Mapping[str, Any]
    size: int
    prev: str | None
    root: bytes
    created_at: int


@dataclass(frozen=True)
class TokenRow:
    """A stored token (its hash only)."""

    id: int
    name: str
    role: str
    runs: tuple[str, ...] | None
    created_at: int
    revoked_at: int | None


_NOTE_CACHE = 4096
RECENT_READ_SECONDS = 1.0
"""How long, on PostgreSQL, a proof request may reuse another's read of its token and run."""
_AUTOCOMMIT_POOL: dict[str, Any] = {
    "pool_size": 4,
    "max_overflow": 12,
    "isolation_level": "AUTOCOMMIT",
    "pool_reset_on_return": None,
}


def _split(blob: bytes) -> list[bytes]:
    return [blob[i : i + 32] for i in range(0, len(blob), 32)]


class Store:
    """SQL storage for every run's log. Thread-safe; one per process.

    ``recent_read_seconds`` (PostgreSQL only): how long a proof request may reuse another's
    read of its token and run (see :meth:`token_and_run_async`).
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
            self._async_lookup = AsyncQuery(lookups, _TOKEN_AND_RUN)
            self._recent = RecentReads(recent_read_seconds)
        self._lookup = DriverQuery(lookups, _TOKEN_AND_RUN)
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

    # --- runs -------------------------------------------------------------------------------

    def _key(self, pem: str) -> TrainerPublicKey:
        key = self._keys.get(pem)
        if key is None:
            key = self._keys[pem] = TrainerPublicKey.from_pem(pem)
        return key

    def _info(self, row: Any) -> RunInfo:
        return self._run_info(*(row._mapping[c.name] for c in _RUN_COLUMNS))

    def _run_info(
        self,
        pk: int,
        name: str,
        owner: str,
        pem: str,
        meta: str,
        size: int,
        prev: str | None,
        root: bytes,
        created_at: int,
    ) -> RunInfo:
        """A run from its columns in :data:`_RUN_COLUMNS` order."""
        return RunInfo(
            pk=int(pk),
            name=name,
            owner=owner,
            key=self._key(pem),
            meta=json.loads(meta),
            size=int(size),
            prev=prev,
            root=bytes(root),
            created_at=int(created_at),
        )

    def create_run(
        self, name: str, key: TrainerPublicKey, meta: Mapping[str, Any], *, owner: str
    ) -> tuple[RunInfo, bool]:
        """Register ``name``; returns (run, created). Same key again is not an error."""
        meta_text = json.dumps(dict(meta), sort_keys=True)
        empty = CompactRange()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(runs_t).values(
                        name=name,
                        owner=owner,
                        trainer_key=key.to_pem(),
                        key_id=key.key_id,
                        meta=meta_text,
                        size=0,
                        prev=None,
                        compact=b"",
                        root=empty.root(),
                        created_at=int(time.time()),
                    )
                )
            created = True
        except IntegrityError:
            created = False
        info = self.get_run(name)
        if not created and info.key.key_id != key.key_id:
            raise ConflictError(
                f"run {name!r} is registered to another trainer key; pick a new run id",
                expected=info.key.key_id,
                got=key.key_id,
            )
        return info, created

    def get_run(self, name: str) -> RunInfo:
        with self.reader.connect() as conn:
            row = conn.execute(_RUN_BY_NAME, {"b_name": name}).first()
        if row is None:
            raise unknown_run(name)
        return self._info(row)

    def token_and_run(self, token_hash: str, name: str) -> tuple[TokenRow | None, RunInfo | None]:
        """A request's two look-ups in one statement: the token's row and the run."""
        params = {"b_hash": token_hash, "b_name": name}
        try:
            row = self._lookup.first(params)
        except self._lookup.errors:
            with self.reader.connect() as conn:
                row = tuple(conn.execute(_TOKEN_AND_RUN, params).one())
        return self._token_and_run_row(row)

    async def token_and_run_async(
        self, token_hash: str, name: str, *, recent: bool = False
    ) -> tuple[TokenRow | None, RunInfo | None]:
        """:meth:`token_and_run` for a request on the event loop, without a worker thread where
        that is safe: SQLite answers in place (an indexed read of a local file, about 60 µs,
        that in WAL mode never waits for a writer); PostgreSQL through asyncio connections,
        else on a worker thread (the network must not stall the event loop).

        ``recent``: on PostgreSQL, a valid token and its run as read by an earlier request up
        to :data:`RECENT_READ_SECONDS` ago will do. A revocation or append made through this
        process is seen at once; one made elsewhere, within that time. SQLite always reads.
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
        token, run = row[: len(_TOKEN_COLUMNS)], row[len(_TOKEN_COLUMNS) :]
        return (
            None if token[0] is None else self._token_row(*token),
            None if run[0] is None else self._run_info(*run),
        )

    def list_runs(self) -> list[RunInfo]:
        with self.reader.connect() as conn:
            rows = conn.execute(select(runs_t).order_by(runs_t.c.id)).all()
        return [self._info(r) for r in rows]

    # --- appends ----------------------------------------------------------------------------

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

    # --- reads ------------------------------------------------------------------------------

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

    # --- blobs and statements ---------------------------------------------------------------

    def put_blob(self, info: RunInfo, digest: str, document: Any) -> bool:
        """Store ``document`` under ``digest`` (its SHA-256 name); returns False if already held."""
        data = canonical_json(document)
        got = sha256_digest(data)
        if got != digest:
            raise FormatError(
                "blob does not hash to its name: name it sha256 of its RFC 8785 bytes",
                expected=digest,
                got=got,
            )
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(blobs_t).values(run_id=info.pk, digest=digest, body=data))
        except IntegrityError:
            return False
        return True

    def blobs(self, info: RunInfo) -> dict[str, Any]:
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(blobs_t.c.digest, blobs_t.c.body)
                .where(blobs_t.c.run_id == info.pk)
                .order_by(blobs_t.c.digest)
            ).all()
        return {str(d): json.loads(bytes(b)) for d, b in rows}

    def blob_digests(self, info: RunInfo) -> list[str]:
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(blobs_t.c.digest).where(blobs_t.c.run_id == info.pk)
            ).scalars()
            return [str(d) for d in rows]

    def put_statement(self, info: RunInfo, statement: Mapping[str, Any]) -> bool:
        """Store the signed statement; the same one again is a no-op, another one a conflict."""
        data = canonical_json(dict(statement))
        with self.engine.begin() as conn:
            have = conn.execute(
                select(statements_t.c.body).where(statements_t.c.run_id == info.pk)
            ).scalar()
            if have is not None:
                if bytes(have) != data:
                    raise ConflictError(
                        f"run {info.name!r} already has another signed statement",
                        expected=sha256_digest(bytes(have)),
                        got=sha256_digest(data),
                    )
                return False
            conn.execute(
                insert(statements_t).values(run_id=info.pk, body=data, stored_at=int(time.time()))
            )
        return True

    def statement(self, info: RunInfo) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            body = conn.execute(
                select(statements_t.c.body).where(statements_t.c.run_id == info.pk)
            ).scalar()
        return None if body is None else dict(json.loads(bytes(body)))

    # --- verdicts posted by verifiers ---------------------------------------------------------

    def add_verdict(self, info: RunInfo, *, posted_by: str, document: Mapping[str, Any]) -> int:
        """Keep a verifier's verdict document (a claim by ``posted_by``, never re-judged here);
        returns its id. Verdicts are only added, never replaced."""
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(verdicts_t).values(
                    run_id=info.pk,
                    posted_by=posted_by,
                    posted_at=int(time.time()),
                    size=info.size,
                    outcome=str(document["outcome"]),
                    policy=str(document["policy"]["name"]),
                    document=canonical_json(dict(document)),
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def verdicts(self, info: RunInfo, *, limit: int | None = None) -> list[dict[str, Any]]:
        """The run's posted verdicts, newest first (at most ``limit``): ``id``, ``posted_by``,
        ``posted_at``, the tree ``size`` when posted, and the ``verdict`` document."""
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(verdicts_t)
                .where(verdicts_t.c.run_id == info.pk)
                .order_by(verdicts_t.c.id.desc())
                .limit(limit)
            ).all()
        return [
            {
                "id": r.id,
                "posted_by": r.posted_by,
                "posted_at": r.posted_at,
                "size": r.size,
                "verdict": json.loads(bytes(r.document)),
            }
            for r in rows
        ]

    # --- tokens -----------------------------------------------------------------------------

    def add_token(
        self, *, name: str, role: str, token_hash: str, runs: Sequence[str] | None
    ) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(tokens_t).values(
                    name=name,
                    role=role,
                    token_hash=token_hash,
                    runs=None if runs is None else json.dumps(list(runs)),
                    created_at=int(time.time()),
                    revoked_at=None,
                )
            )
            pk = result.inserted_primary_key
            assert pk is not None
            return int(pk[0])

    @staticmethod
    def _token(row: Any) -> TokenRow:
        return Store._token_row(*(row._mapping[c.name] for c in _TOKEN_COLUMNS))

    @staticmethod
    def _token_row(
        ident: int, name: str, role: str, runs: str | None, created_at: int, revoked_at: int | None
    ) -> TokenRow:
        """A token from its columns in :data:`_TOKEN_COLUMNS` order."""
        return TokenRow(
            int(ident),
            name,
            role,
            None if runs is None else tuple(json.loads(runs)),
            int(created_at),
            None if revoked_at is None else int(revoked_at),
        )

    def find_token(self, token_hash: str) -> TokenRow | None:
        with self.reader.connect() as conn:
            row = conn.execute(_TOKEN_BY_HASH, {"b_hash": token_hash}).first()
        return None if row is None else self._token(row)

    def list_tokens(self) -> list[TokenRow]:
        with self.reader.connect() as conn:
            rows = conn.execute(select(tokens_t).order_by(tokens_t.c.id)).all()
        return [self._token(r) for r in rows]

    def revoke_token(self, ident: str) -> int:
        """Revoke tokens by id or name; returns how many were revoked."""
        cond = tokens_t.c.name == ident
        if ident.isdigit() and len(ident) <= 18:
            cond = cond | (tokens_t.c.id == int(ident))
        with self.engine.begin() as conn:
            result = conn.execute(
                update(tokens_t)
                .where(cond, tokens_t.c.revoked_at.is_(None))
                .values(revoked_at=int(time.time()))
            )
        self._forget_recent_reads()
        return int(result.rowcount)

    def _forget_recent_reads(self) -> None:
        """After a revocation or an append: reads made before it no longer stand in for one."""
        if self._recent is not None:
            self._recent.clear()

    # --- mirror state -----------------------------------------------------------------------

    def mirror_state(self, info: RunInfo) -> tuple[str | None, int, int]:
        """(MLflow run id, leaves mirrored, tree size of the last bundle uploaded)."""
        with self.reader.connect() as conn:
            row = conn.execute(select(mirror_t).where(mirror_t.c.run_id == info.pk)).first()
        if row is None:
            return None, 0, -1
        return row.mlflow_run_id, int(row.size), int(row.bundle_size)

    def set_mirror_state(
        self, info: RunInfo, *, mlflow_run_id: str, size: int, bundle_size: int
    ) -> None:
        values = {"mlflow_run_id": mlflow_run_id, "size": size, "bundle_size": bundle_size}
        for _ in range(2):  # another replica may insert the row between our update and insert
            try:
                with self.engine.begin() as conn:
                    done = conn.execute(
                        update(mirror_t).where(mirror_t.c.run_id == info.pk).values(**values)
                    )
                    if done.rowcount == 0:
                        conn.execute(insert(mirror_t).values(run_id=info.pk, **values))
                return
            except IntegrityError:
                continue

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
