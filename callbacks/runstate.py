"""The recorder's per-run state: where the record chain stands and what the statement will cite.

Apart from the recorder because it is a format of its own: :meth:`RunState.to_json` is what
``Recorder.state_dict`` returns and Lightning saves inside its checkpoints (``"version": 1``),
and :meth:`RunState.from_json` is what a restarted job reads back to continue the same chain.
Plain types only, so any checkpoint format can hold it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["RunState", "utc_now"]


def utc_now() -> str:
    """The time now as recorded in ``started`` and the statement's ``finishedOn``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class RunState:
    """What a resumed job needs to continue the chain: plain types only."""

    run: str
    seq: int = 0
    prev: str | None = None
    step: int = 0
    started: str = ""
    init_root: str | None = None
    manifest: str | None = None
    last_checkpoint: str | None = None
    checkpoints: list[list[Any]] = field(default_factory=list)  # [step, root hex]
    losses: list[float | None] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)  # config, seed, code, environment
    components: list[dict[str, Any]] = field(default_factory=list)
    algorithm: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "run": self.run,
            "seq": self.seq,
            "prev": self.prev,
            "step": self.step,
            "started": self.started,
            "init_root": self.init_root,
            "manifest": self.manifest,
            "last_checkpoint": self.last_checkpoint,
            "checkpoints": [list(c) for c in self.checkpoints],
            "losses": list(self.losses),
            "params": self.params,
            "components": self.components,
            "algorithm": self.algorithm,
        }

    @classmethod
    def from_json(cls, state: Mapping[str, Any]) -> RunState:
        """The state :meth:`to_json` gave, with any losses beyond ``step`` dropped."""
        return cls(
            run=str(state["run"]),
            seq=int(state["seq"]),
            prev=state["prev"],
            step=int(state["step"]),
            started=str(state["started"]),
            init_root=state["init_root"],
            manifest=state["manifest"],
            last_checkpoint=state["last_checkpoint"],
            checkpoints=[list(c) for c in state["checkpoints"]],
            losses=list(state["losses"])[: int(state["step"])],
            params=dict(state["params"]),
            components=list(state["components"]),
            algorithm=str(state["algorithm"]),
        )
