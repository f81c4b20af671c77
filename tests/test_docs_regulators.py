"""docs/regulators.md runs as written, against a real server, so the walkthrough cannot drift.

An honest run (``tamper.honest``, a tiny MLP trained on CPU) is appended to an ``attest serve``
app listening on 127.0.0.1 through the trainer's REST client, in two parts so that a checkpoint
can be fetched half way, as a regulator monitoring the run would. Then the walkthrough's own text
is executed: every ``curl "$SERVER/…"`` URL it shows is fetched with a reader token limited to
the run (saving ``-o`` files), ``attest export`` is invoked with the flags it shows, its policy
block is the policy, ``attest verify`` must exit 0 (and 1 on a bundle with one edited loss), and
its two Python scripts are run as written: consistency from the earlier checkpoint to today's
(and refusing a forked one) and the inclusion of the last record.

The walkthrough's run had 13 records and the earlier checkpoint 6; the URLs' sizes are mapped to
this run's (13 → final size, 12 → final size − 1, 6 → the earlier size).
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ed25519

from attest.canonical import canonical_json
from attest.cli_export import export_command as export
from attest.client import HttpDestination
from attest.keys import TrainerKey, save_server_key
from attest.log import LogSigner
from attest.server import Settings, create_app
from attest.server.cli import token
from attest.verifier.cli import verify

DOC = Path(__file__).resolve().parent.parent / "docs" / "regulators.md"
RUN = "gpt-tiny-2026-11"
DOC_FINAL, DOC_EARLIER = 13, 6


@dataclass
class Walkthrough:
    server: str
    reader: str
    folder: Path  # the regulator's working folder
    final_size: int
    earlier_size: int
    signer: LogSigner


def _free_port() -> int:
    for port in range(8700, 8800):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port in 8700-8799")


def _token(data: Path, *args: str) -> str:
    result = CliRunner().invoke(token, ["create", *args, "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["token"])


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walkthrough]:
    from tamper.honest import seal, train

    tmp = tmp_path_factory.mktemp("regdoc")
    server_key = ed25519.Ed25519PrivateKey.generate()
    save_server_key(server_key, tmp / "server.key")
    trainer_key = TrainerKey.generate()
    # The trainer's side: an honest run signed with its key; the statement it signs embeds the
    # final checkpoint, which the server below reproduces (same key, name, origin and leaves).
    sealed = seal(
        train(tmp / "train", run=RUN),
        tmp / "sealed",
        trainer_key=trainer_key,
        server_key=server_key,
    )
    data = tmp / "data"
    app = create_app(Settings(data=data, mlflow=False, server_key=tmp / "server.key"))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    try:
        trainer = _token(data, "--role", "trainer", "--name", "lab-trainer")
        reader = _token(data, "--role", "reader", "--name", "ai-office", "--runs", RUN)
        dest = HttpDestination(url, trainer)
        dest.create_run(RUN, trainer_key.public)
        for doc in sealed.bundle.blobs.values():
            dest.put_blob(RUN, doc)
        leaves = [r.leaf_data() for r in sealed.bundle.records]
        earlier = min(DOC_EARLIER, len(leaves) - 1)
        dest.append(RUN, leaves[:earlier])
        folder = tmp / "regulator"
        (folder / "keys").mkdir(parents=True)
        note = httpx.get(
            f"{url}/v1/runs/{RUN}/checkpoint", headers={"Authorization": f"Bearer {reader}"}
        )
        note.raise_for_status()
        (folder / "earlier.note").write_text(note.text)
        dest.append(RUN, leaves[earlier:])
        assert sealed.bundle.statement is not None
        dest.put_statement(RUN, sealed.bundle.statement)
        dest.close()
        # Out of band: the lab hands over the trainer key and the final weights.
        (folder / "keys" / "trainer.pub").write_text(trainer_key.public.to_pem())
        (folder / "model.safetensors").write_bytes(sealed.model_path.read_bytes())
        yield Walkthrough(
            url,
            reader,
            folder,
            len(leaves),
            earlier,
            LogSigner("localhost/attest", server_key),
        )
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _script(marker: str) -> str:
    blocks: list[str] = [b for b in re.findall(r"```python\n(.*?)```", _doc(), re.S) if marker in b]
    assert len(blocks) == 1, f"docs/regulators.md needs exactly one python block with {marker!r}"
    return blocks[0]


def _doc_urls() -> list[tuple[str, str | None]]:
    """(path and query, -o file) of every curl line of the walkthrough that names $SERVER."""
    found = []
    for line in _doc().splitlines():
        if "curl " not in line or "$SERVER" not in line:
            continue
        words = shlex.split(line.split("|")[0].lstrip("$ ").removesuffix("\\"))
        path = next(w for w in words if w.startswith("$SERVER"))
        out = words[words.index("-o") + 1] if "-o" in words else None
        found.append((path[len("$SERVER") :], out))
    return found


def _sizes(path: str, w: Walkthrough) -> str:
    mapping = {
        DOC_FINAL: w.final_size,
        DOC_FINAL - 1: w.final_size - 1,
        DOC_EARLIER: w.earlier_size,
    }
    path = path.replace("$RUN", RUN)
    return re.sub(r"=(\d+)", lambda m: f"={mapping.get(int(m.group(1)), int(m.group(1)))}", path)


def _python(script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_walkthrough_runs_as_written(walkthrough: Walkthrough) -> None:
    w, reg = walkthrough, walkthrough.folder
    urls = _doc_urls()
    assert {"today.note", "consistency.json", "bundle.json", "keys/server.vkey"} <= {
        o for _, o in urls
    }
    for path, out in urls:
        resp = httpx.get(
            w.server + _sizes(path, w), headers={"Authorization": f"Bearer {w.reader}"}, timeout=30
        )
        assert resp.status_code == 200, f"{path}: {resp.status_code} {resp.text[:200]}"
        if out is not None:
            (reg / out).write_bytes(resp.content)

    # attest export with the flags the walkthrough shows writes the same bundle as curl did.
    export_line = next(line for line in _doc().splitlines() if line.startswith("$ attest export"))
    args = [
        a.replace("$RUN", RUN).replace("$SERVER", w.server).replace("$TOKEN", w.reader)
        for a in shlex.split(export_line)[3:]
    ]
    assert args[args.index("--out") + 1] == "bundle.json"
    args[args.index("--out") + 1] = str(reg / "exported.json")
    result = CliRunner().invoke(export, [RUN, *args[1:]])
    assert result.exit_code == 0, result.output
    assert json.loads((reg / "exported.json").read_text()) == json.loads(
        (reg / "bundle.json").read_text()
    )

    policy = next(
        b for b in re.findall(r"```json\n(.*?)```", _doc(), re.S) if "attest-policy/v1" in b
    )
    (reg / "policy.json").write_text(policy)
    verify_args = ["bundle.json", "--policy", "policy.json", "--model", "model.safetensors"]
    assert f"$ attest verify {' '.join(verify_args)}" in _doc()
    result = CliRunner().invoke(
        verify, [a if a.startswith("--") else str(reg / a) for a in verify_args]
    )
    assert result.exit_code == 0, result.output

    tampered = json.loads((reg / "bundle.json").read_text())
    for envelope in tampered["records"]:
        record = json.loads(base64.b64decode(envelope["payload"]))
        if record["type"] == "train.steps":
            record["body"]["loss"][0] = record["body"]["loss"][0] * 0.5
            envelope["payload"] = base64.b64encode(canonical_json(record)).decode()
            break
    (reg / "tampered.json").write_text(json.dumps(tampered))
    result = CliRunner().invoke(
        verify, [str(reg / "tampered.json"), "--policy", str(reg / "policy.json")]
    )
    assert result.exit_code == 1, result.output

    consistency = reg / "check_consistency.py"
    consistency.write_text(_script("verify_consistency("))
    run = _python(
        consistency, "earlier.note", "today.note", "consistency.json", "keys/server.vkey", cwd=reg
    )
    assert run.returncode == 0 and run.stdout.startswith("consistent: "), run.stderr
    forked = w.signer.sign(RUN, w.earlier_size, bytes(32))  # real key, another history
    (reg / "forked.note").write_text(forked)
    run = _python(
        consistency, "forked.note", "today.note", "consistency.json", "keys/server.vkey", cwd=reg
    )
    assert run.returncode == 1 and "NOT CONSISTENT" in run.stderr, run.stderr

    for note, code in (("earlier.note", 0), ("forked.note", 1)):
        line = f"$ attest verify bundle.json --policy policy.json --model model.safetensors --checkpoint {note}"
        assert line in _doc()
        args = [str(reg / a) if "." in a else a for a in shlex.split(line)[3:]]
        result = CliRunner().invoke(verify, args)
        assert result.exit_code == code, result.output
        assert "integrity.earlier_checkpoints" in result.output

    inclusion = reg / "check_inclusion.py"
    inclusion.write_text(_script("verify_inclusion("))
    args = ["entry12.json", "inclusion12.json", "today.note", "keys/server.vkey"]
    run = _python(inclusion, *args, cwd=reg)
    assert run.returncode == 0 and "(run.end," in run.stdout, run.stderr
    run = _python(inclusion, "entry12.json", "inclusion12.json", "earlier.note", args[3], cwd=reg)
    assert run.returncode == 1 and "NOT INCLUDED" in run.stderr, run.stderr


def test_export_saves_a_tree_head_for_the_next_audit(
    walkthrough: Walkthrough, tmp_path: Path
) -> None:
    w = walkthrough
    out, head = tmp_path / "b.json", tmp_path / "head.note"
    base = ["--server", w.server, "--out", str(out)]
    result = CliRunner().invoke(
        export, [RUN, *base, "--token", w.reader, "--checkpoint-out", str(head)]
    )
    assert result.exit_code == 0, result.output
    assert f"signed tree head of size {w.final_size}" in result.output
    assert head.read_text().splitlines()[1] == str(w.final_size)
    policy = w.folder / "policy.json"
    policy.write_text(
        next(b for b in re.findall(r"```json\n(.*?)```", _doc(), re.S) if "attest-policy/v1" in b)
    )
    vkey = httpx.get(f"{w.server}/v1/server-key", timeout=30)
    assert vkey.status_code == 200
    (w.folder / "keys" / "server.vkey").write_bytes(vkey.content)
    model = w.folder / "model.safetensors"
    args = [str(out), "--policy", str(policy), "--model", str(model), "--checkpoint", str(head)]
    verified = CliRunner().invoke(verify, args)
    assert verified.exit_code == 0, verified.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--token", "not-a-token"], "server answered 401"),
        ([], "pass --token or set ATTEST_TOKEN"),
        (["--token", "{reader}", "--run", "no-such-run"], "server answered 404"),
    ],
)
def test_export_errors_name_the_fix(
    walkthrough: Walkthrough, tmp_path: Path, args: list[str], message: str
) -> None:
    run = RUN
    if "--run" in args:
        run = args[args.index("--run") + 1]
        args = args[: args.index("--run")]
    args = [a.replace("{reader}", walkthrough.reader) for a in args]
    env = {"ATTEST_TOKEN": ""}
    result = CliRunner(env=env).invoke(
        export, [run, "--server", walkthrough.server, "--out", str(tmp_path / "b.json"), *args]
    )
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "b.json").exists()


def test_export_to_an_unreachable_server_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        export, [RUN, "--server", f"http://127.0.0.1:{_free_port()}", "--token", "t"]
    )
    assert result.exit_code == 1 and "cannot reach" in result.output, result.output
    result = CliRunner().invoke(export, [RUN, "--server", "ftp://example.org"])
    assert result.exit_code == 1 and "http(s) URL" in result.output


def test_posting_the_verdict_as_shown(walkthrough: Walkthrough, tmp_path: Path) -> None:
    w = walkthrough
    line = "$ attest verify bundle.json --policy policy.json --model model.safetensors --json"
    assert f"{line} > verdict.json" in _doc()
    assert '"$SERVER/v1/runs/$RUN/verdicts"' in _doc()
    bundle = tmp_path / "bundle.json"
    assert (
        CliRunner()
        .invoke(export, [RUN, "--server", w.server, "--token", w.reader, "--out", str(bundle)])
        .exit_code
        == 0
    )
    policy = w.folder / "policy.json"
    policy.write_text(
        next(b for b in re.findall(r"```json\n(.*?)```", _doc(), re.S) if "attest-policy/v1" in b)
    )
    (w.folder / "keys" / "server.vkey").write_bytes(httpx.get(f"{w.server}/v1/server-key").content)
    args = [str(bundle), "--policy", str(policy), "--model", str(w.folder / "model.safetensors")]
    result = CliRunner().invoke(verify, [*args, "--json"])
    assert result.exit_code == 0, result.output
    posted = httpx.post(
        f"{w.server}/v1/runs/{RUN}/verdicts",
        content=result.output,
        headers={"Authorization": f"Bearer {w.reader}", "Content-Type": "application/json"},
    )
    assert posted.status_code == 201, posted.text
    assert posted.json()["outcome"] == "verified" and posted.json()["policy"] == "ai-office-lineage"
