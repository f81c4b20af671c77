"""Tests for attest-tensors-v1 (attest.digest, attest.safetensors_io, attest hash)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import blake3
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from attest.cli_hash import hash_command
from attest.digest import (
    DEFAULT_CHUNK_SIZE,
    ModelDigest,
    TensorDigest,
    digest_arrays,
    digest_safetensors,
    digest_state_dict,
    parse_algorithm,
    verify_tensor_inclusion,
)
from attest.errors import ConfigurationError, FormatError, ProofError

# --- an independent re-implementation of the format, for known answers ----------------------


def _mth(leaves: list[bytes], h: Any) -> bytes:
    """RFC 9162 §2.1.1 Merkle Tree Hash over leaf *data*, written recursively."""
    if not leaves:
        return bytes(h(b"").digest())
    if len(leaves) == 1:
        return bytes(h(b"\x00" + leaves[0]).digest())
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return bytes(h(b"\x01" + _mth(leaves[:k], h) + _mth(leaves[k:], h)).digest())


def _reference_root(model: dict[str, tuple[str, list[int], bytes]], chunk: int, h: Any) -> bytes:
    leaves = []
    for name in sorted(model, key=lambda n: n.encode()):
        dtype, shape, data = model[name]
        chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
        n, t = name.encode(), dtype.encode()
        leaf = b"attest-tensor-v1\x00" + len(n).to_bytes(2, "big") + n + bytes([len(t)]) + t
        leaf += bytes([len(shape)]) + b"".join(d.to_bytes(8, "big") for d in shape)
        leaves.append(leaf + len(data).to_bytes(8, "big") + _mth(chunks, h))
    return _mth(leaves, h)


KAT_MODEL = {
    "layer.0.weight": ("F32", [2, 2], struct.pack("<4f", 1.0, -2.0, 0.5, 3.25)),
    "layer.0.bias": ("I8", [3], bytes([1, 255, 7])),
    "flag": ("BOOL", [], b"\x01"),
    "empty": ("F16", [0, 4], b""),
    "ünïcode": ("U8", [5], b"hello"),
}
KAT_SHA256_CHUNK4 = "4cb296e018828307ded0930f258182754444c5e9d75f52d604c3d75feb3251e1"


def _items(
    model: dict[str, tuple[str, list[int], bytes]],
) -> list[tuple[str, str, list[int], bytes]]:
    return [(name, dtype, shape, data) for name, (dtype, shape, data) in model.items()]


@pytest.mark.parametrize(
    ("algorithm", "h"), [("sha256", hashlib.sha256), ("blake3", blake3.blake3)]
)
@pytest.mark.parametrize("chunk", [1, 4, 5, DEFAULT_CHUNK_SIZE])
def test_known_answer_matches_independent_implementation(
    algorithm: str, h: Any, chunk: int
) -> None:
    digest = digest_arrays(_items(KAT_MODEL), algorithm=algorithm, chunk_size=chunk, workers=1)
    assert digest.root == _reference_root(KAT_MODEL, chunk, h)
    assert digest.algorithm == f"attest-tensors-v1/{algorithm}/chunk={chunk}"


def test_known_answer_pinned() -> None:
    digest = digest_arrays(_items(KAT_MODEL), chunk_size=4)
    assert digest.hex == KAT_SHA256_CHUNK4
    assert [t.name for t in digest.tensors] == [
        "empty",
        "flag",
        "layer.0.bias",
        "layer.0.weight",
        "ünïcode",
    ]
    assert digest.tensor("empty").content_root == hashlib.sha256(b"").digest()


# --- sources agree: state_dict, safetensors file, hand-written file, shards -----------------


def _state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    base = torch.randn(6, 5, generator=g)
    sd = {
        "transposed": base.t(),  # non-contiguous
        "sliced": base[1:5:2, ::2],  # non-contiguous, offset storage
        "bf16": torch.randn(3, 4, generator=g).to(torch.bfloat16),
        "f16": torch.randn(7, generator=g).to(torch.float16),
        "f64": torch.randn(2, 2, generator=g).double(),
        "i8": torch.randint(-128, 127, (4, 3), generator=g, dtype=torch.int8),
        "i64": torch.arange(5),
        "u8": torch.arange(9, dtype=torch.uint8).reshape(3, 3),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "needs_grad": torch.ones(2, requires_grad=True),
    }
    if hasattr(torch, "float8_e4m3fn"):
        sd["fp8"] = torch.randn(4, generator=g).to(torch.float8_e4m3fn)
    return sd


def _save(sd: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().contiguous() for k, v in sd.items()}, str(path))


def test_state_dict_matches_safetensors_file(tmp_path: Path) -> None:
    sd = _state_dict()
    _save(sd, tmp_path / "m.safetensors")
    for chunk in (3, 16, DEFAULT_CHUNK_SIZE):
        from_memory = digest_state_dict(sd, chunk_size=chunk)
        from_file = digest_safetensors(tmp_path / "m.safetensors", chunk_size=chunk)
        assert from_memory == from_file
    assert from_memory.tensor("transposed").shape == (5, 6)
    assert from_memory.tensor("scalar").shape == ()
    assert from_memory.tensor("bf16").dtype == "BF16"


def _write_safetensors(
    path: Path,
    tensors: dict[str, tuple[str, list[int], bytes]],
    *,
    data_order: list[str] | None = None,
    pad: int = 0,
    header: dict[str, Any] | None = None,
) -> None:
    """Write a safetensors file by hand, with chosen header key order and data order."""
    order = data_order or list(tensors)
    offsets, cursor = {}, 0
    for name in order:
        offsets[name] = [cursor, cursor + len(tensors[name][2])]
        cursor += len(tensors[name][2])
    if header is None:
        header = {"__metadata__": {"format": "pt"}}
        for name, (dtype, shape, _) in tensors.items():
            header[name] = {"data_offsets": offsets[name], "shape": shape, "dtype": dtype}
    raw = json.dumps(header).encode() + b" " * pad
    body = b"".join(tensors[name][2] for name in order)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)


def test_reordered_header_and_data_give_same_digest(tmp_path: Path) -> None:
    sd = _state_dict()
    _save(sd, tmp_path / "ref.safetensors")
    tensors = {}
    for name in reversed(list(sd)):
        t = sd[name].detach().contiguous()
        dtype = digest_state_dict({name: t}).tensors[0].dtype
        tensors[name] = (dtype, list(t.shape), t.reshape(-1).view(torch.uint8).numpy().tobytes())
    data_order = sorted(sd, key=lambda n: hash(n) % 97)
    _write_safetensors(tmp_path / "odd.safetensors", tensors, data_order=data_order, pad=13)
    assert digest_safetensors(tmp_path / "odd.safetensors") == digest_safetensors(
        tmp_path / "ref.safetensors"
    )
    assert digest_safetensors(tmp_path / "odd.safetensors") == digest_state_dict(sd)


def test_folder_of_shards_is_union(tmp_path: Path) -> None:
    sd = _state_dict()
    names = list(sd)
    (tmp_path / "shards").mkdir()
    _save({k: sd[k] for k in names[:5]}, tmp_path / "shards" / "model-00001.safetensors")
    _save({k: sd[k] for k in names[5:]}, tmp_path / "shards" / "model-00002.safetensors")
    (tmp_path / "shards" / "model.safetensors.index.json").write_text("{}")
    assert digest_safetensors(tmp_path / "shards") == digest_state_dict(sd)

    _save({names[0]: sd[names[0]]}, tmp_path / "shards" / "model-00003.safetensors")
    with pytest.raises(FormatError, match=f"{names[0]!r} appears in both"):
        digest_safetensors(tmp_path / "shards")
    (tmp_path / "none").mkdir()
    with pytest.raises(FormatError, match=r"no \*\.safetensors"):
        digest_safetensors(tmp_path / "none")


# --- sensitivity -----------------------------------------------------------------------------

SMALL = {
    "a": ("F32", [2, 3], bytes(range(24))),
    "b": ("U8", [7], bytes(range(100, 107))),
    "c": ("I16", [5], bytes(range(50, 60))),
}
SMALL_BYTES = sum(len(d) for _, _, d in SMALL.values())
SMALL_ROOT = digest_arrays(_items(SMALL), chunk_size=4, workers=1).root


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, SMALL_BYTES * 8 - 1))
def test_any_single_bit_flip_changes_digest(position: int) -> None:
    byte, bit = divmod(position, 8)
    items = []
    for name, (dtype, shape, data) in SMALL.items():
        buf = bytearray(data)
        if 0 <= byte < len(buf):
            buf[byte] ^= 1 << bit
        byte -= len(data)
        items.append((name, dtype, shape, bytes(buf)))
    assert digest_arrays(items, chunk_size=4, workers=1).root != SMALL_ROOT


@pytest.mark.parametrize(
    ("mutation", "model"),
    [
        ("rename", {**{k: v for k, v in SMALL.items() if k != "a"}, "a2": SMALL["a"]}),
        ("dtype-same-bytes", {**SMALL, "a": ("I32", [2, 3], SMALL["a"][2])}),
        ("shape-same-bytes", {**SMALL, "a": ("F32", [3, 2], SMALL["a"][2])}),
        ("shape-flatten", {**SMALL, "a": ("F32", [6], SMALL["a"][2])}),
        ("drop-tensor", {k: v for k, v in SMALL.items() if k != "c"}),
        ("add-empty-tensor", {**SMALL, "d": ("F32", [0], b"")}),
    ],
)
def test_metadata_changes_change_digest(mutation: str, model: dict[str, Any]) -> None:
    assert digest_arrays(_items(model), chunk_size=4).root != SMALL_ROOT, mutation


def test_chunk_size_is_in_algorithm_and_changes_root() -> None:
    a = digest_arrays(_items(SMALL), chunk_size=4)
    b = digest_arrays(_items(SMALL), chunk_size=8)
    assert a.algorithm.endswith("/chunk=4") and b.algorithm.endswith("/chunk=8")
    assert a.root != b.root
    assert digest_arrays(_items(SMALL), algorithm=a.algorithm) == a


def test_multithreaded_equals_single_threaded() -> None:
    data = os.urandom(3 * 1024 * 1024 + 123)  # above the inline threshold: uses the pool
    items = [("big", "U8", [len(data)], data), *_items(SMALL)]
    for algorithm in ("sha256", "blake3"):
        one = digest_arrays(items, algorithm=algorithm, chunk_size=65536, workers=1)
        many = digest_arrays(items, algorithm=algorithm, chunk_size=65536, workers=4)
        assert one == many
        h = hashlib.sha256 if algorithm == "sha256" else blake3.blake3
        chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
        assert one.tensor("big").content_root == _mth(chunks, h)


def test_progress_reports_every_byte(tmp_path: Path) -> None:
    _save(_state_dict(), tmp_path / "m.safetensors")
    calls: list[tuple[int, int]] = []
    digest_safetensors(
        tmp_path / "m.safetensors", chunk_size=8, progress=lambda d, t: calls.append((d, t))
    )
    total = calls[-1][1]
    assert calls[-1][0] == total > 0
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


# --- inclusion proofs ------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["sha256", "blake3"])
def test_tensor_inclusion_proofs_verify(algorithm: str) -> None:
    digest = digest_state_dict(_state_dict(), algorithm=algorithm)
    for i, t in enumerate(digest.tensors):
        proof = digest.inclusion_proof(t.name)
        assert digest.index(t.name) == i
        verify_tensor_inclusion(
            algorithm=digest.algorithm,
            model_root=digest.root,
            tensor=t,
            index=i,
            size=len(digest.tensors),
            proof=proof,
        )


def test_tampered_inclusion_proofs_fail() -> None:
    digest = digest_state_dict(_state_dict())
    t = digest.tensors[-1]  # the last leaf: its path depends on the tree size too
    good: dict[str, Any] = {
        "algorithm": digest.algorithm,
        "model_root": digest.root,
        "tensor": t,
        "index": digest.index(t.name),
        "size": len(digest.tensors),
        "proof": digest.inclusion_proof(t.name),
    }
    other_root = bytes([t.content_root[0] ^ 1]) + t.content_root[1:]
    attacks: dict[str, dict[str, Any]] = {
        "wrong-content": {"tensor": TensorDigest(t.name, t.dtype, t.shape, t.nbytes, other_root)},
        "wrong-shape": {"tensor": TensorDigest(t.name, t.dtype, (9,), t.nbytes, t.content_root)},
        "wrong-name": {
            "tensor": TensorDigest(t.name + "x", t.dtype, t.shape, t.nbytes, t.content_root)
        },
        "wrong-index": {"index": good["index"] - 1},
        "index-out-of-range": {"index": good["index"] + 1},
        "wrong-size": {"size": good["size"] + 1},
        "flipped-proof-hash": {
            "proof": [bytes([good["proof"][0][0] ^ 1]) + good["proof"][0][1:], *good["proof"][1:]]
        },
        "truncated-proof": {"proof": good["proof"][:-1]},
        "wrong-root": {"model_root": hashlib.sha256(b"other").digest()},
        "wrong-hash": {"algorithm": digest.algorithm.replace("sha256", "blake3")},
    }
    for name, change in attacks.items():
        try:
            verify_tensor_inclusion(**{**good, **change})
        except ProofError:
            continue
        pytest.fail(f"attack {name} was not caught")


# --- JSON blob and algorithm strings ---------------------------------------------------------


def test_json_round_trip_and_strictness() -> None:
    digest = digest_state_dict(_state_dict(), algorithm="blake3")
    blob = json.loads(json.dumps(digest.to_json()))
    assert ModelDigest.from_json(blob) == digest

    def mutated(change: Any) -> dict[str, Any]:
        b: dict[str, Any] = json.loads(json.dumps(blob))
        change(b)
        return b

    cases = {
        "extra-key": lambda b: b.update(extra=1),
        "root-upper-hex": lambda b: b.update(root=b["root"].upper()),
        "root-mismatch": lambda b: b.update(root="00" * 32),
        "tensor-content-changed": lambda b: b["tensors"][0].update(content_root="11" * 32),
        "unsorted": lambda b: b["tensors"].reverse(),
        "duplicate": lambda b: b["tensors"].append(b["tensors"][-1]),
        "bool-shape": lambda b: b["tensors"][0].update(shape=[True]),
        "nbytes-mismatch": lambda b: b["tensors"][0].update(nbytes=b["tensors"][0]["nbytes"] + 1),
        "unknown-dtype": lambda b: b["tensors"][0].update(dtype="F128"),
        "bad-algorithm": lambda b: b.update(algorithm="attest-tensors-v2/blake3/chunk=1"),
    }
    for name, change in cases.items():
        with pytest.raises(FormatError):
            ModelDigest.from_json(mutated(change))
        assert name


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("attest-tensors-v2/sha256/chunk=16", "format"),
        ("attest-tensors-v1/md5/chunk=16", "hash"),
        ("attest-tensors-v1/sha256/chunk=016", "chunk"),
        ("attest-tensors-v1/sha256/chunk=0", "chunk"),
        ("attest-tensors-v1/sha256/chunk=-1", "chunk"),
        ("attest-tensors-v1/sha256/size=16", "chunk"),
        ("attest-tensors-v1/sha256/chunk=99999999999", "chunk"),
        ("attest-tensors-v1/sha256", "three"),
        ("attest-tensors-v1/sha256/chunk=16/x", "three"),
    ],
)
def test_parse_algorithm_is_strict(text: str, field: str) -> None:
    with pytest.raises(FormatError, match=field):
        parse_algorithm(text)


def test_parse_algorithm_round_trip() -> None:
    spec = parse_algorithm("attest-tensors-v1/blake3/chunk=4096")
    assert (spec.hash, spec.chunk_size) == ("blake3", 4096)
    assert str(spec) == "attest-tensors-v1/blake3/chunk=4096"


def test_diff_lists_added_removed_changed() -> None:
    old = digest_arrays(_items(SMALL))
    new = digest_arrays(_items({**SMALL, "b": ("U8", [7], b"x" * 7), "d": ("U8", [1], b"d")}))
    new = ModelDigest.from_tensors(new.algorithm, [t for t in new.tensors if t.name != "c"])
    delta = old.diff(new)
    assert (delta.added, delta.removed, delta.changed) == (("d",), ("c",), ("b",))
    assert delta.lines() == ["~ b", "- c", "+ d"]
    assert not old.diff(old)


def test_bad_inputs_raise_attest_errors() -> None:
    with pytest.raises(FormatError, match="duplicate"):
        digest_arrays([("a", "U8", [1], b"x"), ("a", "U8", [1], b"y")])
    with pytest.raises(FormatError, match="non-empty"):
        digest_arrays([("", "U8", [1], b"x")])
    with pytest.raises(FormatError, match="nbytes"):
        digest_arrays([("a", "F32", [2], b"xyz")])
    with pytest.raises(ConfigurationError):
        digest_arrays([("a", "U8", [1], b"x")], algorithm="md5")
    with pytest.raises(ConfigurationError):
        digest_state_dict({"c": torch.zeros(2, dtype=torch.complex64)})
    with pytest.raises(ConfigurationError, match="no tensor named"):
        digest_arrays(_items(SMALL)).tensor("zz")


# --- malformed safetensors files -------------------------------------------------------------

GOOD = {"a": ("F32", [2], b"\x00" * 8), "b": ("U8", [3], b"abc")}


def _header(**entries: Any) -> dict[str, Any]:
    return dict(entries)


_DUP = (
    b'{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},'
    b'"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
)

MALFORMED: dict[str, tuple[bytes | None, dict[str, Any] | None, str]] = {
    # name: (raw file bytes or None, header for _write_safetensors, expected message fragment)
    "empty-file": (b"", None, "truncated"),
    "short-length": (b"\x05\x00\x00", None, "truncated"),
    "length-beyond-file": (struct.pack("<Q", 1000) + b"{}", None, "runs past the end"),
    "header-too-big": (struct.pack("<Q", 10**12) + b"{}", None, "exceeds"),
    "bad-json": (struct.pack("<Q", 5) + b"{oops", None, "not valid JSON"),
    "not-utf8": (struct.pack("<Q", 4) + b'{"\xff"', None, "not UTF-8"),
    "not-object": (struct.pack("<Q", 2) + b"[]", None, "JSON object"),
    "huge-integer": (
        struct.pack("<Q", 5006) + b'{"a":' + b"1" * 5000 + b"}",
        None,
        "number JSON cannot carry",
    ),
    "nested-too-deep": (
        struct.pack("<Q", 200_000) + b"[" * 100_000 + b"]" * 100_000,
        None,
        "nests JSON too deeply",
    ),
    "duplicate-key": (
        struct.pack("<Q", len(_DUP)) + _DUP + b"\x00" * 8,
        None,
        "duplicate key 'a'",
    ),
    "overlap": (
        None,
        _header(
            a={"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            b={"dtype": "U8", "shape": [3], "data_offsets": [6, 9]},
        ),
        "overlapping",
    ),
    "hole": (
        None,
        _header(
            a={"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            b={"dtype": "U8", "shape": [2], "data_offsets": [9, 11]},
        ),
        "belong to no tensor",
    ),
    "out-of-range": (
        None,
        _header(
            a={"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            b={"dtype": "U8", "shape": [5], "data_offsets": [8, 13]},
        ),
        "beyond the data section",
    ),
    "trailing-bytes": (
        None,
        _header(
            a={"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            b={"dtype": "U8", "shape": [2], "data_offsets": [8, 10]},
        ),
        "trailing bytes",
    ),
    "size-mismatch": (
        None,
        _header(
            a={"dtype": "F32", "shape": [3], "data_offsets": [0, 8]},
            b={"dtype": "U8", "shape": [3], "data_offsets": [8, 11]},
        ),
        "needs 12",
    ),
    "unknown-dtype": (
        None,
        _header(
            a={"dtype": "C64", "shape": [1], "data_offsets": [0, 8]},
            b={"dtype": "U8", "shape": [3], "data_offsets": [8, 11]},
        ),
        "unknown dtype",
    ),
    "extra-entry-key": (
        None,
        _header(
            a={"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "x": 1},
            b={"dtype": "U8", "shape": [3], "data_offsets": [8, 11]},
        ),
        "exactly the keys",
    ),
    "reversed-offsets": (
        None,
        _header(
            a={"dtype": "F32", "shape": [2], "data_offsets": [8, 0]},
            b={"dtype": "U8", "shape": [3], "data_offsets": [8, 11]},
        ),
        "after end",
    ),
    "bad-metadata": (
        None,
        _header(
            __metadata__={"k": 1},
            a={"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            b={"dtype": "U8", "shape": [3], "data_offsets": [8, 11]},
        ),
        "__metadata__",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_safetensors_rejected(tmp_path: Path, case: str) -> None:
    raw, header, fragment = MALFORMED[case]
    path = tmp_path / f"{case}.safetensors"
    if raw is not None:
        path.write_bytes(raw)
    else:
        _write_safetensors(path, GOOD, header=header)
    with pytest.raises(FormatError, match=fragment):
        digest_safetensors(path)


def test_well_formed_hand_written_file_accepted(tmp_path: Path) -> None:
    _write_safetensors(tmp_path / "ok.safetensors", GOOD, pad=3)
    assert digest_safetensors(tmp_path / "ok.safetensors") == digest_arrays(_items(GOOD))


def test_truncated_real_file_rejected(tmp_path: Path) -> None:
    _save(_state_dict(), tmp_path / "m.safetensors")
    raw = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[:-5])
    with pytest.raises(FormatError, match="beyond the data section"):
        digest_safetensors(tmp_path / "cut.safetensors")


# --- command line ----------------------------------------------------------------------------


def test_cli_prints_digest_table_and_json(tmp_path: Path) -> None:
    sd = _state_dict()
    _save(sd, tmp_path / "m.safetensors")
    expected = digest_state_dict(sd)
    runner = CliRunner()
    result = runner.invoke(hash_command, [str(tmp_path / "m.safetensors")])
    assert result.exit_code == 0, result.output
    assert result.stdout == expected.qualified + "\n"
    assert result.stdout.startswith("attest-tensors-v1/sha256/chunk=16777216:")

    result = runner.invoke(hash_command, [str(tmp_path / "m.safetensors"), "--tensors"])
    lines = result.stdout.splitlines()
    assert lines[0] == expected.qualified and len(lines) == 2 + len(sd)
    assert any(line.startswith("transposed") and "5x6" in line for line in lines)

    result = runner.invoke(
        hash_command, [str(tmp_path / "m.safetensors"), "--json", "--algorithm", "blake3"]
    )
    assert ModelDigest.from_json(json.loads(result.stdout)) == digest_state_dict(
        sd, algorithm="blake3"
    )


def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"\x01\x00")
    runner = CliRunner()
    for target in (tmp_path / "bad.safetensors", tmp_path / "missing.safetensors"):
        result = runner.invoke(hash_command, [str(target)])
        assert result.exit_code == 2
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1
        assert "pass" in result.stderr


def test_hash_path_does_not_import_torch_or_numpy() -> None:
    code = (
        "import sys, attest.digest, attest.cli_hash;"
        "bad = [m for m in ('torch', 'numpy', 'rich') if m in sys.modules];"
        "sys.exit(repr(bad) if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
