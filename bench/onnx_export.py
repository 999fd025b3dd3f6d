"""ONNX export: the dynamo exporter the export stage uses against the legacy TorchScript-based one.

For each architecture a model is trained for a few epochs on scikit-learn's digits (confident
outputs, as a real model gives), wrapped as export serves it (raw rows in, probabilities out) and
exported by both exporters with a dynamic batch axis. Prints seconds per export (the first export
of the run, which pays the exporter's start-up, apart from the best of the rest) and the parity
(max abs difference against PyTorch, on the held-out rows, through onnxruntime), and the ratio
dynamo / legacy.

    python bench/onnx_export.py [--repeats 3] [--epochs 3]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.models import config_for  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from pipeline.rows import Rows  # noqa: E402
from pipeline.training import fit  # noqa: E402
from serving import configs  # noqa: E402
from stages import _parity, export  # noqa: E402


def legacy_export(module: torch.nn.Module, n_features: int, path: Path, opset: int) -> None:
    """The exporter the stage used before (deprecated in PyTorch)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (torch.zeros(2, n_features),),
            str(path),
            input_names=[configs.INPUT_NAME],
            output_names=[configs.OUTPUT_NAME],
            dynamic_axes={configs.INPUT_NAME: {0: "batch"}, configs.OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )


def digits(seed: int = 0) -> tuple[Rows, Rows, Rows]:
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.target))
    x, y = data.data[order].astype(np.uint8), data.target[order].astype(np.int64)
    a, b = int(0.7 * len(y)), int(0.85 * len(y))
    return Rows(x[:a], y[:a]), Rows(x[a:b], y[a:b]), Rows(x[b:], y[b:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    params = load_params(args.params)
    train, val, test = digits()
    exporters = {"legacy": legacy_export, "dynamo": export.export_onnx}
    print(f"{'arch':>5} {'exporter':>8} {'first s':>8} {'best s':>7} {'parity':>9} {'time ratio':>10}")
    for arch in ("cnn", "mlp"):
        train_params = params.train.model_copy(
            update={
                "epochs": args.epochs,
                "device": "cpu",
                "model": params.train.model.model_copy(update={"arch": arch}),
            }
        )
        config = config_for(train_params.model, params.data, train.x.shape[1])
        model = fit(config, train, val, train_params, params.data, progress=False).model
        module = export.Probabilities(model).eval()
        expected = _parity.torch_probabilities(module, test)
        best = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name, write in exporters.items():
                times = []
                for i in range(args.repeats):
                    path = Path(tmp) / f"{arch}-{name}-{i}.onnx"
                    started = time.perf_counter()
                    write(module, config.n_features, path, params.export.opset)
                    times.append(time.perf_counter() - started)
                parity = float(np.abs(_parity.onnx_probabilities(path, test) - expected).max())
                best[name] = min(times[1:] or times)
                ratio = f"{best[name] / best['legacy']:>10.1f}" if name != "legacy" else f"{'1.0':>10}"
                print(f"{arch:>5} {name:>8} {times[0]:>8.2f} {best[name]:>7.2f} {parity:>9.1e} {ratio}", flush=True)


if __name__ == "__main__":
    main()
