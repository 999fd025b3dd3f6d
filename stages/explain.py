"""explain: integrated-gradients explanations of the trained torch model, as an HTML report.

Reads the model file train wrote (the PyTorch model, not the exported ONNX: Captum needs its
gradients) and the test split. Writes `reports/explain.html`, one file with its images embedded:
for image rows, an attribution map next to the input for `explain.rows_per_class` test rows of each
class; for tabular rows, the mean absolute attribution per feature over up to `explain.max_rows`
test rows; for both, the `explain.confused_pairs` class pairs the model confuses most, with example
rows. `metrics/explain.json` holds the completeness error of the attributions (how far they are from
adding up to the logit change they explain). evaluate stays torch-free; this stage is its own.
With `explain.enabled: false` the report says so and nothing is computed (torch is not imported).
"""

from __future__ import annotations

import base64
import html
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline import atomic
from pipeline.params import DataParams, ExplainParams
from stages import _cli

if TYPE_CHECKING:
    from pipeline.rows import Rows

log = logging.getLogger(__name__)

TOP_FEATURES = 3  # features named for each example row of a table model


@dataclass(frozen=True)
class Explanation:
    metrics: dict[str, Any]
    report_html: str


def run(
    model_path: str | Path, test: Rows | None, features: list[str], data: DataParams, params: ExplainParams
) -> Explanation:
    """Attributions and confusions of the model file on the test rows; the report and its metrics."""
    if not params.enabled:
        return Explanation({"enabled": False}, render_off())
    if test is None:
        raise ValueError("explain.enabled needs the test rows")
    from pipeline import explain
    from pipeline.models import load_model

    model, blob = load_model(model_path)
    config = blob["config"]
    classes = list(data.classes)
    if list(config.classes) != classes or config.n_features != len(features):
        raise _cli.StageError(
            f"{model_path} predicts classes {list(config.classes)} from {config.n_features} features, but the data "
            f"has classes {classes} and {len(features)} features; retrain (dvc repro train)"
        )
    x = test.float32()
    probabilities = _softmax(explain.logits(model, x))
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(x)), predicted]
    pairs = explain.confused_pairs(test.y, predicted, confidence, params.confused_pairs, params.examples_per_pair)
    image = config.image_shape is not None
    shown = (
        explain.rows_per_class(test.y, len(classes), params.rows_per_class)
        if image
        else explain.evenly_spaced(len(x), params.max_rows)
    )
    examples = [i for pair in pairs for i in pair.rows]
    picked = np.unique(np.concatenate([shown, np.array(examples, np.int64)]))
    found = explain.integrated_gradients(model, x[picked], predicted[picked], params.n_steps)
    at = {int(row): k for k, row in enumerate(picked)}  # test position -> row of `found`
    metrics = {
        "enabled": True,
        "test_rows": len(x),
        "misclassified": int((predicted != test.y).sum()),
        "rows_explained": len(picked),
        "n_steps": params.n_steps,
        "completeness_max_abs_delta": round(float(np.abs(found.delta).max()), 8),
        "completeness_mean_abs_delta": round(float(np.abs(found.delta).mean()), 8),
        # the error as a share of the attributions' total size: a change near zero can hide large ones
        "completeness_max_delta_share": round(
            float((np.abs(found.delta) / np.maximum(np.abs(found.values).sum(axis=1), 1e-12)).max()), 8
        ),
    }
    page = Page(test, features, classes, data, predicted, confidence, found, at, config.image_shape)
    body = page.image_maps(shown) if image else page.feature_importance(shown)
    report = render_report(metrics, config.arch, body + page.confusions(pairs, image))
    log.info("explained %d test rows: %s", len(picked), metrics)
    return Explanation(metrics, report)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --- the HTML report ----------------------------------------------------------------------------
def png(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> str:
    """An `<img>` of a 2-D array, embedded as a base64 PNG (one pixel per value, scaled up sharply)."""
    from matplotlib import image

    buffer = io.BytesIO()
    image.imsave(buffer, values, cmap=cmap, vmin=vmin, vmax=vmax, format="png")
    data = base64.b64encode(buffer.getvalue()).decode()
    return f"<img class='map' src='data:image/png;base64,{data}' alt='{cmap}'>"


@dataclass(frozen=True)
class Page:
    test: Rows
    features: list[str]
    classes: list
    data: DataParams
    predicted: np.ndarray
    confidence: np.ndarray
    found: Any  # pipeline.explain.Attributions (torch-side module, imported lazily)
    at: dict[int, int]  # test row -> its row in `found`
    shape: tuple[int, int] | None  # (height, width) of image rows, from the model's config

    def name(self, k: int) -> str:
        return html.escape(str(self.classes[k]))

    def figure(self, row: int) -> str:
        """Input and attribution map of one test row, with what the model said."""
        assert self.shape is not None, "figures are drawn for image rows only"
        h, w = self.shape
        k = self.at[row]
        values = self.found.values[k].reshape(h, w)
        bound = float(np.abs(values).max()) or 1.0
        lo, hi = self.data.value_range or (float(self.test.x[row].min()), float(self.test.x[row].max()))
        pixels = self.test.x[row].astype(np.float32).reshape(h, w)
        return (
            f"<figure>{png(pixels, 'gray_r', lo, hi)}{png(values, 'bwr', -bound, bound)}"
            f"<figcaption>test row {row}: class {self.name(int(self.test.y[row]))}, predicted "
            f"{self.name(int(self.predicted[row]))} ({self.confidence[row]:.2f})<br>"
            f"completeness error {self.found.delta[k]:+.2g} of {self.found.gap[k]:.3g}</figcaption></figure>"
        )

    def image_maps(self, shown: np.ndarray) -> str:
        rows = []
        for k in range(len(self.classes)):
            mine = [int(i) for i in shown if self.test.y[i] == k]
            cells = "".join(self.figure(i) for i in mine) or "<p>no test rows of this class</p>"
            rows.append(f"<tr><th>class {self.name(k)}</th><td>{cells}</td></tr>")
        return f"""
<h2>Attribution maps, {len(shown)} test rows</h2>
<p>Each pair: the input (dark = high value) and its integrated-gradients map for the class the model
predicted. <span style='color:#b2182b'>Red</span> pixels raised that class's score compared with a blank
image, <span style='color:#2166ac'>blue</span> ones lowered it; each map is scaled to its own largest
value, so compare shapes, not brightness between maps. Against a blank image only inked pixels can
carry attribution: a map shows which strokes decided, not which missing strokes did.</p>
<table>{"".join(rows)}</table>"""

    def feature_importance(self, shown: np.ndarray) -> str:
        ranks = [self.at[int(i)] for i in shown]
        mean = np.abs(self.found.values[ranks]).mean(axis=0)
        order = np.argsort(-mean, kind="stable")
        top = float(mean[order[0]]) or 1.0
        rows = "".join(
            f"<tr><td>{n + 1}</td><td>{html.escape(self.features[j])}</td><td>{mean[j]:.4g}</td>"
            f"<td><div class='bar' style='width:{160 * mean[j] / top:.0f}px'></div></td></tr>"
            for n, j in enumerate(order)
        )
        return f"""
<h2>Features by mean |attribution|, over {len(shown)} test rows</h2>
<p>How much each feature moved the predicted class's score (logit) away from the score of the mean
training row, on average and whatever the direction. A feature near the bottom barely matters to
this model; one at the top is where a data problem would hurt most.</p>
<table><tr><th>rank</th><th>feature</th><th>mean |attribution|</th><th></th></tr>{rows}</table>"""

    def table_example(self, row: int) -> str:
        k = self.at[row]
        strongest = np.argsort(-np.abs(self.found.values[k]), kind="stable")[:TOP_FEATURES]
        named = "; ".join(
            f"{html.escape(self.features[j])} = {self.test.x[row, j]:.4g} ({self.found.values[k, j]:+.3g})"
            for j in strongest
        )
        return (
            f"<tr><td>{row}</td><td>{self.confidence[row]:.2f}</td><td>{named}</td>"
            f"<td>{self.found.delta[k]:+.2g}</td></tr>"
        )

    def confusions(self, pairs: list, image: bool) -> str:
        if not pairs:
            return "<h2>Confused class pairs</h2><p>No test row was misclassified.</p>"
        parts = [
            "<h2>Most confused class pairs</h2><p>Test rows of one class predicted as another, the most "
            "confident mistakes first; each explained for the class the model (wrongly) chose.</p>"
        ]
        for pair in pairs:
            title = f"class {self.name(pair.actual)} predicted as {self.name(pair.predicted)}: {pair.count} test row(s)"
            if image:
                parts.append(f"<h3>{title}</h3><div>{''.join(self.figure(i) for i in pair.rows)}</div>")
            else:
                rows = "".join(self.table_example(i) for i in pair.rows)
                parts.append(
                    f"<h3>{title}</h3><table><tr><th>test row</th><th>confidence</th>"
                    f"<th>strongest features: value (attribution)</th><th>completeness error</th></tr>{rows}</table>"
                )
        return "".join(parts)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; }
table { border-collapse: collapse; margin-bottom: 2em; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: middle; }
figure { display: inline-block; margin: 0 12px 8px 0; }
figcaption { font-size: 0.8em; color: #444; max-width: 200px; }
img.map { width: 96px; height: 96px; image-rendering: pixelated; border: 1px solid #ccc; margin-right: 2px; }
div.bar { height: 10px; background: #1565c0; }
"""


def render_report(metrics: dict[str, Any], arch: str, body: str) -> str:
    esc = html.escape
    summary = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in {"model": arch, **metrics}.items()
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Model explanations</title>
<style>{STYLE}</style></head><body>
<h1>Model explanations</h1>
<p>Integrated gradients ({metrics["n_steps"]} steps) of the trained PyTorch model on the test split. The
attributions of a row add up to the change of the explained logit from the baseline (a blank image, or
the mean training row of a table); the completeness error is how far the computed ones miss that sum.
An error that is not small next to the attributions themselves (completeness_max_delta_share, as a
share of their absolute sum) means too few steps: raise explain.n_steps.</p>
<h2>Summary</h2><table>{summary}</table>
{body}
</body></html>
"""


def render_off() -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Model explanations</title>
<style>{STYLE}</style></head><body>
<h1>Model explanations</h1>
<p>Explanations are off (explain.enabled: false in params.yaml): nothing was computed.</p>
</body></html>
"""


def main() -> None:
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model file written by train")
    _cli.add_split_inputs(p)
    p.add_argument("--metrics", required=True, help="JSON metrics file (completeness error)")
    p.add_argument("--report", required=True, help="HTML explanation report")

    def body(args, params):
        # Off (the default): no table is read, and neither pandas nor torch is imported.
        test, features = rows(args, params) if params.explain.enabled else (None, [])
        result = run(args.model, test, features, params.data, params.explain)
        atomic.write_json(args.metrics, result.metrics)
        atomic.write_text(args.report, result.report_html)

    def rows(args, params):
        """The test rows and their feature names, as the model takes them."""
        from pipeline.rows import Rows, SplitTable

        table = SplitTable.open(args.clean, args.split, params.data)
        test = table.split_rows("test") if not table.mixed else Rows(np.zeros((0, 0)), np.zeros(0, np.int64))
        features = table.features
        if table.mixed:
            # A mixed table's model takes the encoded rows: attribute to its encoded features
            # (each category's one-hot slot, each "was missing" flag), with the model's own transform.
            from pipeline import transform
            from pipeline.models import load_model

            fitted = transform.check(load_model(args.model)[1].get("transform"))
            raw = table.raw_rows(test=table.splits == "test")["test"]
            test, features = Rows(transform.encode(fitted, raw), raw.y), transform.feature_names(fitted)
        return test, features

    _cli.main("explain", body, p.parse_args())


if __name__ == "__main__":
    main()
