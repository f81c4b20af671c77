"""Attacks on honest runs, each named after what it does (STYLE.md, "Tests read as evidence").

Two kinds of attacker:

- *outsiders* (no trainer key) edit a sealed bundle or model file: :func:`flip_bit_in_weights`,
  :func:`edit_loss`, :func:`delete_record`, :func:`reorder_records`, :func:`duplicate_record`,
  :func:`truncate_log`, :func:`resign_record_with_untrusted_key`, :func:`fork_checkpoint`;
- *the trainer* (holds the trusted key, so every signature is valid) edits the facts before
  sealing: :func:`swap_mid_run_checkpoint`, :func:`smooth_loss_curve`.
"""

from __future__ import annotations

import base64
import math
import shutil
from pathlib import Path
from typing import Any

from attest.bundle import Bundle
from attest.canonical import canonical_json, strict_json_loads
from attest.dsse import Envelope
from attest.keys import TrainerKey
from attest.merkle import MerkleTree
from attest.note import Checkpoint
from attest.records import RECORD_PAYLOAD_TYPE

from .honest import Facts, Sealed

__all__ = [
    "delete_record",
    "duplicate_record",
    "edit_loss",
    "flip_bit_in_weights",
    "fork_checkpoint",
    "reorder_records",
    "resign_record_with_untrusted_key",
    "smooth_loss_curve",
    "swap_mid_run_checkpoint",
    "truncate_log",
    "write_bundle",
]


def _doc(sealed: Sealed) -> dict[str, Any]:
    return sealed.bundle.to_json()


def write_bundle(doc: dict[str, Any], path: Path) -> Path:
    Bundle.from_json(doc).write(path)  # still well formed: the attack is on meaning, not syntax
    return path


def _index_of(doc: dict[str, Any], rtype: str, nth: int = 0) -> int:
    found = [
        i
        for i, env in enumerate(doc["records"])
        if strict_json_loads(base64.b64decode(env["payload"]), what="payload")["type"] == rtype
    ]
    return found[nth]


def flip_bit_in_weights(sealed: Sealed, out: Path) -> Path:
    """A copy of the final model file with one bit flipped in the last tensor byte."""
    data = bytearray(sealed.model_path.read_bytes())
    data[-1] ^= 0x01
    out.write_bytes(bytes(data))
    return out


def edit_loss(sealed: Sealed, out: Path, *, resign: TrainerKey | None = None) -> Path:
    """Lower one logged loss; keep the old signature, or re-sign with ``resign`` (not trusted)."""
    doc = _doc(sealed)
    i = _index_of(doc, "train.steps")
    env = doc["records"][i]
    record = strict_json_loads(base64.b64decode(env["payload"]), what="payload")
    record["body"]["loss"][0] = record["body"]["loss"][0] * 0.5
    payload = canonical_json(record)
    if resign is None:
        env["payload"] = base64.b64encode(payload).decode()
    else:
        doc["records"][i] = Envelope.sign(RECORD_PAYLOAD_TYPE, payload, resign).to_json()
    return write_bundle(doc, out)


def resign_record_with_untrusted_key(sealed: Sealed, out: Path, key: TrainerKey) -> Path:
    """Replace a record's signature by one from ``key`` (payload unchanged)."""
    doc = _doc(sealed)
    i = _index_of(doc, "weights.checkpoint")
    payload = base64.b64decode(doc["records"][i]["payload"])
    doc["records"][i] = Envelope.sign(RECORD_PAYLOAD_TYPE, payload, key).to_json()
    return write_bundle(doc, out)


def delete_record(sealed: Sealed, out: Path, *, rtype: str = "train.steps") -> Path:
    doc = _doc(sealed)
    del doc["records"][_index_of(doc, rtype)]
    return write_bundle(doc, out)


def reorder_records(sealed: Sealed, out: Path) -> Path:
    """Swap the first checkpoint record with the record before it."""
    doc = _doc(sealed)
    i = _index_of(doc, "weights.checkpoint")
    doc["records"][i - 1], doc["records"][i] = doc["records"][i], doc["records"][i - 1]
    return write_bundle(doc, out)


def duplicate_record(sealed: Sealed, out: Path) -> Path:
    doc = _doc(sealed)
    i = _index_of(doc, "train.steps")
    doc["records"].insert(i + 1, dict(doc["records"][i]))
    return write_bundle(doc, out)


def truncate_log(sealed: Sealed, out: Path) -> Path:
    """Cut the log back to an earlier signed tree head: records, heads and proofs all agree,
    only the end of the run (and what the statement sealed) is missing."""
    doc = _doc(sealed)
    sizes = [int(note.split("\n")[1]) for note in doc["checkpoints"]]
    keep = len(sizes) - 2  # the head two appends before the end
    size = sizes[keep]
    doc["records"] = doc["records"][:size]
    doc["checkpoints"] = doc["checkpoints"][: keep + 1]
    doc["consistency"] = doc["consistency"][:keep]
    return write_bundle(doc, out)


def fork_checkpoint(sealed: Sealed, out: Path) -> Path:
    """The log signs a second tree head of the same size with a different root (a split view),
    and the bundle carries both."""
    doc = _doc(sealed)
    last = doc["checkpoints"][-1]
    size = int(last.split("\n")[1])
    other = MerkleTree()
    for env in doc["records"][:-1]:
        other.append(canonical_json(env))
    other.append(b"a different last leaf")
    forged = sealed.log.signer.sign(sealed.bundle.run, size, other.root())
    Checkpoint.from_body(forged.split("\n\n")[0] + "\n")  # well formed
    doc["checkpoints"].append(forged)
    doc["consistency"].append([])
    return write_bundle(doc, out)


# --- the trainer's own forgeries (valid signatures throughout) ---------------------------------


def swap_mid_run_checkpoint(facts: Facts, other: Facts, *, step: int) -> Facts:
    """Replace the checkpoint at ``step`` by ``other``'s weights (and state files) and re-link
    the chain so every record names the one before: a self-consistent forgery. The forged
    facts share ``facts.state_dir``, whose ``step-<step>`` folder is replaced."""
    forged = facts.copy()
    mine = next(b for b in forged.bodies("weights.checkpoint") if b["step"] == step)
    theirs = next(b for b in other.bodies("weights.checkpoint") if b["step"] == step)
    old_root = mine["model"]["root"]
    mine["model"] = dict(theirs["model"])
    mine["tensors"] = theirs["tensors"]
    mine["state"] = dict(theirs["state"])
    forged.blobs[theirs["tensors"]] = other.blobs[theirs["tensors"]]
    for body in forged.bodies("weights.checkpoint") + forged.bodies("run.end"):
        for key in ("prev_checkpoint", "last_checkpoint"):
            if body.get(key) == old_root:
                body[key] = theirs["model"]["root"]
    state = forged.state_dir / f"step-{step}"
    shutil.rmtree(state)
    shutil.copytree(other.state_dir / f"step-{step}", state)
    return forged


def smooth_loss_curve(facts: Facts) -> Facts:
    """Replace every logged loss by a smooth exponential decay from ln(classes) to 0.2."""
    forged = facts.copy()
    rows = forged.bodies("train.steps")
    n = sum(len(b["loss"]) for b in rows)
    start = math.log(4)
    k = 0
    for body in rows:
        for j in range(len(body["loss"])):
            body["loss"][j] = 0.2 + (start - 0.2) * math.exp(-3.0 * k / n) * 0.9
            k += 1
    return forged
