"""Why a task ended without a result, kept where the reports page can read it.

A task that fails or is skipped returns nothing, so its XCom `return_value` never appears; its
reports page would only know that there is no result. Before it raises, a task records its outcome
as the XCom `ending`: the state, the reason in the words of its error, and for a rejecting gate
the whole decision (reason, metric diff, drift summary).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

KEY = "ending"


def record(context: Mapping[str, Any], state: str, reason: str, **details: Any) -> None:
    """Keep this task's outcome (`state`: "failed", "rejected", ...) as its XCom `ending`."""
    context["ti"].xcom_push(key=KEY, value={"state": state, "reason": reason, **details})
