"""A run's bundle from SQL storage (DESIGN §3 "Bundle"), shared by the REST API and the mirror.

The bundle covers the log as of one read of the run row: every leaf below that size, every tree
head handed out up to it (with consistency proofs between successive ones, made by
:func:`attest.log.build_bundle`), every blob, the signed statement if stored, and informational
keys. Nothing in it is trusted by a verifier except through its own policy.
"""

from __future__ import annotations

from attest.bundle import Bundle
from attest.log import build_bundle
from attest.server.storage import RunInfo, Store

__all__ = ["run_bundle"]


def run_bundle(store: Store, info: RunInfo) -> Bundle:
    """The bundle of ``info``'s run at ``info.size`` leaves."""
    return build_bundle(
        run=info.name,
        origin=store.signer.origin(info.name),
        tree=store.tree(info),
        leaves=store.entries(info, 0, info.size),
        checkpoints=store.tree_heads(info),
        blobs=store.blobs(info),
        statement=store.statement(info),
        keys={"trainer": info.key.to_pem(), "server": store.signer.verifier.to_vkey()},
    )
