"""Data drift: how far a new data version is from the data the serving model was trained on.

A `Profile` summarises a table in plain data (JSON-able): its row count, its class counts and, per
feature, bin edges placed at the quantiles of that table with the count of rows in each bin. The
profile of the data a served model was trained on is its *reference*; a new table is binned on the
reference's edges and compared with it:

- rows: the change in row count, absolute and relative;
- class balance: each class's share before and after, their population stability index (PSI) and
  total variation distance (half the sum of absolute share differences, 0..1);
- features: the PSI of each feature's bin shares, sum((cur - ref) * ln(cur / ref)). By the usual
  rule of thumb a PSI under 0.1 is no real change, 0.1 to 0.25 a moderate one, above 0.25 a large
  one. Empty bins count as a share of `EPSILON` so that a bin appearing or emptying scores high
  instead of infinite.

A table is read one Parquet row group (and batch) at a time, twice: once to count rows and classes
and take an evenly spaced sample for the quantile edges (at most `sample_rows` rows), once to count
every row into the bins. Memory is bounded by the sample and one batch, whatever the table's size.
Torch-free: the drift stage and the gate import it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import parts
from pipeline.errors import StageError

EPSILON = 1e-4  # share given to an empty bin in the PSI (the usual choice; 1/EPSILON caps a bin's log ratio)
BATCH_ROWS = 65_536  # rows decoded at a time


class DriftError(StageError):
    """A profile cannot be made or compared (unreadable table or reference, different features)."""


@dataclass(frozen=True)
class FeatureBins:
    """Right-closed bins: bin 0 is (-inf, edges[0]], bin i is (edges[i-1], edges[i]], the last is
    (edges[-1], inf). Edges are distinct, so a constant feature has a single edge and two bins."""

    edges: list[float]
    counts: list[int]

    def shares(self) -> np.ndarray:
        counts = np.asarray(self.counts, dtype=np.float64)
        return counts / max(counts.sum(), 1.0)


@dataclass(frozen=True)
class Profile:
    rows: int
    label: str
    classes: dict[str, int]  # class (as text: JSON keys are strings) -> rows
    features: dict[str, FeatureBins]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Profile:
        try:
            features = {name: FeatureBins(list(f["edges"]), list(f["counts"])) for name, f in raw["features"].items()}
            return cls(
                int(raw["rows"]), str(raw["label"]), {str(k): int(v) for k, v in raw["classes"].items()}, features
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise DriftError(f"not a data profile ({type(error).__name__}: {error})") from None


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    psi: float
    reference: list[float]  # bin shares of the reference
    current: list[float]  # bin shares of the new table, on the reference's edges


@dataclass(frozen=True)
class DriftReport:
    reference_rows: int
    rows: int
    class_shares: dict[str, tuple[float, float]]  # class -> (reference share, current share)
    class_psi: float
    class_tvd: float
    features: list[FeatureDrift] = field(default_factory=list)  # most drifting first

    @property
    def rows_change(self) -> int:
        return self.rows - self.reference_rows

    @property
    def rows_change_share(self) -> float:
        return self.rows_change / self.reference_rows if self.reference_rows else math.inf

    @property
    def max_psi(self) -> float:
        return self.features[0].psi if self.features else 0.0

    @property
    def mean_psi(self) -> float:
        return float(np.mean([f.psi for f in self.features])) if self.features else 0.0

    def drifted(self, threshold: float) -> list[FeatureDrift]:
        return [f for f in self.features if f.psi > threshold]


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    ref = np.clip(np.asarray(reference, dtype=np.float64), EPSILON, None)
    cur = np.clip(np.asarray(current, dtype=np.float64), EPSILON, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def bin_index(edges: Sequence[float], values: np.ndarray) -> np.ndarray:
    """Bin of each value on right-closed `edges` (see FeatureBins)."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")


def quantile_edges(sample: np.ndarray, bins: int) -> list[float]:
    """Distinct inner quantiles of `sample` (bins - 1 cut points, fewer for discrete values)."""
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return [0.0]
    cuts = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1], method="lower")
    return [float(v) for v in np.unique(cuts)] if cuts.size else [float(np.median(finite))]


# --- reading the table in bounded memory ---------------------------------------------------------
def _schema_and_rows(path: str | Path) -> tuple[list[str], int]:
    """The clean table's columns and row count (a folder of Parquet parts, or one file)."""
    try:
        return parts.schema(path).names, parts.num_rows(path)
    except (OSError, ValueError, parts.PartsError) as error:
        raise DriftError(f"{path}: cannot read as Parquet ({error}); rerun clean") from None


def _batches(path: str | Path, columns: list[str]) -> Iterator[dict[str, np.ndarray]]:
    for batch in parts.iter_batches(path, columns, BATCH_ROWS):
        yield {name: batch.column(name).to_numpy(zero_copy_only=False) for name in columns}


def profile(
    path: str | Path,
    label: str,
    features: Sequence[str],
    bins: int,
    sample_rows: int,
    on: Profile | None = None,
) -> tuple[Profile, dict[str, list[int]]]:
    """The profile of the Parquet table at `path`, with `bins` quantile bins per feature placed on
    an evenly spaced sample of at most `sample_rows` rows; and, when a reference profile is given
    `on`, the table's bin counts on the reference's edges (what `compare` needs)."""
    features = list(features)
    names, total = _schema_and_rows(path)
    missing = [c for c in [label, *features] if c not in names]
    if missing:
        raise DriftError(f"{path} has no column(s) {missing}; rerun clean")
    step = max(1, math.ceil(total / max(sample_rows, 1)))

    classes: Counter[str] = Counter()
    sample: dict[str, list[np.ndarray]] = {name: [] for name in features}
    seen = 0
    for batch in _batches(path, [label, *features]):
        classes.update(str(v) for v in batch[label].tolist())
        n = len(batch[label])
        picks = np.arange((-seen) % step, n, step)  # every step-th row of the whole table
        for name in features:
            picked = batch[name][picks].astype(np.float64)
            sample[name].append(picked[~np.isnan(picked)])  # a gap the transform fills has no bin
        seen += n

    edges = {
        name: quantile_edges(np.concatenate(sample[name]) if sample[name] else np.empty(0), bins) for name in features
    }
    del sample
    counts = {name: np.zeros(len(e) + 1, dtype=np.int64) for name, e in edges.items()}
    theirs = {} if on is None else {name: on.features[name].edges for name in features if name in on.features}
    on_counts = {name: np.zeros(len(e) + 1, dtype=np.int64) for name, e in theirs.items()}
    for batch in _batches(path, features):
        for name in features:
            values = batch[name].astype(np.float64)
            values = values[~np.isnan(values)]
            counts[name] += np.bincount(bin_index(edges[name], values), minlength=len(counts[name]))
            if name in on_counts:
                on_counts[name] += np.bincount(bin_index(theirs[name], values), minlength=len(on_counts[name]))

    result = Profile(
        rows=seen,
        label=label,
        classes=dict(sorted(classes.items())),
        features={name: FeatureBins(edges[name], counts[name].tolist()) for name in features},
    )
    return result, {name: c.tolist() for name, c in on_counts.items()}


def compare(reference: Profile, current: Profile, current_on_reference: Mapping[str, Sequence[int]]) -> DriftReport:
    """Rows, class balance and per-feature PSI of `current` against `reference`. The feature sets
    must match: a feature that appeared or vanished is a contract change, not drift."""
    ref_names, cur_names = set(reference.features), set(current.features)
    if ref_names != cur_names:
        raise DriftError(
            f"the features differ from the reference's: new {sorted(cur_names - ref_names)[:10]}, "
            f"gone {sorted(ref_names - cur_names)[:10]}. A changed data contract needs a new reference: "
            "publish a model trained on the new columns (the first run on them reports no reference)"
        )
    labels = list(dict.fromkeys([*reference.classes, *current.classes]))
    ref_classes = np.array([reference.classes.get(c, 0) for c in labels], dtype=np.float64)
    cur_classes = np.array([current.classes.get(c, 0) for c in labels], dtype=np.float64)
    ref_share = ref_classes / max(ref_classes.sum(), 1.0)
    cur_share = cur_classes / max(cur_classes.sum(), 1.0)

    drifts = []
    for name, bins in reference.features.items():
        counts = np.asarray(current_on_reference[name], dtype=np.float64)
        shares = counts / max(counts.sum(), 1.0)
        drifts.append(
            FeatureDrift(name, psi(bins.shares(), shares), bins.shares().round(6).tolist(), shares.round(6).tolist())
        )
    drifts.sort(key=lambda d: (-d.psi, d.feature))
    return DriftReport(
        reference_rows=reference.rows,
        rows=current.rows,
        class_shares={c: (float(r), float(s)) for c, r, s in zip(labels, ref_share, cur_share, strict=True)},
        class_psi=psi(ref_share, cur_share),
        class_tvd=float(0.5 * np.abs(ref_share - cur_share).sum()),
        features=drifts,
    )


# --- the novelty line ------------------------------------------------------------------------------
def novelty_line(ratios: np.ndarray, quantile: float, source: str) -> dict[str, Any]:
    """The batch-level novelty figures: the share of the table's rows whose novelty (reconstruction
    error / threshold of a served model's autoencoder) is above 1. Data like that model's training
    data gives about `1 - quantile`; many times that means rows unlike anything it learnt."""
    above = int(np.count_nonzero(ratios > 1.0))
    rows = len(ratios)
    return {
        "source": source,
        "rows": rows,
        "above_threshold": above,
        "share_above_threshold": round(above / rows, 6) if rows else 0.0,
        "expected_share": round(1.0 - quantile, 6),
    }


def novelty_sentence(line: Mapping[str, Any]) -> str:
    return (
        f"{100 * line['share_above_threshold']:.1f}% of rows ({line['above_threshold']} of {line['rows']}) above the "
        f"novelty threshold of {line['source']} (about {100 * line['expected_share']:.1f}% expected of familiar data)"
    )


# --- the summary the gate shows ------------------------------------------------------------------
def summary_markdown(metrics: Mapping[str, Any]) -> str:
    """A few Markdown lines from the drift stage's metrics (metrics/drift.json), for the gate's
    report and the approval page."""
    status = metrics.get("status")
    if status == "no_reference":
        text = f"**Data drift:** no reference yet (nothing published); {metrics.get('rows')} rows."
        return text + (f"\n\n- novelty: {novelty_sentence(metrics['novelty'])}" if "novelty" in metrics else "")
    head = {"ok": "no drift above the thresholds", "drift": f"DRIFT (drift.action: {metrics.get('action')})"}.get(
        str(status), str(status)
    )
    reference = metrics.get("reference") or "the published reference"
    lines = [
        f"**Data drift** against the training data of {reference}: {head}",
        "",
        f"- rows: {metrics['rows']} (reference {metrics['reference_rows']}, "
        f"{metrics['rows_change']:+d}, {100 * metrics['rows_change_share']:+.1f}%)",
        f"- class balance: PSI {metrics['class_psi']:.4f} (threshold {metrics['class_threshold']}), "
        f"total variation {metrics['class_tvd']:.4f}",
        f"- features: {metrics['drifted_features']} of {metrics['features']} above PSI {metrics['threshold']}; "
        f"max {metrics['max_psi']:.4f}, mean {metrics['mean_psi']:.4f}",
    ]
    top = list(metrics.get("top", {}).items())[:5]
    if top:
        lines.append("- top: " + ", ".join(f"{name} {value:.3f}" for name, value in top))
    if "novelty" in metrics:
        lines.append(f"- novelty: {novelty_sentence(metrics['novelty'])}")
    return "\n".join(lines)
