"""Records: the signed, hash-chained facts of a training run (DESIGN §3 "Records").

A record is a JSON object, canonicalised with RFC 8785::

    {"type": "train.steps", "run": "<run id>", "seq": 7, "prev": "sha256:<hex of record 6>",
     "time": "2026-11-23T10:00:00Z", "body": {...}}

``seq`` counts from 0 within a run; ``prev`` is the SHA-256 of the previous record's canonical
bytes (``null`` for seq 0), so the records form a hash chain inside the log as well as being
leaves of its Merkle tree. A record travels signed by the trainer as a DSSE envelope with payload
type :data:`RECORD_PAYLOAD_TYPE` whose payload *is* the canonical bytes: a payload that is not
canonical is refused, so every record has exactly one encoding. The log leaf is the RFC 8785
encoding of the envelope JSON, at most :data:`MAX_LEAF_BYTES` (C2SP tlog-tiles' entry limit).

Bulky facts (per-tensor digests, a full data manifest) are *blobs*: JSON documents referenced from
a record body by ``sha256:<hex>`` of their canonical bytes and shipped beside the log.

Body fields per type are documented in ``docs/formats.md``; this module checks that the fields
each type requires are present with the right JSON kinds, and nothing about their meaning.

Parsing speed (a bundle holds up to ~10^5 records). :class:`Record`, :class:`SignedRecord` and
the DSSE classes are msgspec Structs, so a whole log is read with a handful of C calls:
:meth:`SignedRecord.many_from_envelopes` decodes every payload into a :class:`Record` at once
(:func:`attest.canonical.loads_canonical_many`, which keeps a value only when re-encoding it
gives back its payload), checks the fields column by column and encodes each leaf with msgspec.
One record at a time, :meth:`SignedRecord.from_json` checks the payload with
:func:`attest.canonical.loads_canonical`. Whatever these paths cannot vouch for goes through the
general parsers, so the answers — records, leaves, digests and error messages — are those of
:meth:`SignedRecord.from_json_reference`, which the tests compare them with.
"""

from __future__ import annotations

import functools
import itertools
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from attest.canonical import (
    UNSURE,
    canonical_json,
    canonical_json_reference,
    loads_canonical,
    loads_canonical_many,
    parse_sha256_digest,
    sha256_digest,
    strict_json_loads,
)
from attest.dsse import Envelope
from attest.errors import ChainError, FormatError
from attest.keys import TrainerKey, TrainerPublicKey

__all__ = [
    "BODY_FIELDS",
    "MAX_LEAF_BYTES",
    "MAX_STEPS_PER_RECORD",
    "RECORD_PAYLOAD_TYPE",
    "RECORD_TYPES",
    "Record",
    "RecordWriter",
    "SignedRecord",
    "check_chain",
    "is_run_id",
]

RECORD_PAYLOAD_TYPE = "application/vnd.attest.record.v1+json"
MAX_LEAF_BYTES = 65535
MAX_STEPS_PER_RECORD = 256
_PLAIN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")  # printable ASCII but '"' and '\\'
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_run_id(value: object) -> bool:
    """Whether ``value`` is a run id: 1-128 characters of ``[A-Za-z0-9._-]``, not starting with
    ``.``, ``_`` or ``-`` (the whole string: a trailing newline is not allowed either)."""
    return isinstance(value, str) and _matches_run_id(value)


@functools.lru_cache(maxsize=256)
def _matches_run_id(value: str) -> bool:  # cached: every record of a log names the same run
    return _RUN_ID.fullmatch(value) is not None


_SHA256_NAME = re.compile(r"sha256:[0-9a-f]{64}")
_SHA256_NAMES = re.compile(r"(?:sha256:[0-9a-f]{64})*")

# Required body fields and the JSON kinds they may take, per record type.
_OBJ, _STR, _INT, _LIST, _NULL = dict, str, int, list, type(None)
BODY_FIELDS: Mapping[str, Mapping[str, tuple[type, ...]]] = {
    "run.start": {
        "config": (_OBJ,),
        "code": (_OBJ,),
        "environment": (_OBJ,),
        "model": (_OBJ,),
        "init": (_OBJ,),
        "components": (_LIST,),
        "parent": (_OBJ, _NULL),
        "digest_algorithm": (_STR,),
    },
    "weights.init": {"step": (_INT,), "model": (_OBJ,), "tensors": (_STR,)},
    "data.manifest": {"dataset": (_OBJ,), "sampler": (_OBJ,)},
    "data.order": {"epoch": (_INT,), "position": (_INT,), "batch_size": (_INT,), "order": (_STR,)},
    "train.steps": {
        "first_step": (_INT,),
        "loss": (_LIST,),
        "lr": (_LIST,),
        "grad_norm": (_LIST,),
        "batch": (_LIST,),
    },
    "weights.checkpoint": {
        "step": (_INT,),
        "model": (_OBJ,),
        "tensors": (_STR,),
        "state": (_OBJ,),
        "prev_checkpoint": (_STR, _NULL),
    },
    "run.resume": {"step": (_INT,), "from_checkpoint": (_STR,), "data_position": (_OBJ,)},
    "run.end": {"step": (_INT,), "model": (_OBJ,), "tensors": (_STR,), "last_checkpoint": (_STR,)},
}
RECORD_TYPES = tuple(BODY_FIELDS)
# The first kind of every required field, per type: a body whose fields have exactly these types
# (bool is not int here) passes the kind checks without a statement per field.
_USUAL_KINDS = {t: tuple(kinds[0] for kinds in f.values()) for t, f in BODY_FIELDS.items()}


class Record(msgspec.Struct, frozen=True, dict=True, forbid_unknown_fields=True):
    """One fact of a run, before signing.

    A msgspec Struct, so that a log's payloads decode straight into records (no dictionary per
    record); its ``__dict__`` only caches the canonical bytes and the digest."""

    type: str
    run: str
    seq: int
    prev: str | None
    time: str
    body: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "run": self.run,
            "seq": self.seq,
            "prev": self.prev,
            "time": self.time,
            "body": dict(self.body),
        }

    def canonical(self) -> bytes:
        """The record's RFC 8785 bytes (computed once; the parser stores the payload it
        verified to be exactly these bytes)."""
        cache = self.__dict__
        data: bytes | None = cache.get("_canonical")
        if data is None:
            data = cache["_canonical"] = canonical_json(self.to_json())
        return data

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of the canonical bytes: what the next record's ``prev`` names."""
        cache = self.__dict__
        name: str | None = cache.get("_digest")
        if name is None:
            name = cache["_digest"] = sha256_digest(self.canonical())
        return name

    @classmethod
    def from_json(cls, obj: object, *, field: str = "record") -> Record:
        if not isinstance(obj, dict):
            raise FormatError(f"{field} must be a JSON object")
        if obj.keys() != _FIELDS:
            raise FormatError(
                f"{field} must have exactly the fields {sorted(_FIELDS)}", got=sorted(obj)
            )
        rtype, run, seq, prev = obj["type"], obj["run"], obj["seq"], obj["prev"]
        time, body = obj["time"], obj["body"]
        if rtype not in BODY_FIELDS:
            raise FormatError(f"{field}.type is unknown", expected=list(RECORD_TYPES), got=rtype)
        if not is_run_id(run):
            raise FormatError(
                f"{field}.run must be 1-128 characters of [A-Za-z0-9._-]", got=repr(run)
            )
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise FormatError(f"{field}.seq must be a non-negative integer", got=repr(seq))
        if seq == 0 and prev is not None:
            raise FormatError(f"{field}.prev must be null for seq 0", got=prev)
        if seq > 0 and not (type(prev) is str and _SHA256_NAME.fullmatch(prev)):
            parse_sha256_digest(prev, field=f"{field}.prev")  # the general check, naming the field
        if not isinstance(time, str):
            raise FormatError(f"{field}.time must be an RFC 3339 string")
        if not isinstance(body, dict):
            raise FormatError(f"{field}.body must be a JSON object")
        fields = BODY_FIELDS[rtype]
        if tuple(map(type, map(body.get, fields))) != _USUAL_KINDS[rtype]:
            _check_body(body, fields, rtype, field=field)
        if rtype == "train.steps":
            _check_steps(body, field=field)
        return cls(rtype, run, seq, prev, time, body)


def _check_body(
    body: Mapping[str, Any], fields: Mapping[str, tuple[type, ...]], rtype: str, *, field: str
) -> None:
    for name, kinds in fields.items():
        value = body.get(name, _MISSING)
        if value is _MISSING:
            raise FormatError(f"{field}.body.{name} is required for {rtype} records")
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise FormatError(
                f"{field}.body.{name} has the wrong JSON kind",
                expected=[k.__name__ for k in kinds],
                got=type(value).__name__,
            )


_FIELDS = frozenset({"type", "run", "seq", "prev", "time", "body"})
_MISSING = object()


def _check_steps(body: Mapping[str, Any], *, field: str) -> None:
    n = len(body["loss"])
    if not 0 < n <= MAX_STEPS_PER_RECORD:
        raise FormatError(f"{field}.body.loss must hold 1 to {MAX_STEPS_PER_RECORD} steps", got=n)
    for name in ("lr", "grad_norm", "batch"):
        if len(body[name]) != n:
            raise FormatError(
                f"{field}.body.{name} must have one entry per step",
                expected=n,
                got=len(body[name]),
            )
    if body["first_step"] < 0:
        raise FormatError(f"{field}.body.first_step must be non-negative", got=body["first_step"])


def _leaf_bytes(env: Envelope) -> bytes:
    return _leaves((env,))[0]


def _leaves(envelopes: Sequence[Envelope]) -> list[bytes]:
    """The log leaf of each envelope: RFC 8785 of its JSON."""
    strings = {e.payload_type for e in envelopes} | {
        s.keyid for e in envelopes for s in e.signatures
    }
    if all(map(_PLAIN.fullmatch, strings)):
        # Every string is printable ASCII without '"' or '\\' (base64, hex, the media type), which
        # RFC 8785 and msgspec both write verbatim, and msgspec writes the members sorted and
        # the bytes as standard base64: the bytes canonical_json would produce, at C speed.
        return list(map(_ENVELOPE_ENCODER.encode, envelopes))
    if len(envelopes) == 1:
        return [canonical_json(envelopes[0].to_json())]
    return list(map(_leaf_bytes, envelopes))  # one by one: most may still be plain


_ENVELOPE_ENCODER = msgspec.json.Encoder(order="sorted")
_PAYLOAD = operator.attrgetter("payload")


def _vouched(records: Iterable[Record]) -> bool:
    """Whether every record passes :meth:`Record.from_json`'s checks (those its msgspec type
    leaves: exact fields, and the JSON kind of each, were checked while decoding), tested
    column by column over a whole log; ``False`` sends each record to those checks."""
    records = list(records)
    if not records:
        return True
    types, runs, seqs, prevs = (
        list(map(operator.attrgetter(name), records)) for name in ("type", "run", "seq", "prev")
    )
    firsts = [seq == 0 for seq in seqs]
    chained = [prev for prev in prevs if prev is not None]
    if not (
        set(types) <= BODY_FIELDS.keys()
        and all(map(is_run_id, set(runs)))
        and min(seqs) >= 0
        and firsts == [prev is None for prev in prevs]
        and set(map(len, chained)) <= {71}  # so that each name is one unit of the pattern
        and _SHA256_NAMES.fullmatch("".join(chained)) is not None
    ):
        return False
    bodies: dict[str, list[Mapping[str, Any]]] = {t: [] for t in set(types)}
    for rtype, record in zip(types, records, strict=True):
        bodies[rtype].append(record.body)
    for rtype, group in bodies.items():
        fields = BODY_FIELDS[rtype]
        try:
            columns = {f: list(map(operator.itemgetter(f), group)) for f in fields}
        except KeyError:
            return False
        if any(not set(map(type, columns[f])) <= set(k) for f, k in fields.items()):
            return False
        if rtype == "train.steps":
            steps = list(map(len, columns["loss"]))
            if not (
                min(steps) > 0
                and max(steps) <= MAX_STEPS_PER_RECORD
                and all(list(map(len, columns[f])) == steps for f in ("lr", "grad_norm", "batch"))
                and min(columns["first_step"]) >= 0
            ):
                return False
    return True


class SignedRecord(msgspec.Struct, frozen=True, dict=True):
    """A record with its DSSE envelope. Parsing checks form; :meth:`verify` checks the signature.
    (Its ``__dict__`` caches the log leaf.)"""

    record: Record
    envelope: Envelope

    @classmethod
    def from_envelope(cls, envelope: Envelope, *, field: str = "record") -> SignedRecord:
        return cls._parse(envelope, field=field, leaf=None)

    @classmethod
    def from_json(cls, obj: object, *, field: str = "record") -> SignedRecord:
        return cls._parse(Envelope.from_json(obj, field=field), field=field, leaf=None)

    @classmethod
    def many_from_json(cls, items: Sequence[object], *, field: str) -> tuple[SignedRecord, ...]:
        """:meth:`from_json` of every item, ``field[i]`` naming item ``i`` in errors."""
        return tuple(cls.from_json(obj, field=f"{field}[{i}]") for i, obj in enumerate(items))

    @classmethod
    def many_from_envelopes(
        cls, envelopes: Sequence[Envelope], *, field: str
    ) -> tuple[SignedRecord, ...]:
        """:meth:`from_envelope` of every envelope, ``field[i]`` naming item ``i`` in errors;
        the first bad item raises.

        Made for a whole log (~10^5 records): :func:`~attest.canonical.loads_canonical_many`
        decodes every payload into a :class:`Record` in one msgspec call, :func:`_vouched` runs
        :meth:`Record.from_json`'s checks column by column, and each leaf is one msgspec
        encoding. A record this path cannot vouch for (and every record, when one of them fails
        a check) goes through :meth:`_parse`, so the answers are :meth:`from_envelope`'s."""
        leaves = _leaves(envelopes)
        values = loads_canonical_many(list(map(_PAYLOAD, envelopes)), into=Record)
        fast = list(map(operator.is_, map(type, values), itertools.repeat(Record)))
        if envelopes and (
            {e.payload_type for e in envelopes} != {RECORD_PAYLOAD_TYPE}
            or max(map(len, leaves)) > MAX_LEAF_BYTES
        ):  # not the usual log: the general path names the first such record
            fast = [
                f and e.payload_type == RECORD_PAYLOAD_TYPE and len(leaf) <= MAX_LEAF_BYTES
                for f, e, leaf in zip(fast, envelopes, leaves, strict=True)
            ]
        if not _vouched(itertools.compress(values, fast)):
            fast = [False] * len(fast)
        out = list(map(cls, values, envelopes))
        for signed, leaf in zip(out, leaves, strict=True):
            signed.__dict__["_leaf"] = leaf
        for i in itertools.compress(itertools.count(), map(operator.not_, fast)):  # in log order
            value = _MISSING if type(values[i]) is Record else values[i]
            out[i] = cls._parse(envelopes[i], field=f"{field}[{i}]", leaf=leaves[i], value=value)
        return tuple(out)

    @classmethod
    def from_json_reference(cls, obj: object, *, field: str = "record") -> SignedRecord:
        """:meth:`from_json` without any fast path: envelope parser, strict JSON parse of the
        payload, RFC 8785 re-encoding by the ``rfc8785`` package and the generic leaf encoding.
        Slow; the fast paths must give exactly its answers (the tests compare them)."""
        envelope = Envelope.from_json(obj, field=field)
        if envelope.payload_type != RECORD_PAYLOAD_TYPE:
            raise FormatError(
                f"{field}.payloadType is not an attest record",
                expected=RECORD_PAYLOAD_TYPE,
                got=envelope.payload_type,
            )
        record = Record.from_json(
            strict_json_loads(envelope.payload, what=f"{field} payload"), field=field
        )
        if canonical_json_reference(record.to_json()) != envelope.payload:
            raise FormatError(f"{field} payload is not RFC 8785 canonical JSON")
        signed = cls(record, envelope)
        leaf = signed.__dict__["_leaf"] = canonical_json_reference(envelope.to_json())
        size = len(leaf)
        if size > MAX_LEAF_BYTES:
            raise FormatError(
                f"{field} is too large for a log entry; move bulky facts into a blob",
                expected=f"<= {MAX_LEAF_BYTES} bytes",
                got=size,
            )
        return signed

    @classmethod
    def _parse(
        cls, envelope: Envelope, *, field: str, leaf: bytes | None, value: Any = _MISSING
    ) -> SignedRecord:
        """The record in ``envelope``; ``value``, when given, is what
        :func:`~attest.canonical.loads_canonical` returned for its payload."""
        if envelope.payload_type != RECORD_PAYLOAD_TYPE:
            raise FormatError(
                f"{field}.payloadType is not an attest record",
                expected=RECORD_PAYLOAD_TYPE,
                got=envelope.payload_type,
            )
        obj = loads_canonical(envelope.payload) if value is _MISSING else value
        if obj is UNSURE:  # the reference path: strict parse, then RFC 8785 re-encoding
            obj = strict_json_loads(envelope.payload, what=f"{field} payload")
            record = Record.from_json(obj, field=field)
            if record.canonical() != envelope.payload:
                raise FormatError(f"{field} payload is not RFC 8785 canonical JSON")
        else:  # the payload is the canonical encoding of obj, hence of the record
            record = Record.from_json(obj, field=field)
            record.__dict__["_canonical"] = envelope.payload
        signed = cls(record, envelope)
        if leaf is not None:
            signed.__dict__["_leaf"] = leaf
        size = len(signed.leaf_data())
        if size > MAX_LEAF_BYTES:
            raise FormatError(
                f"{field} is too large for a log entry; move bulky facts into a blob",
                expected=f"<= {MAX_LEAF_BYTES} bytes",
                got=size,
            )
        return signed

    @classmethod
    def from_leaf(cls, data: bytes, *, field: str = "leaf") -> SignedRecord:
        signed = cls.from_json(strict_json_loads(data, what=field), field=field)
        if signed.leaf_data() != data:
            raise FormatError(f"{field} is not the canonical encoding of its envelope")
        return signed

    def to_json(self) -> dict[str, Any]:
        return self.envelope.to_json()

    def leaf_data(self) -> bytes:
        """The bytes the log commits to: RFC 8785 of the envelope JSON (computed once)."""
        cache = self.__dict__
        leaf: bytes | None = cache.get("_leaf")
        if leaf is None:
            leaf = cache["_leaf"] = _leaf_bytes(self.envelope)
        return leaf

    def verify(self, key: TrainerPublicKey) -> None:
        self.envelope.verify(key)


class RecordWriter:
    """Builds a run's record chain: assigns ``seq`` and ``prev`` and signs each record.

    ``state()``/``from_state()`` let a resumed job continue the same chain.
    """

    def __init__(self, run: str, key: TrainerKey, *, seq: int = 0, prev: str | None = None):
        if not is_run_id(run):
            raise FormatError(f"run id {run!r} must be 1-128 characters of [A-Za-z0-9._-]")
        self.run = run
        self._key = key
        self.seq = seq
        self.prev = prev

    def write(
        self, rtype: str, body: Mapping[str, Any], *, time: str | None = None
    ) -> SignedRecord:
        record = Record(
            type=rtype,
            run=self.run,
            seq=self.seq,
            prev=self.prev,
            time=time or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            body=body,
        )
        payload = record.canonical()
        signed = SignedRecord.from_envelope(Envelope.sign(RECORD_PAYLOAD_TYPE, payload, self._key))
        self.seq += 1
        self.prev = record.digest
        return signed

    def state(self) -> dict[str, Any]:
        return {"run": self.run, "seq": self.seq, "prev": self.prev}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], key: TrainerKey) -> RecordWriter:
        return cls(str(state["run"]), key, seq=int(state["seq"]), prev=state["prev"])


def check_chain(
    records: Iterable[Record],
    *,
    run: str | None = None,
    start_seq: int = 0,
    start_prev: str | None = None,
) -> None:
    """Require consecutive ``seq`` from ``start_seq``, one run, and each ``prev`` = digest of the
    previous record. Raises :class:`ChainError` naming the first break."""
    expected_seq, expected_prev = start_seq, start_prev
    for r in records:
        if run is not None and r.run != run:
            raise ChainError(f"record {r.seq} belongs to another run", expected=run, got=r.run)
        run = r.run
        if r.seq != expected_seq:
            raise ChainError(
                "record sequence has a gap or repeat", expected=expected_seq, got=r.seq
            )
        if r.prev != expected_prev:
            raise ChainError(
                f"record {r.seq}'s prev does not name the previous record",
                expected=expected_prev,
                got=r.prev,
            )
        expected_seq, expected_prev = r.seq + 1, r.digest
