"""Bearer tokens, stored as SHA-256 only (:class:`TokenRow`).

A token's secret never reaches the database: :mod:`attest.server.auth` hashes it, and the store
keeps and finds the hash. Tokens are added and revoked (by id or by name, which stamps
``revoked_at``), never deleted, so a listing shows the revoked ones too. A revocation also clears
this process's recent reads (:mod:`.request_reads`): a request through this process sees it at
once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from attest.server.storage.core import StoreCore
from attest.server.storage.tables import TOKEN_COLUMNS, tokens_t

__all__ = ["TokenRow", "TokenStore"]

# Built once at import, so a call only binds parameters: the token row by hash.
_TOKEN_BY_HASH = select(tokens_t).where(tokens_t.c.token_hash == bindparam("b_hash"))


@dataclass(frozen=True)
class TokenRow:
    """A stored token (its hash only)."""

    id: int
    name: str
    role: str
    runs: tuple[str, ...] | None
    created_at: int
    revoked_at: int | None


class TokenStore(StoreCore):
    """Issuing, finding, listing and revoking tokens."""

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
        return TokenStore._token_row(*(row._mapping[c.name] for c in TOKEN_COLUMNS))

    @staticmethod
    def _token_row(
        ident: int, name: str, role: str, runs: str | None, created_at: int, revoked_at: int | None
    ) -> TokenRow:
        """A token from its columns in :data:`TOKEN_COLUMNS` order."""
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
