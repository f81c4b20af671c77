"""The server's public key: the C2SP note verifier key that checks its checkpoints."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from attest.server.deps import StateDep

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["keys"])


@router.get("/server-key", response_class=PlainTextResponse)
async def server_key(state: StateDep) -> PlainTextResponse:
    """``<name>+<hex key id>+<base64(0x01 ‖ Ed25519 public key)>`` followed by a newline.

    Pin it in a verifier policy out of band; a bundle's copy is informational only."""
    return PlainTextResponse(state.signer.verifier.to_vkey() + "\n")
