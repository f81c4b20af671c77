"""``attest demo``: the whole product in one command (README quick start).

Trains a tiny GPT from scratch on CPU with the lineage callback, attesting every step to the log
server started in-process (SQLite + MLflow's local store under ``DIR/server``; nothing to start by
hand), exports the bundle, writes a policy that trusts the demo's
keys, verifies the bundle offline and prints the verdict. ``--out`` then holds exactly what a
verifier needs — ``bundle.json``, ``model.safetensors``, ``policy.json`` — plus ``report.html``,
and ``attest verify DIR/bundle.json --model DIR/model.safetensors --policy DIR/policy.json
--state-dir DIR/state`` reproduces the verdict.

Variants show what the verifier refuses or qualifies: ``--warm-start`` (a trained model's weights
presented as a fresh init: rejected), ``--declared-component`` (one block taken from another
model and declared: "from scratch except declared components"), ``--finetune`` (a child run whose
parent is an attested demo run: the verifier walks child → parent).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import click
from safetensors.torch import load_file

from attest.callbacks.info import Component, Parent
from attest.cli_sign import sign_model
from attest.demo.server import EmbeddedServer, embedded_server
from attest.demo.train import DemoRun, train_donor, train_run
from attest.keys import TrainerKey

__all__ = ["demo"]

SEED = 1234
DONOR_SEED = 4321


def _policy(name: str, key: TrainerKey, server_vkey: str, **changes: Any) -> dict[str, Any]:
    text = resources.files("attest.verifier").joinpath("policies", f"{name}.json").read_text()
    policy: dict[str, Any] = json.loads(text)
    policy["name"] = f"{name} (demo keys)"
    policy["trust"] = {
        "trainer_keys": [{"pem": key.public.to_pem()}],
        "server_keys": [server_vkey],
    }
    policy.update(changes)
    return policy


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("attest-demo"),
    show_default=True,
    help="Folder for the bundle, model, policy and report (replaced if it holds a demo).",
)
@click.option("--steps", type=click.IntRange(min=20), default=300, show_default=True)
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=50, show_default=True)
@click.option(
    "--replay",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Training segments the verifier re-executes.",
)
@click.option(
    "--warm-start",
    "variant",
    flag_value="warm-start",
    help="Start from another model's trained weights while claiming a fresh init.",
)
@click.option(
    "--declared-component",
    "variant",
    flag_value="declared-component",
    help="Take one block from another model and declare it.",
)
@click.option(
    "--finetune",
    "variant",
    flag_value="finetune",
    help="Train a child run on top of an attested parent run.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(
    out: Path, steps: int, checkpoint_every: int, replay: int, variant: str | None, quiet: bool
) -> None:
    """Train a tiny GPT with attestation, export the bundle and verify it."""
    from attest.verifier import Policy, verify_bundle
    from attest.verifier.report_html import render_html
    from attest.verifier.report_text import print_verdict

    variant = variant or "scratch"
    if out.exists():
        if (
            any(out.iterdir())
            and not (out / "bundle.json").exists()
            and not (out / "server").exists()
        ):
            raise click.ClickException(
                f"{out} exists and does not hold a demo; pass --out with a new or demo folder"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)
    started = time.monotonic()

    def step(text: str) -> None:
        click.echo(f"  [{time.monotonic() - started:5.1f}s] {text}")

    key = TrainerKey.generate()
    key.save(out / "keys" / "trainer.key")
    (out / "keys" / "trainer.pub").write_text(key.public.to_pem())
    click.echo(f"attest demo ({variant}): a tiny GPT trained on CPU, every step attested")
    with embedded_server(out / "server") as server:
        step(f"log server (with MLflow) listening on {server.url}")
        result, parent, policy_doc = _train(
            out, variant, key, server, steps, checkpoint_every, quiet=quiet, step=step
        )
        server.flush_mirror()
    sign_model(result.model, key=out / "keys" / "trainer.key", out=out / "model.safetensors.sig")
    policy_doc["replay"] = {"segments": replay}
    _write_json(out / "policy.json", policy_doc)
    step("verifying the bundle offline (signatures, proofs, chain, from-scratch checks, replay)")
    verdict = verify_bundle(
        result.bundle,
        policy=Policy.load(out / "policy.json"),
        model=result.model,
        state_dir=result.state_dir,
        data_dir=result.data_dir,
        replay=replay,
        replay_seed=SEED,
        parent=Path(parent.bundle) if parent else None,
    )
    (out / "report.html").write_text(render_html(verdict))
    print_verdict(verdict)
    step("done")
    click.echo(
        f"\n  bundle:  {out / 'bundle.json'}\n  model:   {result.model}\n"
        f"  policy:  {out / 'policy.json'}\n  report:  {out / 'report.html'} (open in a browser)\n"
        f"  OMS signature: {out / 'model.safetensors.sig'} (model_signing verify key "
        f"--signature {out / 'model.safetensors.sig'} --public_key {out / 'keys' / 'trainer.pub'} "
        f"{result.model})\n"
        f"  MLflow:  run `attest serve --data {out / 'server'}` and open http://127.0.0.1:8080/ "
        f"(experiment 'attest', run '{result.run}'; the attest page is /runs/{result.run})\n"
        f"\n  verify again: attest verify {out / 'bundle.json'} --model {result.model} "
        f"--policy {out / 'policy.json'} --state-dir {result.state_dir} --data {result.data_dir}"
    )
    sys.exit(verdict.exit_code)


def _train(
    out: Path,
    variant: str,
    key: TrainerKey,
    server: EmbeddedServer,
    steps: int,
    checkpoint_every: int,
    *,
    quiet: bool,
    step: Callable[[str], None],
) -> tuple[DemoRun, Parent | None, dict[str, Any]]:
    """Train the variant's run(s) against the embedded server; return the run, parent, policy."""
    common: dict[str, Any] = {
        "key": key,
        "destination": server.url,
        "token": server.token,
        "checkpoint_every": checkpoint_every,
        "progress": not quiet,
    }
    overwrite = None
    components: tuple[Component, ...] = ()
    parent = None
    policy_name, changes = "strict", {}
    if variant in ("warm-start", "declared-component"):
        step("training a donor model (no attestation): the 'other model' whose weights are reused")
        donor = train_donor(seed=DONOR_SEED, steps=steps)
        if variant == "warm-start":
            overwrite = donor
        else:
            overwrite = {k: v for k, v in donor.items() if k.startswith("blocks.0.")}
            components = (
                Component("encoder", "blocks.0.", "demo donor model (seed 4321)", "Apache-2.0"),
            )
            policy_name = "permissive"
    if variant == "finetune":
        step("training and attesting the parent run")
        base = train_run(out=out / "parent", run="demo-parent", seed=SEED, steps=steps, **common)
        overwrite = load_file(str(base.model))
        parent = Parent(run=base.run, model_root=base.final_root, bundle=base.bundle)
        policy_name = "permissive"
        changes = {
            "finetune": {"allowed": True, "parent_bundles": ["parent/bundle.json"], "max_depth": 4}
        }
    step("training the attested run")
    finetune = variant == "finetune"
    result = train_run(
        out=out,
        run=f"demo-{variant}",
        seed=SEED + (1 if finetune else 0),
        steps=max(20, steps // 3) if finetune else steps,
        overwrite=overwrite,
        components=components,
        parent=parent,
        lr=1e-3 if finetune else 3e-3,
        **common,
    )
    return result, parent, _policy(policy_name, key, server.server_vkey, **changes)
