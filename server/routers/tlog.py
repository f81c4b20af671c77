"""C2SP tlog-tiles read paths (c2sp.org/tlog-tiles), one log per run under
``/v1/runs/<run>/tlog/``, so existing transparency-log tools can read and audit a run's log.

- ``checkpoint``: the latest signed checkpoint note;
- ``tile/<L>/<N>[.p/<W>]``: the hashes at tree level ``8·L`` with indices ``256·N`` to
  ``256·N + W - 1`` (``W`` = 256 for a full tile), 32 bytes each, concatenated;
- ``tile/entries/<N>[.p/<W>]``: leaves ``256·N`` to ``256·N + W - 1``, each as a big-endian
  uint16 length and the leaf bytes (records are at most 65535 bytes, so they always fit).

``N`` is written in groups of three decimal digits, every group but the last prefixed with
``x`` (``1234067`` → ``x001/x234/067``). A tile is served only once the log covers it; partial
tiles of any width the log covers are served too.
"""

from __future__ import annotations

import re
import struct
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import PlainTextResponse, Response

from attest.errors import ConfigurationError, FormatError
from attest.merkle import root_from_leaf_hashes
from attest.server.deps import ReadableRun, StateDep
from attest.server.errors import NotFoundError

__all__ = ["parse_tile_index", "router"]

router = APIRouter(prefix="/v1/runs/{run}/tlog", tags=["tlog-tiles"])
TILE_WIDTH = 256
_INDEX = re.compile(r"^((?:x\d{3}/)*\d{3})(?:\.p/([1-9]\d{0,2}))?$")
_OCTETS: dict[int | str, dict[str, Any]] = {200: {"content": {"application/octet-stream": {}}}}


def parse_tile_index(path: str) -> tuple[int, int]:
    """``x001/x234/067.p/8`` → (1234067, 8); width 256 for a full tile."""
    m = _INDEX.fullmatch(path)
    if m is None:
        raise FormatError(
            "tile index must be 3-digit groups, all but the last prefixed 'x', optionally "
            "followed by '.p/<width>'",
            got=path[:80],
        )
    index = int(m.group(1).replace("x", "").replace("/", ""))
    width = TILE_WIDTH if m.group(2) is None else int(m.group(2))
    if width > TILE_WIDTH or (m.group(2) is not None and width == TILE_WIDTH):
        raise FormatError("a partial tile's width must be 1-255", got=width)
    return index, width


@router.get("/checkpoint", response_class=PlainTextResponse)
def tlog_checkpoint(info: ReadableRun, state: StateDep) -> PlainTextResponse:
    """The latest checkpoint (same as ``/v1/runs/<run>/checkpoint``)."""
    return PlainTextResponse(state.store.latest_checkpoint(info))


@router.get("/tile/entries/{index:path}", response_class=Response, responses=_OCTETS)
def entry_bundle(info: ReadableRun, state: StateDep, index: str) -> Response:
    """An entry bundle: ``W`` leaves, each prefixed with its big-endian uint16 length."""
    n, width = parse_tile_index(index)
    start = n * TILE_WIDTH
    if start + width > info.size:
        raise NotFoundError(
            "the log does not cover this entry bundle yet",
            expected=f"<= {info.size}",
            got=start + width,
        )
    leaves = state.store.entries(info, start, start + width)
    body = b"".join(struct.pack(">H", len(leaf)) + leaf for leaf in leaves)
    return Response(body, media_type="application/octet-stream")


@router.get("/tile/{level}/{index:path}", response_class=Response, responses=_OCTETS)
def hash_tile(
    info: ReadableRun,
    state: StateDep,
    level: Annotated[int, Path(ge=0, le=63)],
    index: str,
) -> Response:
    """A hash tile: ``W`` subtree hashes at tree level ``8·level``."""
    n, width = parse_tile_index(index)
    span = TILE_WIDTH**level  # leaves under one hash of this tile
    first, end = n * TILE_WIDTH, n * TILE_WIDTH + width
    if end * span > info.size:
        raise NotFoundError(
            "the log does not cover this tile yet", expected=f"<= {info.size}", got=end * span
        )
    if span > 65536:
        raise ConfigurationError("tiles above level 2 are not served", got=level)
    tree = state.store.tree(info)
    if level == 0:
        hashes = [tree.leaf_hash(i) for i in range(first, end)]
    else:
        hashes = []
        for i in range(first, end):
            leaf_hashes = [tree.leaf_hash(j) for j in range(i * span, (i + 1) * span)]
            hashes.append(root_from_leaf_hashes(leaf_hashes))
    return Response(b"".join(hashes), media_type="application/octet-stream")
