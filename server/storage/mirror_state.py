"""How far the MLflow mirror got, per run (:mod:`attest.server.mirror`).

One row per run: the MLflow run id, the leaves mirrored, and the tree size of the last bundle
uploaded; a run without a row reads as ``(None, 0, -1)``, nothing mirrored yet. It is written
as an update, else an insert; when another replica inserts the row in between, the write is
tried once more (and then finds the row to update).
"""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from attest.server.storage.core import StoreCore
from attest.server.storage.runs import RunInfo
from attest.server.storage.tables import mirror_t

__all__ = ["MirrorStateStore"]


class MirrorStateStore(StoreCore):
    """Reading and recording a run's mirror progress."""

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
