"""The HTML report of a verdict: one self-contained page (no scripts, fonts or external assets),
safe to mail to a regulator or serve per run from the log server.

Sections: the verdict and its one-line summary in the policy's terms; proven / supported / not
checked; the per-check table with the evidence (expected vs got); the loss curve as an inline
SVG path; the checkpoint chain init → checkpoints → final; what no weight check can see. Every
string from the bundle is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from attest.verifier.result import Status
from attest.verifier.verdict import Outcome, Verdict

__all__ = ["loss_svg", "render_html"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#1b1f24;padding:0 1rem}
h1{font-size:1.3rem;margin:0 0 .3rem} h2{font-size:1.05rem;margin:1.6rem 0 .5rem}
.verdict{border-radius:8px;padding:1rem 1.2rem;border:2px solid}
.verified{background:#eefbf1;border-color:#2da44e} .tampered,.not-from-scratch{background:#fff0ee;
border-color:#cf222e} .could-not-check{background:#fff8e5;border-color:#bf8700}
.outcome{font-size:1.5rem;font-weight:700;letter-spacing:.04em;text-transform:uppercase}
.meta{color:#57606a;font-size:.9em}
table{border-collapse:collapse;width:100%} th,td{text-align:left;vertical-align:top;
padding:.35rem .5rem;border-bottom:1px solid #d0d7de} th{background:#f6f8fa}
td.id{font-family:ui-monospace,monospace;white-space:nowrap}
.st{font-weight:700;border-radius:4px;padding:0 .35rem;font-size:.85em}
.pass{color:#1a7f37;background:#dafbe1} .fail{color:#cf222e;background:#ffebe9}
.warn{color:#9a6700;background:#fff8c5} .skipped{color:#57606a;background:#eaeef2}
.ev{font-family:ui-monospace,monospace;font-size:.82em;color:#57606a;word-break:break-all}
.chain{display:flex;flex-wrap:wrap;gap:.3rem;align-items:center}
.node{border:1px solid #8c959f;border-radius:6px;padding:.2rem .5rem;font-family:ui-monospace,
monospace;font-size:.8em;background:#f6f8fa} .arrow{color:#8c959f}
ul{margin:.2rem 0 .2rem 1.2rem;padding:0} svg{background:#fff;border:1px solid #d0d7de}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _list(items: Iterable[str]) -> str:
    rows = [f"<li>{_e(i)}</li>" for i in items]
    return "<ul>" + ("".join(rows) or "<li>(none)</li>") + "</ul>"


def loss_svg(points: Sequence[Sequence[Any]], *, width: int = 720, height: int = 240) -> str:
    """The loss curve as an inline SVG: one ``<path>`` through ``(step, loss)`` points."""
    pts = [
        (float(s), float(v))
        for s, v in points
        if v is not None and isinstance(v, int | float) and math.isfinite(float(v))
    ]
    if not pts:
        return "<p class='meta'>No loss values were logged.</p>"
    pad = 40
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def sx(x: float) -> float:
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad)

    def sy(y: float) -> float:
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    d = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(pts))
    axis = (
        f"<line x1='{pad}' y1='{height - pad}' x2='{width - pad}' y2='{height - pad}' stroke='#8c959f'/>"
        f"<line x1='{pad}' y1='{pad}' x2='{pad}' y2='{height - pad}' stroke='#8c959f'/>"
        f"<text x='{pad}' y='{height - 12}' font-size='11'>step {x0:g}</text>"
        f"<text x='{width - pad}' y='{height - 12}' font-size='11' text-anchor='end'>step {x1:g}</text>"
        f"<text x='4' y='{pad}' font-size='11'>{y1:.3g}</text>"
        f"<text x='4' y='{height - pad}' font-size='11'>{y0:.3g}</text>"
    )
    return (
        f"<svg id='loss-curve' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'"
        f" viewBox='0 0 {width} {height}' role='img' aria-label='loss curve'>{axis}"
        f"<path d='{d}' fill='none' stroke='#0969da' stroke-width='1.6'/></svg>"
    )


def _chain(facts: Mapping[str, Any]) -> str:
    nodes = []
    if facts.get("init_root"):
        nodes.append(("init", facts["init_root"]))
    for c in facts.get("checkpoints") or []:
        nodes.append((f"step {c.get('step')}", c.get("root")))
    if facts.get("final_root"):
        nodes.append(("final", facts["final_root"]))
    if not nodes:
        return "<p class='meta'>No checkpoint chain could be read.</p>"
    parts = [
        f"<span class='node' title='{_e(root)}'>{_e(label)}<br>{_e(str(root)[:12])}…</span>"
        for label, root in nodes
    ]
    return (
        "<div class='chain' id='checkpoint-chain'>"
        + "<span class='arrow'>→</span>".join(parts)
        + "</div>"
    )


def _evidence(ev: Mapping[str, Any]) -> str:
    if not ev:
        return ""
    lines = []
    for key in ("expected", "got"):
        if key in ev:
            lines.append(f"{key}: {json.dumps(ev[key], default=str)[:300]}")
    rest = {k: v for k, v in ev.items() if k not in ("expected", "got")}
    if rest:
        lines.append(json.dumps(rest, default=str, sort_keys=True)[:400])
    return "<div class='ev'>" + "<br>".join(_e(x) for x in lines) + "</div>"


def render_html(verdict: Verdict) -> str:
    """The whole report as one HTML document."""
    rows = []
    for r in verdict.results:
        rows.append(
            f"<tr class='check {r.status.value}' data-check='{_e(r.id)}'>"
            f"<td><span class='st {r.status.value}'>{_e(r.status.value.upper())}</span></td>"
            f"<td class='id'>{_e(r.id)}</td><td>{_e(r.title)}</td><td>{_e(r.basis.value)}</td>"
            f"<td>{_e(r.why)}{_evidence(r.evidence)}</td></tr>"
        )
    counts = {s: sum(1 for r in verdict.results if r.status is s) for s in Status}
    facts = verdict.facts
    comps = facts.get("components") or []
    comp_html = ""
    if comps:
        comp_rows = "".join(
            f"<tr><td>{_e(c.get('name'))}</td><td class='id'>{_e(c.get('prefix'))}</td>"
            f"<td>{100 * float(c.get('share', 0)):.1f} %</td><td>{_e(c.get('license'))}</td>"
            f"<td>{_e(c.get('source'))}</td></tr>"
            for c in comps
        )
        comp_html = (
            "<h2>Declared components</h2><table><tr><th>name</th><th>prefix</th><th>share</th>"
            f"<th>licence</th><th>source</th></tr>{comp_rows}</table>"
        )
    outcome = verdict.outcome.value
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>attest verify — {_e(verdict.run)} — {_e(outcome)}</title>
<style>{_CSS}</style></head>
<body>
<h1>attest verification report</h1>
<p class="meta">run <b>{_e(verdict.run)}</b> · policy <b>{_e(verdict.policy)}</b>
({_e(verdict.policy_source)}) · {counts[Status.PASS]} passed, {counts[Status.FAIL]} failed,
{counts[Status.WARN]} warnings, {counts[Status.SKIPPED]} not run</p>
<div class="verdict {_e(outcome)}" id="verdict">
<div class="outcome">{_e(outcome)}</div>
<div id="summary">{_e(verdict.summary)}</div>
<div class="meta">exit code {verdict.exit_code}{_exit_note(verdict.outcome)}</div>
</div>
<h2>Proven cryptographically</h2>{_list(verdict.proven)}
<h2>Supported statistically or by replay</h2>{_list(verdict.supported)}
<h2>Not checked</h2>{_list(verdict.not_checked)}
<h2>Checks</h2>
<table id="checks"><tr><th></th><th>check</th><th>title</th><th>basis</th><th>why · evidence</th></tr>
{"".join(rows)}</table>
<h2>Loss curve</h2>{loss_svg(facts.get("loss") or [])}
<h2>Checkpoint chain</h2>{_chain(facts)}
{comp_html}
<h2>What these checks cannot see</h2>{_list(verdict.limits)}
</body></html>
"""


def _exit_note(outcome: Outcome) -> str:
    return {
        Outcome.VERIFIED: " (verified)",
        Outcome.TAMPERED: " (tampered: the bundle or model is not what was signed and sealed)",
        Outcome.COULD_NOT_CHECK: " (a required check did not run)",
        Outcome.NOT_FROM_SCRATCH: " (an origin check failed under the policy)",
    }[outcome]
