"""`attest sign`: a stock OpenSSF model signature that `model_signing` verifies unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from model_signing import verifying
from safetensors.numpy import save_file

from attest.cli import cli
from attest.cli_sign import sign_command
from attest.keys import TrainerKey


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path, Path]:
    model = tmp_path / "model.safetensors"
    save_file({"w": np.arange(64, dtype=np.float32).reshape(8, 8)}, str(model))
    key = TrainerKey.generate()
    key.save(tmp_path / "trainer.key")
    (tmp_path / "trainer.pub").write_text(key.public.to_pem())
    result = CliRunner().invoke(sign_command, [str(model), "--key", str(tmp_path / "trainer.key")])
    assert result.exit_code == 0, result.output
    return model, tmp_path / "model.safetensors.sig", tmp_path / "trainer.pub"


def verify(model: Path, sig: Path, pub: Path) -> None:
    verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(model, sig)


def test_model_signing_verifies_the_signature(signed: tuple[Path, Path, Path]) -> None:
    verify(*signed)
    bundle = json.loads(signed[1].read_text())
    hint = bundle["verificationMaterial"]["publicKey"]["hint"]
    assert [s["keyid"] for s in bundle["dsseEnvelope"]["signatures"]] == [hint]


def test_tampered_model_fails(signed: tuple[Path, Path, Path]) -> None:
    model, sig, pub = signed
    data = bytearray(model.read_bytes())
    data[-1] ^= 1
    model.write_bytes(bytes(data))
    with pytest.raises(ValueError):
        verify(model, sig, pub)


def test_other_key_fails(signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    other = tmp_path / "other.pub"
    other.write_text(TrainerKey.generate().public.to_pem())
    with pytest.raises(ValueError):
        verify(signed[0], signed[1], other)


def test_missing_key_names_the_fix(tmp_path: Path) -> None:
    model = tmp_path / "m.safetensors"
    save_file({"w": np.zeros(2, dtype=np.float32)}, str(model))
    result = CliRunner().invoke(cli, ["sign", str(model), "--key", str(tmp_path / "nope.key")])
    assert result.exit_code != 0
    assert "attest keygen --kind trainer" in str(result.exception or result.output)
