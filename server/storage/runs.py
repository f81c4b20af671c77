"""Runs: registration, and a run's row as one read saw it (:class:`RunInfo`).

A run is registered once, with its trainer key and owner. Registering the same name with the same
key again returns the existing run (``created`` is False: a trainer retrying is not an error);
with another key it is a conflict. The key and the row id never change after registration, which
is what lets an append verify signatures before it takes the row lock; the log state in the row
(size, ``prev``, compact range, root) changes only under that lock (:mod:`.appends`).

A :class:`RunInfo` is a snapshot: code that needs the state as of now reads the run again (or,
for an append, locks its row). Trainer keys are parsed once per PEM and kept for the life of the
process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from attest.keys import TrainerPublicKey
from attest.merkle import CompactRange
from attest.server.errors import ConflictError, NotFoundError
from attest.server.storage.core import StoreCore
from attest.server.storage.tables import RUN_COLUMNS, runs_t

__all__ = ["RunInfo", "RunStore", "unknown_run"]

# Built once at import, so a call only binds parameters: the run row by name.
_RUN_BY_NAME = select(runs_t).where(runs_t.c.name == bindparam("b_name"))


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


class RunStore(StoreCore):
    """Registering runs and reading their rows."""

    def _key(self, pem: str) -> TrainerPublicKey:
        key = self._keys.get(pem)
        if key is None:
            key = self._keys[pem] = TrainerPublicKey.from_pem(pem)
        return key

    def _info(self, row: Any) -> RunInfo:
        return self._run_info(*(row._mapping[c.name] for c in RUN_COLUMNS))

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
        """A run from its columns in :data:`RUN_COLUMNS` order."""
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

    def list_runs(self) -> list[RunInfo]:
        with self.reader.connect() as conn:
            rows = conn.execute(select(runs_t).order_by(runs_t.c.id)).all()
        return [self._info(r) for r in rows]
