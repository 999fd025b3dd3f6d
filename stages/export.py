"""export: ONNX + TorchScript with parity checks, Triton repository entries, golden samples, model card.

The exported graphs return probabilities (softmax inside), take raw feature rows (scaling is part
of the model) and have a dynamic batch axis. Both files are reloaded from disk and compared with
the PyTorch model on the whole test split; a difference above `export.parity_tolerance` stops the
stage and nothing is written. The output folder (the "candidate") is swapped in atomically:

    model.onnx, model.ts, model_card.json, golden.json
    triton/<name>/config.pbtxt, triton/<name>/1/{model.py, model.onnx}    local CPU server (Python backend)
    gpu/<name>/config.pbtxt, gpu/<name>/1/model.onnx                       GPU server, onnxruntime backend
    gpu/<name>_torchscript/config.pbtxt, gpu/<name>_torchscript/1/model.pt GPU server, libtorch backend
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import torch
from torch import nn

from pipeline import atomic
from pipeline.models import ModelConfig, load_model
from pipeline.params import DataParams, Params
from pipeline.tables import feature_columns, read_parquet
from serving import configs
from stages import _cli

log = logging.getLogger(__name__)

BACKEND_SOURCE = Path(__file__).resolve().parents[1] / "serving" / "backend" / "model.py"
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.ts"
CARD_FILE = "model_card.json"
GOLDEN_FILE = "golden.json"
VERSION = "1"  # the entries hold one version; push renumbers it in the live repository


class ParityError(_cli.StageError):
    """An exported file disagrees with the PyTorch model beyond export.parity_tolerance."""


@dataclass(frozen=True)
class Rows:
    """Feature rows as float32 (what a client sends) and label indices into the class list."""

    features: np.ndarray
    labels: np.ndarray


def split_rows(clean: pd.DataFrame, assignment: pd.DataFrame, contract: DataParams, split: str) -> Rows:
    """The rows of one split (train | val | test) of the clean table, in table order."""
    if len(assignment) != len(clean) or not assignment["row"].between(0, len(clean) - 1).all():
        raise _cli.StageError(
            f"the split assignment ({len(assignment)} rows) does not match the clean table ({len(clean)} rows); "
            "rerun split"
        )
    rows = np.sort(assignment.loc[assignment["split"] == split, "row"].to_numpy())
    if len(rows) == 0:
        raise _cli.StageError(f"the {split} split is empty; check the split stage's output")
    features = feature_columns(list(clean.columns), contract)
    index = {label: i for i, label in enumerate(contract.classes)}
    raw_labels = clean[contract.label].to_numpy()[rows].tolist()
    unknown = sorted({label for label in raw_labels if label not in index}, key=str)
    if unknown:
        raise _cli.StageError(
            f"{split} split holds labels {unknown[:5]} that are not in data.classes {list(contract.classes)}"
        )
    x = clean[features].to_numpy(dtype=np.float32)[rows]
    return Rows(np.ascontiguousarray(x), np.array([index[label] for label in raw_labels], dtype=np.int64))


class Probabilities(nn.Module):
    """The served form of a model: raw rows in, softmax probabilities out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(rows), dim=1)


def export_onnx(module: nn.Module, n_features: int, path: Path, opset: int) -> None:
    """Write an ONNX file with a dynamic batch axis (the legacy exporter needs no extra package)."""
    example = torch.zeros(2, n_features)
    with warnings.catch_warnings():
        # The legacy exporter is chosen on purpose (the dynamo one needs onnxscript); its
        # deprecation notice would only repeat on every run.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[configs.INPUT_NAME],
            output_names=[configs.OUTPUT_NAME],
            dynamic_axes={configs.INPUT_NAME: {0: "batch"}, configs.OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )


def export_torchscript(module: nn.Module, n_features: int, path: Path) -> None:
    """Write a traced TorchScript file; the models have no data-dependent control flow to lose."""
    example = torch.zeros(2, n_features)
    traced = torch.jit.trace(module, (example,), check_trace=False)
    torch.jit.save(traced, str(path))


def onnx_probabilities(path: Path, features: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run([configs.OUTPUT_NAME], {configs.INPUT_NAME: features})
    return out


def torchscript_probabilities(path: Path, features: np.ndarray) -> np.ndarray:
    loaded = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.no_grad():
        return loaded(torch.from_numpy(features)).numpy()


def check_parity(fmt: str, expected: np.ndarray, actual: np.ndarray, tolerance: float) -> float:
    """Max abs difference of two probability tables; ParityError when above the tolerance."""
    if actual.shape != expected.shape:
        raise ParityError(f"{fmt} output has shape {actual.shape}, the PyTorch model gives {expected.shape}")
    diff = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
    if not diff <= tolerance:  # also catches NaN
        raise ParityError(
            f"{fmt} export differs from the PyTorch model on the test split: max abs diff {diff:.3g} > "
            f"export.parity_tolerance {tolerance:g}. Check the exporter (export.opset) or raise the tolerance."
        )
    return diff


def golden_indices(labels: np.ndarray, count: int) -> np.ndarray:
    """Up to `count` test rows, taking classes in turn so that the smoke test covers many of them."""
    rank = pd.Series(labels).groupby(labels).cumcount().to_numpy()
    order = np.lexsort((labels, rank))  # first row of each class, then the second of each, ...
    return np.sort(order[:count])


def golden_samples(rows: Rows, expected: np.ndarray, classes: list, params: Params) -> dict[str, Any]:
    picks = golden_indices(rows.labels, params.export.golden_samples)
    return {
        "model_name": params.export.model_name,
        "input_name": configs.INPUT_NAME,
        "output_name": configs.OUTPUT_NAME,
        "inputs": rows.features[picks].tolist(),
        "outputs": expected[picks].tolist(),
        "labels": [classes[i] for i in rows.labels[picks]],
        "atol": params.export.parity_tolerance,
    }


def file_md5(path: str | Path) -> str:
    """The md5 DVC 3 records for a file (of its bytes, as they are)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_commit() -> str | None:
    """HEAD of the repository the stage runs in; None outside git (e.g. an unpacked release)."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def write_entries(out: Path, params: Params, signature: configs.Signature) -> list[str]:
    """The three Triton repository entries beside the exported files; each config is parsed first."""
    name = params.export.model_name
    onnx, torchscript = out / ONNX_FILE, out / TORCHSCRIPT_FILE
    entries = [
        # folder, config text, {file in the version folder: source}
        (f"triton/{name}", configs.python_backend_config, {"model.py": BACKEND_SOURCE, configs.ONNX_FILENAME: onnx}),
        (f"gpu/{name}", configs.onnx_gpu_config, {configs.ONNX_FILENAME: onnx}),
        (f"gpu/{name}_torchscript", configs.libtorch_gpu_config, {configs.TORCHSCRIPT_FILENAME: torchscript}),
    ]
    for folder, render, files in entries:
        text = render(params.export, signature)
        configs.check_config(text, source=f"{folder}/config.pbtxt")
        version = out / folder / VERSION
        version.mkdir(parents=True)
        (out / folder / "config.pbtxt").write_text(text)
        for target, source in files.items():
            shutil.copyfile(source, version / target)
    return [folder for folder, _, _ in entries]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def run(
    model: nn.Module,
    model_file: dict[str, Any],
    test: Rows,
    params: Params,
    out: Path,
    data_hashes: dict[str, dict[str, str]],
) -> dict[str, Any]:
    """Export `model` into the empty folder `out`; returns the model card (also written there)."""
    started = time.perf_counter()
    config: ModelConfig = model_file["config"]
    classes = list(config.classes)
    if classes != list(params.data.classes):
        raise _cli.StageError(
            f"the model was trained for classes {classes}, but data.classes is {list(params.data.classes)}; retrain"
        )
    if test.features.shape[1] != config.n_features:
        raise _cli.StageError(
            f"the test rows have {test.features.shape[1]} features, the model expects {config.n_features}"
        )
    module = Probabilities(model.cpu().float()).eval()
    with torch.no_grad():
        expected = module(torch.from_numpy(test.features)).numpy()

    export_onnx(module, config.n_features, out / ONNX_FILE, params.export.opset)
    export_torchscript(module, config.n_features, out / TORCHSCRIPT_FILE)
    tolerance = params.export.parity_tolerance
    parity = {
        "onnx": check_parity("ONNX", expected, onnx_probabilities(out / ONNX_FILE, test.features), tolerance),
        "torchscript": check_parity(
            "TorchScript", expected, torchscript_probabilities(out / TORCHSCRIPT_FILE, test.features), tolerance
        ),
    }
    log.info("parity on %d test rows: max abs diff %s (tolerance %g)", len(expected), parity, tolerance)

    signature = configs.Signature(config.n_features, config.n_classes)
    write_entries(out, params, signature)
    golden = golden_samples(test, expected, classes, params)
    atomic.write_json(out / GOLDEN_FILE, golden)

    tensor = {"datatype": "FP32"}
    card = {
        "model_name": params.export.model_name,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),  # metadata only
        "git_commit": git_commit(),
        "data": data_hashes,
        # What train measured on the validation rows (evaluate adds the test metrics beside it).
        "metrics": _jsonable(model_file.get("metrics", {})),
        "best_epoch": model_file.get("best_epoch"),
        "params": {
            "data": params.data.model_dump(),
            # The train params the weights came from, as train stored them; params.yaml may have moved on.
            "train": _jsonable(model_file.get("params", params.train.model_dump())),
            "export": params.export.model_dump(),
        },
        "model_config": config.to_dict(),
        "classes": classes,
        "inputs": [{"name": configs.INPUT_NAME, "shape": [-1, config.n_features], **tensor}],
        "outputs": [{"name": configs.OUTPUT_NAME, "shape": [-1, config.n_classes], **tensor}],
        "parity": {
            "rows": len(expected),
            "tolerance": tolerance,
            "max_abs_diff": parity,
        },
        "artifacts": {
            name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in (ONNX_FILE, TORCHSCRIPT_FILE)
        },
        "golden_samples": len(golden["inputs"]),
    }
    atomic.write_json(out / CARD_FILE, card)
    log.info("exported %s in %.1f s", params.export.model_name, time.perf_counter() - started)
    return card


def main() -> None:
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model file written by train")
    _cli.add_split_inputs(p)
    p.add_argument("--out", required=True, help="candidate folder to write (replaced atomically)")

    def body(args, params):
        model, model_file = load_model(args.model)
        clean = read_parquet(args.clean)
        test = split_rows(clean, read_parquet(args.split), params.data, "test")
        hashes = {
            name: {"path": path, "md5": file_md5(path)} for name, path in (("clean", args.clean), ("split", args.split))
        }
        with atomic.atomic_dir(args.out) as tmp:
            # The temporary folder is private (0700); a server running as another user must read it.
            Path(tmp).chmod(0o755)
            run(model, model_file, test, params, Path(tmp), hashes)

    _cli.main("export", body, p.parse_args())


if __name__ == "__main__":
    main()
