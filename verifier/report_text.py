"""The terminal report of a verdict (rich): the outcome, the per-check table, and the three lists
— proven, supported, not checked — with what no weight check can see (docs/verifying.md)."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from attest.verifier.result import CheckResult, Status
from attest.verifier.verdict import Outcome, Verdict

__all__ = ["print_verdict", "render_text"]

_STYLE = {
    Status.PASS: ("PASS", "green"),
    Status.FAIL: ("FAIL", "bold red"),
    Status.WARN: ("WARN", "yellow"),
    Status.SKIPPED: ("SKIP", "dim"),
}
_OUTCOME_STYLE = {
    Outcome.VERIFIED: "bold green",
    Outcome.TAMPERED: "bold red",
    Outcome.NOT_FROM_SCRATCH: "bold red",
    Outcome.COULD_NOT_CHECK: "bold yellow",
}


def _evidence(r: CheckResult) -> str:
    ev = r.evidence
    if r.status is Status.FAIL and ("expected" in ev or "got" in ev):
        return f"expected {_short(ev.get('expected'))}\ngot      {_short(ev.get('got'))}"
    return ""


def _short(value: Any, limit: int = 90) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_text(verdict: Verdict, *, verbose: bool = False) -> Group:
    """The report as a rich renderable."""
    head = Text()
    head.append(verdict.outcome.value.upper(), style=_OUTCOME_STYLE[verdict.outcome])
    head.append(f"  (exit {verdict.exit_code})\n")
    head.append(verdict.summary)
    head.append(
        f"\nrun {verdict.run} · policy {verdict.policy} ({verdict.policy_source})", style="dim"
    )
    table = Table(show_header=True, header_style="bold", expand=True)
    table.add_column("", width=4)
    table.add_column("check", no_wrap=True)
    table.add_column("basis", style="dim", width=13)
    table.add_column("why")
    for r in verdict.results:
        label, style = _STYLE[r.status]
        why = r.why
        evidence = _evidence(r)
        if evidence:
            why += "\n" + evidence
        table.add_row(Text(label, style=style), r.id, r.basis.value, why)
    parts: list[Any] = [Panel(head, title="attest verify"), table]
    for title, items in (
        ("Proven cryptographically", verdict.proven),
        ("Supported statistically or by replay", verdict.supported),
        ("Not checked", verdict.not_checked),
    ):
        body = Text()
        body.append(f"{title}\n", style="bold")
        for item in items or ("(none)",):
            body.append(f"  • {item if verbose else _short(item, 160)}\n")
        parts.append(body)
    limits = Text()
    limits.append("What these checks cannot see\n", style="bold")
    for item in verdict.limits:
        limits.append(f"  • {item}\n", style="dim")
    parts.append(limits)
    return Group(*parts)


def print_verdict(
    verdict: Verdict, *, console: Console | None = None, verbose: bool = False
) -> None:
    (console or Console()).print(render_text(verdict, verbose=verbose))
