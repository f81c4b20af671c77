"""The run's lineage statement: drafted when ``run.end`` is written, signed once the log
acknowledges it (docs/formats.md §6).

Apart from the recorder because it is a small state machine of its own, driven from two
threads: the recorder's worker arms it after writing ``run.end``, and the spool's sender thread
offers it every receipt. The statement names the log checkpoint of the first receipt that covers
``run.end``, so it can be signed only then, and exactly once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from attest.client import Spool
from attest.digest import ModelDigest
from attest.keys import TrainerKey
from attest.log import Receipt
from attest.statement import Dependency, LineageStatement, loss_curve_digest, sign_statement

from .runstate import RunState, utc_now

__all__ = ["PendingStatement", "draft_statement"]


def draft_statement(state: RunState, final: ModelDigest, note: str) -> LineageStatement:
    """The statement of the run ``state`` describes, ending with model ``final``; ``note`` is
    the signed log checkpoint that covers ``run.end``."""
    init_root = state.init_root
    assert init_root is not None
    deps = [Dependency("init-weights", init_root, {})]
    if state.manifest is not None:
        deps.append(Dependency("data-manifest", state.manifest.removeprefix("sha256:"), {}))
    for c in state.components:
        deps.append(
            Dependency(
                f"component:{c['name']}",
                c["digest"]["root"],
                {"source": c["source"], "license": c["license"], "prefix": c["prefix"]},
            )
        )
    prods = [Dependency(f"checkpoint:{st}", root, {}) for st, root in state.checkpoints]
    prods.append(Dependency("loss-curve", loss_curve_digest(0, state.losses)[7:], {}))
    p = state.params
    return LineageStatement(
        run=state.run,
        model_sha256=final.hex,
        digest_algorithm=final.algorithm,
        external_parameters={"config": p["config"], "seed": p["seed"], "code": p["code"]},
        internal_parameters={"environment": p["environment"]},
        dependencies=tuple(deps),
        byproducts=tuple(prods),
        log_checkpoint=note,
        started=state.started,
        finished=utc_now(),
    )


class PendingStatement:
    """Signs the statement with ``key`` and puts it in the spool once, on the first receipt
    that covers ``run.end``; :meth:`wait` blocks until then."""

    def __init__(self, key: TrainerKey) -> None:
        self._key = key
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._end_seq: int | None = None
        self._draft: Callable[[str], LineageStatement] | None = None
        self._spool: Spool | None = None
        self.signed: dict[str, Any] | None = None

    def arm(self, end_seq: int, draft: Callable[[str], LineageStatement], spool: Spool) -> None:
        """``run.end`` is record ``end_seq``: from now on a receipt covering it signs
        ``draft(note)`` into ``spool``, and so does one the spool already holds."""
        with self._lock:
            self._end_seq, self._draft, self._spool = end_seq, draft, spool
        for r in list(spool.receipts):
            self.offer(r)

    def offer(self, receipt: Receipt) -> None:
        """Spool listener (sender thread): sign if ``receipt`` is the first to cover ``run.end``."""
        with self._lock:
            if self._end_seq is None or self._draft is None or self._spool is None:
                return
            if receipt.first_index + receipt.count <= self._end_seq:
                return
            if self._done.is_set():
                return
            self.signed = sign_statement(self._draft(receipt.checkpoint), self._key)
            self._spool.add_statement(self.signed)
            self._done.set()

    def wait(self, timeout: float | None) -> bool:
        """True once the statement is signed and spooled; False if ``timeout`` seconds passed."""
        return self._done.wait(timeout)
