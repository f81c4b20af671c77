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

Parsing speed (a bundle holds up to ~10^5 records). :meth:`SignedRecord.from_json` reads the
usual envelope shape directly and checks the payload with
:func:`attest.canonical.loads_canonical` (one C parse and one C re-encoding compared with the
payload), keeping the payload as the record's canonical bytes and the leaf it built from the
envelope's own base64 text. Whatever that path cannot vouch for goes through the general parsers,
so the answers — records, leaves, digests and error messages — are those of
:meth:`SignedRecord.from_json_reference`, which the tests compare it with.
"""

from __future__ import annotations

import binascii
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

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
from attest.dsse import MAX_SIGNATURES, Envelope, EnvelopeSignature
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


@dataclass(frozen=True)
class Record:
    """One fact of a run, before signing."""

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
        return _frozen(cls, type=rtype, run=run, seq=seq, prev=prev, time=time, body=body)


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
_T = TypeVar("_T")


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
    strings = [env.payload_type] + [s.keyid for s in env.signatures]
    if all(_PLAIN.fullmatch(s) for s in strings):
        # Every string is printable ASCII without '"' or '\\' (base64, hex, the media
        # type), so RFC 8785 writes each verbatim and the keys in this order: the same
        # bytes canonical_json would produce, without its cost on large logs.
        sigs = ",".join(f'{{"keyid":"{s.keyid}","sig":"{_b64(s.sig)}"}}' for s in env.signatures)
        return f'{{"payload":"{_b64(env.payload)}","payloadType":"{env.payload_type}","signatures":[{sigs}]}}'.encode()
    return canonical_json(env.to_json())


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode()


def _b64_decode(text: str) -> tuple[bytes, str]:
    """``base64.b64decode(text, validate=True)`` (the DSSE parser's decoder) and the standard
    encoding of the result, which is ``text`` itself unless the bits after the last byte were
    not zero (RFC 4648 §3.5): checked on the last character instead of re-encoding."""
    data = binascii.a2b_base64(text, strict_mode=True)
    if len(text) % 4 == 0 and (
        not text.endswith("=")
        or (text.endswith("==") and text[-3] in "AQgw")
        or (not text.endswith("==") and text[-2] in "AEIMQUYcgkosw048")
    ):
        return data, text
    return data, _b64(data)


class _SignatureWire(msgspec.Struct, forbid_unknown_fields=True):
    keyid: Annotated[str, msgspec.Meta(pattern=r"^[\x20\x21\x23-\x5b\x5d-\x7e]*\Z")]  # _PLAIN
    sig: str


class _EnvelopeWire(msgspec.Struct, forbid_unknown_fields=True):
    """The usual shape of a record envelope, which msgspec checks in C: exactly these fields,
    the record payload type, 1 to :data:`MAX_SIGNATURES` signatures with :data:`_PLAIN` key IDs."""

    payload: str
    payloadType: Literal["application/vnd.attest.record.v1+json"]
    signatures: Annotated[
        list[_SignatureWire], msgspec.Meta(min_length=1, max_length=MAX_SIGNATURES)
    ]


def _plain_envelope(obj: object) -> tuple[Envelope, bytes] | None:
    """The envelope :meth:`Envelope.from_json` reads from ``obj`` and its log leaf, for the
    usual shape only (:class:`_EnvelopeWire`); ``None`` for anything else, which then takes the
    general path and its errors."""
    try:
        return _plain_from_wire(msgspec.convert(obj, _EnvelopeWire))
    except msgspec.ValidationError:
        return None


def _plain_from_wire(wire: _EnvelopeWire) -> tuple[Envelope, bytes] | None:
    """The envelope and log leaf of an envelope of the usual shape; ``None`` when its base64
    is not valid (the general path then names the field)."""
    try:
        payload, text = _b64_decode(wire.payload)
        sigs = [(s.keyid, *_b64_decode(s.sig)) for s in wire.signatures]
    except (binascii.Error, ValueError):
        return None
    parts = ",".join(f'{{"keyid":"{keyid}","sig":"{sig_text}"}}' for keyid, _, sig_text in sigs)
    leaf = f'{{"payload":"{text}","payloadType":"{RECORD_PAYLOAD_TYPE}","signatures":[{parts}]}}'
    signatures = tuple(_frozen(EnvelopeSignature, keyid=keyid, sig=sig) for keyid, sig, _ in sigs)
    envelope = _frozen(
        Envelope, payload_type=RECORD_PAYLOAD_TYPE, payload=payload, signatures=signatures
    )
    return envelope, leaf.encode()


def _frozen(cls: type[_T], **fields: Any) -> _T:
    """An instance of the frozen dataclass ``cls`` holding ``fields`` (every field, already
    checked, plus any cached value), made without the generated ``__init__``, whose
    ``object.__setattr__`` per field costs more than the rest of a record's parse."""
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


@dataclass(frozen=True)
class SignedRecord:
    """A record with its DSSE envelope. Parsing checks form; :meth:`verify` checks the signature."""

    record: Record
    envelope: Envelope

    @classmethod
    def from_envelope(cls, envelope: Envelope, *, field: str = "record") -> SignedRecord:
        return cls._parse(envelope, field=field, leaf=None)

    @classmethod
    def from_json(cls, obj: object, *, field: str = "record") -> SignedRecord:
        fast = _plain_envelope(obj)
        if fast is None:
            return cls._parse(Envelope.from_json(obj, field=field), field=field, leaf=None)
        return cls._parse(fast[0], field=field, leaf=fast[1])

    @classmethod
    def many_from_json(cls, items: Sequence[object], *, field: str) -> tuple[SignedRecord, ...]:
        """``from_json`` of every item, ``field[i]`` naming item ``i`` in errors; the first bad
        item raises. Made for a whole log (~10^5 records): msgspec checks every envelope's shape
        in one call, :func:`~attest.canonical.loads_canonical_many` parses every payload in
        another, and the objects are made without the dataclasses' per-field ``__setattr__``.
        An item this path declines goes through :meth:`from_json`, so the answers are its own."""
        try:
            wires = msgspec.convert(items, list[_EnvelopeWire])
        except msgspec.ValidationError:  # an unusual envelope somewhere: parse one by one
            return tuple(cls.from_json(obj, field=f"{field}[{i}]") for i, obj in enumerate(items))
        plain = list(map(_plain_from_wire, wires))
        values = iter(loads_canonical_many([p[0].payload for p in plain if p is not None]))
        out = []
        for i, fast in enumerate(plain):
            where = f"{field}[{i}]"
            if fast is None:
                out.append(cls.from_json(items[i], field=where))
            else:  # what from_json does with this envelope, its payload already parsed
                out.append(cls._parse(fast[0], field=where, leaf=fast[1], value=next(values)))
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
        signed = _frozen(cls, record=record, envelope=envelope)
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
