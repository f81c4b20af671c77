"""Package layout: one `attest` namespace, the import rule, and the README/CI contract."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIBLINGS = {
    "callbacks": "attest.callbacks",
    "server": "attest.server",
    "verifier": "attest.verifier",
}


def _imports(folder: Path) -> set[tuple[Path, str]]:
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {(path, a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((path, node.module))
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_core_imports_no_sibling() -> None:
    bad = [
        (p.name, m)
        for p, m in _imports(ROOT / "attest")
        if any(_within(m, pkg) for pkg in [*SIBLINGS.values(), "attest.demo"])
    ]
    assert bad == []


@pytest.mark.parametrize("folder", sorted(SIBLINGS))
def test_siblings_do_not_import_each_other(folder: str) -> None:
    others = [pkg for name, pkg in SIBLINGS.items() if name != folder] + ["attest.demo"]
    bad = [(p.name, m) for p, m in _imports(ROOT / folder) if any(_within(m, o) for o in others)]
    assert bad == []


def test_core_keeps_torch_out_of_module_scope() -> None:
    """torch may only be imported inside functions in the core (start-up time, light installs)."""
    offenders = []
    for path in (ROOT / "attest").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            offenders += [(path.name, n) for n in names if _within(n, "torch")]
    assert offenders == []


def test_light_core_import_does_not_load_torch_or_mlflow() -> None:
    code = (
        "import sys, attest.bundle, attest.log, attest.digest, attest.statement; "
        "print(','.join(m for m in ('torch', 'mlflow', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.slow
def test_wheel_maps_siblings_into_the_attest_namespace(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"attest"}, "only the attest namespace may be installed"
    for pkg in ["callbacks", "server", "verifier", "demo"]:
        sources = {p.relative_to(ROOT / pkg).as_posix() for p in (ROOT / pkg).rglob("*.py")}
        packaged = {n[len(f"attest/{pkg}/") :] for n in names if n.startswith(f"attest/{pkg}/")}
        assert sources <= packaged, f"{pkg}: missing from the wheel: {sorted(sources - packaged)}"
    core = {p.name for p in (ROOT / "attest").glob("*.py")}
    assert core <= {n[len("attest/") :] for n in names}


def test_readme_has_two_quick_start_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start\n.*?```sh\n(.*?)```", readme, re.S)
    assert block, "README needs a '## Quick start' section with one sh block"
    commands = [line for line in block.group(1).splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2
    assert "attest demo" in commands[0] and "torch==2.13.0" in commands[0]
    assert "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci
