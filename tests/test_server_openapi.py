"""OpenAPI fuzzing of the log server (DESIGN §8): schemathesis generates requests from
``/openapi.json``; whatever it sends, the server must never answer 5xx.

The app runs in process (MLflow off) with an admin token and one run holding a few records, so
generated requests reach the handlers past authentication. Bounded: a few examples per operation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from attest.keys import TrainerKey
from attest.records import RecordWriter
from attest.server import Settings, create_app
from attest.server.auth import issue_token

_DATA = Path(__import__("tempfile").mkdtemp(prefix="attest-openapi-"))
app = create_app(Settings(data=_DATA, mlflow=False, max_body_bytes=64 * 1024))
_store = app.state.attest.store
ADMIN = issue_token(_store, role="admin", name="fuzz-admin")[0]
_key = TrainerKey.generate()
_store.create_run("r1", _key.public, {}, owner="fuzz-admin")
_writer = RecordWriter("r1", _key)
_store.append(
    "r1",
    [
        _writer.write(
            "train.steps",
            {
                "first_step": i,
                "loss": [1.0],
                "lr": [0.1],
                "grad_norm": [None],
                "batch": ["sha256:" + "0" * 64],
            },
        ).to_json()
        for i in range(3)
    ],
)

schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {ADMIN}"}, checks=[not_a_server_error]
    )
