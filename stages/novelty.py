"""novelty: train an autoencoder on the train split; threshold its error on the validation split.

Writes the autoencoder file (config, weights, threshold, metrics) that export folds into the served
model as its second output, and `metrics/novelty.json`: the reconstruction error per split (mean,
median, 99th percentile), the threshold (`novelty.quantile` of the validation errors) and the share
of each split's rows above it. The test rows are the only ones neither trained on nor used for the
threshold: their share is what to expect of new data like the training data (about
1 - quantile). With `novelty.enabled: false` it writes a small JSON file saying so and no model,
without importing torch (a Python start, well under a second of CPU), and export serves the
classifier alone.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import atomic, novelty_format
from pipeline.params import DataParams, NoveltyParams, Params
from stages import _cli

# torch, numpy and the tables only when enabled: the default (disabled) run stays nearly free.
if TYPE_CHECKING:
    import numpy as np

    from pipeline.autoencoder import Autoencoder
    from pipeline.rows import SplitTable

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def summary(errors: np.ndarray, threshold: float) -> dict[str, float]:
    """What one split's reconstruction errors look like, against the threshold."""
    import numpy as np

    return {
        "rows": len(errors),
        "error_mean": float(np.mean(errors)),
        "error_median": float(np.median(errors)),
        "error_p99": float(np.quantile(errors, 0.99)),
        "share_above_threshold": float(np.mean(errors > threshold)),
    }


def run(table: SplitTable, data: DataParams, novelty: NoveltyParams) -> tuple[Autoencoder, dict[str, Any]]:
    """Fit on the train split, threshold on the val split; returns (model, metrics)."""
    import numpy as np

    from pipeline import autoencoder
    from pipeline.scaling import input_scale

    started = time.perf_counter()
    parts = table.rows(**{split: table.splits == split for split in SPLITS})
    config = autoencoder.AutoencoderConfig.of(novelty, data, table.n_features)
    offset, factor = input_scale(parts["train"].x, data)
    fitted = autoencoder.fit(config, parts["train"].x, novelty, offset, factor)
    errors = {split: autoencoder.errors(fitted.model, parts[split].x) for split in SPLITS}
    threshold = float(np.quantile(errors["val"], novelty.quantile))
    if not (math.isfinite(threshold) and threshold > 0):
        # Export divides by it; a NaN would only surface later as a puzzling parity failure.
        raise _cli.StageError(
            f"the autoencoder's validation errors give threshold {threshold!r} (final training loss "
            f"{fitted.losses[-1]!r}): training diverged or reconstructs nothing; lower novelty.lr or change novelty.loss"
        )
    splits = {split: summary(errors[split], threshold) for split in SPLITS}
    metrics: dict[str, Any] = {
        "enabled": True,
        "threshold": threshold,
        "quantile": novelty.quantile,
        "loss": novelty.loss,
        "final_train_loss": fitted.losses[-1],
        **splits,
    }
    log.info(
        "%s autoencoder: threshold %.4g; errors (mean) train %.4g, val %.4g, test %.4g; %.1f%% of test rows above; %.1f s",
        config.kind,
        threshold,
        splits["train"]["error_mean"],
        splits["val"]["error_mean"],
        splits["test"]["error_mean"],
        100 * splits["test"]["share_above_threshold"],
        time.perf_counter() - started,
    )
    return fitted.model, metrics


def main() -> None:
    p = _cli.parser(__doc__.splitlines()[0])
    _cli.add_split_inputs(p)
    p.add_argument(
        "--out", required=True, help="autoencoder file to write (the disabled form when novelty.enabled is false)"
    )
    p.add_argument("--metrics", required=True, help="JSON metrics file")

    def body(args, params: Params) -> None:
        if not params.novelty.enabled:
            novelty_format.write_disabled(args.out)
            atomic.write_json(args.metrics, {"enabled": False})
            log.info("novelty.enabled is false: export serves the classifier alone")
            return
        from pipeline import autoencoder
        from pipeline.rows import SplitTable

        table = SplitTable.open(args.clean, args.split, params.data)
        model, metrics = run(table, params.data, params.novelty)
        autoencoder.save(args.out, model, threshold=metrics["threshold"], metrics=metrics)
        atomic.write_json(args.metrics, metrics)
        log.info("wrote %s", Path(args.out))

    _cli.main("novelty", body, p.parse_args())


if __name__ == "__main__":
    main()
