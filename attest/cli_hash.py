"""``attest hash MODEL``: print a model's ``attest-tensors-v1`` digest (DESIGN.md §3, §7).

MODEL is a ``.safetensors`` file or a folder of ``*.safetensors`` shards. Output:

- default: one line, ``attest-tensors-v1/<hash>/chunk=<C>:<hex root>``;
- ``--tensors``: that line, then one row per tensor (name, dtype, shape, bytes, content root);
- ``--json``: the digest blob of :meth:`attest.digest.ModelDigest.to_json` (stable: keys and
  tensors in a fixed order), which :meth:`~attest.digest.ModelDigest.from_json` reads back.

A progress bar goes to stderr for models over 256 MiB when stderr is a terminal. Bad input
prints one line to stderr naming the fix and exits 2. Start-up stays light: neither torch nor
numpy is imported, and rich only when a progress bar is shown.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from attest.digest import DEFAULT_CHUNK_SIZE, ModelDigest, digest_safetensors
from attest.errors import AttestError

__all__ = ["hash_command"]

_PROGRESS_MIN_BYTES = 256 << 20


def _model_bytes(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.glob("*.safetensors") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


@contextmanager
def _progress_bar(path: Path) -> Iterator[Callable[[int, int], None] | None]:
    if _model_bytes(path) < _PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TransferSpeedColumn,
    )

    with Progress(
        "hashing",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("hash", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update


def _fail(message: str) -> None:
    click.echo(f"attest hash: {message}", err=True)
    sys.exit(2)


@click.command("hash")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--tensors", is_flag=True, help="Also list every tensor's digest.")
@click.option(
    "--algorithm",
    type=click.Choice(["sha256", "blake3"]),
    default="sha256",
    show_default=True,
    help="Hash function (sha256 is the one in-toto subjects accept).",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=DEFAULT_CHUNK_SIZE,
    show_default=True,
    help="Chunk size in bytes (part of the algorithm name).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the digest blob as JSON.")
def hash_command(
    model: Path, tensors: bool, algorithm: str, chunk_size: int, as_json: bool
) -> None:
    """Print the attest-tensors-v1 digest of MODEL (a .safetensors file or folder of shards)."""
    if not model.exists():
        _fail(f"{model} does not exist; pass a .safetensors file or a folder of them")
    try:
        with _progress_bar(model) as progress:
            digest = digest_safetensors(
                model, algorithm=algorithm, chunk_size=chunk_size, progress=progress
            )
    except AttestError as exc:
        _fail(f"{exc.message}; pass an intact .safetensors file or a folder of them")
        return
    except OSError as exc:
        _fail(f"cannot read {model}: {exc.strerror or exc}; check the path and permissions")
        return
    if as_json:
        click.echo(_stable_json(digest))
        return
    click.echo(digest.qualified)
    if tensors:
        _print_table(digest)


def _stable_json(digest: ModelDigest) -> str:
    """The blob with fixed key order, one tensor per line."""
    blob = digest.to_json()
    rows = ",\n".join("    " + json.dumps(t, ensure_ascii=False) for t in blob["tensors"])
    return (
        f'{{\n  "algorithm": {json.dumps(blob["algorithm"])},\n  "root": {json.dumps(blob["root"])},'
        f'\n  "tensors": [\n{rows}\n  ]\n}}'
        if rows
        else json.dumps(blob)
    )


def _print_table(digest: ModelDigest) -> None:
    rows = [
        (
            t.name,
            t.dtype,
            "x".join(map(str, t.shape)) or "scalar",
            str(t.nbytes),
            t.content_root.hex(),
        )
        for t in digest.tensors
    ]
    header = ("name", "dtype", "shape", "bytes", "content_root")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        cells = [row[i].ljust(widths[i]) if i != 3 else row[i].rjust(widths[i]) for i in range(4)]
        click.echo("  ".join([*cells, row[4]]))


if __name__ == "__main__":  # pragma: no cover - `python -m attest.cli_hash`
    hash_command(prog_name="attest hash")
