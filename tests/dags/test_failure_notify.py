"""Failure notifications through an Airflow Connection, against a real SMTP server on 127.0.0.1
(aiosmtpd): the real retrain DAG (`airflow dags test`) on raw data that fails clean's contract.

- With the smtp Connection `airflow.notify_conn_id`: exactly one email, naming the run, the task
  (clean) and the cause.
- Without it: nothing is sent, and the run ends exactly as it would (clean failed, the rest not run).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import numpy as np
import pytest
from support import edit_params

pytestmark = [pytest.mark.airflow, pytest.mark.integration]

DAG_ID = "retrain"


class Inbox:
    """aiosmtpd's handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(message_from_bytes(envelope.original_content, policy=policy.default))
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


@pytest.fixture(scope="module")
def smtp(helpers) -> Iterator[tuple[int, Inbox]]:
    from aiosmtpd.controller import Controller

    (port,) = helpers.free_ports(1)
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, helpers) -> Path:
    """A copy whose raw data breaks the contract: a quarter of the rows hold a pixel below range."""
    from sklearn.datasets import load_digits

    project = helpers.copy_project(tmp_path_factory.mktemp("notify-project"))
    digits = load_digits()
    rows = np.column_stack([digits.target, digits.data]).astype(int)
    rows[::4, 6] = -7  # column 6 = px_5 (column 0 is the label)
    (project / "incoming").mkdir()
    header = ",".join(["label", *(f"px_{i}" for i in range(64))])
    np.savetxt(project / "incoming" / "digits.csv", rows, fmt="%d", delimiter=",", header=header, comments="")
    edit_params(project, data__source="incoming/digits.csv")
    return project


def run_dag(env: dict[str, str], project: Path, date: str, helpers) -> tuple[str, str, dict[str, str]]:
    return helpers.dags_test_run(env, project, date)


def test_failed_clean_sends_one_email_naming_run_task_and_cause(
    smtp, project: Path, make_airflow_home, helpers
) -> None:
    port, inbox = smtp
    connection = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "extra": {
            "to": "mlops@example.com, oncall@example.com",
            "from_email": "retrain@example.com",
            "disable_tls": True,
            "disable_ssl": True,
            "retry_limit": 0,
        },
    }
    env = make_airflow_home(project / "dags", AIRFLOW_CONN_RETRAIN_NOTIFY=json.dumps(connection))
    before = len(inbox.messages)
    run_id, output, states = run_dag(env, project, "2026-01-26", helpers)

    assert states["clean"] == "failed", states
    sent = inbox.messages[before:]
    assert len(sent) == 1, [m["Subject"] for m in sent]
    message = sent[0]
    assert sorted(inbox.recipients[-1]) == ["mlops@example.com", "oncall@example.com"]
    assert message["From"] == "retrain@example.com"
    assert run_id in message["Subject"] and "clean" in message["Subject"]
    body = message.get_body(preferencelist=("html", "plain")).get_content()
    assert run_id in body
    assert "clean" in body
    # the cause: clean's own message, naming the failed check and the column
    assert "clean failed" in body and "px_5=-7" in body, body


def test_without_the_connection_nothing_is_sent_and_nothing_else_fails(
    smtp, project: Path, make_airflow_home, helpers
) -> None:
    port, inbox = smtp
    env = make_airflow_home(project / "dags")
    before = len(inbox.messages)
    _, output, states = run_dag(env, project, "2026-01-19", helpers)

    assert states["clean"] == "failed", states
    assert {states[t] for t in ("prepare_workspace", "embed")} == {"success"}, states
    assert all(s in ("failed", "success", "upstream_failed", "skipped") for s in states.values()), states
    assert inbox.messages[before:] == []
    assert "Error when executing" not in output and "not sent" not in output
