"""An embedded log server for the demo: the real ``attest serve`` app, in a background thread.

The demo attests over HTTP exactly as a production job would, and the server mirrors the run to
MLflow (SQLite store in the demo folder), so the MLflow UI shows the run's loss curve, tags and
bundle. It listens on 127.0.0.1 only, on a free port, with a freshly issued trainer token.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EmbeddedServer", "embedded_server"]


@dataclass(frozen=True)
class EmbeddedServer:
    url: str
    token: str
    admin_token: str
    server_vkey: str
    data: Path
    flush_mirror: Callable[[], object]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def embedded_server(data: Path) -> Iterator[EmbeddedServer]:
    """Start the log server on ``data``; stop it (after the MLflow mirror drains) on exit."""
    import uvicorn

    from attest.server.app import create_app
    from attest.server.auth import issue_token
    from attest.server.settings import Settings

    port = _free_port()
    settings = Settings(data=data, host="127.0.0.1", port=port, log_name="localhost/attest-demo")
    app = create_app(settings)
    state = app.state.attest
    token, _ = issue_token(state.store, role="trainer", name="demo-trainer")
    admin, _ = issue_token(state.store, role="admin", name="demo-admin")
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="attest-demo-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the embedded log server did not start")
        time.sleep(0.05)
    try:
        yield EmbeddedServer(
            url=f"http://127.0.0.1:{port}",
            token=token,
            admin_token=admin,
            server_vkey=state.signer.verifier.to_vkey(),
            data=data,
            flush_mirror=lambda: state.mirror.flush() if state.mirror is not None else None,
        )
    finally:
        server.should_exit = True
        thread.join(timeout=30)
