"""Request and response models of the REST API (they make its OpenAPI schema, DESIGN §5)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "RUN_ID_PATTERN",
    "ConsistencyProof",
    "CreateRun",
    "CreateToken",
    "Entries",
    "ErrorBody",
    "InclusionProof",
    "IssuedToken",
    "PostedVerdict",
    "ReceiptOut",
    "RunSummary",
    "Stored",
    "TokenOut",
]

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ErrorBody(BaseModel):
    """Every 4xx: what is wrong and how to fix it, with evidence when there is some."""

    error: str
    expected: Any = None
    got: Any = None


class CreateRun(_Model):
    run: str = Field(pattern=RUN_ID_PATTERN, description="run id, unique on this server")
    trainer_key: str = Field(max_length=10000, description="ECDSA P-256 public key, PEM")
    meta: dict[str, Any] = Field(default_factory=dict, description="free-form, informational")


class RunSummary(BaseModel):
    run: str
    owner: str
    trainer_key: str
    trainer_key_id: str
    meta: dict[str, Any]
    size: int
    root: str
    created_at: int
    origin: str
    checkpoint: str
    statement: bool
    links: dict[str, str]
    mlflow: dict[str, Any] | None = None


class ReceiptOut(BaseModel):
    run: str
    first_index: int
    count: int
    checkpoint: str


class Entries(BaseModel):
    run: str
    start: int
    end: int
    entries: list[dict[str, Any]]


class InclusionProof(BaseModel):
    run: str
    index: int
    size: int
    leaf_hash: str
    root: str
    proof: list[str]
    checkpoint: str | None


class ConsistencyProof(BaseModel):
    run: str
    old: int
    new: int
    old_root: str
    new_root: str
    proof: list[str]


class Stored(BaseModel):
    run: str
    name: str
    stored: bool


class PostedVerdict(BaseModel):
    """A verdict the server now keeps: its id, the poster, the tree size when it was posted."""

    id: int
    run: str
    posted_by: str
    size: int
    outcome: str
    policy: str


class CreateToken(_Model):
    role: str = Field(pattern=r"^(trainer|reader|admin)$")
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^\S+$")
    runs: list[str] | None = None


class TokenOut(BaseModel):
    id: int
    name: str
    role: str
    runs: list[str] | None
    created_at: int
    revoked_at: int | None


class IssuedToken(TokenOut):
    token: str
