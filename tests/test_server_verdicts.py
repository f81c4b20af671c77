"""Verdicts posted back to the server: who may post, what is refused (with the fix named), and
where a kept verdict shows (the list endpoint and the run page)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_server import Server, body, steps

from attest.keys import TrainerKey
from attest.records import RecordWriter

ROOT = "ab" * 32


def _verdict(run: str = "r1", outcome: str = "verified", root: str | None = ROOT) -> dict[str, Any]:
    return {
        "format": "attest-verdict/v1",
        "outcome": outcome,
        "exit_code": 0,
        "summary": "from scratch (policy strict)",
        "run": run,
        "policy": {"name": "strict", "source": "built-in"},
        "proven": [],
        "supported": [],
        "not_checked": [],
        "limits": [],
        "facts": {} if root is None else {"final_root": root},
        "checks": [
            {"id": "integrity.signatures", "status": "pass", "why": "all signed", "basis": "x"},
            {"id": "replay.segments", "status": "pass", "why": "2 segments", "basis": "replay"},
        ],
    }


@pytest.fixture
def srv(tmp_path: Path) -> Any:
    s = Server(tmp_path / "data")
    with s.client:
        key = TrainerKey.generate()
        assert s.create("r1", key).status_code == 201
        w = RecordWriter("r1", key)
        records = steps(w, 3)
        end = {"algorithm": "attest-tensors-v1/sha256/chunk=16777216", "root": ROOT}
        records.append(
            w.write(
                "run.end",
                {"step": 3, "model": end, "tensors": "sha256:" + "0" * 64, "last_checkpoint": ROOT},
            )
        )
        resp = s.client.post("/v1/runs/r1/records", json=body(records), headers=s.h("alice"))
        assert resp.status_code == 200, resp.text
        yield s


def test_a_granted_reader_posts_and_everyone_who_reads_sees_it(srv: Server) -> None:
    resp = srv.client.post("/v1/runs/r1/verdicts", json=_verdict(), headers=srv.h("granted"))
    assert resp.status_code == 201, resp.text
    assert resp.json() | {"id": 0} == {
        "id": 0,
        "run": "r1",
        "posted_by": "granted",
        "size": 4,
        "outcome": "verified",
        "policy": "strict",
    }
    listed = srv.client.get("/v1/runs/r1/verdicts", headers=srv.h("alice")).json()
    assert [v["posted_by"] for v in listed] == ["granted"]
    assert listed[0]["verdict"] == _verdict()
    page = srv.client.get("/runs/r1", headers=srv.h("reader")).text
    assert "Verdict: verified" in page and "replay.segments" in page and "granted" in page
    second = srv.client.post(
        "/v1/runs/r1/verdicts", json=_verdict(outcome="tampered"), headers=srv.h("admin")
    )
    assert second.status_code == 201
    listed = srv.client.get("/v1/runs/r1/verdicts", headers=srv.h("reader")).json()
    assert [v["verdict"]["outcome"] for v in listed] == ["tampered", "verified"]  # newest first


@pytest.mark.parametrize(("who", "status"), [("alice", 403), ("bob", 403)])
def test_trainers_may_not_judge(srv: Server, who: str, status: int) -> None:
    resp = srv.client.post("/v1/runs/r1/verdicts", json=_verdict(), headers=srv.h(who))
    assert resp.status_code == status, resp.text
    assert srv.client.get("/v1/runs/r1/verdicts", headers=srv.h("admin")).json() == []


def test_unauthenticated_and_unknown_run(srv: Server) -> None:
    assert srv.client.post("/v1/runs/r1/verdicts", json=_verdict()).status_code == 401
    resp = srv.client.post("/v1/runs/nope/verdicts", json=_verdict("nope"), headers=srv.h("admin"))
    assert resp.status_code == 404


@pytest.mark.parametrize(
    ("doc", "status", "message"),
    [
        ({"outcome": "verified"}, 400, "attest verify --json"),
        (_verdict(run="r2"), 400, "another run"),
        (_verdict(outcome="fine"), 400, "outcome is unknown"),
        (_verdict(root=None), 400, "facts.final_root"),
        (_verdict(root="cd" * 32), 409, "another final model"),
        ({**_verdict(), "checks": [{"status": "pass"}]}, 400, "verdict.checks"),
        ([1, 2], 400, "attest verify --json"),
    ],
)
def test_bad_verdicts_are_refused_naming_the_problem(
    srv: Server, doc: Any, status: int, message: str
) -> None:
    resp = srv.client.post("/v1/runs/r1/verdicts", json=doc, headers=srv.h("admin"))
    assert resp.status_code == status, resp.text
    assert message in resp.json()["error"]
    assert srv.client.get("/v1/runs/r1/verdicts", headers=srv.h("admin")).json() == []


def test_a_failed_verdict_may_name_no_root(srv: Server) -> None:
    doc = _verdict(outcome="tampered", root=None)
    resp = srv.client.post("/v1/runs/r1/verdicts", json=doc, headers=srv.h("reader"))
    assert resp.status_code == 201, resp.text
