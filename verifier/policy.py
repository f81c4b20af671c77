"""Verification policies: the "from scratch" standard written down as checkable data.

"From scratch" has no agreed definition, so a verifier never judges a bundle on its own terms: a
policy file says which keys are trusted, which checks must run and what external weights are
acceptable, and the verdict is stated in the policy's terms (docs/verifying.md, "Policy files").
The format is JSON, parsed strictly (unknown keys are refused, so a misspelt rule cannot be
silently ignored)::

    {
      "policy": "attest-policy/v1",
      "name": "strict",
      "description": "one line shown in the verdict",
      "trust": {
        "trainer_keys": [{"pem": "-----BEGIN PUBLIC KEY-----..."} | {"file": "trainer.pub"}],
        "server_keys":  ["<C2SP verifier key>" | {"file": "server.vkey"}]
      },
      "required_checks": ["integrity", "chain", "components", "scratch"],
      "fail_on_warn": false,
      "components": {"allowed": false, "licenses": ["Apache-2.0"], "modules": ["encoder."],
                     "max_share": 0.0},
      "finetune": {"allowed": false, "parent_bundles": ["parents/"], "max_depth": 4},
      "replay": {"segments": 0},
      "statistics": {"alpha": 0.01}
    }

``required_checks`` lists check ids or id prefixes (``"scratch"`` covers every ``scratch.*``
check): a required check that is skipped or absent makes the verdict "could not check".
``file`` paths are relative to the policy file. ``statistics`` is passed to the statistical
checks unchanged (``alpha``: the family-wise false-failure rate of the init-randomness tests).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from attest.canonical import strict_json_loads
from attest.errors import ConfigurationError, FormatError
from attest.keys import TrainerPublicKey
from attest.note import NoteVerifier

__all__ = [
    "CHECK_FAMILIES",
    "POLICY_FORMAT",
    "ComponentRules",
    "FinetuneRules",
    "Policy",
    "builtin_policy",
]

POLICY_FORMAT = "attest-policy/v1"
CHECK_FAMILIES = ("integrity", "chain", "scratch", "replay", "components")
_TOP = {
    "policy",
    "name",
    "description",
    "trust",
    "required_checks",
    "fail_on_warn",
    "components",
    "finetune",
    "replay",
    "statistics",
}


@dataclass(frozen=True)
class ComponentRules:
    """Which declared external components (weights taken from elsewhere) are acceptable."""

    allowed: bool = False
    licenses: tuple[str, ...] = ()  # SPDX ids; empty = any licence
    modules: tuple[str, ...] = ()  # allowed module prefixes; empty = any module
    max_share: float = 0.0  # largest fraction of the model's parameters they may hold


@dataclass(frozen=True)
class FinetuneRules:
    """Whether a fine-tune of a verified parent counts, and where parent bundles are found."""

    allowed: bool = False
    parent_bundles: tuple[Path, ...] = ()  # bundle files or folders holding *.json bundles
    max_depth: int = 4


@dataclass(frozen=True)
class Policy:
    """A parsed policy. Construct with :meth:`from_json`, :meth:`load` or :func:`builtin_policy`."""

    name: str
    description: str = ""
    trainer_keys: tuple[TrainerPublicKey, ...] = ()
    server_keys: tuple[NoteVerifier, ...] = ()
    required_checks: tuple[str, ...] = ("integrity", "chain")
    fail_on_warn: bool = False
    components: ComponentRules = field(default_factory=ComponentRules)
    finetune: FinetuneRules = field(default_factory=FinetuneRules)
    replay_segments: int = 0
    statistics: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<inline>"

    def requires(self, check_id: str) -> bool:
        """Whether ``check_id`` is required (listed, or under a listed prefix)."""
        return any(check_id == r or check_id.startswith(r + ".") for r in self.required_checks)

    def with_keys(
        self,
        *,
        trainer_keys: Sequence[TrainerPublicKey] = (),
        server_keys: Sequence[NoteVerifier] = (),
    ) -> Policy:
        """A copy trusting these keys as well (``attest verify --trust-trainer/--trust-server``)."""
        return replace(
            self,
            trainer_keys=self.trainer_keys + tuple(trainer_keys),
            server_keys=self.server_keys + tuple(server_keys),
        )

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read policy {p}: {exc.strerror}; pass --policy with a readable file"
            ) from None
        return cls.from_json(
            strict_json_loads(data, what=f"policy {p}"), base=p.parent, source=str(p)
        )

    @classmethod
    def from_json(
        cls, obj: object, *, base: Path | None = None, source: str = "<inline>"
    ) -> Policy:
        """Parse a policy document strictly; ``file`` references resolve against ``base``."""
        o = _obj(obj, "policy")
        _keys(o, _TOP, "policy", required={"policy", "name"})
        if o["policy"] != POLICY_FORMAT:
            raise FormatError(
                "policy.policy names an unknown format", expected=POLICY_FORMAT, got=o["policy"]
            )
        name = _str(o["name"], "policy.name")
        trust = _obj(o.get("trust", {}), "policy.trust")
        _keys(trust, {"trainer_keys", "server_keys"}, "policy.trust")
        trainer = tuple(
            _trainer_key(k, f"policy.trust.trainer_keys[{i}]", base)
            for i, k in enumerate(_list(trust.get("trainer_keys", []), "policy.trust.trainer_keys"))
        )
        server = tuple(
            _server_key(k, f"policy.trust.server_keys[{i}]", base)
            for i, k in enumerate(_list(trust.get("server_keys", []), "policy.trust.server_keys"))
        )
        required = tuple(
            _check_name(c, f"policy.required_checks[{i}]")
            for i, c in enumerate(
                _list(o.get("required_checks", ["integrity", "chain"]), "policy.required_checks")
            )
        )
        comp = _obj(o.get("components", {}), "policy.components")
        _keys(comp, {"allowed", "licenses", "modules", "max_share"}, "policy.components")
        share = comp.get("max_share", 1.0 if comp.get("allowed") else 0.0)
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            raise FormatError("policy.components.max_share must be a number in [0, 1]", got=share)
        components = ComponentRules(
            allowed=_bool(comp.get("allowed", False), "policy.components.allowed"),
            licenses=_strs(comp.get("licenses", []), "policy.components.licenses"),
            modules=_strs(comp.get("modules", []), "policy.components.modules"),
            max_share=float(share),
        )
        ft = _obj(o.get("finetune", {}), "policy.finetune")
        _keys(ft, {"allowed", "parent_bundles", "max_depth"}, "policy.finetune")
        depth = ft.get("max_depth", 4)
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 64:
            raise FormatError("policy.finetune.max_depth must be an integer in [1, 64]", got=depth)
        parents = tuple(
            _path(p, base)
            for p in _strs(ft.get("parent_bundles", []), "policy.finetune.parent_bundles")
        )
        finetune = FinetuneRules(
            allowed=_bool(ft.get("allowed", False), "policy.finetune.allowed"),
            parent_bundles=parents,
            max_depth=depth,
        )
        rp = _obj(o.get("replay", {}), "policy.replay")
        _keys(rp, {"segments"}, "policy.replay")
        segments = rp.get("segments", 0)
        if isinstance(segments, bool) or not isinstance(segments, int) or segments < 0:
            raise FormatError("policy.replay.segments must be a non-negative integer", got=segments)
        stats = _obj(o.get("statistics", {}), "policy.statistics")
        alpha = stats.get("alpha", 0.01)
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
            raise FormatError("policy.statistics.alpha must be a number in (0, 1)", got=alpha)
        return cls(
            name=name,
            description=_str(o.get("description", ""), "policy.description"),
            trainer_keys=trainer,
            server_keys=server,
            required_checks=required,
            fail_on_warn=_bool(o.get("fail_on_warn", False), "policy.fail_on_warn"),
            components=components,
            finetune=finetune,
            replay_segments=segments,
            statistics=dict(stats),
            source=source,
        )


def builtin_policy(name: str) -> Policy:
    """One of the policies shipped with attest: ``strict`` or ``permissive``."""
    if name not in ("strict", "permissive"):
        raise ConfigurationError(
            f"no built-in policy {name!r}; use strict, permissive or a policy file",
            expected=["strict", "permissive"],
            got=name,
        )
    text = resources.files("attest.verifier").joinpath("policies", f"{name}.json").read_text()
    return Policy.from_json(json.loads(text), source=f"built-in:{name}")


# --- field readers ---------------------------------------------------------------------------


def _obj(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError(f"{where} must be a JSON object", got=type(value).__name__)
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise FormatError(f"{where} must be a list", got=type(value).__name__)
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise FormatError(f"{where} must be a string", got=type(value).__name__)
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise FormatError(f"{where} must be true or false", got=repr(value))
    return value


def _strs(value: object, where: str) -> tuple[str, ...]:
    return tuple(_str(v, f"{where}[{i}]") for i, v in enumerate(_list(value, where)))


def _keys(
    o: Mapping[str, Any],
    allowed: set[str],
    where: str,
    *,
    required: frozenset[str] | set[str] = frozenset(),
) -> None:
    unknown = set(o) - allowed
    if unknown:
        raise FormatError(f"{where} has unknown keys {sorted(unknown)}", expected=sorted(allowed))
    missing = set(required) - set(o)
    if missing:
        raise FormatError(f"{where} lacks {sorted(missing)}")


def _check_name(value: object, where: str) -> str:
    name = _str(value, where)
    if name.split(".")[0] not in CHECK_FAMILIES:
        raise FormatError(f"{where} names no check family", expected=list(CHECK_FAMILIES), got=name)
    return name


def _path(text: str, base: Path | None) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() or base is None else base / p


def _read(ref: Mapping[str, Any], where: str, base: Path | None) -> str:
    path = _path(_str(ref["file"], f"{where}.file"), base)
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"{where}.file: cannot read {path}: {exc.strerror}") from None


def _trainer_key(value: object, where: str, base: Path | None) -> TrainerPublicKey:
    if isinstance(value, str):
        return TrainerPublicKey.from_pem(value)
    ref = _obj(value, where)
    _keys(ref, {"name", "pem", "file", "key_id"}, where)
    if ("pem" in ref) == ("file" in ref):
        raise FormatError(f"{where} needs exactly one of 'pem' and 'file'")
    key = TrainerPublicKey.from_pem(
        _str(ref["pem"], f"{where}.pem") if "pem" in ref else _read(ref, where, base)
    )
    if "key_id" in ref and ref["key_id"] != key.key_id:
        raise FormatError(
            f"{where}.key_id does not match the key", expected=key.key_id, got=ref["key_id"]
        )
    return key


def _server_key(value: object, where: str, base: Path | None) -> NoteVerifier:
    if isinstance(value, str):
        return NoteVerifier.from_vkey(value)
    ref = _obj(value, where)
    _keys(ref, {"name", "vkey", "file"}, where)
    if ("vkey" in ref) == ("file" in ref):
        raise FormatError(f"{where} needs exactly one of 'vkey' and 'file'")
    text = _str(ref["vkey"], f"{where}.vkey") if "vkey" in ref else _read(ref, where, base)
    return NoteVerifier.from_vkey(text.strip())
