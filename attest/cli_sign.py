"""``attest sign MODEL --key KEY``: a stock OpenSSF model signature of the final weights.

The signature is produced by ``model_signing`` (sigstore/model-transparency, the ``oms`` extra)
with the trainer's ECDSA P-256 key, so ``model_signing verify key`` accepts it unchanged. One
repair is applied: the Sigstore bundle specification requires the DSSE signature's ``keyid`` to
equal ``verificationMaterial.publicKey.hint``, and ``model_signing`` 1.1.1 leaves the ``keyid``
empty. The ``keyid`` is not covered by the DSSE signature (which signs only PAE(type,
payload)), so setting it changes nothing a verifier checks except that conformance.

The hint here is ``model_signing``'s: SHA-256 of the PEM text of the public key. attest's own
key IDs (records, lineage statement) hash the DER SubjectPublicKeyInfo instead, which has one
encoding where PEM line wrapping could vary.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["sign_command", "sign_model"]


def sign_model(model: Path, *, key: Path, out: Path) -> str:
    """Sign ``model`` (a file or folder) with ``key``; write the bundle to ``out``; return the hint."""
    try:
        from model_signing import signing
    except ImportError:
        raise click.ClickException(
            "`attest sign` needs the 'oms' extra: pip install 'attest-lineage[oms]'"
        ) from None
    from attest.keys import TrainerKey

    TrainerKey.load(key)  # a clear error for a missing or non-P-256 key, before model_signing runs
    signing.Config().use_elliptic_key_signer(private_key=key).sign(model, out)  # type: ignore[no-untyped-call]
    bundle = json.loads(out.read_text())
    hint = str(bundle["verificationMaterial"]["publicKey"]["hint"])
    for signature in bundle["dsseEnvelope"]["signatures"]:
        signature["keyid"] = hint
    out.write_text(json.dumps(bundle))
    return hint


@click.command("sign")
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Trainer key (ECDSA P-256 PEM), e.g. from `attest keygen --kind trainer`.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Signature file (default: MODEL.sig beside the model).",
)
def sign_command(model: Path, key: Path, out: Path | None) -> None:
    """Write an OpenSSF model signature of MODEL (verify with `model_signing verify key`)."""
    out = out or model.with_name(model.name + ".sig")
    hint = sign_model(model, key=key, out=out)
    click.echo(f"signed {model} → {out} (key {hint[:16]}…)")
    click.echo(
        f"verify: model_signing verify key --signature {out} --public_key <trainer.pub> {model}"
    )
