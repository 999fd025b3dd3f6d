"""The human approval before a push, asked only in the runs that want it.

Whether a run asks is the Trigger form's `require_approval` (its default is
`airflow.require_approval` in params.yaml, which is also what scheduled and asset-triggered runs
use). A run that does not ask approves at once and says so in the task's log, so the graph is the
same for every run: gate -> approve -> push.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator


class RunApproval(ApprovalOperator):
    """Airflow's ApprovalOperator, asked only when the run's `require_approval` param is true."""

    def execute(self, context: Any) -> Any:
        if not context["params"].get("require_approval"):
            self.log.info("this run does not require approval (Trigger form: require_approval off): approved")
            return {"chosen_options": [self.APPROVE], "asked": False}
        return super().execute(context)
