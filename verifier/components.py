"""Check 5, components and lineage: declared external weights, and fine-tunes' parents.

docs/verifying.md §5. A run may start from weights it did not train: *components* (an encoder
taken from elsewhere, declared in ``run.start.components`` with a tensor prefix, a digest, a
source and an SPDX licence) or a whole *parent* model (``run.start.parent``, a fine-tune).

``components.declared`` each component's per-tensor blob reproduces its declared root, every one
                        of its tensors lies under its prefix, and the init holds exactly those
                        tensors under that prefix with the same digests — so nothing outside a
                        declared prefix is exempt from the from-scratch checks
``components.policy``   the components are acceptable under the policy: allowed at all, licence
                        on the allowlist, module prefix allowed, share of parameters within
                        ``max_share`` (share = elements under the prefixes / elements of the init)
``components.parent``   a fine-tune's parent bundle (``--parent`` or the policy's
                        ``finetune.parent_bundles``, matched by the SHA-256 of the file) itself
                        verifies under the same policy (:func:`attest.verifier.verify_bundle`,
                        recursively, up to ``finetune.max_depth``), is the run it names, and its
                        final root is this run's init root
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attest.digest import ModelDigest, TensorDigest
from attest.errors import AttestError
from attest.verifier.context import VerifyContext
from attest.verifier.result import Basis, CheckResult, reporter

__all__ = ["TITLES", "check_components", "component_facts"]

C = Basis.CRYPTOGRAPHIC
TITLES = {
    "components.declared": "Declared components match the init",
    "components.policy": "Components allowed by the policy",
    "components.parent": "Fine-tune parent verifies",
}


_r = reporter(TITLES, C)


def _elements(t: TensorDigest) -> int:
    return math.prod(t.shape)


def component_facts(ctx: VerifyContext) -> list[dict[str, Any]]:
    """Name, prefix, licence, source, elements and share of each declared component."""
    init = ctx.init_digest()
    total = sum(_elements(t) for t in init.tensors) or 1
    out = []
    for c in ctx.run_start["components"]:
        n = sum(_elements(t) for t in init.tensors if t.name.startswith(str(c["prefix"])))
        out.append(
            {
                "name": c["name"],
                "prefix": c["prefix"],
                "license": c.get("license"),
                "source": c.get("source"),
                "elements": n,
                "share": n / total,
            }
        )
    return out


def check_components(ctx: VerifyContext) -> list[CheckResult]:
    """Run every ``components.*`` check; never raises for a bad bundle."""
    out = []
    for cid, fn in (
        ("components.declared", _declared),
        ("components.policy", _policy),
        ("components.parent", _parent),
    ):
        try:
            out.append(fn(ctx))
        except AttestError as exc:
            out.append(_r("fail", cid, exc.message, expected=exc.expected, got=exc.got))
        except (KeyError, TypeError, ValueError) as exc:
            out.append(_r("fail", cid, f"run.start.components is malformed: {exc!r}"))
    return out


def _declared(ctx: VerifyContext) -> CheckResult:
    cid = "components.declared"
    comps = ctx.run_start["components"]
    if not comps:
        return _r(
            "pass",
            cid,
            "no external components declared: every tensor is subject to the from-scratch checks",
            components=0,
        )
    init = ctx.init_digest()
    by_name = {t.name: t for t in init.tensors}
    names: set[str] = set()
    for c in comps:
        name, prefix = str(c["name"]), str(c["prefix"])
        if not prefix or name in names:
            return _r("fail", cid, f"component {name!r} needs a unique name and a non-empty prefix")
        names.add(name)
        digest = ModelDigest.from_json(ctx.blob(str(c["tensors"])))
        if digest.hex != c["digest"]["root"] or digest.algorithm != c["digest"]["algorithm"]:
            return _r(
                "fail",
                cid,
                f"component {name}'s tensor blob does not reproduce its declared digest",
                expected=c["digest"]["root"],
                got=digest.hex,
            )
        outside = [t.name for t in digest.tensors if not t.name.startswith(prefix)]
        if outside:
            return _r(
                "fail",
                cid,
                f"component {name} lists tensors outside its prefix {prefix!r}: "
                "they would be exempt without being declared",
                got=outside[:20],
            )
        in_init = {n for n in by_name if n.startswith(prefix)}
        listed = {t.name for t in digest.tensors}
        if in_init != listed:
            return _r(
                "fail",
                cid,
                f"the init's tensors under {prefix!r} are not the declared ones",
                expected=sorted(listed)[:20],
                got=sorted(in_init)[:20],
                missing=sorted(in_init - listed)[:20],
                extra=sorted(listed - in_init)[:20],
            )
        changed = [t.name for t in digest.tensors if by_name[t.name] != t]
        if changed:
            return _r(
                "fail",
                cid,
                f"component {name}'s declared tensors differ from the init's",
                expected=c["digest"]["root"],
                got=changed[:20],
            )
    facts = component_facts(ctx)
    final = ctx.final_digest()
    frozen = []
    if final is not None:
        fin = {t.name: t for t in final.tensors}
        for c in comps:
            d = ModelDigest.from_json(ctx.blob(str(c["tensors"])))
            if all(fin.get(t.name) == t for t in d.tensors):
                frozen.append(c["name"])
    return _r(
        "pass",
        cid,
        f"{len(comps)} components match the init tensor for tensor; "
        "everything outside their prefixes is subject to the from-scratch checks",
        components=facts,
        frozen_in_final=frozen,
    )


def _policy(ctx: VerifyContext) -> CheckResult:
    cid = "components.policy"
    comps = ctx.run_start["components"]
    rules = ctx.policy.components
    if not comps:
        return _r("pass", cid, "no external components", components=0)
    facts = component_facts(ctx)
    if not rules.allowed:
        return _r(
            "fail",
            cid,
            f"policy {ctx.policy.name} allows no external weights",
            expected="no components",
            got=[c["name"] for c in facts],
        )
    for c in facts:
        if rules.licenses and c["license"] not in rules.licenses:
            return _r(
                "fail",
                cid,
                f"component {c['name']}'s licence {c['license']} is not on the policy's allowlist",
                expected=list(rules.licenses),
                got=c["license"],
            )
        if rules.modules and not any(str(c["prefix"]).startswith(m) for m in rules.modules):
            return _r(
                "fail",
                cid,
                f"component {c['name']} ({c['prefix']}) is not in a module the policy allows",
                expected=list(rules.modules),
                got=c["prefix"],
            )
    share = sum(c["share"] for c in facts)
    if share > rules.max_share + 1e-12:
        return _r(
            "fail",
            cid,
            f"declared components hold {100 * share:.1f} % of the parameters, "
            f"more than the policy's {100 * rules.max_share:.1f} %",
            expected=f"<= {rules.max_share}",
            got=round(share, 6),
        )
    return _r(
        "pass",
        cid,
        f"{', '.join(str(c['name']) for c in facts)}: {100 * share:.1f} % of "
        f"parameters, {', '.join(sorted({str(c['license']) for c in facts}))}",
        share=share,
        components=facts,
    )


def _find_parent(ctx: VerifyContext, want: str) -> Path | None:
    candidates: list[Path] = []
    if ctx.parent_bundle is not None:
        candidates.append(ctx.parent_bundle)
    for p in ctx.policy.finetune.parent_bundles:
        candidates.extend(sorted(p.glob("*.json")) if p.is_dir() else [p])
    for path in candidates:
        try:
            if "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == want:
                return path
        except OSError:
            continue
    return None


def _parent(ctx: VerifyContext) -> CheckResult:
    cid = "components.parent"
    parent: Mapping[str, Any] | None = ctx.run_start["parent"]
    if parent is None:
        return _r("pass", cid, "not a fine-tune: no parent declared")
    rules = ctx.policy.finetune
    if not rules.allowed:
        return _r(
            "fail",
            cid,
            f"a fine-tune of run {parent.get('run')}; policy {ctx.policy.name} "
            "does not count fine-tunes",
            expected="no parent",
            got=parent.get("run"),
        )
    init_root = ctx.weights_init["model"]["root"]
    if parent["model"]["root"] != init_root:
        return _r(
            "fail",
            cid,
            "the declared parent model is not this run's init",
            expected=init_root,
            got=parent["model"]["root"],
        )
    if ctx.parent_depth >= rules.max_depth:
        return _r(
            "fail", cid, f"the chain of parents is deeper than the policy's {rules.max_depth}"
        )
    path = _find_parent(ctx, str(parent["bundle"]))
    if path is None:
        return _r(
            "skip",
            cid,
            f"parent bundle {str(parent['bundle'])[:23]}… not found; pass "
            "--parent BUNDLE or list its folder in the policy's finetune.parent_bundles",
            expected=parent["bundle"],
        )
    from attest.verifier import verify_bundle

    verdict = verify_bundle(
        path,
        policy=ctx.policy,
        parent_depth=ctx.parent_depth + 1,
        signature_mode=ctx.signature_mode,
    )
    if verdict.run != parent["run"]:
        return _r(
            "fail",
            cid,
            "the parent bundle is for another run",
            expected=parent["run"],
            got=verdict.run,
        )
    if not verdict.ok:
        return _r(
            "fail",
            cid,
            f"the parent bundle does not verify: {verdict.summary}",
            expected="verified",
            got=verdict.outcome.value,
            parent=str(path),
        )
    end = verdict.facts.get("final_root")
    if end != init_root:
        return _r(
            "fail",
            cid,
            "the parent's final model is not this run's init",
            expected=init_root,
            got=end,
        )
    return _r(
        "pass",
        cid,
        f"parent run {parent['run']} verifies under policy {ctx.policy.name} "
        f"and its final model is this run's init",
        parent=str(path),
        parent_summary=verdict.summary,
    )
