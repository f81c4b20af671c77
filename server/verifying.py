"""Checking a batch of appended envelopes, with signatures verified on several cores (DESIGN §5
"Appends").

Every record of an append is parsed (DSSE envelope, RFC 8785 canonical payload, record fields)
and its ECDSA signature checked under the run's trainer key before the run's row is locked.
Verifying is about 0.08 ms per record. Recent ``cryptography`` releases let go of the GIL while
OpenSSL verifies, older ones (the project accepts 42 and up) do not, so only processes overlap
it on every supported version; with a release that lets go, a thread pool measured the same
batched append rate here (3.8–4.7k records/s either way). :class:`BatchChecker` parses in the
calling thread and, for a large batch, verifies the signatures of contiguous chunks in a pool of worker
*processes* (``spawn``ed, so no lock or connection of the server is inherited). Only the
envelopes (payload and signature bytes) travel to a worker and only a failure comes back, so the
hand-off costs little; small batches, for which a round trip to a worker costs more than the
check, are verified in the calling thread.

The outcome is the same either way, and the same as :func:`check_batch`: every record is parsed
first, so the first malformed record of the batch is reported even if an earlier one has a bad
signature; then, in order, each record must name the run and verify under its key. Workers send
errors back as data and the caller raises them, so the error class, message and
``expected``/``got`` evidence cross the process boundary intact.

A worker exits by itself when the server process is gone (even after ``kill -9``), and a pool
broken by a dead worker is replaced on the next batch (that batch is verified in process).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from attest.dsse import Envelope
from attest.errors import AttestError, FormatError
from attest.keys import TrainerPublicKey
from attest.records import SignedRecord

__all__ = [
    "RETRY_AFTER_S",
    "BatchChecker",
    "check_batch",
    "default_workers",
    "shared_checker",
]

log = logging.getLogger("attest.server")

RETRY_AFTER_S = 60
"""After the pool breaks, how long batches are verified in process before a new pool is tried."""

# (error class, message, expected, got): an AttestError as plain data.
_Failure = tuple[type[AttestError], str, Any, Any]


def default_workers() -> int:
    """Worker processes used when none are configured: one per core, at most four; none on a
    single core (the pool could only add overhead there)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    return 0 if cores < 2 else min(cores, 4)


def _parse(run: str, envelopes: Sequence[object]) -> tuple[list[SignedRecord], int]:
    """Parse every envelope (raising the first malformed one); also the index of the first
    record of another run (``len`` if none), before which signatures must be checked."""
    signed = [SignedRecord.from_json(e, field=f"records[{i}]") for i, e in enumerate(envelopes)]
    foreign = next((i for i, s in enumerate(signed) if s.record.run != run), len(signed))
    return signed, foreign


def _foreign(signed: Sequence[SignedRecord], i: int, run: str) -> FormatError:
    return FormatError(
        f"records[{i}] belongs to another run", expected=run, got=signed[i].record.run
    )


def _verify(key: TrainerPublicKey, envelopes: Sequence[Envelope]) -> _Failure | None:
    """The first signature failure among ``envelopes``, as data."""
    try:
        for e in envelopes:
            e.verify(key)
    except AttestError as exc:
        return (type(exc), exc.message, exc.expected, exc.got)
    return None


def _raise(failure: _Failure) -> None:
    cls, message, expected, got = failure
    raise cls(message, expected=expected, got=got)


def check_batch(run: str, key: TrainerPublicKey, envelopes: Sequence[object]) -> list[SignedRecord]:
    """Parse every envelope and check that it belongs to ``run`` and is signed by ``key``."""
    signed, foreign = _parse(run, envelopes)
    failure = _verify(key, [s.envelope for s in signed[:foreign]])
    if failure is not None:
        _raise(failure)
    if foreign < len(signed):
        raise _foreign(signed, foreign, run)
    return signed


# --- worker process side ---------------------------------------------------------------------

_worker_keys: dict[str, TrainerPublicKey] = {}


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)  # the server is gone (a worker never holds anything that needs flushing)


def _worker_init(parent: int) -> None:
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _worker_ready() -> bool:
    return True


def _worker_verify(key_pem: str, envelopes: Sequence[Envelope]) -> _Failure | None:
    key = _worker_keys.get(key_pem)
    if key is None:
        if len(_worker_keys) > 256:
            _worker_keys.clear()
        key = _worker_keys[key_pem] = TrainerPublicKey.from_pem(key_pem)
    return _verify(key, envelopes)


class BatchChecker:
    """Checks append batches, verifying in ``workers`` processes for batches of ``min_batch``
    or more records.

    Thread-safe; the pool starts with :meth:`start` or on the first large batch. ``workers=0``
    verifies in the calling thread. If the pool breaks (a worker died or could not start), the
    batches of the next :data:`RETRY_AFTER_S` seconds are verified in process, then a new pool
    is tried.
    """

    def __init__(self, *, workers: int, min_batch: int = 32) -> None:
        if workers < 0:
            raise ValueError("workers must be >= 0")
        self.workers = workers
        self.min_batch = max(2, min_batch)
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._retry_at = 0.0

    def _executor(self) -> ProcessPoolExecutor | None:
        with self._lock:
            if self._pool is None and not self._closed and time.monotonic() >= self._retry_at:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_worker_init,
                    initargs=(os.getpid(),),
                )
            return self._pool

    def _broken(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
                self._retry_at = time.monotonic() + RETRY_AFTER_S
                log.warning(
                    "signature-check worker pool broke; verifying in process for %d s",
                    RETRY_AFTER_S,
                )
        pool.shutdown(wait=False, cancel_futures=True)

    def start(self) -> None:
        """Start the worker processes now (else on the first large batch)."""
        pool = self._executor() if self.workers else None
        if pool is None:
            return
        try:  # have every worker import the record code before traffic arrives
            for f in [pool.submit(_worker_ready) for _ in range(self.workers)]:
                f.result()
        except BrokenProcessPool:
            self._broken(pool)

    def check(
        self, run: str, key: TrainerPublicKey, envelopes: Sequence[object]
    ) -> list[SignedRecord]:
        """Like :func:`check_batch`, verifying on the pool when the batch is large enough."""
        if self.workers == 0 or len(envelopes) < self.min_batch:
            return check_batch(run, key, envelopes)
        signed, foreign = _parse(run, envelopes)
        failure = self._verify_on_pool(key, [s.envelope for s in signed[:foreign]])
        if failure is not None:
            _raise(failure)
        if foreign < len(signed):
            raise _foreign(signed, foreign, run)
        return signed

    def _verify_on_pool(self, key: TrainerPublicKey, envelopes: list[Envelope]) -> _Failure | None:
        n = len(envelopes)
        pool = self._executor() if n >= self.min_batch else None
        if pool is None:
            return _verify(key, envelopes)
        chunks = min(self.workers, n // (self.min_batch // 2))
        bounds = [n * c // chunks for c in range(chunks + 1)]
        pem = key.to_pem()
        try:
            futures: list[Future[_Failure | None]] = [
                pool.submit(_worker_verify, pem, envelopes[a:b])
                for a, b in itertools.pairwise(bounds)
            ]
            results = [f.result() for f in futures]
        except BrokenProcessPool:
            self._broken(pool)
            return _verify(key, envelopes)
        return next((r for r in results if r is not None), None)

    def close(self) -> None:
        """Stop the worker processes (later batches are verified in process)."""
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


_shared: dict[int, BatchChecker] = {}
_shared_lock = threading.Lock()


def shared_checker(workers: int) -> BatchChecker:
    """The process's checker with ``workers`` processes: apps created in one process (tests,
    an embedding host) share one pool rather than each starting its own. Its workers stop when
    the process exits."""
    with _shared_lock:
        checker = _shared.get(workers)
        if checker is None:
            checker = _shared[workers] = BatchChecker(workers=workers)
        return checker
