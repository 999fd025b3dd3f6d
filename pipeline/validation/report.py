"""The HTML validation report: summary, the columns' contract, every expectation, quarantine reasons."""

from __future__ import annotations

import html
from typing import Any

from pipeline.validation.results import CheckResult


def render_report(
    checks: list[CheckResult], summary: dict[str, Any], reasons: dict[str, int], columns: list[dict] | None = None
) -> str:
    """A self-contained HTML page: summary, the feature columns' contract (when any is categorical
    or has a missing-value policy), every expectation with its outcome, quarantine reasons."""
    esc = html.escape
    contract = ""
    if columns and any(c["type"] == "categorical" or c["missing"] != "quarantine" for c in columns):
        head = "".join(f"<th>{esc(k)}</th>" for k in columns[0])
        body = "".join(
            "<tr>"
            + "".join(f"<td>{esc(', '.join(v) if isinstance(v, list) else str(v))}</td>" for v in c.values())
            + "</tr>"
            for c in columns
        )
        contract = f"<h2>Columns (data contract)</h2><table><tr>{head}</tr>{body}</table>"

    def row(c: CheckResult) -> str:
        status = "pass" if c.success else ("quarantined" if c.row_level else "FAIL")
        return (
            f"<tr class='{status.lower()}'><td>{esc(c.view)}</td><td>{esc(c.name)}</td>"
            f"<td><code>{esc(c.expectation)}</code></td><td>{status}</td>"
            f"<td>{esc(str(c.observed)) if c.observed is not None else ''}</td>"
            f"<td>{c.unexpected_count}</td><td>{esc(', '.join(map(str, c.examples)))}</td></tr>"
        )

    summary_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in summary.items())
    reason_rows = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in reasons.items()) or (
        "<tr><td colspan=2>none</td></tr>"
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Data validation report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
tr.pass td:nth-child(4) {{ color: #17692b; }}
tr.fail td:nth-child(4) {{ color: #b00020; font-weight: bold; }}
tr.quarantined td:nth-child(4) {{ color: #a35c00; }}
</style></head><body>
<h1>Data validation report</h1>
<h2>Summary</h2><table>{summary_rows}</table>
{contract}<h2>Expectations (Great Expectations)</h2>
<table><tr><th>view</th><th>check</th><th>expectation</th><th>result</th><th>observed</th>
<th>unexpected</th><th>examples</th></tr>{"".join(row(c) for c in checks)}</table>
<h2>Quarantine reasons</h2><table><tr><th>reason</th><th>rows</th></tr>{reason_rows}</table>
</body></html>
"""
