"""HTML pages for people (DESIGN §5): a run list and one page per run.

A run page shows what the log holds right now: tree size and root, the latest signed checkpoint,
the loss curve (inline SVG from the ``train.steps`` records), the checkpoint chain (init →
checkpoints → final model digests), whether the signed statement is stored, the latest verdict a
verifier posted (check by check, with who posted it under which policy) and links to the
bundle, the raw checkpoint and the MLflow run. It is a view: a verdict comes from
``attest verify`` on the bundle, never from this page.

Browsers cannot send bearer tokens, so ``/login`` trades a token for an HttpOnly, SameSite=Strict
cookie that the API accepts as well.
"""

from __future__ import annotations

import html
import math
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from attest.records import SignedRecord
from attest.server.auth import authenticate
from attest.server.deps import COOKIE, PrincipalDep, ReadableRun, StateDep
from attest.server.routers.runs import summary

__all__ = ["loss_svg", "router"]

router = APIRouter(tags=["pages"], include_in_schema=False)
_MAX_PAGE_LEAVES = 20000
_STYLE = (
    "body{font:15px system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}"
    "code,pre{font:13px ui-monospace,monospace}pre{background:#f4f4f4;padding:.8em;"
    "overflow-x:auto}table{border-collapse:collapse}td,th{padding:.2em .8em;text-align:left;"
    "border-bottom:1px solid #ddd}"
)


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def loss_svg(points: list[tuple[int, float]], *, width: int = 640, height: int = 240) -> str:
    """An inline SVG polyline of (step, loss); empty text when there is nothing to draw."""
    pts = [(s, v) for s, v in points if math.isfinite(v)]
    if len(pts) < 2:
        return "<p>No loss curve yet.</p>"
    s0, s1 = pts[0][0], pts[-1][0]
    lo, hi = min(v for _, v in pts), max(v for _, v in pts)
    span_s, span_v = max(s1 - s0, 1), max(hi - lo, 1e-12)
    pad = 30
    step = max(1, len(pts) // 2000)
    coords = " ".join(
        f"{pad + (s - s0) / span_s * (width - 2 * pad):.1f},"
        f"{height - pad - (v - lo) / span_v * (height - 2 * pad):.1f}"
        for s, v in pts[::step]
    )
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"role='img' aria-label='loss curve'><rect width='100%' height='100%' fill='#fafafa'/>"
        f"<polyline fill='none' stroke='#1f77b4' stroke-width='1.5' points='{coords}'/>"
        f"<text x='{pad}' y='{pad - 10}' font-size='12'>loss {hi:.4g}</text>"
        f"<text x='{pad}' y='{height - 8}' font-size='12'>loss {lo:.4g} · steps {s0}–{s1}</text>"
        "</svg>"
    )


@router.get("/runs", response_class=HTMLResponse)
def run_list(state: StateDep, principal: PrincipalDep) -> HTMLResponse:
    rows = "".join(
        f"<tr><td><a href='/runs/{html.escape(i.name)}'>{html.escape(i.name)}</a></td>"
        f"<td>{i.size}</td><td>{html.escape(i.owner)}</td></tr>"
        for i in state.store.list_runs()
        if principal.can_read(i)
    )
    return _page(
        "attest runs",
        f"<h1>Runs</h1><table><tr><th>run</th><th>records</th><th>owner</th></tr>{rows}</table>",
    )


@router.get("/runs/{run}", response_class=HTMLResponse)
def run_page(info: ReadableRun, state: StateDep) -> HTMLResponse:
    s = summary(state, info)
    losses: list[tuple[int, float]] = []
    chain: list[tuple[str, str, str]] = []
    start = max(0, info.size - _MAX_PAGE_LEAVES)
    for leaf in state.store.entries(info, start, info.size):
        r = SignedRecord.from_leaf(leaf).record
        if r.type == "train.steps":
            first = int(r.body["first_step"])
            losses.extend(
                (first + i, float(v))
                for i, v in enumerate(r.body["loss"])
                if isinstance(v, int | float) and not isinstance(v, bool)
            )
        elif r.type in ("weights.init", "weights.checkpoint", "run.end"):
            model = r.body.get("model", {})
            root = model.get("root", "") if isinstance(model, dict) else ""
            chain.append((r.type, str(r.body.get("step", "")), str(root)))
    e = html.escape
    chain_rows = "".join(
        f"<tr><td>{e(t)}</td><td>{e(step)}</td><td><code>{e(root[:16])}…</code></td></tr>"
        for t, step, root in chain
    )
    links = " · ".join(f"<a href='{e(url)}'>{e(name)}</a>" for name, url in s.links.items())
    partial = f"<p>(page shows the last {_MAX_PAGE_LEAVES} records)</p>" if start else ""
    body = (
        f"<h1>Run {e(info.name)}</h1><p>{links}</p>"
        f"<table><tr><th>records (tree size)</th><td>{info.size}</td></tr>"
        f"<tr><th>root</th><td><code>{e(s.root)}</code></td></tr>"
        f"<tr><th>trainer key</th><td><code>{e(s.trainer_key_id)}</code></td></tr>"
        f"<tr><th>owner</th><td>{e(info.owner)}</td></tr>"
        f"<tr><th>signed statement</th><td>{'stored' if s.statement else 'not yet'}</td></tr>"
        f"</table>{partial}<h2>Loss</h2>{loss_svg(losses)}"
        f"<h2>Checkpoint chain</h2><table><tr><th>record</th><th>step</th><th>model root</th>"
        f"</tr>{chain_rows}</table>{_verdict_section(state.store.verdicts(info, limit=1))}"
        f"<h2>Latest signed checkpoint</h2><pre>{e(s.checkpoint)}</pre>"
        "<p>This page is a view of the log. A verdict comes from <code>attest verify</code> "
        "on the bundle; a posted one is its poster's claim, which anyone can check the same "
        "way.</p>"
    )
    return _page(f"attest run {info.name}", body)


def _verdict_section(posted: list[dict[str, Any]]) -> str:
    """The latest posted verdict, check by check (``/v1/runs/{run}/verdicts``), or a line
    saying none was posted."""
    e = html.escape
    if not posted:
        return "<h2>Verdict</h2><p>No verifier has posted a verdict (<code>unverified</code>).</p>"
    row, verdict = posted[0], posted[0]["verdict"]
    checks = "".join(
        f"<tr><td>{e(str(c.get('status', '')).upper())}</td><td><code>{e(str(c['id']))}</code>"
        f"</td><td>{e(str(c.get('basis', '')))}</td><td>{e(str(c.get('why', '')))}</td></tr>"
        for c in verdict["checks"]
    )
    return (
        f"<h2>Verdict: {e(str(verdict['outcome']))}</h2>"
        f"<p>{e(str(verdict['summary']))}</p>"
        f"<p>Posted by <b>{e(str(row['posted_by']))}</b> under policy "
        f"<b>{e(str(verdict['policy']['name']))}</b> at tree size {row['size']}.</p>"
        f"<table><tr><th>status</th><th>check</th><th>basis</th><th>why</th></tr>{checks}</table>"
    )


@router.get("/login", response_class=HTMLResponse)
def login_form() -> HTMLResponse:
    return _page(
        "attest login",
        "<h1>Sign in</h1><form method='post' action='/login'>"
        "<input name='token' type='password' size='60' placeholder='attest_…'> "
        "<button>Sign in</button></form>",
    )


@router.post("/login")
async def login(request: Request, state: StateDep) -> RedirectResponse:
    form = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    authenticate(state.store, f"Bearer {token}")
    response = RedirectResponse("/runs", status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
    return response
