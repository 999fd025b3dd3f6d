"""Failure notifications: an email through Airflow's own `SmtpNotifier` when a task of the retrain
DAG fails for good (after its retries), configured only by an Airflow Connection.

The Connection `airflow.notify_conn_id` (type `smtp`) names the server (host, port, login,
password) and, in its extra, the recipients `to` (comma-separated) and the sender `from_email`:

    airflow connections add retrain_notify --conn-type smtp --conn-host smtp.example.com \\
        --conn-port 587 --conn-login bot --conn-password ... \\
        --conn-extra '{"to": "mlops@example.com", "from_email": "retrain@example.com"}'

No such Connection: nothing is sent and nothing fails. A notification that cannot be sent is
logged and never changes the task's outcome.

This module is imported by the DAG file at parse time: Airflow and its SMTP provider are imported
only when a notification is due.
"""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)


def failure_callback(conn_id: str) -> Callable[[Mapping[str, Any]], None]:
    """The `on_failure_callback` of every task: notify through Connection `conn_id` if it exists."""
    return functools.partial(notify_failure, conn_id)


def failure_message(context: Mapping[str, Any]) -> tuple[str, str]:
    """(subject, HTML body) naming the DAG, the run, the task, the try and the cause."""
    ti = context["ti"]
    run_id = getattr(context.get("dag_run"), "run_id", None) or ti.run_id
    error = context.get("exception")
    cause = f"{type(error).__name__}: {error}" if error is not None else "unknown (see the task's log)"
    subject = f"[{ti.dag_id}] task {ti.task_id} failed in run {run_id}"
    rows = [
        ("DAG", ti.dag_id),
        ("run", run_id),
        ("task", ti.task_id),
        ("try", str(getattr(ti, "try_number", "?"))),
        ("cause", cause),
    ]
    # <pre>: a stage's message keeps its line breaks (one line per failed check)
    body = "".join(f"<tr><th align='left'>{k}</th><td><pre>{html.escape(v)}</pre></td></tr>" for k, v in rows)
    log_url = getattr(ti, "log_url", None)
    link = f"<p><a href='{html.escape(log_url)}'>the task's log</a></p>" if log_url else ""
    return subject, f"<p>{html.escape(subject)}</p><table>{body}</table>{link}"


def notify_failure(conn_id: str, context: Mapping[str, Any]) -> None:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        log.info("no Connection %r: no failure notification sent", conn_id)
        return
    recipients = [a.strip() for a in str(conn.extra_dejson.get("to") or "").split(",") if a.strip()]
    if conn.conn_type not in ("smtp", "email") or not recipients:
        log.warning(
            "Connection %r is not an smtp Connection with recipients in its extra 'to' "
            "(type %r, to %r): no failure notification sent",
            conn_id,
            conn.conn_type,
            recipients,
        )
        return
    subject, body = failure_message(context)
    try:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        SmtpNotifier(to=recipients, smtp_conn_id=conn_id, subject=subject, html_content=body).notify(
            context  # type: ignore[arg-type]  # the Context Airflow passed to the callback, typed here as a Mapping
        )
    except Exception:  # a notification must never change the task's outcome
        log.exception("failure notification through Connection %r not sent", conn_id)
        return
    log.info("failure notification sent to %s through Connection %r", ", ".join(recipients), conn_id)
