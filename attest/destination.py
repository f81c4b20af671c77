"""Where a run's records go: log destinations (DESIGN §5 REST API).

A :class:`LogDestination` is anything with the six calls a spool makes (create the run, append
leaves, store a blob, store the statement, read the latest checkpoint, export the bundle). Two
are provided: :class:`attest.log.LocalLog` (embedded folder log) and :class:`HttpDestination`
(the log server's REST API, see its docstring). :func:`open_destination` maps a string to one.

A destination that cannot be reached, or fails in a way worth retrying, raises
:class:`DestinationUnavailable`; the spool of :mod:`attest.client` then keeps the item and tries
again later. :func:`tree_size_of` reads the tree size of the checkpoint note a destination
returns, checking its signature when the server's note key is known.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from attest.bundle import Bundle
from attest.canonical import canonical_json, sha256_digest
from attest.errors import AttestError, ChainError, ConfigurationError, FormatError
from attest.keys import TrainerPublicKey
from attest.log import Receipt
from attest.note import Checkpoint, Note, NoteVerifier, open_checkpoint

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DestinationUnavailable",
    "HttpDestination",
    "LogDestination",
    "open_destination",
    "tree_size_of",
]


class DestinationUnavailable(AttestError):
    """The destination could not be reached or failed transiently (retry later)."""


@runtime_checkable
class LogDestination(Protocol):
    """Where a run's records go. :class:`attest.log.LocalLog` and :class:`HttpDestination`."""

    def create_run(
        self, run: str, trainer_key: TrainerPublicKey, meta: Mapping[str, Any] | None = None
    ) -> None: ...

    def append(self, run: str, leaves: Sequence[bytes]) -> Receipt: ...

    def put_blob(self, run: str, document: Any) -> str: ...

    def put_statement(self, run: str, statement: Mapping[str, Any]) -> None: ...

    def checkpoint(self, run: str) -> str: ...

    def export(self, run: str) -> Bundle: ...


class HttpDestination:
    """The log server's REST API (``attest serve``), bearer token in ``Authorization``.

    ============================================  ==================================================
    ``POST /v1/runs``                              ``{"run", "trainer_key": PEM, "meta"}`` → 201/200
    ``POST /v1/runs/{run}/records``                ``{"records": [<DSSE envelope JSON>, ...]}`` →
                                                   ``{"run","first_index","count","checkpoint"}``
    ``PUT /v1/runs/{run}/blobs/{sha256:<hex>}``    body = canonical JSON document → 201/200
    ``PUT /v1/runs/{run}/statement``               body = Sigstore bundle JSON → 201/200
    ``GET /v1/runs/{run}/bundle``                  → attest bundle JSON
    ``GET /v1/runs/{run}/checkpoint``              → latest checkpoint note (text)
    ============================================  ==================================================

    Status mapping: 409 → :class:`ChainError`; 400/413/422 → :class:`FormatError`; 401/403/404 →
    :class:`ConfigurationError`; 5xx and transport failures → :class:`DestinationUnavailable`.
    ``httpx`` is imported on first use; ``transport`` (an ``httpx.BaseTransport``) is for tests.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
        verifier: NoteVerifier | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"destination URL {url!r} must start with http(s)://")
        self.url = url.rstrip("/")
        self.verifier = verifier
        self._token = token
        self._transport = transport
        self._timeout = timeout
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                try:
                    import httpx
                except ImportError:
                    raise ConfigurationError(
                        "an http(s) destination needs httpx: pip install 'attest-lineage[callback]'"
                    ) from None
                headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
                self._client = httpx.Client(
                    base_url=self.url,
                    headers=headers,
                    timeout=self._timeout,
                    transport=self._transport,
                )
            return self._client

    def _request(
        self, method: str, path: str, *, json_body: Any = None, content: bytes | None = None
    ) -> httpx.Response:
        import httpx

        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            resp = self._http().request(
                method, path, json=json_body, content=content, headers=headers
            )
        except httpx.TransportError as exc:
            raise DestinationUnavailable(f"{method} {self.url}{path} failed: {exc}") from None
        if resp.status_code < 300:
            return resp
        detail = _detail(resp)
        where = f"{method} {path} answered {resp.status_code}: {detail}"
        if resp.status_code == 409:
            raise ChainError(where)
        if resp.status_code in (400, 413, 422):
            raise FormatError(where)
        if resp.status_code in (401, 403):
            raise ConfigurationError(f"{where}; check the token (ATTEST_TOKEN)")
        if resp.status_code == 404:
            raise ConfigurationError(where)
        raise DestinationUnavailable(where)

    def create_run(
        self, run: str, trainer_key: TrainerPublicKey, meta: Mapping[str, Any] | None = None
    ) -> None:
        body = {"run": run, "trainer_key": trainer_key.to_pem(), "meta": dict(meta or {})}
        self._request("POST", "/v1/runs", json_body=body)

    def append(self, run: str, leaves: Sequence[bytes]) -> Receipt:
        records = [json.loads(leaf) for leaf in leaves]
        resp = self._request("POST", f"/v1/runs/{run}/records", json_body={"records": records})
        return Receipt.from_json(resp.json())

    def put_blob(self, run: str, document: Any) -> str:
        data = canonical_json(document)
        digest = sha256_digest(data)
        self._request("PUT", f"/v1/runs/{run}/blobs/{digest}", content=data)
        return digest

    def put_statement(self, run: str, statement: Mapping[str, Any]) -> None:
        self._request("PUT", f"/v1/runs/{run}/statement", content=canonical_json(dict(statement)))

    def checkpoint(self, run: str) -> str:
        return self._request("GET", f"/v1/runs/{run}/checkpoint").text

    def export(self, run: str) -> Bundle:
        data = self._request("GET", f"/v1/runs/{run}/bundle").content
        return Bundle.loads(data, what=f"bundle of run {run} from {self.url}")

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:200]
    return str(body)[:200]


def open_destination(
    spec: str | os.PathLike[str] | LogDestination,
    *,
    token: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> LogDestination:
    """``file:///folder`` or a plain path → :class:`~attest.log.LocalLog`; ``http(s)://`` →
    :class:`HttpDestination` (token from ``token`` or ``ATTEST_TOKEN``); an object with the
    destination methods is returned as it is."""
    if isinstance(spec, LogDestination):
        return spec
    text = os.fspath(spec)
    if not isinstance(text, str) or not text:
        raise ConfigurationError("destination must be a folder path, file:// or http(s):// URL")
    if text.startswith(("http://", "https://")):
        return HttpDestination(text, token or os.environ.get("ATTEST_TOKEN"), transport=transport)
    from attest.log import LocalLog

    if text.startswith("file://"):
        return LocalLog(text[len("file://") :])
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise ConfigurationError(
            f"destination scheme {scheme!r} is not supported; "
            "use file:///folder, a folder path or http(s)://host",
            expected=["file", "http", "https"],
            got=scheme,
        )
    return LocalLog(text)


def tree_size_of(note: str, verifier: NoteVerifier | None = None) -> int:
    """The tree size in a checkpoint note (its signature checked when ``verifier`` is given)."""
    if verifier is not None:
        return open_checkpoint(note, verifier, require_timestamp=False).checkpoint.size
    return Checkpoint.from_body(Note.from_text(note).text).size
