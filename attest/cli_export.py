"""``attest export``: download a run's bundle from a log server (a verifier's first step).

It lives in the core, on the standard library's HTTP client, so a proof-only install
(``pip install attest-lineage``: ``export`` and, with the verifier extra, ``verify``) needs no
server dependencies. The bundle is parsed strictly before it is written, so a file this command
leaves is well formed; whether it is *authentic* is for ``attest verify`` to say.
``--checkpoint-out`` also saves the log's latest signed tree head: keep it, and a later
``attest verify --checkpoint`` proves the log was not rewritten in between.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import click

from attest.bundle import Bundle
from attest.client import tree_size_of
from attest.errors import AttestError

__all__ = ["export_command"]

_TIMEOUT_S = 120


def _get(url: str, token: str | None) -> bytes:
    """GET ``url``; a :class:`click.ClickException` naming the fix for anything but 200."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise click.ClickException(f"--server must be an http(s) URL, got {url!r}")
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as resp:
            data: bytes = resp.read()
            return data
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            detail = json.loads(body).get("error", body.decode(errors="replace"))
        except (ValueError, AttributeError):
            detail = body[:200].decode(errors="replace")
        hint = {401: "; pass --token or set ATTEST_TOKEN", 403: "; use a token granted this run"}
        raise click.ClickException(
            f"server answered {exc.code}: {detail}{hint.get(exc.code, '')}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise click.ClickException(f"cannot reach {url}: {reason}; check --server") from None


@click.command("export")
@click.argument("run")
@click.option("--server", required=True, help="Server URL, e.g. http://127.0.0.1:8080.")
@click.option("--token", "token_", default=None, help="Bearer token (default: ATTEST_TOKEN).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Output file (default RUN.bundle.json).",
)
@click.option(
    "--checkpoint-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also save the latest signed tree head here (for a later verify --checkpoint).",
)
def export_command(
    run: str, server: str, token_: str | None, out: Path | None, checkpoint_out: Path | None
) -> None:
    """Download RUN's bundle from a log server (for a verifier or regulator)."""
    token = token_ or os.environ.get("ATTEST_TOKEN")
    base = f"{server.rstrip('/')}/v1/runs/{urllib.parse.quote(run, safe='')}"
    try:
        bundle = Bundle.loads(_get(f"{base}/bundle", token), what="bundle")
    except AttestError as exc:
        raise click.ClickException(f"the server's bundle is malformed: {exc.message}") from None
    path = out or Path(f"{run}.bundle.json")
    bundle.write(path)
    click.echo(
        f"wrote {path} ({len(bundle.records)} records, {len(bundle.checkpoints)} checkpoints)",
        err=True,
    )
    if checkpoint_out is not None:
        if not bundle.checkpoints:
            raise click.ClickException("the bundle holds no signed tree head to save")
        note = bundle.checkpoints[-1]
        checkpoint_out.write_text(note, encoding="utf-8")
        click.echo(
            f"wrote {checkpoint_out} (signed tree head of size {tree_size_of(note)})", err=True
        )
