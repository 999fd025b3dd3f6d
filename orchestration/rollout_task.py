"""The rollout in the retrain DAG (params `rollout.mode` shadow or canary): the push task starts it
(orchestration/rollout_start.py), and the `rollout` task watches it to its end without holding a
worker slot.

The rollout task (`RolloutOperator`):
1. asks a person, through Airflow's human-in-the-loop form on the task (options Promote and Abort),
   and keeps the form open for the whole rollout: an answer at any point resumes the task at once
   (Airflow resumes a deferred task with the answer) and overrides the automatic decision;
2. defers to a RolloutTrigger (orchestration/rollout_trigger.py), which reads Triton's metrics in
   the triggerer and fires when the test has decided something;
3. on resume, does it on the worker: the next canary step (then defers again), promote or roll back
   (serving/rollout/operations.py: the same transactions as a push and a rollback), or waits for the
   person (a limit with `on_limit: wait`);
4. ends with the outcome: its value (the push's, with `rollout`) tells publish whether there is
   anything to publish, and the served-model asset event carries the outcome.

While it runs, the task's XCom `rollout` holds the state and the metrics URL: the Reports page
(orchestration/rollout_page.py) draws the live comparison from them.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

from orchestration.reports_ui import ROLLOUT_KEY
from orchestration.run_values import PushedVersion, ServedEvent

log = logging.getLogger(__name__)

PROMOTE, ABORT = "Promote", "Abort"
XCOM_KEY = ROLLOUT_KEY  # the Reports page reads the state from there


class RolloutOperator(BaseOperator):
    """Watch the rollout the push started, in the triggerer; promote or roll back on the worker."""

    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        project: str | Path,
        conn_id: str,
        push_task: str = "push",
        response_timeout: dt.timedelta = dt.timedelta(hours=72),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.project, self.conn_id, self.push_task = str(project), conn_id, push_task
        self.response_timeout = response_timeout

    # --- settings -------------------------------------------------------------------------------
    def _settings(self) -> tuple[Any, Any]:
        from orchestration import tasks

        params = tasks.project_params(self.project)
        return params, tasks.serving_settings(self.project, self.conn_id, params)

    # --- the task -------------------------------------------------------------------------------
    def execute(self, context: Any) -> Any:
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail

        from serving.rollout.state import load_state

        pushed = PushedVersion.from_xcom(context["ti"].xcom_pull(task_ids=self.push_task))
        params, settings = self._settings()
        if pushed.rollout is None:  # nothing to roll out against: the push served it directly
            log.info("%s version %s was pushed directly; nothing to roll out", pushed.model, pushed.version)
            return self._finish(context, pushed, settings, None)
        state = load_state(settings.open_repository(), pushed.model)
        if state is None or state.id != pushed.rollout["id"]:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"the rollout {pushed.rollout['id']} the push started is not in the repository")
        upsert_hitl_detail(
            ti_id=context["task_instance"].id,
            options=[PROMOTE, ABORT],
            subject=f"Roll out {state.model} version {state.candidate}?",
            body=(
                f"A {state.mode} rollout of version {state.candidate} against version {state.champion} runs; the "
                "sequential test decides by itself, or choose now: **Promote** serves the candidate, **Abort** "
                "rolls it back. The task's Reports page shows the live comparison."
            ),
            multiple=False,
            params={},
        )
        return self._defer(context, state, settings)

    def _defer(self, context: Any, state: Any, settings: Any, waiting: bool = False) -> None:
        from orchestration.rollout_trigger import RolloutTrigger

        url = settings.client.metrics_url
        context["ti"].xcom_push(key=XCOM_KEY, value={"state": state.model_dump(mode="json"), "metrics_url": url})
        until = (dt.datetime.now(dt.UTC) + self.response_timeout).isoformat() if waiting else None
        sample = str(settings.sample_dir) if settings.sample_dir else None
        trigger = RolloutTrigger(state.model_dump(mode="json"), url or "", waiting_until=until, sample_dir=sample)
        self.defer(trigger=trigger, method_name="resume")

    def resume(self, context: Any, event: dict[str, Any]) -> Any:
        from serving.rollout import driver, operations
        from serving.rollout.state import load_state

        params, settings = self._settings()
        pushed = PushedVersion.from_xcom(context["ti"].xcom_pull(task_ids=self.push_task))
        name = pushed.model
        if "chosen_options" in event:  # a person answered the form
            who = (event.get("responded_by_user") or {}).get("name") or "a person"
            choice = (event.get("chosen_options") or [ABORT])[0]
            log.info("%s chose %s in the Airflow UI: this overrides the test", who, choice)
            decide = operations.promote if choice == PROMOTE else operations.roll_back
            final = decide(settings, name, "person", f"{choice} chosen by {who} in the Airflow UI")
            return self._finish(context, pushed, settings, final)
        state = operations.active_state(settings.open_repository(), name) if event["action"] != "lost" else None
        action = driver.Action(event["action"], event.get("decided_by", ""), event.get("reason", ""))
        log.info("the rollout's test: %s (%s) %s", action.kind, action.decided_by, action.reason)
        if action.kind == "lost":
            ended = load_state(settings.open_repository(), name)
            if ended is None or ended.active:
                from airflow.sdk.exceptions import AirflowFailException

                raise AirflowFailException(
                    f"the rollout of {name} is gone from Triton's metrics ({action.reason}) but not ended: start the "
                    "server again (python -m serving start ends it, serving the champion), or abort it "
                    "(python -m serving rollout abort)"
                )
            return self._finish(context, pushed, settings, ended)
        assert state is not None
        state = driver.apply(settings, state, action, event.get("snapshot") or {})
        if state.active:  # the next step, or waiting for the person
            return self._defer(context, state, settings, waiting=state.status == "waiting")
        self._close_form(context, state)
        return self._finish(context, pushed, settings, state)

    @staticmethod
    def _close_form(context: Any, state: Any) -> None:
        """The test decided: answer the form with the outcome, so that no one is asked any more."""
        from airflow.sdk.execution_time.hitl import update_hitl_detail_response

        chosen = [PROMOTE if state.status == "promoted" else ABORT]
        try:
            update_hitl_detail_response(ti_id=context["task_instance"].id, chosen_options=chosen, params_input={})
        except Exception as error:  # a person answered meanwhile: the outcome stands either way
            log.info("the form was not closed: %s", error)

    def _finish(self, context: Any, pushed: PushedVersion, settings: Any, state: Any) -> dict[str, Any]:
        """The outcome as the task's value and the served-model asset event."""
        outcome = None
        if state is not None:
            context["ti"].xcom_push(key=XCOM_KEY, value={"state": state.model_dump(mode="json"), "metrics_url": None})
            outcome = {
                "id": state.id,
                "mode": state.mode,
                "status": state.status,
                "decided_by": state.decided_by,
                "reason": state.reason,
                "champion": state.champion,
                "candidate": state.candidate,
            }
            serving = state.candidate if state.status == "promoted" else state.champion
            pushed = PushedVersion(
                pushed.model, pushed.version, serving, pushed.previous, pushed.created, pushed.seconds, outcome
            )
        if self.outlets:
            params, _ = self._settings()
            event = served_event(pushed, settings, context["run_id"], params.airflow.tag_prefix, outcome).to_xcom()
            for outlet in self.outlets:
                context["outlet_events"][outlet].extra = event
        return pushed.to_xcom()


def served_event(
    pushed: PushedVersion, settings: Any, run_id: str, tag_prefix: str, outcome: dict[str, Any] | None
) -> ServedEvent:
    """What serves now, from its stored model card, with the rollout's outcome."""
    version = pushed.serving if pushed.serving is not None else pushed.version
    card = settings.open_repository().card(pushed.model, version)
    metrics = (card.metrics.get("evaluate") if card else None) or {}
    return ServedEvent(
        model=pushed.model,
        version=version,
        previous=pushed.previous,
        created=pushed.created,
        git_tag=f"{tag_prefix}{version}",
        git_commit=card.git_commit if card else None,
        metrics=metrics if isinstance(metrics, dict) else {},
        data=card.data if card else {},
        run_id=run_id,
        rollout=outcome,
    )
