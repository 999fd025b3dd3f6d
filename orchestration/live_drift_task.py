"""The live drift check's Airflow tasks (dags/live_drift.py): thin wrappers around
orchestration/live_drift.py.

`check` reads the sample parts written in the run's data interval (the interval since the previous
check), the serving version's reference from the published branch of the workspace's git remote
(what publish writes there, `orchestration.drift_reference`), compares them, logs the reason
either way, writes the HTML report into the DVC remote (content-addressed, as `dvc push` stores
outputs: the task's Reports link shows it, like the stage tasks') and returns the decision as its
XCom. `emit` then either emits the asset event that starts the retrain DAG or is skipped.

The task reads `serving.sample.dir` on the worker that runs it: run it where the server's sample
folder is (the server's host, or a shared mount of it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPORT_PATH = "reports/live_drift.html"  # the report's name on the task's Reports page
LIVE_REPORT_PATH = "reports/live.html"  # the served model over time (serving/live/report.py), beside it


def served_reference(project: Path, params: Any, fleet: Any) -> Any:
    """The reference on the published branch of the workspace's git remote; the project's own
    (the "no reference yet" one) while nothing is published."""
    from orchestration.workspace import ensure_git_remote, remote_ref, run
    from stages.drift import Reference

    paths = fleet.drift
    if paths is None:
        return Reference(None, None)
    ws = fleet.ws
    ensure_git_remote(ws)
    branch = f"refs/heads/{ws.params.git_branch}"
    if remote_ref(ws, branch) is None:
        log.info("nothing published yet on %s: the project's %s", ws.params.git_branch, paths.reference)
        return Reference.load(project / paths.reference)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run(["git", "init", "-q"], root, env=ws.git_env())
        run(["git", "fetch", "-q", "--depth", "1", ws.git_remote, branch], root, env=ws.git_env())
        shown = subprocess.run(
            ["git", "show", f"FETCH_HEAD:{paths.reference}"], cwd=root, capture_output=True, check=False
        )
        if shown.returncode:
            log.info("%s is not on the published branch yet: no reference", paths.reference)
            return Reference(None, None)
        (root / "reference.json").write_bytes(shown.stdout)
        return Reference.load(root / "reference.json")


def write_object(remote: Any, data: bytes) -> str:
    """`data` as an object of the DVC remote (DVC 3's layout, files/md5/<2>/<30>); its md5."""
    from pipeline import atomic

    md5 = hashlib.md5(data).hexdigest()  # noqa: S324 - DVC's content address, not a security hash
    key = f"files/md5/{md5[:2]}/{md5[2:]}"
    if remote.is_local:
        target = Path(remote.url) / key
        if not target.exists():
            atomic.write_bytes(target, data)
        return md5
    import boto3

    bucket, _, prefix = remote.url.removeprefix("s3://").partition("/")
    client = boto3.client(
        "s3",
        endpoint_url=remote.endpoint_url,
        region_name=remote.region,
        aws_access_key_id=remote.credentials.get("access_key_id"),
        aws_secret_access_key=remote.credentials.get("secret_access_key"),
    )
    client.put_object(Bucket=bucket, Key=f"{prefix.strip('/')}/{key}".lstrip("/"), Body=data)
    return md5


def labels_in(folder: Path, model: str, since: Any, until: Any) -> Any:
    """The serving version's labelled rows whose labels came in [since, until)."""
    from orchestration.live_drift import served_names
    from serving.live.labels import labelled

    joined = labelled(folder, model, served_names(model))
    came = [since <= dt.datetime.fromisoformat(at) < until for at in joined["received_at"].to_pylist()]
    return joined.filter(came) if joined.num_rows else joined


def live_page(folder: Path, params: Any) -> str:
    """The served model over time on every label kept so far (`python -m serving live-report`'s page)."""
    from serving.live.labels import labelled
    from serving.live.report import live_report, render

    model = params.export.model_name
    return render(live_report(labelled(folder, model), params.data.classes, model))


def check(project: str | Path, context: Mapping[str, Any]) -> dict[str, Any]:
    """One check of the live sample of the run's data interval: the decision, as the task's XCom."""
    from orchestration import live_drift, tasks

    project = Path(project)
    params = tasks.project_params(project)
    since, until = context["data_interval_start"], context["data_interval_end"]
    folder = project / params.serving.sample.dir
    parts = live_drift.parts_between(
        folder, live_drift.served_names(params.export.model_name), since.timestamp(), until.timestamp()
    )
    fleet = tasks.fleet(project, params)
    reference = served_reference(project, params, fleet)
    result = live_drift.check_sample(
        live_drift.read_parts(parts), reference, params.data, params.drift, params.airflow.live_drift.min_rows
    )
    labelled = labels_in(folder, params.export.model_name, since, until)
    accuracy = live_drift.labelled_reason(
        labelled, params.data.classes, params.gate.floors, params.airflow.live_drift.min_labels
    )
    decision = live_drift.decide([result.reason, accuracy])
    log.info("live drift check of %s .. %s (%d parts): %s", since, until, len(parts), decision.message)
    value: dict[str, Any] = {
        **decision.to_json(),
        "rows": result.rows,
        "parts": len(parts),
        "interval": [since.isoformat(), until.isoformat()],
        "reference": reference.tag,
        "metrics": result.metrics,
    }
    if fleet.dvc.remote is None:
        log.info("airflow.dvc_remote is not set: the reports are not kept")
    else:
        pages = {REPORT_PATH: result.report_html, LIVE_REPORT_PATH: live_page(folder, params)}
        outs = [{"path": path, "md5": write_object(fleet.dvc.remote, page.encode())} for path, page in pages.items()]
        value["lock"] = {"live_drift": {"outs": outs}}  # reports_ui reads it
    return value


def emit(checked: Mapping[str, Any], asset: Any, context: Mapping[str, Any]) -> dict[str, Any]:
    """Emit the asset event that starts the retrain DAG when the check asks for it; else skip."""
    from airflow.sdk.exceptions import AirflowSkipException

    if not checked.get("start"):
        raise AirflowSkipException(f"nothing starts: {checked.get('message')}")
    extra = {"message": checked["message"], "interval": checked["interval"], "rows": checked["rows"]}
    context["outlet_events"][asset].extra = extra
    log.info("starting the retrain DAG (event of %s): %s", asset, checked["message"])
    return extra
