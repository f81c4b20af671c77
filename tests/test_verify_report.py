"""The HTML report, rendered in headless Chromium, and the terminal report."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import require_or_skip
from rich.console import Console
from tamper import attacks
from tamper.honest import Sealed, honest_run, policy_for

from attest.verifier import verify_bundle
from attest.verifier.report_html import loss_svg, render_html
from attest.verifier.report_text import print_verdict

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Sealed:
    return honest_run(tmp_path_factory.mktemp("report"))


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.chromium
def test_html_report_renders_verdict_checks_and_loss_curve(sealed: Sealed, tmp_path: Path) -> None:
    require_or_skip(Path(CHROMIUM).exists(), what=CHROMIUM, env="ATTEST_REQUIRE_CHROMIUM")
    policy = policy_for(sealed, required_checks=("integrity", "chain", "components"))
    bundle = attacks.delete_record(sealed, tmp_path / "b.json")
    verdict = verify_bundle(bundle, policy=policy)
    page = tmp_path / "report.html"
    page.write_text(render_html(verdict), encoding="utf-8")
    dom = _chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-500:]
    html = dom.stdout
    assert re.search(r'id="verdict"[^>]*>\s*<div class="outcome">tampered</div>', html)
    assert "integrity.hash_chain" in html and 'data-check="integrity.hash_chain"' in html
    rows = re.findall(r'<tr class="check (\w+)" data-check="([\w.]+)"', html)
    assert ("fail", "integrity.hash_chain") in rows and len(rows) == len(verdict.results)
    path = re.search(r'<svg id="loss-curve".*?<path d="(M[^"]+)"', html, re.S)
    assert path is not None and path.group(1).count("L") == len(verdict.facts["loss"]) - 1
    assert 'id="checkpoint-chain"' in html
    shot = tmp_path / "shot.png"
    result = _chromium(f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri())
    assert result.returncode == 0 and shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_escapes_strings_from_the_bundle() -> None:
    svg = loss_svg([[0, 1.0], [1, None], [2, 0.5]])
    assert svg.count("L") == 1 and "<path d='M" in svg
    assert "No loss values" in loss_svg([])


def test_terminal_report_shows_outcome_and_failing_evidence(sealed: Sealed, tmp_path: Path) -> None:
    policy = policy_for(sealed, required_checks=("integrity", "chain", "components"))
    verdict = verify_bundle(attacks.edit_loss(sealed, tmp_path / "b.json"), policy=policy)
    console = Console(record=True, width=160)
    print_verdict(verdict, console=console)
    text = console.export_text()
    assert "TAMPERED" in text and "integrity.signatures" in text and "expected" in text
    assert "Distillation" in text
