"""The lineage statement: an in-toto Statement v1 in a DSSE envelope, in a Sigstore bundle.

Layers, inside out (``docs/formats.md`` §Statement):

1. **Predicate** ``https://attest.dev/training-lineage/v1``, shaped like SLSA Provenance v1 with the
   training run as the build: ``buildDefinition.externalParameters`` holds the config, seed and
   code revision; ``resolvedDependencies`` the initial weights, the data manifest and every
   declared external component (each with a SHA-256 digest); ``runDetails.byproducts`` the
   checkpoint digests, the loss-curve digest and the final signed log checkpoint.
2. **Statement** (in-toto v1, github.com/in-toto/attestation/spec/v1): ``subject`` is the final
   model, its digest the ``attest-tensors-v1/sha256`` root under the ``sha256`` name (in-toto
   subjects must use SHA-2/SHA-3 names).
3. **DSSE envelope**, payload type ``application/vnd.in-toto+json``, signed by the trainer key.
4. **Sigstore bundle v0.3** (``application/vnd.dev.sigstore.bundle.v0.3+json``) with a plain public
   key: ``verificationMaterial.publicKey.hint`` equals the DSSE ``keyid`` (the bundle spec requires
   the two to match).

Trust never comes from here: :func:`open_statement` takes the trainer key from the caller.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from attest.canonical import canonical_json, sha256_digest, strict_json_loads
from attest.dsse import Envelope
from attest.errors import FormatError, SignatureError
from attest.keys import TrainerKey, TrainerPublicKey

__all__ = [
    "BUILD_TYPE",
    "INTOTO_PAYLOAD_TYPE",
    "LINEAGE_PREDICATE_TYPE",
    "SIGSTORE_BUNDLE_MEDIA_TYPE",
    "STATEMENT_TYPE",
    "Dependency",
    "LineageStatement",
    "loss_curve_digest",
    "open_statement",
    "sign_statement",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
LINEAGE_PREDICATE_TYPE = "https://attest.dev/training-lineage/v1"
BUILD_TYPE = "https://attest.dev/training-run/v1"
SIGSTORE_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
_HEX = set("0123456789abcdef")


def loss_curve_digest(first_step: int, losses: Sequence[float | None]) -> str:
    """``sha256:`` of RFC 8785 ``{"first_step": n, "loss": [...]}``: the committed loss curve."""
    return sha256_digest(canonical_json({"first_step": first_step, "loss": list(losses)}))


@dataclass(frozen=True)
class Dependency:
    """A named artefact with a SHA-256 digest (an in-toto ResourceDescriptor)."""

    name: str
    sha256: str
    annotations: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "digest": {"sha256": self.sha256}}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_json(cls, obj: object, *, field: str) -> Dependency:
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            raise FormatError(f"{field} must be an object with a string 'name'")
        digest = obj.get("digest")
        if not isinstance(digest, dict) or not _is_hex64(digest.get("sha256")):
            raise FormatError(f"{field}.digest.sha256 must be 64 lowercase hex digits")
        ann = obj.get("annotations", {})
        if not isinstance(ann, dict):
            raise FormatError(f"{field}.annotations must be an object")
        return cls(obj["name"], digest["sha256"], ann)


@dataclass(frozen=True)
class LineageStatement:
    """The claim a trainer signs at the end of a run."""

    run: str
    model_sha256: str
    digest_algorithm: str
    external_parameters: Mapping[str, Any]
    internal_parameters: Mapping[str, Any]
    dependencies: tuple[Dependency, ...]
    byproducts: tuple[Dependency, ...]
    log_checkpoint: str
    started: str
    finished: str

    def to_json(self) -> dict[str, Any]:
        return {
            "_type": STATEMENT_TYPE,
            "subject": [
                {
                    "name": "model",
                    "digest": {"sha256": self.model_sha256},
                    "annotations": {"algorithm": self.digest_algorithm},
                }
            ],
            "predicateType": LINEAGE_PREDICATE_TYPE,
            "predicate": {
                "buildDefinition": {
                    "buildType": BUILD_TYPE,
                    "externalParameters": dict(self.external_parameters),
                    "internalParameters": dict(self.internal_parameters),
                    "resolvedDependencies": [d.to_json() for d in self.dependencies],
                },
                "runDetails": {
                    "builder": {"id": "https://attest.dev/lineage-recorder/v1"},
                    "metadata": {
                        "invocationId": self.run,
                        "startedOn": self.started,
                        "finishedOn": self.finished,
                    },
                    "byproducts": [d.to_json() for d in self.byproducts]
                    + [
                        {
                            "name": "log-checkpoint",
                            "mediaType": "text/x.c2sp-signed-note",
                            "content": base64.b64encode(self.log_checkpoint.encode()).decode(),
                        }
                    ],
                },
            },
        }

    def dependency(self, name: str) -> Dependency | None:
        return next((d for d in self.dependencies if d.name == name), None)

    def byproduct(self, name: str) -> Dependency | None:
        return next((d for d in self.byproducts if d.name == name), None)

    @classmethod
    def from_json(cls, obj: object) -> LineageStatement:
        f = "statement"
        if not isinstance(obj, dict) or obj.get("_type") != STATEMENT_TYPE:
            raise FormatError(f"{f}._type must be {STATEMENT_TYPE!r}")
        if obj.get("predicateType") != LINEAGE_PREDICATE_TYPE:
            raise FormatError(
                f"{f}.predicateType is not a training lineage",
                expected=LINEAGE_PREDICATE_TYPE,
                got=obj.get("predicateType"),
            )
        subjects = obj.get("subject")
        if not isinstance(subjects, list) or len(subjects) != 1:
            raise FormatError(f"{f}.subject must hold exactly one model")
        subject = Dependency.from_json(subjects[0], field=f"{f}.subject[0]")
        algorithm = subject.annotations.get("algorithm")
        if not isinstance(algorithm, str) or "/sha256/" not in algorithm:
            raise FormatError(
                f"{f}.subject[0].annotations.algorithm must name a SHA-256 tensor digest "
                "(in-toto subjects use SHA-2 names)",
                got=algorithm,
            )
        pred = _obj(obj, "predicate", f)
        build = _obj(pred, "buildDefinition", f"{f}.predicate")
        details = _obj(pred, "runDetails", f"{f}.predicate")
        meta = _obj(details, "metadata", f"{f}.predicate.runDetails")
        deps = _list(build, "resolvedDependencies", f"{f}.predicate.buildDefinition")
        prods = _list(details, "byproducts", f"{f}.predicate.runDetails")
        note = None
        byproducts = []
        for i, p in enumerate(prods):
            where = f"{f}.predicate.runDetails.byproducts[{i}]"
            if isinstance(p, dict) and p.get("name") == "log-checkpoint":
                try:
                    note = base64.b64decode(p.get("content", ""), validate=True).decode()
                except (ValueError, TypeError):
                    raise FormatError(f"{where}.content must be base64 note text") from None
            else:
                byproducts.append(Dependency.from_json(p, field=where))
        if note is None:
            raise FormatError(f"{f}.predicate.runDetails.byproducts lacks the log-checkpoint")
        for key in ("invocationId", "startedOn", "finishedOn"):
            if not isinstance(meta.get(key), str):
                raise FormatError(f"{f}.predicate.runDetails.metadata.{key} must be a string")
        return cls(
            run=meta["invocationId"],
            model_sha256=subject.sha256,
            digest_algorithm=algorithm,
            external_parameters=_obj(build, "externalParameters", "buildDefinition"),
            internal_parameters=_obj(build, "internalParameters", "buildDefinition"),
            dependencies=tuple(
                Dependency.from_json(d, field=f"{f}.resolvedDependencies[{i}]")
                for i, d in enumerate(deps)
            ),
            byproducts=tuple(byproducts),
            log_checkpoint=note,
            started=meta["startedOn"],
            finished=meta["finishedOn"],
        )


def sign_statement(statement: LineageStatement, key: TrainerKey) -> dict[str, Any]:
    """The Sigstore bundle v0.3 (plain public key) carrying the signed statement."""
    envelope = Envelope.sign(INTOTO_PAYLOAD_TYPE, canonical_json(statement.to_json()), key)
    return {
        "mediaType": SIGSTORE_BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key.key_id}, "tlogEntries": []},
        "dsseEnvelope": envelope.to_json(),
    }


def open_statement(bundle: object, key: TrainerPublicKey) -> LineageStatement:
    """Check a Sigstore bundle's DSSE signature under ``key`` and parse its statement."""
    f = "statement bundle"
    if not isinstance(bundle, dict) or bundle.get("mediaType") != SIGSTORE_BUNDLE_MEDIA_TYPE:
        raise FormatError(f"{f}.mediaType must be {SIGSTORE_BUNDLE_MEDIA_TYPE!r}")
    material = _obj(bundle, "verificationMaterial", f)
    hint = _obj(material, "publicKey", f"{f}.verificationMaterial").get("hint")
    envelope = Envelope.from_json(bundle.get("dsseEnvelope"), field=f"{f}.dsseEnvelope")
    if envelope.payload_type != INTOTO_PAYLOAD_TYPE:
        raise FormatError(
            f"{f}.dsseEnvelope.payloadType", expected=INTOTO_PAYLOAD_TYPE, got=envelope.payload_type
        )
    if any(s.keyid != hint for s in envelope.signatures):
        raise FormatError(f"{f}: DSSE keyid must equal publicKey.hint", expected=hint)
    if hint != key.key_id:
        raise SignatureError(
            "statement is signed by an untrusted key", expected=key.key_id, got=hint
        )
    envelope.verify(key)
    return LineageStatement.from_json(strict_json_loads(envelope.payload, what=f"{f} payload"))


def _obj(parent: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    value = parent.get(name)
    if not isinstance(value, dict):
        raise FormatError(f"{where}.{name} must be an object")
    return value


def _list(parent: Mapping[str, Any], name: str, where: str) -> list[Any]:
    value = parent.get(name)
    if not isinstance(value, list):
        raise FormatError(f"{where}.{name} must be a list")
    return value


def _is_hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX
