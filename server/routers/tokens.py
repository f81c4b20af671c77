"""Token administration over REST (admin role); the ``attest token`` CLI does the same on the
database directly."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from attest.server.auth import issue_token
from attest.server.deps import PrincipalDep, StateDep
from attest.server.errors import NotFoundError
from attest.server.schemas import CreateToken, ErrorBody, IssuedToken, TokenOut
from attest.server.storage import TokenRow

__all__ = ["router", "token_out"]

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 422)
}


def token_out(row: TokenRow) -> TokenOut:
    return TokenOut(
        id=row.id,
        name=row.name,
        role=row.role,
        runs=None if row.runs is None else list(row.runs),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


@router.post("", status_code=201, response_model=IssuedToken, responses=_ERRORS)
def create_token(body: CreateToken, state: StateDep, principal: PrincipalDep) -> IssuedToken:
    """Issue a token; the response is the only place the token itself ever appears."""
    principal.require_admin()
    token, ident = issue_token(state.store, role=body.role, name=body.name, runs=body.runs)
    row = next(r for r in state.store.list_tokens() if r.id == ident)
    return IssuedToken(token=token, **token_out(row).model_dump())


@router.get("", response_model=list[TokenOut], responses=_ERRORS)
def list_tokens(state: StateDep, principal: PrincipalDep) -> list[TokenOut]:
    """Every token (never the token text: only its hash is stored)."""
    principal.require_admin()
    return [token_out(r) for r in state.store.list_tokens()]


@router.delete("/{ident}", response_model=dict[str, int], responses=_ERRORS)
def revoke_token(
    ident: Annotated[str, Path(min_length=1, max_length=200)],
    state: StateDep,
    principal: PrincipalDep,
) -> dict[str, int]:
    """Revoke the tokens with this id or name."""
    principal.require_admin()
    n = state.store.revoke_token(ident)
    if n == 0:
        raise NotFoundError(f"no active token with id or name {ident!r}")
    return {"revoked": n}
