"""A small client for Airflow's REST API (`/api/v2`): health, DAGs, runs and task instances.

Enough for `python -m devtools cluster status` and for tests that drive a real scheduler:
unpause a DAG, trigger a run, poll it, read its task instances, their XComs and logs, clear a
task. Standard library only. The token comes from `GET /auth/token`, which the simple auth
manager with `simple_auth_manager_all_admins` hands out without credentials (a local cluster);
a deployment with users logs in (`login`) or passes its own token.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

FINISHED = ("success", "failed")


class AirflowApiError(RuntimeError):
    """The API answered with an error status, or not at all."""


@dataclass
class AirflowApi:
    base_url: str  # e.g. http://127.0.0.1:8090
    token: str | None = None
    timeout_s: float = 30.0
    _cached_token: str | None = field(default=None, repr=False)

    # --- plumbing ---------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self._token()}"
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - configured URL
                raw = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise AirflowApiError(f"{method} {path}: HTTP {error.code}: {detail}") from error
        except (urllib.error.URLError, OSError) as error:
            raise AirflowApiError(f"{method} {path}: {self.base_url} unreachable ({error})") from error
        if not raw:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw.decode(errors="replace")

    def _token(self) -> str:
        if self.token:
            return self.token
        if self._cached_token is None:
            self._cached_token = self._request("GET", "/auth/token", auth=False)["access_token"]
        return self._cached_token

    def login(self, username: str, password: str) -> str:
        """A token for a user of the simple auth manager (`POST /auth/token`); later calls use it."""
        self.token = self._request("POST", "/auth/token", {"username": username, "password": password}, auth=False)[
            "access_token"
        ]
        return self.token

    @staticmethod
    def _q(value: str) -> str:
        return urllib.parse.quote(value, safe="")

    # --- calls ------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Metadatabase, scheduler, triggerer and dag-processor status (`healthy` each)."""
        return self._request("GET", "/api/v2/monitor/health", auth=False)

    def dag(self, dag_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v2/dags/{self._q(dag_id)}")

    def task_ids(self, dag_id: str) -> list[str]:
        """The task ids of the DAG as the dag-processor last stored it (a re-parse changes them)."""
        return [t["task_id"] for t in self._request("GET", f"/api/v2/dags/{self._q(dag_id)}/tasks")["tasks"]]

    def set_pool_slots(self, pool: str, slots: int) -> dict[str, Any]:
        body = {"pool": pool, "slots": slots, "include_deferred": False}  # the API wants the whole pool
        return self._request("PATCH", f"/api/v2/pools/{self._q(pool)}?update_mask=slots", body)

    def set_paused(self, dag_id: str, paused: bool) -> dict[str, Any]:
        return self._request("PATCH", f"/api/v2/dags/{self._q(dag_id)}", {"is_paused": paused})

    def trigger(self, dag_id: str, run_id: str, logical_date: str | None, conf: dict | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"dag_run_id": run_id, "logical_date": logical_date, "conf": conf or {}}
        return self._request("POST", f"/api/v2/dags/{self._q(dag_id)}/dagRuns", body)

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v2/dags/{self._q(dag_id)}/dagRuns/{self._q(run_id)}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{self._q(dag_id)}/dagRuns/{self._q(run_id)}/taskInstances?limit=1000"
        return self._request("GET", path)["task_instances"]

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every try of one task instance (a retried or cleared task has several)."""
        path = f"/api/v2/dags/{self._q(dag_id)}/dagRuns/{self._q(run_id)}/taskInstances/{self._q(task_id)}/tries"
        return self._request("GET", path)["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """One XCom value (None when there is none); `map_index`: an instance of a mapped task."""
        path = (
            f"/api/v2/dags/{self._q(dag_id)}/dagRuns/{self._q(run_id)}/taskInstances/{self._q(task_id)}"
            f"/xcomEntries/{self._q(key)}?deserialize=true&map_index={map_index}"
        )
        try:
            return self._request("GET", path)["value"]
        except AirflowApiError as error:
            if "HTTP 404" in str(error):
                return None
            raise

    def log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """The text of one try's log (the structured lines joined); `map_index`: a mapped task's instance."""
        path = (
            f"/api/v2/dags/{self._q(dag_id)}/dagRuns/{self._q(run_id)}/taskInstances/{self._q(task_id)}"
            f"/logs/{try_number}?full_content=true&map_index={map_index}"
        )
        content = self._request("GET", path)
        lines = content.get("content", []) if isinstance(content, dict) else [content]
        out = []
        for line in lines:
            if isinstance(line, dict):
                out.append(str(line.get("event", "")))
            else:
                out.append(str(line))
        return "\n".join(out)

    def clear(self, dag_id: str, run_id: str, task_ids: list[str], downstream: bool = True) -> Any:
        """Clear task instances of one run (an operator's re-run), with their downstream tasks."""
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": task_ids,
            "include_downstream": downstream,
            "only_failed": False,
            "reset_dag_runs": True,
        }
        return self._request("POST", f"/api/v2/dags/{self._q(dag_id)}/clearTaskInstances", body)

    def respond(self, dag_id: str, run_id: str, task_id: str, options: list[str]) -> dict[str, Any]:
        """A person's answer to a task's human-in-the-loop form (what the Required Action tab sends)."""
        path = (
            f"/api/v2/dags/{self._q(dag_id)}/dagRuns/{self._q(run_id)}/taskInstances/{self._q(task_id)}/-1/hitlDetails"
        )
        return self._request("PATCH", path, {"chosen_options": options})

    def get_page(self, path: str) -> str:
        """A page of the api-server (a plugin's app), as this client's user sees it."""
        return self._request("GET", path)

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/api/v2/dags/{self._q(dag_id)}/dagRuns?limit=100")["dag_runs"]

    def asset(self, name: str) -> dict[str, Any]:
        """The asset named `name` (or with that URI), as the scheduler registered it."""
        assets = self._request("GET", f"/api/v2/assets?name_pattern={self._q(name)}&limit=100")["assets"]
        found = [a for a in assets if name in (a["name"], a["uri"])]
        if not found:
            raise AirflowApiError(f"no asset {name!r} (is the DAG that uses it parsed?)")
        return found[0]

    def create_asset_event(self, asset_id: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """What a data producer does: record new data for the asset, which triggers its consumers."""
        return self._request("POST", "/api/v2/assets/events", {"asset_id": asset_id, "extra": extra or {}})

    def asset_events(self, asset_id: int) -> list[dict[str, Any]]:
        return self._request("GET", f"/api/v2/assets/events?asset_id={asset_id}&limit=100")["asset_events"]

    def asset_state(self, asset_id: int) -> dict[str, Any]:
        """The asset's state store (what its watchers and tasks keep between runs), key -> value."""
        entries = self._request("GET", f"/api/v2/assets/{asset_id}/state-store?limit=100")["asset_state_store"]
        return {entry["key"]: entry["value"] for entry in entries}

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float, poll_s: float = 3.0) -> dict[str, Any]:
        """Poll a run until it finishes; raises TimeoutError with the task states when it does not."""
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.run(dag_id, run_id)
            if run["state"] in FINISHED:
                return run
            if time.monotonic() > deadline:
                states = {t["task_id"]: t["state"] for t in self.task_instances(dag_id, run_id)}
                raise TimeoutError(f"run {run_id} still {run['state']} after {timeout_s:.0f}s: {states}")
            time.sleep(poll_s)
