"""attest.server: the log server (DESIGN §5).

FastAPI over SQL storage (SQLite embedded, PostgreSQL for several replicas): one RFC 6962 Merkle
log per run whose leaves are trainer-signed records, Ed25519-signed C2SP checkpoints with the
receive time, inclusion/consistency proofs, bundles, bearer-token auth, and an MLflow mirror whose
server app is mounted in the same process. Start it with ``attest serve``.
"""

from __future__ import annotations

from attest.server.app import create_app
from attest.server.settings import Settings, get_settings

__all__ = ["Settings", "create_app", "get_settings"]
