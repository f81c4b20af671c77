"""``attest verify``: check a bundle offline and say the verdict (docs/verifying.md).

Exit codes: 0 verified · 1 tampered (an integrity or chain check failed) · 2 could not check
(a required check did not run) or usage error · 3 not from scratch (an origin check failed under
the policy). ``--json`` prints the verdict document (format ``attest-verdict/v1``) and nothing
else on stdout; ``--html OUT`` writes the self-contained HTML report as well.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from attest.errors import AttestError
from attest.keys import TrainerPublicKey
from attest.note import NoteVerifier
from attest.verifier import verify_bundle
from attest.verifier.context import Progress
from attest.verifier.policy import Policy, builtin_policy

__all__ = ["verify"]


def _policy(ref: str) -> Policy:
    if ref in ("strict", "permissive"):
        return builtin_policy(ref)
    return Policy.load(ref)


def _server_key(text: str) -> NoteVerifier:
    path = Path(text)
    if path.is_file():
        text = path.read_text().strip()
    return NoteVerifier.from_vkey(text)


@click.command("verify")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--model",
    type=click.Path(exists=True, path_type=Path),
    help="Final weights (safetensors file or folder) to match against the bundle.",
)
@click.option(
    "--policy",
    "policy_ref",
    default="strict",
    show_default=True,
    help="Policy file, or a built-in policy: strict | permissive.",
)
@click.option(
    "--trust-trainer",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Trainer public key (PEM file) to trust besides the policy's. Repeatable.",
)
@click.option(
    "--trust-server",
    multiple=True,
    help="Log server verifier key (C2SP vkey text or file) to trust. Repeatable.",
)
@click.option(
    "--trust-bundle-keys",
    is_flag=True,
    help="Trust the keys inside the bundle: proves self-consistency only (stated in the verdict).",
)
@click.option(
    "--replay",
    type=click.IntRange(min=0),
    default=None,
    help="Number of segments to replay (default: the policy's replay.segments).",
)
@click.option("--replay-seed", type=int, default=None, help="Seed of the segment choice.")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Training data folder: checked against the manifest's shard digests, then read by the "
    "step-0 loss and replay.",
)
@click.option(
    "--state-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of state files (step-<s>/) kept by the callback, for replay.",
)
@click.option(
    "--parent",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A fine-tune's parent bundle.",
)
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A tree head (signed note) fetched from the log server earlier; the bundle's log must "
    "extend it. Repeatable.",
)
@click.option(
    "--signatures",
    type=click.Choice(["auto", "all", "sample"]),
    default="auto",
    show_default=True,
    help="Verify every record signature, or a sample plus the statement's root "
    "(auto: sample from 4096 records on; sampling only ever happens when the trainer-signed "
    "statement binds every record).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the HTML report here.",
)
@click.option("--verbose", "-v", is_flag=True, help="Do not shorten long lines.")
def verify(
    bundle: Path,
    model: Path | None,
    policy_ref: str,
    trust_trainer: tuple[Path, ...],
    trust_server: tuple[str, ...],
    trust_bundle_keys: bool,
    replay: int | None,
    replay_seed: int | None,
    data_dir: Path | None,
    state_dir: Path | None,
    parent: Path | None,
    checkpoints: tuple[Path, ...],
    signatures: str,
    as_json: bool,
    html_out: Path | None,
    verbose: bool,
) -> None:
    """Verify BUNDLE offline: integrity, chain, from-scratch, replay and components checks.

    Exit 0 verified, 1 tampered, 2 could not check (or usage error), 3 not from scratch.
    """
    try:
        policy = _policy(policy_ref).with_keys(
            trainer_keys=[TrainerPublicKey.from_pem(p.read_bytes()) for p in trust_trainer],
            server_keys=[_server_key(s) for s in trust_server],
        )
        if not bundle.is_file():
            raise click.UsageError(
                f"bundle {bundle} does not exist; export it with `attest export`"
            )
        progress = None if as_json or not sys.stderr.isatty() else _progress()
        verdict = verify_bundle(
            bundle,
            policy=policy,
            model=model,
            data_dir=data_dir,
            state_dir=state_dir,
            replay=policy.replay_segments if replay is None else replay,
            replay_seed=replay_seed,
            parent=parent,
            progress=progress,
            signature_mode=signatures,
            trust_bundle_keys=trust_bundle_keys,
            earlier_checkpoints=[p.read_text(encoding="utf-8") for p in checkpoints],
        )
    except AttestError as exc:
        click.echo(f"attest verify: {exc.message}", err=True)
        sys.exit(2)
    if html_out is not None:
        from attest.verifier.report_html import render_html

        html_out.write_text(render_html(verdict), encoding="utf-8")
    if as_json:
        click.echo(json.dumps(verdict.to_json(), indent=1, sort_keys=True, default=str))
    else:
        from attest.verifier.report_text import print_verdict

        print_verdict(verdict, verbose=verbose)
    sys.exit(verdict.exit_code)


def _progress() -> Progress:
    """A progress callback drawing on stderr (replay segments)."""
    from rich.console import Console
    from rich.progress import Progress as Bar
    from rich.progress import TaskID

    bar = Bar(console=Console(stderr=True), transient=True)
    tasks: dict[str, TaskID] = {}

    def update(task: str, done: int, total: int) -> None:
        if task not in tasks:
            if not bar.live.is_started:
                bar.start()
            tasks[task] = bar.add_task(task, total=total)
        bar.update(tasks[task], completed=done, total=total)
        if all(t.finished for t in bar.tasks):
            bar.stop()

    return update
