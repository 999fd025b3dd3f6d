"""Reports one click from the task: an operator extra link on the stage and gate tasks, and a
read-only page of the api-server (an Airflow plugin's FastAPI app, `plugins/retrain_reports.py`)
that shows them.

Workers share no disk, so the page never reads a worker's checkout: a stage task's result (its
XCom) holds its `dvc.lock` entry, whose outputs carry their md5; the page reads those objects
from the DVC remote (`airflow.dvc_remote`, a folder or S3), the same bytes `dvc pull` would bring.
The gate's decision is its XCom itself. The rollout task's page is its live comparison
(orchestration/rollout_page.py).

    /retrain-reports/<dag_id>/<run_id>/<task_id>   the task's reports (HTML as is; DVCLive curves as
                                                   charts; CSV, JSON and other TSV as text)

Airflow puts no authentication in front of a plugin's app, so this one asks for it on every route,
through Airflow's own auth manager: a request without a valid token (the `Authorization: Bearer`
header, or the `_token` cookie the UI's login sets) is answered 401, and a user the auth manager
does not allow to read the DAG's runs, task instances and XComs (what the reports are made of) 403.
"""

from __future__ import annotations

import html
import json
import logging
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperatorLink

from orchestration import ending

log = logging.getLogger(__name__)

URL_PREFIX = "/retrain-reports"
ROLLOUT_KEY = "rollout"  # the rollout task's XCom of its state (orchestration/rollout_task.py)
# Outputs worth a person's look, by folder: validation report, confusion matrix and class report,
# training curves. Data, models and checkpoints are not shown.
REPORT_FOLDERS = ("reports/", "dvclive/")
SHOWN_SUFFIXES = (".html", ".csv", ".tsv", ".json")
MAX_BYTES = 5_000_000


class ReportsLink(BaseOperatorLink):
    """The "Reports" button of a task: the plugin's page for this task instance."""

    name = "Reports"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.configuration import conf

        base = conf.get("api", "base_url", fallback="").rstrip("/")
        quote = urllib.parse.quote
        return f"{base}{URL_PREFIX}/{quote(ti_key.dag_id)}/{quote(ti_key.run_id, safe='')}/{quote(ti_key.task_id)}"


def report_outputs(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The report outputs in a stage task's result: [{path, md5, ...}] from its dvc.lock entry."""
    outs: list[dict[str, Any]] = []
    for entry in (result.get("lock") or {}).values():
        outs += [o for o in entry.get("outs", []) if str(o.get("path", "")).startswith(REPORT_FOLDERS)]
    return outs


class RemoteReader:
    """Objects of the DVC remote by md5 (DVC 3's layout: files/md5/<2>/<30>)."""

    def __init__(self, project: Path):
        from orchestration.params import load_project_params
        from orchestration.remote import resolve

        params = load_project_params(project / "params.yaml")
        remote = resolve(project, params.airflow.dvc_remote)
        if remote is None:
            raise LookupError("airflow.dvc_remote is not set: no DVC remote to read reports from")
        self.remote = remote

    def read(self, md5: str) -> bytes:
        key = f"files/md5/{md5[:2]}/{md5[2:]}"
        if self.remote.is_local:
            return (Path(self.remote.url) / key).read_bytes()[:MAX_BYTES]
        import boto3

        bucket, _, prefix = self.remote.url.removeprefix("s3://").partition("/")
        client = boto3.client(
            "s3",
            endpoint_url=self.remote.endpoint_url,
            region_name=self.remote.region,
            aws_access_key_id=self.remote.credentials.get("access_key_id"),
            aws_secret_access_key=self.remote.credentials.get("secret_access_key"),
        )
        body = client.get_object(Bucket=bucket, Key=f"{prefix.strip('/')}/{key}".lstrip("/"))["Body"]
        return body.read(MAX_BYTES)

    def files(self, out: Mapping[str, Any]) -> list[tuple[str, bytes]]:
        """(path, bytes) of one output: a file, or the shown files of a directory output."""
        md5 = str(out.get("md5", ""))
        if not md5.endswith(".dir"):
            return [(str(out["path"]), self.read(md5))]
        listing = json.loads(self.read(md5))
        return [
            (f"{out['path']}/{row['relpath']}", self.read(row["md5"]))
            for row in listing
            if row["relpath"].endswith(SHOWN_SUFFIXES)
        ]


def render(task_id: str, run_id: str, files: list[tuple[str, bytes]], gate: Mapping[str, Any] | None) -> str:
    """One page: a single HTML report as it is; otherwise every file as text under its path."""
    if gate is None and len(files) == 1 and files[0][0].endswith(".html"):
        return files[0][1].decode(errors="replace")
    title = f"{task_id} of run {run_id}"
    parts = [f"<!doctype html><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>"]
    if gate is not None:
        parts.append(f"<h2>decision: {'passed' if gate.get('passed') else 'rejected'}</h2>")
        parts.append(f"<p>{html.escape(str(gate.get('reason', '')))}</p>")
        parts.append(f"<pre>{html.escape(str(gate.get('diff_markdown', '')))}</pre>")
        parts.append(f"<pre>{html.escape(json.dumps(dict(gate), indent=2, default=str))}</pre>")
    for path, data in files:
        text = data.decode(errors="replace")
        chart = curve_svg(text) if path.endswith(".tsv") else None
        parts.append(f"<h2>{html.escape(path)}</h2>" + (chart or f"<pre>{html.escape(text)}</pre>"))
    if len(parts) == 1:
        parts.append("<p>This task has no reports.</p>")
    return "\n".join(parts)


def curve_svg(tsv: str, width: int = 480, height: int = 160) -> str | None:
    """A DVCLive series (`step<TAB>value` rows, as dvclive/*/plots/metrics/*.tsv) as a small inline
    SVG line chart with its range; None when the text is not such a series."""
    rows = [line.split("\t") for line in tsv.strip().splitlines()]
    try:
        points = [(float(r[0]), float(r[1])) for r in rows[1:] if len(r) >= 2]
    except ValueError:
        return None
    if len(rows[0]) < 2 or rows[0][0] != "step" or len(points) < 2:
        return None
    (x0, x1), (y0, y1) = [(min(v), max(v)) for v in zip(*points, strict=True)]
    pad = 8

    def at(x: float, y: float) -> str:
        px = pad + (x - x0) / ((x1 - x0) or 1) * (width - 2 * pad)
        py = height - pad - (y - y0) / ((y1 - y0) or 1) * (height - 2 * pad)
        return f"{px:.1f},{py:.1f}"

    line = " ".join(at(x, y) for x, y in points)
    name = html.escape(rows[0][1])
    return (
        f'<svg role="img" aria-label="{name} by step" width="{width}" height="{height}" '
        f'style="border:1px solid #ccc"><polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{line}"/></svg>'
        f"<p>{name}: {points[0][1]:.4g} at step {points[0][0]:g} to {points[-1][1]:.4g} at step {points[-1][0]:g} "
        f"(min {y0:.4g}, max {y1:.4g})</p>"
    )


def task_result(dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
    """The task's return value (or XCom `key`) from Airflow's metadata database."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel)
            .where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.task_id == task_id,
                XComModel.key == key,
            )
            .order_by(XComModel.map_index)
        ).first()
        return None if row is None else XComModel.deserialize_value(row)


def task_state(dag_id: str, run_id: str, task_id: str) -> str | None:
    """The task instance's state ("failed", "upstream_failed", ...), None when there is none."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        state = session.scalars(
            select(TaskInstance.state).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id
            )
        ).first()
    return None if state is None else str(getattr(state, "value", state))


def render_outcome(task_id: str, run_id: str, ended: Mapping[str, Any]) -> str:
    """The page of a task that ended without a result: a rejecting gate's decision, or what failed."""
    if isinstance(ended.get("report"), Mapping):
        return render(task_id, run_id, [], ended["report"])
    title = f"{task_id} of run {run_id}: {ended.get('state', 'ended')}"
    return (
        f"<!doctype html><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>"
        f"<p>The task ended without reports. What it said:</p><pre>{html.escape(str(ended.get('reason', '')))}</pre>"
    )


def no_result(dag_id: str, run_id: str, task_id: str) -> str:
    """Why a task has neither a result nor an outcome, from its state."""
    state = task_state(dag_id, run_id, task_id)
    why = {
        None: "there is no such task in this run",
        "upstream_failed": "it did not run: a task before it failed (that task's page says why)",
        "skipped": "it did not run: the run skipped it",
        "failed": "it failed before it could say why (its log in the Airflow UI does)",
    }.get(state, f"it has not finished (state: {state})")
    return f"{task_id} of run {run_id} has no reports: {why}"


# What Airflow's own REST API asks of a user for the data a report page shows: the DAG's runs, its
# task instances and their XComs (a task's result, the gate's decision).
READ_ACCESS = ("RUN", "TASK_INSTANCE", "XCOM")


def error_response(request: Any, status: int, detail: str) -> Any:
    """JSON for a program (as Airflow's API answers); for a browser, a page that says what happened
    and, when no one is logged in, links to the login with a way back here."""
    from fastapi.responses import HTMLResponse, JSONResponse

    if "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"detail": detail}, status_code=status)
    body = f"<!doctype html><title>{status}: {html.escape(detail)}</title><h1>{html.escape(detail)}</h1>"
    if status == 401:
        from airflow.api_fastapi.app import get_auth_manager

        login = get_auth_manager().get_url_login(next_url=str(request.url))
        body += f'<p>The reports need a login. <a href="{html.escape(login)}">Log in to Airflow</a> and come back.</p>'
    elif status == 403:
        body += "<p>Your Airflow user may not read this DAG's runs, task instances and XComs; ask an admin.</p>"
    return HTMLResponse(body, status_code=status)


class LazyApp:
    """An ASGI app that builds `factory()` on its first request. Airflow loads plugins in every
    process (each task's runner too), and only the api-server ever serves this app: the others
    never import FastAPI or the api-server's security module (~1.5 s) for it."""

    def __init__(self, factory: Callable[[], Any]):
        self.factory = factory
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.app is None:
            self.app = self.factory()
        await self.app(scope, receive, send)


def create_app(project: Path) -> Any:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import HTMLResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    # Every route needs a user (401 without one): a route added later is covered without a word.
    # No /docs or /openapi.json of our own: nothing here answers an anonymous request.
    app = FastAPI(
        title="retrain reports",
        description="The retrain DAG's reports, read-only, from the DVC remote",
        dependencies=[Depends(get_user)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(StarletteHTTPException)
    async def explained(request: Any, exc: StarletteHTTPException) -> Any:
        return error_response(request, exc.status_code, str(exc.detail))

    # ...and each route that shows a DAG's data, read access to that DAG (403 without it).
    can_read_dag = [Depends(requires_access_dag("GET", DagAccessEntity[entity])) for entity in READ_ACCESS]

    @app.get("/{dag_id}/{run_id}/{task_id}", response_class=HTMLResponse, dependencies=can_read_dag)
    def task_reports(dag_id: str, run_id: str, task_id: str) -> str:
        rollout = task_result(dag_id, run_id, task_id, key=ROLLOUT_KEY)
        if isinstance(rollout, Mapping):  # the rollout task: live while it runs
            from orchestration import rollout_page

            return rollout_page.render(task_id, run_id, *rollout_page.live_view(rollout))
        result = task_result(dag_id, run_id, task_id)
        if not isinstance(result, Mapping):
            ended = task_result(dag_id, run_id, task_id, key=ending.KEY)
            if isinstance(ended, Mapping):
                return render_outcome(task_id, run_id, ended)
            raise HTTPException(404, no_result(dag_id, run_id, task_id))
        gate = result if "diff_markdown" in result else None  # the gate's report is its result
        outs = report_outputs(result)
        files: list[tuple[str, bytes]] = []
        if outs:
            reader = RemoteReader(project)
            for out in outs:
                files += reader.files(out)
        return render(task_id, run_id, files, gate)

    return app
