"""Keys: ECDSA P-256 for trainers, Ed25519 for servers (DESIGN §3 "Keys").

A trainer signs records and the final statement as DSSE envelopes with ECDSA P-256 / SHA-256, the
algorithm OpenSSF model signing, sigstore's DSSE code and Rekor v2 all accept. A server signs tree
heads with Ed25519, as C2SP signed notes require (see :mod:`attest.note`).

Keys are stored as PEM: PKCS#8 for private keys (unencrypted, mode 0600), SubjectPublicKeyInfo for
public keys. A trainer key's *key ID* is the lowercase hex SHA-256 of its DER SubjectPublicKeyInfo;
it is used both as the DSSE ``keyid`` and as the Sigstore bundle's ``publicKey.hint``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from attest.errors import KeyError_, SignatureError

__all__ = [
    "TrainerKey",
    "TrainerPublicKey",
    "load_server_key",
    "save_server_key",
]


@dataclass(frozen=True)
class TrainerPublicKey:
    """An ECDSA P-256 public key that verifies a trainer's DSSE signatures."""

    key: ec.EllipticCurvePublicKey

    @classmethod
    def from_pem(cls, pem: bytes | str) -> TrainerPublicKey:
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise KeyError_(f"trainer public key is not a PEM public key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise KeyError_(
                "trainer keys must be ECDSA P-256; create one with `attest keygen --kind trainer`",
                expected="ECDSA P-256",
                got=type(key).__name__,
            )
        return cls(key)

    def to_pem(self) -> str:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    @property
    def key_id(self) -> str:
        """Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo."""
        der = self.key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(der).hexdigest()

    def verify(self, signature: bytes, message: bytes) -> None:
        """Raise :class:`SignatureError` unless ``signature`` signs ``message``."""
        try:
            self.key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise SignatureError(
                f"ECDSA P-256 signature does not verify under trainer key {self.key_id[:16]}…"
            ) from None


@dataclass(frozen=True)
class TrainerKey:
    """An ECDSA P-256 private key that signs a trainer's records."""

    key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> TrainerKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, pem: bytes | str) -> TrainerKey:
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyError_(f"trainer key is not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise KeyError_(
                "trainer keys must be ECDSA P-256; create one with `attest keygen --kind trainer`",
                expected="ECDSA P-256",
                got=type(key).__name__,
            )
        return cls(key)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainerKey:
        try:
            return cls.from_pem(Path(path).read_bytes())
        except OSError as exc:
            raise KeyError_(
                f"cannot read trainer key {path}: {exc.strerror}; "
                "create one with `attest keygen --kind trainer`"
            ) from None

    def save(self, path: str | os.PathLike[str]) -> None:
        _write_private(Path(path), self.to_pem().encode())

    def to_pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    @property
    def public(self) -> TrainerPublicKey:
        return TrainerPublicKey(self.key.public_key())

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, message: bytes) -> bytes:
        """DER-encoded ECDSA P-256 / SHA-256 signature over ``message``."""
        return self.key.sign(message, ec.ECDSA(hashes.SHA256()))


def load_server_key(path: str | os.PathLike[str]) -> ed25519.Ed25519PrivateKey:
    """Read a server's Ed25519 PKCS#8 PEM key."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise KeyError_(
            f"cannot read server key {path}: {exc.strerror}; "
            "create one with `attest keygen --kind server`"
        ) from None
    except (ValueError, TypeError) as exc:
        raise KeyError_(f"server key {path} is not a PEM private key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyError_("server keys must be Ed25519", expected="Ed25519", got=type(key).__name__)
    return key


def save_server_key(key: ed25519.Ed25519PrivateKey, path: str | os.PathLike[str]) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(Path(path), pem)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
