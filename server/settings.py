"""Server settings (DESIGN §5): one pydantic-settings model, read from ``ATTEST_*`` variables.

Embedded default: everything lives in one data folder (``./attest-data``)::

    attest.db          the log (SQLite): runs, leaves, signed tree heads, blobs, statements, tokens
    server.key         the Ed25519 key that signs tree heads (created on first start)
    mlflow.db          MLflow's tracking store (SQLite)
    mlartifacts/       MLflow's artifacts (served through the mounted MLflow app)

Scale-out: ``database_url`` names a PostgreSQL database shared by every replica (they must also
share ``server_key`` and ``log_name``; the first start records the key's verifier in the database
and later starts with another key refuse to run), and ``mlflow_tracking_uri`` a remote MLflow
server, which then serves its own UI (the in-process mount is skipped).

Command-line flags of ``attest serve`` override the environment; :func:`get_settings` caches the
environment-only settings for the process.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_MAX_BODY_BYTES", "Settings", "get_settings"]

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


class Settings(BaseSettings):
    """Everything ``attest serve`` can be told. Environment names are ``ATTEST_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="ATTEST_", frozen=True, extra="ignore")

    data: Path = Field(default=Path("attest-data"), description="local data folder")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the log database (default: SQLite in data)"
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking store (default: SQLite in data, served by this process)",
    )
    mlflow_artifacts_destination: str | None = Field(
        default=None, description="where the embedded MLflow keeps artifacts (default: data)"
    )
    mlflow: bool = Field(default=True, description="mirror runs to MLflow and mount its UI")
    server_key: Path | None = Field(default=None, description="Ed25519 PEM key (data/server.key)")
    log_name: str = Field(default="localhost/attest", description="checkpoint origin prefix")
    host: str = "127.0.0.1"
    port: int = 8080
    insecure_no_auth: bool = Field(default=False, description="serve everyone as admin (demos)")
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    verify_workers: int | None = Field(
        default=None,
        ge=0,
        description="processes that check appended records' signatures (default: one per core, "
        "at most 4; 0 checks in the request thread)",
    )

    def resolved_verify_workers(self) -> int:
        from attest.server.verifying import default_workers

        return default_workers() if self.verify_workers is None else self.verify_workers

    def resolved_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite:///{(self.data / 'attest.db').resolve()}"

    def resolved_server_key(self) -> Path:
        return self.server_key if self.server_key is not None else self.data / "server.key"

    def resolved_mlflow_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.data / 'mlflow.db').resolve()}"

    def resolved_artifacts_destination(self) -> str:
        if self.mlflow_artifacts_destination:
            return self.mlflow_artifacts_destination
        return str((self.data / "mlartifacts").resolve())

    @property
    def mlflow_is_remote(self) -> bool:
        """True when MLflow is a separate server (then it serves its own UI)."""
        uri = self.mlflow_tracking_uri or ""
        return uri.startswith("http://") or uri.startswith("https://")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings from the environment (cached)."""
    return Settings()
