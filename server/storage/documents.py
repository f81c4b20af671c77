"""A run's documents beside its log: content-addressed blobs and the signed statement.

A blob is stored under the SHA-256 of its RFC 8785 bytes and refused when its name is not that
hash, so a blob's name is its content; storing one again is not an error (``put_blob`` says it
was already held). A run has at most one signed statement (the trainer-signed Sigstore bundle):
the same bytes again are a no-op, other bytes a conflict that names both digests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from attest.canonical import canonical_json, sha256_digest
from attest.errors import FormatError
from attest.server.errors import ConflictError
from attest.server.storage.core import StoreCore
from attest.server.storage.runs import RunInfo
from attest.server.storage.tables import blobs_t, statements_t

__all__ = ["DocumentStore"]


class DocumentStore(StoreCore):
    """Storing and reading a run's blobs and its signed statement."""

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
