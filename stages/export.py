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
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import torch
from torch import nn

from pipeline import atomic, transform
from pipeline.candidate import CARD_FILE, GOLDEN_FILE, ONNX_FILE, TORCHSCRIPT_FILE
from pipeline.errors import StageError
from pipeline.models import ModelConfig, load_model
from pipeline.params import DataParams, ExportParams
from pipeline.rows import Rows, SplitTable
from pipeline.transform import RawRows
from serving import configs
from stages import _cli

log = logging.getLogger(__name__)

BACKEND_SOURCE = Path(__file__).resolve().parents[1] / "serving" / "backend" / "model.py"
VERSION = "1"  # the entries hold one version; push renumbers it in the live repository
BATCH_ROWS = 4096  # test rows per forward pass in the parity checks: bounded memory on a large split


class ParityError(StageError):
    """An exported file disagrees with the PyTorch model beyond export.parity_tolerance."""


class Probabilities(nn.Module):
    """The served form of a model: raw rows in, softmax probabilities out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(rows), dim=1)


def export_onnx(module: nn.Module, n_features: int, path: Path, opset: int) -> None:
    """Write an ONNX file with PyTorch's maintained exporter (`torch.export` + onnxscript), the
    batch axis dynamic. The weights stay inside the file: Triton's entries copy model.onnx alone."""
    example = torch.zeros(2, n_features)  # 2, not 1: a batch of one would be specialised away
    # Noise in every run's log: torch.onnx says torchvision's operators are not registered (this
    # project has none), onnxscript's optimizer logs each pass at INFO, torch.export warns about
    # its own internal pytree API.
    quiet = {
        "torch.onnx._internal.exporter._registration": logging.ERROR,
        "onnxscript": logging.WARNING,
        "onnx_ir": logging.WARNING,
    }
    levels = {name: logging.getLogger(name).level for name in quiet}
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=[configs.INPUT_NAME],
                output_names=[configs.OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def export_torchscript(module: nn.Module, n_features: int, path: Path) -> None:
    """Write a traced TorchScript file; the models have no data-dependent control flow to lose."""
    example = torch.zeros(2, n_features)
    traced = torch.jit.trace(module, (example,), check_trace=False)
    torch.jit.save(traced, str(path))


def batched(predict, rows: Rows) -> np.ndarray:
    """`predict` (float32 rows -> probabilities) over all rows, a batch at a time."""
    return np.concatenate([predict(rows.float32(i, i + BATCH_ROWS)) for i in range(0, len(rows), BATCH_ROWS)])


def torch_probabilities(module: nn.Module, rows: Rows) -> np.ndarray:
    with torch.no_grad():
        return batched(lambda x: module(torch.from_numpy(x)).numpy(), rows)


def onnx_probabilities(path: Path, rows: Rows | RawRows) -> np.ndarray:
    """The ONNX file's outputs: on float32 rows, or on raw rows (a mixed table's model, whose graph
    holds the transform) fed as the served model's inputs."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if isinstance(rows, RawRows):
        from pipeline.transform_onnx import feeds

        parts = [
            session.run([configs.OUTPUT_NAME], feeds(rows.take(np.arange(i, min(i + BATCH_ROWS, len(rows))))))[0]
            for i in range(0, len(rows), BATCH_ROWS)
        ]
        return np.concatenate(parts)
    return batched(lambda x: session.run([configs.OUTPUT_NAME], {configs.INPUT_NAME: x})[0], rows)


def torchscript_probabilities(path: Path, rows: Rows) -> np.ndarray:
    return torch_probabilities(torch.jit.load(str(path), map_location="cpu").eval(), rows)


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


def golden_samples(
    rows: Rows, expected: np.ndarray, classes: list, export: ExportParams, raw: RawRows | None = None
) -> dict[str, Any]:
    """A few test rows with expected outputs. With `raw` (a mixed table's model) the inputs are
    the raw rows, {input name: rows}, as a client sends them (NaN / "" where a value is missing)."""
    picks = golden_indices(rows.y, export.golden_samples)
    if raw is not None:
        from pipeline.transform_onnx import feeds

        fed = feeds(raw.take(picks))
        inputs: Any = {name: values.tolist() for name, values in fed.items()}
        datatypes = {name: "BYTES" if values.dtype.kind in "OUS" else "FP32" for name, values in fed.items()}
    else:
        inputs, datatypes = rows.take(picks).float32().tolist(), None
    return {
        **({"input_datatypes": datatypes} if datatypes else {}),
        "model_name": export.model_name,
        "input_name": configs.INPUT_NAME,
        "output_name": configs.OUTPUT_NAME,
        "inputs": inputs,
        "outputs": expected[picks].tolist(),
        "labels": [classes[i] for i in rows.y[picks]],
        "atol": export.parity_tolerance,
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


def write_entries(
    out: Path, export: ExportParams, signature: configs.Signature, torchscript_entry: bool = True
) -> list[str]:
    """The Triton repository entries beside the exported files; each config is parsed first. No
    libtorch entry for a model with string inputs (TorchScript cannot take them)."""
    name = export.model_name
    onnx, torchscript = out / ONNX_FILE, out / TORCHSCRIPT_FILE
    entries = [
        # folder, config text, {file in the version folder: source}
        (f"triton/{name}", configs.python_backend_config, {"model.py": BACKEND_SOURCE, configs.ONNX_FILENAME: onnx}),
        (f"gpu/{name}", configs.onnx_gpu_config, {configs.ONNX_FILENAME: onnx}),
        (f"gpu/{name}_torchscript", configs.libtorch_gpu_config, {configs.TORCHSCRIPT_FILENAME: torchscript}),
    ][: 3 if torchscript_entry else 2]
    for folder, render, files in entries:
        text = render(export, signature)
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
    data: DataParams,
    export: ExportParams,
    out: Path,
    data_hashes: dict[str, dict[str, str]],
    raw: RawRows | None = None,
) -> dict[str, Any]:
    """Export `model` into the empty folder `out`; returns the model card (also written there).

    A mixed table's model (its file holds the fitted transform, `test` are the raw test rows
    `raw` encoded by it) is served from raw rows: the ONNX graph gets the transform in front of the
    network, the parity check feeds it `raw` and compares with torch on the numpy-encoded rows, and
    there is no TorchScript file (it cannot take strings)."""
    started = time.perf_counter()
    config: ModelConfig = model_file["config"]
    classes = list(config.classes)
    if classes != list(data.classes):
        raise StageError(
            f"the model was trained for classes {classes}, but data.classes is {list(data.classes)}; retrain"
        )
    if test.x.shape[1] != config.n_features:
        raise StageError(f"the test rows have {test.x.shape[1]} features, the model expects {config.n_features}")
    module = Probabilities(model.cpu().float()).eval()
    expected = torch_probabilities(module, test)

    fitted = transform.check(model_file["transform"]) if "transform" in model_file else None
    if (fitted is None) != (raw is None):
        raise StageError("the model file and the test rows disagree on the table's transform; retrain")
    export_onnx(module, config.n_features, out / ONNX_FILE, export.opset)
    tolerance = export.parity_tolerance
    if fitted is None:
        export_torchscript(module, config.n_features, out / TORCHSCRIPT_FILE)
        parity = {
            "onnx": check_parity("ONNX", expected, onnx_probabilities(out / ONNX_FILE, test), tolerance),
            "torchscript": check_parity(
                "TorchScript", expected, torchscript_probabilities(out / TORCHSCRIPT_FILE, test), tolerance
            ),
        }
        signature = configs.Signature(config.n_features, config.n_classes)
    else:
        import onnx

        from pipeline import transform_onnx

        served = transform_onnx.prepend(onnx.load(str(out / ONNX_FILE)), fitted, configs.INPUT_NAME)
        onnx.save(served, str(out / ONNX_FILE))
        parity = {
            "onnx": check_parity("ONNX (raw rows)", expected, onnx_probabilities(out / ONNX_FILE, raw), tolerance)
        }
        inputs = tuple(configs.Input(*spec) for spec in transform_onnx.inputs(fitted))
        signature = configs.Signature(config.n_features, config.n_classes, inputs=inputs)
    log.info("parity on %d test rows: max abs diff %s (tolerance %g)", len(expected), parity, tolerance)

    write_entries(out, export, signature, torchscript_entry=fitted is None)
    golden = golden_samples(test, expected, classes, export, raw)
    atomic.write_json(out / GOLDEN_FILE, golden)

    tensor = {"datatype": "FP32"}
    card = {
        "model_name": export.model_name,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),  # metadata only
        "git_commit": git_commit(),
        "data": data_hashes,
        # What train measured on the validation rows (evaluate adds the test metrics beside it).
        "metrics": _jsonable(model_file.get("metrics", {})),
        "best_epoch": model_file.get("best_epoch"),
        "params": {
            "data": data.model_dump(),
            # The train params the weights came from, as train stored them in the model file (not
            # params.yaml's, which may have moved on and which this stage does not depend on).
            "train": _jsonable(model_file.get("params")),
            "export": export.model_dump(),
        },
        "model_config": config.to_dict(),
        "classes": classes,
        "inputs": [{"name": t.name, "shape": [-1, t.width], "datatype": t.datatype} for t in signature.tensors()],
        "outputs": [{"name": configs.OUTPUT_NAME, "shape": [-1, config.n_classes], **tensor}],
        "parity": {
            "rows": len(expected),
            "tolerance": tolerance,
            "max_abs_diff": parity,
        },
        "artifacts": {
            name: hashlib.sha256((out / name).read_bytes()).hexdigest()
            for name in (ONNX_FILE, TORCHSCRIPT_FILE)
            if (out / name).exists()
        },
        "golden_samples": len(golden["labels"]),
    }
    if fitted is not None:
        # What the served graph does to raw rows, fitted on the train split: fills, vocabularies,
        # indicators, and the encoded features the network sees.
        card["transform"] = {**fitted, "features": transform.feature_names(fitted)}
    atomic.write_json(out / CARD_FILE, card)
    log.info("exported %s in %.1f s", export.model_name, time.perf_counter() - started)
    return card


def main() -> None:
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model file written by train")
    _cli.add_split_inputs(p)
    p.add_argument("--out", required=True, help="candidate folder to write (replaced atomically)")

    def body(args, params):
        model, model_file = load_model(args.model)
        table = SplitTable.open(args.clean, args.split, params.data)
        raw = None
        if "transform" in model_file:  # a mixed table: raw test rows, encoded by the fitted transform
            raw = table.raw_rows(test=table.splits == "test")["test"]
            test = Rows(transform.encode(transform.check(model_file["transform"]), raw), raw.y)
        else:
            test = table.split_rows("test")
        hashes = {
            name: {"path": path, "md5": file_md5(path)} for name, path in (("clean", args.clean), ("split", args.split))
        }
        with atomic.atomic_dir(args.out) as tmp:
            # The temporary folder is private (0700); a server running as another user must read it.
            Path(tmp).chmod(0o755)
            run(model, model_file, test, params.data, params.export, Path(tmp), hashes, raw)

    _cli.main("export", body, p.parse_args())


if __name__ == "__main__":
    main()
