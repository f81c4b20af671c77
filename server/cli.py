"""``attest serve``, ``attest token`` (DESIGN §7).

``serve`` with no flags starts the embedded server on ``./attest-data`` (SQLite log, MLflow on
SQLite, both served from this one process). ``token`` works on the database directly (the same
``--data``/``--database-url`` as ``serve``), so the first admin token can be made before any
server runs; tokens are printed once and stored hashed. (``attest export``, the client side,
is in the core: ``attest.cli_export``.) Flags override ``ATTEST_*`` environment settings.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from attest.server.settings import Settings

__all__ = ["serve", "token"]

_data_option = click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data folder (default ./attest-data, or ATTEST_DATA).",
)
_db_option = click.option(
    "--database-url",
    default=None,
    help="Log database, e.g. postgresql+psycopg://user@host/db (default: SQLite in the data folder).",
)


def _settings(**overrides: Any) -> Settings:
    given = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**given)


def _store(settings: Settings) -> Any:
    from attest.server.app import _server_signer
    from attest.server.storage import Store

    settings.data.mkdir(parents=True, exist_ok=True)
    store = Store(settings.resolved_database_url(), signer=_server_signer(settings))
    store.create_schema()
    return store


@click.command()
@_data_option
@_db_option
@click.option(
    "--mlflow-tracking-uri", default=None, help="Remote MLflow server (default: embedded)."
)
@click.option(
    "--server-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Ed25519 PEM key signing tree heads (default DATA/server.key; share it between replicas).",
)
@click.option(
    "--log-name", default=None, help="Checkpoint origin prefix (default localhost/attest)."
)
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8080).")
@click.option("--no-mlflow", is_flag=True, help="Neither mirror to MLflow nor mount its UI.")
@click.option(
    "--insecure-no-auth", is_flag=True, help="Serve everyone as admin (local demos only)."
)
@click.option(
    "--verify-workers",
    type=click.IntRange(min=0),
    default=None,
    help="Processes checking appended signatures (default: one per core, at most 4; 0: none).",
)
@click.option("--log-level", default="info", show_default=True)
def serve(
    data: Path | None,
    database_url: str | None,
    mlflow_tracking_uri: str | None,
    server_key: Path | None,
    log_name: str | None,
    host: str | None,
    port: int | None,
    no_mlflow: bool,
    insecure_no_auth: bool,
    verify_workers: int | None,
    log_level: str,
) -> None:
    """Run the log server (and the MLflow UI/REST for the same data)."""
    import uvicorn

    settings = _settings(
        data=data,
        database_url=database_url,
        mlflow_tracking_uri=mlflow_tracking_uri,
        server_key=server_key,
        log_name=log_name,
        host=host,
        port=port,
        mlflow=False if no_mlflow else None,
        insecure_no_auth=True if insecure_no_auth else None,
        verify_workers=verify_workers,
    )
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from attest.server.app import create_app

    app = create_app(settings)
    store = app.state.attest.store
    if not settings.insecure_no_auth and not store.list_tokens():
        where = (
            f"--database-url '{settings.database_url}'"
            if settings.database_url
            else f"--data {settings.data}"
        )
        click.echo(
            "no tokens exist yet; create an admin token with:\n"
            f"  attest token create --role admin --name admin {where}",
            err=True,
        )
    click.echo(
        f"attest log server on http://{settings.host}:{settings.port} "
        f"(log: {_redact(settings.resolved_database_url())}; "
        f"server key: {app.state.attest.signer.verifier.to_vkey()})",
        err=True,
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level.lower())


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url
    return url


@click.group()
def token() -> None:
    """Create, list and revoke server access tokens (stored hashed)."""


@token.command("create")
@click.option("--role", type=click.Choice(["trainer", "reader", "admin"]), required=True)
@click.option("--name", default=None, help="Principal name (runs a trainer creates belong to it).")
@click.option(
    "--runs", "runs", multiple=True, help="Limit the token to these run ids (repeatable)."
)
@_data_option
@_db_option
@click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON object instead of the bare token."
)
def token_create(
    role: str,
    name: str | None,
    runs: tuple[str, ...],
    data: Path | None,
    database_url: str | None,
    as_json: bool,
) -> None:
    """Issue a token; it is printed once and never stored."""
    from attest.server.auth import issue_token

    store = _store(_settings(data=data, database_url=database_url))
    secret, ident = issue_token(store, role=role, name=name, runs=list(runs) or None)
    row = next(r for r in store.list_tokens() if r.id == ident)
    if as_json:
        click.echo(json.dumps({"id": ident, "name": row.name, "role": role, "token": secret}))
    else:
        click.echo(secret)
        click.echo(f"token {ident} ({row.name}, {role}) created; it is not shown again", err=True)


@token.command("list")
@_data_option
@_db_option
def token_list(data: Path | None, database_url: str | None) -> None:
    """List tokens (never the tokens themselves)."""
    store = _store(_settings(data=data, database_url=database_url))
    for r in store.list_tokens():
        state = "revoked" if r.revoked_at else "active"
        runs = ",".join(r.runs) if r.runs else "*"
        click.echo(f"{r.id}\t{r.name}\t{r.role}\t{state}\truns={runs}")


@token.command("revoke")
@click.argument("ident")
@_data_option
@_db_option
def token_revoke(ident: str, data: Path | None, database_url: str | None) -> None:
    """Revoke tokens by id or name."""
    store = _store(_settings(data=data, database_url=database_url))
    n = store.revoke_token(ident)
    if n == 0:
        raise click.ClickException(
            f"no active token with id or name {ident!r}; see `attest token list`"
        )
    click.echo(f"revoked {n} token(s)")
