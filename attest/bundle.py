"""The attest bundle: one JSON file holding everything a verifier needs (DESIGN §3 "Bundle").

::

    {
      "mediaType": "application/vnd.attest.bundle.v1+json",
      "run": "<run id>",
      "origin": "<log origin, a schemeless URL>",
      "statement": <Sigstore bundle v0.3: the trainer-signed lineage statement> | null,
      "records": [<DSSE envelope>, ...],            every log leaf, in log order
      "blobs": {"sha256:<hex>": <JSON document>},   bulky facts the records reference
      "checkpoints": ["<C2SP signed note>", ...],   tree heads the log signed, by increasing size
      "consistency": [["<hex>", ...], ...],         proof from checkpoints[i] to checkpoints[i+1]
      "keys": {"trainer": "<PEM>", "server": "<note verifier key>"}   informational only
    }

:meth:`Bundle.from_json` refuses malformed input with a :class:`~attest.errors.FormatError` that
names the field, so a :class:`Bundle` that exists is well formed. Nothing in a bundle is trusted
by itself: keys come from the verifier's policy, and every check lives in ``attest.verifier``.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from attest.canonical import canonical_json, parse_sha256_digest, sha256_digest, strict_json_loads
from attest.dsse import Envelope
from attest.errors import FormatError
from attest.records import SignedRecord

__all__ = ["BUNDLE_MEDIA_TYPE", "Bundle", "paused_gc"]

BUNDLE_MEDIA_TYPE = "application/vnd.attest.bundle.v1+json"
_SORTED = msgspec.json.Encoder(order="sorted")
_FIELDS = {
    "mediaType",
    "run",
    "origin",
    "statement",
    "records",
    "blobs",
    "checkpoints",
    "consistency",
    "keys",
}


@dataclass(frozen=True)
class Bundle:
    """A parsed (well-formed, not yet verified) attest bundle."""

    run: str
    origin: str
    statement: Mapping[str, Any] | None
    records: tuple[SignedRecord, ...]
    blobs: Mapping[str, Any]
    checkpoints: tuple[str, ...]
    consistency: tuple[tuple[bytes, ...], ...]
    keys: Mapping[str, str]

    def blob(self, digest: str) -> Any:
        """The blob named ``digest``; :class:`FormatError` if the bundle lacks it."""
        try:
            return self.blobs[digest]
        except KeyError:
            raise FormatError(f"bundle.blobs lacks {digest}, which a record references") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "run": self.run,
            "origin": self.origin,
            "statement": self.statement,
            "records": [r.to_json() for r in self.records],
            "blobs": dict(self.blobs),
            "checkpoints": list(self.checkpoints),
            "consistency": [[h.hex() for h in proof] for proof in self.consistency],
            "keys": dict(self.keys),
        }

    def dumps(self) -> str:
        """The bundle as indented JSON, keys sorted (msgspec writes a 10^5-record bundle about
        8× faster than the ``json`` module; both are plain JSON for any reader)."""
        return self.dump_bytes().decode()

    def dump_bytes(self) -> bytes:
        return msgspec.json.format(_SORTED.encode(self.to_json()), indent=1) + b"\n"

    def write(self, path: str | Path) -> None:
        Path(path).write_bytes(self.dump_bytes())

    @classmethod
    def read(cls, path: str | Path) -> Bundle:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise FormatError(f"cannot read bundle {path}: {exc.strerror}") from None
        return cls.loads(data, what=f"bundle {path}")

    @classmethod
    def loads(cls, data: bytes | str, *, what: str = "bundle") -> Bundle:
        """The bundle in JSON text ``data``, parsed strictly (duplicate keys, NaN and the like
        are refused, naming ``what``).

        Built for logs of ~10^5 records. msgspec reads the text in one call with every record
        envelope typed (:class:`_Written`). When writing what it read, keys sorted and without
        whitespace, gives back ``data`` without its whitespace, ``data`` is those values' one
        spelling in the form :meth:`write` uses, so the strict parser would read the same values
        (no duplicate key, no NaN, no other spelling survives the comparison) and is skipped.
        Otherwise the strict parser reads ``data``; the envelopes msgspec typed are still used,
        since for text the strict parser accepts they are what :meth:`Envelope.from_json` reads.
        """
        with paused_gc():
            try:
                text = data.encode() if isinstance(data, str) else data
                written: _Written | None = _WRITTEN.decode(text)
            except (UnicodeEncodeError, msgspec.DecodeError):  # an unusual bundle
                written = None
            obj: Any
            if written is not None and _SORTED.encode(written) == msgspec.json.format(
                text, indent=-1
            ):
                obj = msgspec.structs.asdict(written)
            else:
                obj = strict_json_loads(data, what=what)
            return cls._from_json(obj, envelopes=None if written is None else written.records)

    @classmethod
    def from_json(cls, obj: object) -> Bundle:
        with paused_gc():
            return cls._from_json(obj)

    @classmethod
    def _from_json(cls, obj: object, *, envelopes: Sequence[Envelope] | None = None) -> Bundle:
        """The bundle in ``obj``; ``envelopes``, when given, are ``obj["records"]`` already
        read as envelopes."""
        if not isinstance(obj, dict):
            raise FormatError("bundle must be a JSON object")
        if obj.get("mediaType") != BUNDLE_MEDIA_TYPE:
            raise FormatError(
                "bundle.mediaType is not an attest bundle",
                expected=BUNDLE_MEDIA_TYPE,
                got=obj.get("mediaType"),
            )
        missing, extra = _FIELDS - set(obj), set(obj) - _FIELDS
        if missing or extra:
            raise FormatError(f"bundle fields: missing {sorted(missing)}, unknown {sorted(extra)}")
        run, origin = obj["run"], obj["origin"]
        if not isinstance(run, str) or not run:
            raise FormatError("bundle.run must be a non-empty string")
        if not isinstance(origin, str) or not origin:
            raise FormatError("bundle.origin must be a non-empty string")
        statement = obj["statement"]
        if statement is not None and not isinstance(statement, dict):
            raise FormatError("bundle.statement must be a Sigstore bundle object or null")
        raw_records = obj["records"]
        if not isinstance(raw_records, list):
            raise FormatError("bundle.records must be a list")
        if envelopes is None:
            records = SignedRecord.many_from_json(raw_records, field="bundle.records")
        else:
            records = SignedRecord.many_from_envelopes(envelopes, field="bundle.records")
        blobs = obj["blobs"]
        if not isinstance(blobs, dict):
            raise FormatError("bundle.blobs must be an object")
        for name, value in blobs.items():
            parse_sha256_digest(name, field=f"bundle.blobs key {name[:20]!r}")
            got = sha256_digest(canonical_json(value))
            if got != name:
                raise FormatError(
                    f"bundle.blobs[{name[:19]}…] does not hash to its name", expected=name, got=got
                )
        checkpoints = obj["checkpoints"]
        if not isinstance(checkpoints, list) or not all(isinstance(c, str) for c in checkpoints):
            raise FormatError("bundle.checkpoints must be a list of signed-note strings")
        consistency = obj["consistency"]
        if not isinstance(consistency, list):
            raise FormatError("bundle.consistency must be a list of proofs")
        if len(checkpoints) and len(consistency) != len(checkpoints) - 1:
            raise FormatError(
                "bundle.consistency needs one proof between each pair of successive checkpoints",
                expected=len(checkpoints) - 1,
                got=len(consistency),
            )
        proofs = tuple(
            tuple(_hash(h, field=f"bundle.consistency[{i}][{j}]") for j, h in enumerate(p))
            if isinstance(p, list)
            else _bad(f"bundle.consistency[{i}] must be a list of hex hashes")
            for i, p in enumerate(consistency)
        )
        keys = obj["keys"]
        if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
            raise FormatError("bundle.keys must map names to key strings")
        return cls(run, origin, statement, records, blobs, tuple(checkpoints), proofs, keys)


class _Written(msgspec.Struct, forbid_unknown_fields=True):
    """A bundle as msgspec reads it: the record envelopes typed, every other field left to
    :meth:`Bundle._from_json`'s checks. The fields are in the order :meth:`Bundle.write` sorts
    them into."""

    blobs: Any
    checkpoints: Any
    consistency: Any
    keys: Any
    mediaType: Any
    origin: Any
    records: list[Envelope]
    run: Any
    statement: Any


_WRITTEN = msgspec.json.Decoder(_Written)


@contextmanager
def paused_gc() -> Iterator[None]:
    """Suspend the cyclic garbage collector for the block (re-enabled after it if it was on).

    Parsing a large bundle creates millions of acyclic objects (records, envelopes, bodies);
    each collection would walk them all again, which costs more than the parse itself.
    Reference counting still frees everything as usual; only cycle detection waits. On the way
    out, what the block made is moved straight to the oldest generation (``gc.freeze`` then
    ``gc.unfreeze``), so the first allocation after it does not start a young collection that
    walks them all once more (0.13 s for 10^5 records); a full collection still visits them as
    it visits every long-lived object. Skipped when the process keeps frozen objects of its own,
    which ``gc.unfreeze`` would release.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def _hash(value: object, *, field: str) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise FormatError(f"{field} must be 64 hex digits (a SHA-256 hash)", got=repr(value)[:70])
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise FormatError(f"{field} is not hex") from None


def _bad(message: str) -> tuple[bytes, ...]:
    raise FormatError(message)
