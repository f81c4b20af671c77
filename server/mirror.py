"""The MLflow view of the logs (DESIGN §5): one MLflow run per attested run.

The log in SQL is the source of truth; MLflow is a view for people. After an append commits, the
run's name is queued; a background thread catches the MLflow run up from the leaves stored since
the last sync (``attest_mirror.size``), so a crash, an MLflow outage or a second replica never
loses or corrupts anything in the log — at worst the view lags until the next append or restart.

What goes where:

- params: the ``run.start`` config, flattened with dotted keys (values cut at MLflow's 6000
  characters, 100 per request);
- metrics: ``loss``, ``lr`` and ``grad_norm`` of every ``train.steps`` record, by step
  (1000 per request). Non-finite values are logged as ``null`` in the log and skipped here:
  MLflow would store ``inf`` as 1.8e308;
- tags: ``attest.run``, ``attest.tree_size``, ``attest.root``, ``attest.trainer_key_id``, and
  ``attest.verdict`` (``unverified`` until a verifier posts a verdict; then the latest one's
  outcome, with ``attest.verdict_policy``, ``attest.verdict_by`` and ``attest.verdict_summary``);
- artifacts: ``bundle.json``, ``checkpoint.note`` (latest signed tree head) and ``blobs/<hex>.json``,
  uploaded when a ``run.end`` record arrives, when the statement is stored, or on request.

Embedded mode writes artifacts straight into the folder the mounted MLflow app serves
(``mlflow-artifacts:/attest/...`` maps to ``<artifacts destination>/attest/...``); with a remote
tracking server the MLflow client uploads them through its REST API.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from attest.records import SignedRecord
from attest.server.bundles import run_bundle
from attest.server.storage import RunInfo, Store

__all__ = ["EXPERIMENT", "Mirror", "flatten_params"]

log = logging.getLogger("attest.server.mirror")

EXPERIMENT = "attest"
_MAX_METRICS = 1000
_MAX_PARAMS = 100
_MAX_PARAM_VALUE = 6000
_MAX_KEY = 250
_MAX_TAG = 5000  # MLflow cuts tag values at 8000 characters


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"optim": {"lr": 0.1}}`` → ``{"optim.lr": "0.1"}``; lists and scalars as JSON text."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, prefix=name + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            out[name[:_MAX_KEY]] = text[:_MAX_PARAM_VALUE]
    return out


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class Mirror:
    """A best-effort, catch-up MLflow mirror running on one background thread."""

    def __init__(
        self,
        store: Store,
        *,
        tracking_uri: str,
        artifacts_destination: str | None,
        experiment: str = EXPERIMENT,
    ) -> None:
        self.store = store
        self.tracking_uri = tracking_uri
        self.remote = tracking_uri.startswith(("http://", "https://"))
        self.artifacts_destination = artifacts_destination
        self.experiment = experiment
        self._queue: queue.Queue[tuple[str, bool] | threading.Event | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._experiment_id: str | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._work, name="attest-mlflow-mirror", daemon=True)
        self._thread.start()
        try:
            for info in self.store.list_runs():
                _, size, _ = self.store.mirror_state(info)
                if size < info.size:
                    self.notify(info.name)
        except Exception:
            log.warning("MLflow mirror could not list runs to catch up", exc_info=True)

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def notify(self, run: str, *, bundle: bool = False) -> None:
        """Queue ``run`` for a sync (after its append committed)."""
        self._queue.put((run, bundle))

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until everything queued so far is mirrored (tests, export)."""
        if self._thread is None:
            return False
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            run, bundle = item
            try:
                self.sync(run, bundle=bundle)
            except Exception as exc:
                log.warning("MLflow mirror of run %r failed (the log is unaffected): %s", run, exc)

    @property
    def experiment_id(self) -> str | None:
        """The MLflow experiment holding the runs, once known."""
        return self._experiment_id

    # --- MLflow -----------------------------------------------------------------------------

    def _mlflow(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def _experiment(self) -> str:
        if self._experiment_id is None:
            client = self._mlflow()
            exp = client.get_experiment_by_name(self.experiment)
            if exp is None:
                location = None if self.remote else f"mlflow-artifacts:/{self.experiment}"
                try:
                    self._experiment_id = client.create_experiment(
                        self.experiment, artifact_location=location
                    )
                except Exception:  # another replica created it first
                    exp = client.get_experiment_by_name(self.experiment)
                    if exp is None:
                        raise
                    self._experiment_id = exp.experiment_id
            else:
                self._experiment_id = exp.experiment_id
        assert self._experiment_id is not None
        return self._experiment_id

    def _mlflow_run(self, info: RunInfo) -> str:
        client = self._mlflow()
        exp = self._experiment()
        found = client.search_runs(
            [exp], filter_string=f"tags.`attest.run` = '{info.name}'", max_results=1
        )
        if found:
            return str(found[0].info.run_id)
        run = client.create_run(
            exp,
            run_name=info.name,
            tags={
                "attest.run": info.name,
                "attest.owner": info.owner,
                "attest.trainer_key_id": info.key.key_id,
                "attest.verdict": "unverified",
            },
        )
        return str(run.info.run_id)

    def sync(self, run: str, *, bundle: bool = False) -> None:
        """Bring ``run``'s MLflow run up to the log's current size."""
        from mlflow.entities import Metric, Param, RunTag

        info = self.store.get_run(run)
        run_id, mirrored, bundle_size = self.store.mirror_state(info)
        client = self._mlflow()
        if run_id is None:
            run_id = self._mlflow_run(info)
            self.store.set_mirror_state(info, mlflow_run_id=run_id, size=0, bundle_size=-1)
        metrics: list[Any] = []
        params: dict[str, str] = {}
        ended = False
        for leaf in self.store.entries(info, mirrored, info.size):
            record = SignedRecord.from_leaf(leaf).record
            if record.type == "run.start":
                params = flatten_params(record.body.get("config", {}))
            elif record.type == "run.end":
                ended = True
            elif record.type == "train.steps":
                ts = _millis(record.time)
                first = int(record.body["first_step"])
                for name in ("loss", "lr", "grad_norm"):
                    for i, value in enumerate(record.body.get(name, [])):
                        if _finite(value):
                            metrics.append(Metric(name, float(value), ts, first + i))
        for chunk in _chunks(sorted(params.items()), _MAX_PARAMS):
            client.log_batch(run_id, params=[Param(k, v) for k, v in chunk])
        for chunk in _chunks(metrics, _MAX_METRICS):
            client.log_batch(run_id, metrics=chunk)
        tags = [
            RunTag("attest.tree_size", str(info.size)),
            RunTag("attest.root", info.root.hex()),
        ]
        posted = self.store.verdicts(info, limit=1)
        for row in posted:  # the latest verdict a verifier posted
            verdict = row["verdict"]
            tags += [
                RunTag("attest.verdict", str(verdict["outcome"])),
                RunTag("attest.verdict_policy", str(verdict["policy"]["name"])),
                RunTag("attest.verdict_by", str(row["posted_by"])),
                RunTag("attest.verdict_summary", str(verdict["summary"])[:_MAX_TAG]),
            ]
        client.log_batch(run_id, tags=tags)
        if (bundle or ended) and bundle_size != info.size:
            self._upload_bundle(info, run_id)
            bundle_size = info.size
        self.store.set_mirror_state(
            info, mlflow_run_id=run_id, size=info.size, bundle_size=bundle_size
        )

    def _upload_bundle(self, info: RunInfo, run_id: str) -> None:
        b = run_bundle(self.store, info)
        with tempfile.TemporaryDirectory(prefix="attest-mirror-") as tmp:
            folder = Path(tmp)
            b.write(folder / "bundle.json")
            (folder / "checkpoint.note").write_text(self.store.latest_checkpoint(info))
            (folder / "blobs").mkdir()
            for digest, doc in b.blobs.items():
                (folder / "blobs" / f"{digest[7:]}.json").write_text(json.dumps(doc))
            self._log_artifacts(run_id, folder)

    def _log_artifacts(self, run_id: str, folder: Path) -> None:
        client = self._mlflow()
        uri = str(client.get_run(run_id).info.artifact_uri)
        if uri.startswith("mlflow-artifacts:") and not self.remote and self.artifacts_destination:
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            dest = self.artifacts_destination.rstrip("/") + "/" + urlparse(uri).path.lstrip("/")
            repo: Any = get_artifact_repository(dest)
            repo.log_artifacts(str(folder))
        else:
            client.log_artifacts(run_id, str(folder))


def _millis(rfc3339: str) -> int:
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0
