"""A real log server process killed (SIGKILL) mid-run: training completes, the spool ships after
the restart, and the log holds every record once, in order.

Run as a script, this file is that server: the REST contract of :class:`HttpDestination` over a
:class:`LocalLog` folder (``python tests/test_callback_http.py PORT FOLDER TOKEN``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


def serve(port: int, folder: str, token: str) -> None:
    from attest.errors import ChainError, ConfigurationError, FormatError
    from attest.keys import TrainerPublicKey
    from attest.log import LocalLog
    from attest.records import SignedRecord

    log = LocalLog(folder)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes = b"", kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {token}":
                return self._send(401, b'{"detail": "bad token"}')
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length)
            parts = self.path.strip("/").split("/")
            try:
                if self.command == "POST" and parts == ["v1", "runs"]:
                    body = json.loads(data)
                    key = TrainerPublicKey.from_pem(body["trainer_key"])
                    log.create_run(body["run"], key, body["meta"])
                    return self._send(201, b"{}")
                run, rest = parts[2], parts[3:]
                if self.command == "POST" and rest == ["records"]:
                    envs = json.loads(data)["records"]
                    leaves = [SignedRecord.from_json(e).leaf_data() for e in envs]
                    return self._send(200, json.dumps(log.append(run, leaves).to_json()).encode())
                if self.command == "PUT" and rest[:1] == ["blobs"]:
                    log.put_blob(run, json.loads(data))
                    return self._send(201)
                if self.command == "PUT" and rest == ["statement"]:
                    log.put_statement(run, json.loads(data))
                    return self._send(201)
                if self.command == "GET" and rest == ["bundle"]:
                    return self._send(200, log.export(run).dumps().encode())
                if self.command == "GET" and rest == ["checkpoint"]:
                    return self._send(200, log.checkpoint(run).encode(), "text/plain")
            except ChainError as exc:
                return self._send(409, json.dumps({"detail": exc.message}).encode())
            except FormatError as exc:
                return self._send(400, json.dumps({"detail": exc.message}).encode())
            except ConfigurationError as exc:
                return self._send(404, json.dumps({"detail": exc.message}).encode())
            return self._send(404, b'{"detail": "no such endpoint"}')

        do_GET = do_POST = do_PUT = _handle

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, folder: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, __file__, str(port), str(folder), "tok"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("log server did not start")


@pytest.mark.slow
def test_server_killed_mid_run_loses_nothing(tmp_path: Path) -> None:
    import lightning as L
    from torch.utils.data import DataLoader

    from attest.bundle import Bundle
    from attest.callbacks import LineageCallback
    from attest.demo.data import CharDataset
    from attest.demo.model import TinyGPT
    from attest.keys import TrainerKey
    from attest.note import NoteVerifier, open_checkpoint
    from attest.records import check_chain
    from attest.statement import open_statement

    key = TrainerKey.generate()
    key.save(tmp_path / "k.pem")
    port = free_port()
    server = start_server(port, tmp_path / "log")
    events: list[str] = []

    class Killer(L.Callback):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            nonlocal server
            if trainer.global_step == 30:
                os.kill(server.pid, signal.SIGKILL)
                server.wait()
                events.append("killed")

    L.seed_everything(1)
    ds = CharDataset(sentences=60, block_size=8)
    model = TinyGPT(ds.vocab_size, d_model=16, n_layer=1, n_head=2, block_size=8)
    cb = LineageCallback(
        key=tmp_path / "k.pem",
        destination=f"http://127.0.0.1:{port}",
        token="tok",
        run="outage",
        checkpoint_every=20,
        spool_dir=tmp_path / "spool",
        export_bundle=tmp_path / "b.json",
        flush_timeout=1.0,
    )
    trainer = L.Trainer(
        max_steps=100,
        callbacks=[cb, Killer()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(ds, batch_size=8, shuffle=True))
    assert events == ["killed"]
    rec = cb.recorder
    assert rec is not None and rec.spool is not None
    assert rec.spool.pending > 0  # training finished while the server was down
    server = start_server(port, tmp_path / "log")
    try:
        assert rec.wait_shipped(60)
        bundle = Bundle.read(tmp_path / "b.json")
    finally:
        server.kill()
        server.wait()
    seqs = [r.record.seq for r in bundle.records]
    assert seqs == list(range(len(seqs)))
    check_chain([r.record for r in bundle.records], run="outage")
    steps = [
        s
        for r in bundle.records
        if r.record.type == "train.steps"
        for s in range(
            r.record.body["first_step"], r.record.body["first_step"] + len(r.record.body["loss"])
        )
    ]
    assert steps == list(range(100))
    assert bundle.records[-1].record.type == "run.end"
    statement = open_statement(bundle.statement, key.public)
    open_checkpoint(statement.log_checkpoint, NoteVerifier.from_vkey(bundle.keys["server"]))


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2], sys.argv[3])
