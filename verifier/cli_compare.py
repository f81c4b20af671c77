"""`attest compare A B`: forensics for a "was this model copied?" dispute (DESIGN.md §6, §7).

A thin click adapter over :mod:`attest.verifier.forensics`. Exit status: 0 independent,
1 derived, 3 inconclusive, 2 usage or input error (one line on stderr naming the fix), as
click reports its own usage errors with 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from attest.errors import AttestError

__all__ = ["compare"]

EXIT = {"independent": 0, "derived": 1, "inconclusive": 3}


@click.command("compare")
@click.argument("a", type=click.Path(exists=True, path_type=Path))
@click.argument("b", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--reference-zoo",
    "zoo_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of other models: an empirical null per tensor.",
)
@click.option(
    "--alpha",
    type=float,
    default=0.01,
    show_default=True,
    help="Significance level of the verdict.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of text.")
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write an HTML report to this file.",
)
def compare(
    a: Path, b: Path, zoo_dir: Path | None, alpha: float, as_json: bool, html_out: Path | None
) -> None:
    """Compare reference model A with suspect model B (safetensors files or model folders)."""
    from .forensics import compare_models, load_model, to_html, to_json, to_text

    if not 0.0 < alpha < 1.0:
        click.echo(
            f"error: --alpha must be in (0, 1), got {alpha}; pass e.g. --alpha 0.01", err=True
        )
        sys.exit(2)
    try:
        ma, mb = load_model(a), load_model(b)
        zoo = []
        if zoo_dir is not None:
            for entry in sorted(zoo_dir.iterdir()):
                if entry.is_dir() or entry.suffix == ".safetensors":
                    zoo.append(load_model(entry))
        result = compare_models(ma, mb, alpha=alpha, zoo=zoo)
    except AttestError as exc:
        click.echo(f"error: {exc.message} (check the model paths)", err=True)
        sys.exit(2)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # Malformed input must never exit 1, which means "derived".
        click.echo(f"error: cannot read the models: {exc!r}; check the model files", err=True)
        sys.exit(2)
    click.echo(to_json(result) if as_json else to_text(result))
    if html_out is not None:
        html_out.write_text(to_html(result), encoding="utf-8")
    sys.exit(EXIT[result.verdict.label])
