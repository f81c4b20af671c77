"""Verdicts posted back by verifiers: claims kept as posted, never re-judged here.

Each verdict document is inserted with who posted it, when, and the run's tree size at that
moment; its outcome and policy name are copied into columns of their own. Verdicts are only
added, never replaced, and read newest first — with a limit, so the mirror and the run page read
only the latest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select

from attest.canonical import canonical_json
from attest.server.storage.core import StoreCore
from attest.server.storage.runs import RunInfo
from attest.server.storage.tables import verdicts_t

__all__ = ["VerdictStore"]


class VerdictStore(StoreCore):
    """Keeping and listing the verdicts posted on a run."""

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
