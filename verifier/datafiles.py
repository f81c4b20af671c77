"""``chain.data_files``: the data handed to the verifier is the data the run declared.

docs/verifying.md §2. ``--data DIR`` is what the step-0 loss and replay read their batches from,
so their results vouch for *those* files. The ``data.manifest`` record (signed, in the log)
lists the run's shard files by path, SHA-256 and size; this check hashes ``DIR/<path>`` for
each and compares. A mismatch means the files given are not the declared data: training could
have run on other data than the manifest names, and the replay would not notice (it replays
whatever it is given). Shard paths come from the log and are refused when they would leave
``DIR`` (absolute, or with a ``..`` component).

The check needs input only the verifier can supply, so without ``--data`` (or when the manifest
names its data by fingerprint alone) it is skipped, and the verdict counts it only when a
policy names it (:data:`attest.verifier.verdict.OPTIONAL_INPUT`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath
from typing import Any

from attest.canonical import parse_sha256_digest
from attest.errors import FormatError
from attest.verifier.context import VerifyContext
from attest.verifier.result import CheckResult, Reporter

__all__ = ["CHECK_ID", "TITLE", "check_data_files"]

CHECK_ID = "chain.data_files"
TITLE = "Data files match the manifest"


def check_data_files(ctx: VerifyContext, report: Reporter) -> CheckResult:
    """Compare every shard the manifest lists with ``ctx.data_dir/<path>``."""
    if ctx.data_dir is None:
        return report("skip", CHECK_ID, "no data folder given (--data DIR)")
    manifest = ctx.data_manifest
    if manifest is None:
        return report("fail", CHECK_ID, "the log has no data.manifest record")
    shards = _shards(manifest.get("dataset"))
    if not shards:
        return report(
            "skip",
            CHECK_ID,
            "the manifest names its data by fingerprint only (no shard files), so the files in "
            f"{ctx.data_dir} cannot be tied to it",
            fingerprint=(manifest.get("dataset") or {}).get("fingerprint"),
        )
    missing: list[str] = []
    differ: list[dict[str, Any]] = []
    for path, digest, size in shards:
        file = ctx.data_dir.joinpath(*PurePosixPath(path).parts)
        if not file.is_file():
            missing.append(path)
            continue
        got_size, got = _file_digest(file)
        if (got, got_size) != (digest, size):
            differ.append({"path": path, "expected": digest, "got": got, "bytes": [size, got_size]})
    if differ:
        first = differ[0]
        return report(
            "fail",
            CHECK_ID,
            f"{len(differ)} of {len(shards)} data files in {ctx.data_dir} differ from the "
            "manifest: they are not the data the run declared, and the step-0 loss and replay "
            "ran on them",
            expected=first["expected"],
            got=first["got"],
            files=differ[:20],
        )
    if missing:
        return report(
            "skip",
            CHECK_ID,
            f"could not check: {len(missing)} of {len(shards)} shard files are not in "
            f"{ctx.data_dir} ({', '.join(missing[:3])}{' …' if len(missing) > 3 else ''})",
            missing=missing[:20],
        )
    total = sum(size for _, _, size in shards)
    return report(
        "pass",
        CHECK_ID,
        f"{len(shards)} data file{'s' if len(shards) != 1 else ''} ({total:,} bytes) in"
        f" {ctx.data_dir} {'match' if len(shards) != 1 else 'matches'} the manifest",
        files=len(shards),
        bytes=total,
    )


def _shards(dataset: object) -> list[tuple[str, str, int]]:
    """``(path, digest, bytes)`` of each shard of ``data.manifest.dataset``; :class:`FormatError`
    for a malformed entry or a path that would leave the data folder."""
    if not isinstance(dataset, dict):
        raise FormatError("data.manifest.dataset must be an object")
    raw = dataset.get("shards", [])
    if not isinstance(raw, list):
        raise FormatError("data.manifest.dataset.shards must be a list")
    out = []
    for i, shard in enumerate(raw):
        where = f"data.manifest.dataset.shards[{i}]"
        if not isinstance(shard, dict):
            raise FormatError(f"{where} must be an object with path, digest and bytes")
        path, size = shard.get("path"), shard.get("bytes")
        digest = parse_sha256_digest(shard.get("digest"), field=f"{where}.digest")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise FormatError(f"{where}.bytes must be a non-negative integer", got=repr(size))
        if not isinstance(path, str) or not _inside(path):
            raise FormatError(
                f"{where}.path must be a relative path inside the data folder",
                got=repr(path)[:80],
            )
        out.append((path, digest, size))
    return out


def _inside(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return (
        bool(parts)
        and not PurePosixPath(path).is_absolute()
        and ".." not in parts
        and "\\" not in path
    )


def _file_digest(path: Path) -> tuple[int, str]:
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256")
    return path.stat().st_size, "sha256:" + digest.hexdigest()
