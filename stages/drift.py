"""drift: compare the clean table with the data the serving model was trained on.

The reference (`--reference`) is the profile of that data: publish writes it, git-tracked, when a
version is served, so the next run compares with it. The project ships one with no profile: the
first run (nothing served yet) reports that there is no reference and passes. Writes the clean
table's own profile (`--profile`, what publish turns into the next reference), `metrics/drift.json`
(row count change, class balance shift, per-feature PSI: max, mean, drifted count, the top
features) and an HTML report. Features scoring above `drift.threshold`, or a class balance above
`drift.class_threshold`, are drift: reported with `drift.action: warn`, a failure with `fail`.

With `--novelty` (the novelty file of a served version, written by its novelty stage) every row of
the clean table also goes through that version's autoencoder, and the share of rows above its
threshold joins the metrics (`novelty`) and the report: a batch-level "how much of this data looks
like nothing the served model was trained on". A novelty file with the stage disabled adds nothing.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import atomic
from pipeline.drift import (
    BATCH_ROWS,
    DriftError,
    DriftReport,
    FeatureDrift,
    Profile,
    compare,
    novelty_line,
    novelty_sentence,
    profile,
)
from pipeline.params import DataParams, DriftParams
from pipeline.tables import feature_columns
from stages import _cli

log = logging.getLogger(__name__)


class DriftFailed(_cli.StageError):
    """Drift above the thresholds with `drift.action: fail`."""


@dataclass(frozen=True)
class Reference:
    profile: Profile | None
    tag: str | None  # the published version whose training data it profiles

    @classmethod
    def load(cls, path: str | Path) -> Reference:
        path = Path(path)
        if not path.exists():
            log.warning("%s does not exist: comparing with no reference", path)
            return cls(None, None)
        try:
            raw = json.loads(path.read_text())
            found = raw.get("profile")
            return cls(None if found is None else Profile.from_json(found), raw.get("tag"))
        except (ValueError, AttributeError, DriftError) as error:
            raise DriftError(
                f"{path}: not a reference profile ({error}). Restore it from git (`git checkout -- {path}`); "
                "publish writes it when a version is served"
            ) from None

    def to_json(self) -> dict[str, Any]:
        return {"tag": self.tag, "profile": None if self.profile is None else self.profile.to_json()}


@dataclass(frozen=True)
class DriftResult:
    profile: Profile
    report: DriftReport | None
    metrics: dict[str, Any]
    report_html: str

    @property
    def drifted(self) -> bool:
        return self.metrics["status"] == "drift"


def metrics_of(
    report: DriftReport | None, current: Profile, reference: Reference, params: DriftParams
) -> dict[str, Any]:
    base: dict[str, Any] = {"action": params.action, "rows": current.rows, "reference": reference.tag}
    if report is None:
        return {**base, "status": "no_reference"}
    drifted = report.drifted(params.threshold)
    class_shifted = report.class_psi > params.class_threshold
    return {
        **base,
        "status": "drift" if drifted or class_shifted else "ok",
        "reference_rows": report.reference_rows,
        "rows_change": report.rows_change,
        "rows_change_share": round(report.rows_change_share, 6),
        "class_psi": round(report.class_psi, 6),
        "class_tvd": round(report.class_tvd, 6),
        "class_threshold": params.class_threshold,
        "class_shifted": class_shifted,
        "features": len(report.features),
        "threshold": params.threshold,
        "drifted_features": len(drifted),
        "max_psi": round(report.max_psi, 6),
        "mean_psi": round(report.mean_psi, 6),
        "top": {f.feature: round(f.psi, 6) for f in report.features[: params.top_n]},
    }


def score_novelty(clean: str | Path, features: list[str], novelty_file: str | Path) -> dict[str, Any] | None:
    """The novelty line of the clean table under a served version's autoencoder; None when that
    version was exported without one (or no version is served yet). Reads a row group at a time."""
    import numpy as np

    from pipeline import parts
    from pipeline.novelty_format import is_disabled

    if not Path(novelty_file).exists():
        log.warning("%s does not exist: no novelty line (no served version with a novelty output)", novelty_file)
        return None
    if is_disabled(novelty_file):  # the served version has no autoencoder: no torch import at all
        return None
    from pipeline import autoencoder  # torch: only for an enabled novelty file

    model, blob = autoencoder.load(novelty_file)
    if model is None:
        return None
    if model.config.n_features != len(features):
        raise DriftError(
            f"{novelty_file}: its autoencoder takes {model.config.n_features} features, the clean table has "
            f"{len(features)}; pass the novelty file of a version trained on this data contract"
        )
    threshold = float(blob["threshold"])
    found = []
    for batch in parts.iter_batches(clean, features, BATCH_ROWS):
        x = np.column_stack([batch.column(i).to_numpy(zero_copy_only=False) for i in range(len(features))])
        found.append(autoencoder.errors(model, x) / threshold)
    ratios = np.concatenate(found) if found else np.zeros(0)
    return novelty_line(ratios, float(blob["metrics"]["quantile"]), Path(novelty_file).as_posix())


def run(
    clean: str | Path,
    reference: Reference,
    contract: DataParams,
    params: DriftParams,
    novelty_file: str | Path | None = None,
) -> DriftResult:
    """Profile the clean table and compare it with the reference (when there is one); with a
    novelty file, add the share of rows above its threshold."""
    import pyarrow as pa

    from pipeline import parts

    try:
        schema = parts.schema(clean)
    except (OSError, ValueError, parts.PartsError) as error:
        raise DriftError(f"{clean}: cannot read as Parquet ({error}); rerun clean") from None
    # Numeric features only: categorical columns (text) have no quantile bins.
    numeric = {f.name for f in schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)}
    features = [name for name in feature_columns(schema.names, contract) if name in numeric]
    current, on_reference = profile(clean, contract.label, features, params.bins, params.sample_rows, reference.profile)
    report = None if reference.profile is None else compare(reference.profile, current, on_reference)
    metrics = metrics_of(report, current, reference, params)
    if novelty_file is not None and (line := score_novelty(clean, features, novelty_file)) is not None:
        metrics["novelty"] = line
    return DriftResult(current, report, metrics, render_report(metrics, report, params))


def failure_message(metrics: dict[str, Any]) -> str:
    top = ", ".join(f"{name} {value:.3f}" for name, value in metrics["top"].items() if value > metrics["threshold"])
    parts = []
    if metrics["drifted_features"]:
        parts.append(f"{metrics['drifted_features']} feature(s) drifted above PSI {metrics['threshold']} ({top})")
    if metrics["class_shifted"]:
        parts.append(f"the class balance shifted (PSI {metrics['class_psi']:.3f} > {metrics['class_threshold']})")
    return (
        f"the data drifted from the reference ({metrics['reference'] or 'the published reference'}): "
        + "; ".join(parts)
        + ". If the shift is expected, run once with drift.action: warn (or a higher "
        "drift.threshold); the next published model makes this data the reference."
    )


# --- the HTML report ----------------------------------------------------------------------------
def _bars(feature: FeatureDrift, width: int = 160, height: int = 36) -> str:
    """Reference (grey) and current (blue) bin shares side by side, as an inline SVG."""
    n = len(feature.reference)
    top = max([*feature.reference, *feature.current, 1e-9])
    slot = width / n
    rects = []
    for i, (ref, cur) in enumerate(zip(feature.reference, feature.current, strict=True)):
        for j, (share, colour) in enumerate(((ref, "#9e9e9e"), (cur, "#1565c0"))):
            h = height * share / top
            rects.append(
                f"<rect x='{i * slot + j * slot / 2:.1f}' y='{height - h:.1f}' width='{slot / 2 - 0.5:.1f}' "
                f"height='{h:.1f}' fill='{colour}'/>"
            )
    return f"<svg width='{width}' height='{height}' role='img'>{''.join(rects)}</svg>"


def render_report(metrics: dict[str, Any], report: DriftReport | None, params: DriftParams) -> str:
    esc = html.escape
    summary = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in metrics.items() if k not in ("top", "novelty")
    )
    if "novelty" in metrics:
        summary += f"<tr><th>novelty</th><td>{esc(novelty_sentence(metrics['novelty']))}</td></tr>"
    if report is None:
        body = (
            "<p class='none'>No reference yet: no model has been published, so there is nothing to compare "
            "with. Publishing a version makes the profile of its training data the reference of the next run.</p>"
        )
    else:
        classes = "".join(
            f"<tr><td>{esc(c)}</td><td>{r:.4f}</td><td>{s:.4f}</td><td>{s - r:+.4f}</td></tr>"
            for c, (r, s) in report.class_shares.items()
        )
        features = "".join(
            f"<tr class='{'drift' if f.psi > params.threshold else 'ok'}'><td>{esc(f.feature)}</td>"
            f"<td>{f.psi:.4f}</td><td>{'DRIFT' if f.psi > params.threshold else 'ok'}</td><td>{_bars(f)}</td></tr>"
            for f in report.features[: params.top_n]
        )
        body = f"""
<h2>Class balance</h2>
<p>PSI {report.class_psi:.4f} (the balance counts as shifted above {params.class_threshold}); total variation {report.class_tvd:.4f}
(the share of rows that would have to change class to match).</p>
<table><tr><th>class</th><th>reference share</th><th>current share</th><th>change</th></tr>{classes}</table>
<h2>Top {min(params.top_n, len(report.features))} drifting features (of {len(report.features)})</h2>
<p>Population stability index over {params.bins} quantile bins of the reference: below 0.1 no real
change, 0.1 to 0.25 moderate, above 0.25 large; drift above {params.threshold}. Bars: bin shares,
<span style='color:#757575'>reference</span> vs <span style='color:#1565c0'>current</span>.</p>
<table><tr><th>feature</th><th>PSI</th><th>result</th><th>bins</th></tr>{features}</table>"""
    status = metrics["status"]
    verdict = {
        "ok": "no drift above the thresholds",
        "no_reference": "no reference yet: passed",
        "drift": f"DRIFT ({'the run stops' if params.action == 'fail' else 'warning only'})",
    }[status]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Data drift report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: middle; }}
tr.ok td:nth-child(3) {{ color: #17692b; }}
tr.drift td:nth-child(3), .drift {{ color: #b00020; font-weight: bold; }}
.ok, .no_reference {{ color: #17692b; }}
</style></head><body>
<h1>Data drift report</h1>
<p class='{esc(status)}'>{esc(verdict)}</p>
<h2>Summary</h2><table>{summary}</table>
{body}
</body></html>
"""


def main() -> None:
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--clean", required=True, help="clean table (Parquet)")
    p.add_argument("--reference", required=True, help="reference profile (JSON, git-tracked; written by publish)")
    p.add_argument("--profile", required=True, help="where to write this table's profile (JSON)")
    p.add_argument("--metrics", required=True, help="JSON metrics file")
    p.add_argument("--report", required=True, help="HTML drift report")
    p.add_argument("--novelty", help="novelty file of a served version: adds the share of rows above its threshold")

    def body(args, params):
        result = run(args.clean, Reference.load(args.reference), params.data, params.drift, args.novelty)
        metrics = result.metrics
        if result.drifted and params.drift.action == "fail":
            # The report alone, for reading: DVC records no outputs of a failed stage.
            atomic.write_text(args.report, result.report_html)
            raise DriftFailed(f"{failure_message(metrics)} (report: {args.report})")
        if result.drifted:
            log.warning("drift (action: warn): %s", failure_message(metrics))
        atomic.write_json(args.profile, result.profile.to_json())
        atomic.write_text(args.report, result.report_html)
        atomic.write_json(args.metrics, metrics)
        log.info("drift %s: %s", metrics["status"], {k: v for k, v in metrics.items() if k != "top"})

    _cli.main("drift", body, p.parse_args())


if __name__ == "__main__":
    main()
