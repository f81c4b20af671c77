"""Durable writes: whole-file replacement leaves no temporary behind; appends and cuts land."""

from __future__ import annotations

from pathlib import Path

from attest.durable import append_synced, truncate_synced, write_atomic


def test_write_atomic_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_atomic(path, b"old contents, longer")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_append_then_cut_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "entries"
    append_synced(path, b"one\n")
    append_synced(path, b"two\npartial")
    truncate_synced(path, len(b"one\ntwo\n"))
    assert path.read_bytes() == b"one\ntwo\n"
