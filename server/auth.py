"""Bearer tokens and roles (DESIGN §5 "Auth").

A token is ``attest_`` followed by 43 URL-safe random characters; the server stores only its
SHA-256 (hex), so a copy of the database gives no usable token. Each token has a *name* (the
principal: runs a trainer creates are owned by that name, so a trainer may rotate tokens under one
name and keep its runs), a role, and optionally a list of run ids it is limited to.

Roles:

=========  ==================================================================================
trainer    creates runs (only those listed, when the token lists runs); appends, stores blobs
           and the statement, and reads its own runs (and any listed ones)
reader     reads runs: all of them, or only the listed ones (a regulator's grant), and posts
           verdicts on the runs it reads
admin      everything, including issuing and revoking tokens
=========  ==================================================================================

``--insecure-no-auth`` (demos on one machine only) serves every request as an admin named
``anonymous`` and says so loudly at start-up.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from attest.errors import FormatError
from attest.server.errors import ForbiddenError, UnauthenticatedError
from attest.server.storage import RunInfo, Store, TokenRow

__all__ = [
    "ANONYMOUS",
    "ROLES",
    "TOKEN_PREFIX",
    "Principal",
    "authenticate",
    "bearer_token",
    "hash_token",
    "issue_token",
    "principal_for",
]

ROLES = ("trainer", "reader", "admin")
TOKEN_PREFIX = "attest_"


@dataclass(frozen=True)
class Principal:
    """Who is asking: the token's name, role and run grants (``None`` = not limited)."""

    name: str
    role: str
    runs: tuple[str, ...] | None = None

    def _granted(self, run: str) -> bool:
        return self.runs is not None and run in self.runs

    def can_read(self, run: RunInfo) -> bool:
        if self.role == "admin":
            return True
        if self.role == "reader":
            return self.runs is None or self._granted(run.name)
        return run.owner == self.name or self._granted(run.name)

    def can_write(self, run: RunInfo) -> bool:
        return self.role == "admin" or (self.role == "trainer" and run.owner == self.name)

    def require_read(self, run: RunInfo) -> None:
        if not self.can_read(run):
            raise ForbiddenError(
                f"token {self.name!r} ({self.role}) may not read run {run.name!r}; "
                "ask an admin for a reader token granted this run"
            )

    def require_write(self, run: RunInfo) -> None:
        if not self.can_write(run):
            raise ForbiddenError(
                f"token {self.name!r} ({self.role}) may not write to run {run.name!r}: "
                "only the trainer that created it can",
                expected=run.owner,
                got=self.name,
            )

    def require_create(self, run: str) -> None:
        if self.role == "admin":
            return
        if self.role != "trainer":
            raise ForbiddenError(
                f"a {self.role} token cannot create runs; use a trainer token",
                expected="trainer",
                got=self.role,
            )
        if self.runs is not None and run not in self.runs:
            raise ForbiddenError(
                f"token {self.name!r} may only create the runs it lists",
                expected=list(self.runs),
                got=run,
            )

    def require_verdict(self, run: RunInfo) -> None:
        """Post a verdict on ``run``: a reader (a verifier or regulator) granted the run, or an
        admin. A trainer may not: a verdict on one's own run would judge oneself."""
        if self.role == "trainer" or not self.can_read(run):
            raise ForbiddenError(
                f"token {self.name!r} ({self.role}) may not post a verdict on run {run.name!r}; "
                "use a reader token granted this run",
                expected="reader or admin",
                got=self.role,
            )

    def require_admin(self) -> None:
        if self.role != "admin":
            raise ForbiddenError(
                "only admin tokens may manage tokens", expected="admin", got=self.role
            )


ANONYMOUS = Principal(name="anonymous", role="admin")


def hash_token(token: str) -> str:
    """The stored form of a token: lowercase hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(
    store: Store, *, role: str, name: str | None = None, runs: Sequence[str] | None = None
) -> tuple[str, int]:
    """Create a token; returns (the token — shown once, never stored —, its id)."""
    if role not in ROLES:
        raise FormatError("unknown role", expected=list(ROLES), got=role)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    label = name or f"{role}-{secrets.token_hex(4)}"
    if not label or len(label) > 200 or any(c.isspace() for c in label):
        raise FormatError("token name must be 1-200 characters without spaces", got=label)
    ident = store.add_token(name=label, role=role, token_hash=hash_token(token), runs=runs or None)
    return token, ident


def bearer_token(authorization: str | None, cookie: str | None = None) -> str:
    """The token an ``Authorization: Bearer`` header (or else the session cookie) carries."""
    token: str | None = None
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise UnauthenticatedError(
                "Authorization header must be 'Bearer <token>'", got=scheme[:20]
            )
        token = value.strip()
    elif cookie:
        token = cookie
    if token is None:
        raise UnauthenticatedError(
            "missing bearer token: send 'Authorization: Bearer <token>' "
            "(create one with `attest token create`)"
        )
    return token


def principal_for(row: TokenRow | None) -> Principal:
    """The principal of a stored token row; 401 for no row or a revoked token."""
    if row is None or row.revoked_at is not None:
        raise UnauthenticatedError("unknown or revoked token; ask an admin for a new one")
    return Principal(name=row.name, role=row.role, runs=row.runs)


def authenticate(store: Store, authorization: str | None, cookie: str | None = None) -> Principal:
    """The principal for an ``Authorization: Bearer`` header (or the session cookie).

    Every request reads the token's row: a revocation takes effect on the next request, on
    every replica."""
    return principal_for(store.find_token(hash_token(bearer_token(authorization, cookie))))
