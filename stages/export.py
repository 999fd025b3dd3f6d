"""export: ONNX + TorchScript with parity checks, Triton repository entries, golden samples, model card
(the candidate's layout and types: pipeline/candidate.py).

The exported graphs return probabilities (softmax inside), take raw feature rows (scaling is part
of the model) and have a dynamic batch axis. Both files are reloaded from disk and compared with
the PyTorch model on the whole test split; a difference above `export.parity_tolerance` stops the
stage and nothing is written. The output folder (the "candidate") is swapped in atomically:

    model.onnx, model.ts, model_card.json, golden.json
    triton/<name>/config.pbtxt, triton/<name>/1/{model.py, model.onnx}    local CPU server (Python backend)
    gpu/<name>/config.pbtxt, gpu/<name>/1/model.onnx                       GPU server, onnxruntime backend
    gpu/<name>_torchscript/config.pbtxt, gpu/<name>_torchscript/1/model.pt GPU server, libtorch backend

With a novelty file from an enabled novelty stage (`--novelty`), the autoencoder goes into the same
graphs as a second output, `novelty` FP32 `[batch, 1]`: the row's reconstruction error divided by
the threshold picked on the validation split (1.0 = the threshold; above 1 = less like the training
data than all but 1 - novelty.quantile of the validation rows). Parity, golden samples, configs
and the model card then cover both outputs; without it, everything is as for the classifier alone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline import atomic, autoencoder, sources, transform
from pipeline.candidate import (
    CARD_FILE,
    CONFIG_FILE,
    ENTRIES,
    ENTRY_BACKEND_FILE,
    ENTRY_ONNX_FILE,
    ENTRY_TORCHSCRIPT_FILE,
    ENTRY_VERSION,
    GOLDEN_FILE,
    ONNX_FILE,
    TORCHSCRIPT_FILE,
    GoldenSamples,
    ModelCard,
    TensorSpec,
)
from pipeline.errors import StageError
from pipeline.lineage import file_md5, git_commit
from pipeline.models import ModelConfig, load_model
from pipeline.params import DataParams, ExportParams
from pipeline.rows import Rows, SplitTable
from pipeline.transform import RawRows
from serving import configs, gpu_entries
from stages import _cli
from stages._parity import check_parity, onnx_outputs, onnx_probabilities, torch_outputs

log = logging.getLogger(__name__)

BACKEND_SOURCE = Path(__file__).resolve().parents[1] / "serving" / "backend" / "model.py"


class Probabilities(nn.Module):
    """The served form of a model: raw rows in, softmax probabilities out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(rows), dim=1)


class WithNovelty(nn.Module):
    """Probabilities and the autoencoder's novelty (error / threshold, `[batch, 1]`) of the same rows."""

    def __init__(self, model: nn.Module, detector: autoencoder.Autoencoder, threshold: float) -> None:
        super().__init__()
        self.model = model
        self.detector = detector
        self.register_buffer("inverse_threshold", torch.tensor(1.0 / threshold, dtype=torch.float32))

    def forward(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.softmax(self.model(rows), dim=1), self.detector(rows) * self.inverse_threshold


def export_onnx(
    module: nn.Module, n_features: int, path: Path, opset: int, output_names: list[str] | None = None
) -> None:
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
                output_names=output_names or [configs.OUTPUT_NAME],
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


def golden_indices(labels: np.ndarray, count: int) -> np.ndarray:
    """Up to `count` test rows, taking classes in turn so that the smoke test covers many of them."""
    rank = pd.Series(labels).groupby(labels).cumcount().to_numpy()
    order = np.lexsort((labels, rank))  # first row of each class, then the second of each, ...
    return np.sort(order[:count])


def golden_samples(
    rows: Rows,
    expected: np.ndarray,
    classes: list,
    export: ExportParams,
    more: dict[str, np.ndarray] | None = None,
    raw: RawRows | None = None,
) -> GoldenSamples:
    """A few test rows with expected outputs; `more` = the expected values of further outputs by
    name (`more_outputs`, only present when there are any). With `raw` (a mixed table's model) the
    inputs are the raw rows, {input name: rows}, as a client sends them (NaN / "" where a value is
    missing)."""
    picks = golden_indices(rows.y, export.golden_samples)
    if raw is not None:
        from pipeline.transform_onnx import feeds

        fed = feeds(raw.take(picks))
        inputs: Any = {name: values.tolist() for name, values in fed.items()}
        datatypes = {name: "BYTES" if values.dtype.kind in "OUS" else "FP32" for name, values in fed.items()}
    else:
        inputs, datatypes = rows.take(picks).float32().tolist(), None
    return GoldenSamples(
        model_name=export.model_name,
        input_name=configs.INPUT_NAME,
        output_name=configs.OUTPUT_NAME,
        inputs=inputs,
        input_datatypes=datatypes,
        outputs=expected[picks].tolist(),
        labels=[classes[i] for i in rows.y[picks]],
        atol=export.parity_tolerance,
        more_outputs={name: values[picks].tolist() for name, values in more.items()} if more else None,
    )


def write_entries(
    out: Path, export: ExportParams, signature: configs.Signature, torchscript_entry: bool = True
) -> list[str]:
    """The Triton repository entries beside the exported files; each config is parsed first. No
    libtorch entry for a model with string inputs (TorchScript cannot take them)."""
    onnx, torchscript = out / ONNX_FILE, out / TORCHSCRIPT_FILE
    entries = {
        # entry: (config text, {file in the version folder: source})
        "triton": (configs.python_backend_config, {ENTRY_BACKEND_FILE: BACKEND_SOURCE, ENTRY_ONNX_FILE: onnx}),
        "gpu": (configs.onnx_gpu_config, {ENTRY_ONNX_FILE: onnx}),
        "gpu_torchscript": (configs.libtorch_gpu_config, {ENTRY_TORCHSCRIPT_FILE: torchscript}),
    }
    if not torchscript_entry:
        del entries["gpu_torchscript"]
    written = []
    for entry, (render, files) in entries.items():
        folder = f"{ENTRIES[entry][0]}/{export.model_name}{ENTRIES[entry][1]}"
        text = render(export, signature)
        configs.check_config(text, source=f"{folder}/{CONFIG_FILE}")
        version = out / folder / ENTRY_VERSION
        version.mkdir(parents=True)
        (out / folder / CONFIG_FILE).write_text(text)
        written.append(folder)
        for target, source in files.items():
            shutil.copyfile(source, version / target)
    return written


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
    novelty: tuple[autoencoder.Autoencoder, float] | None = None,
    raw: RawRows | None = None,
    source: dict[str, Any] | None = None,
) -> ModelCard:
    """Export `model` into the empty folder `out`; returns the model card (also written there).
    `novelty` = (autoencoder, threshold) adds the `novelty` output.

    A mixed table's model (its file holds the fitted transform, `test` are the raw test rows
    `raw` encoded by it) is served from raw rows: the ONNX graph gets the transform in front of the
    network, the parity check feeds it `raw` and compares with torch on the numpy-encoded rows, and
    there is no TorchScript file (it cannot take strings). `source`: the pinned listing of the raw
    data (`pipeline.sources.Pin.to_dict`), listed in the card as `source`."""
    started = time.perf_counter()
    config: ModelConfig = model_file["config"]
    classes = list(config.classes)
    if classes != list(data.classes):
        raise StageError(
            f"the model was trained for classes {classes}, but data.classes is {list(data.classes)}; retrain"
        )
    if test.x.shape[1] != config.n_features:
        raise StageError(f"the test rows have {test.x.shape[1]} features, the model expects {config.n_features}")
    if novelty is None:
        module: nn.Module = Probabilities(model.cpu().float()).eval()
        signature = configs.Signature(config.n_features, config.n_classes)
    else:
        detector, threshold = novelty
        if detector.config.n_features != config.n_features:
            raise StageError(
                f"the novelty autoencoder takes {detector.config.n_features} features, the model {config.n_features}; "
                "rerun novelty"
            )
        module = WithNovelty(model.cpu().float(), detector.cpu().float(), threshold).eval()
        signature = configs.Signature(config.n_features, config.n_classes, more_outputs=((autoencoder.OUTPUT_NAME, 1),))
    names = [name for name, _ in signature.outputs]
    expected = torch_outputs(module, test, len(names))

    fitted = transform.check(model_file["transform"]) if "transform" in model_file else None
    if (fitted is None) != (raw is None):
        raise StageError("the model file and the test rows disagree on the table's transform; retrain")
    tolerance = export.parity_tolerance
    parity: dict[str, Any] = {}
    if fitted is None:
        export_onnx(module, config.n_features, out / ONNX_FILE, export.opset, names)
        export_torchscript(module, config.n_features, out / TORCHSCRIPT_FILE)
        traced = torch.jit.load(str(out / TORCHSCRIPT_FILE), map_location="cpu").eval()
        found = {
            "onnx": onnx_outputs(out / ONNX_FILE, test, names),
            "torchscript": torch_outputs(traced, test, len(names)),
        }
        for fmt, label in (("onnx", "ONNX"), ("torchscript", "TorchScript")):
            diffs = [
                check_parity(label if k == 0 else f"{label} {name}", expected[k], found[fmt][k], tolerance)
                for k, name in enumerate(names)
            ]
            # One output: the number, as before; several: one number per output name.
            parity[fmt] = diffs[0] if len(names) == 1 else dict(zip(names, diffs, strict=True))
    else:
        import onnx

        from pipeline import transform_onnx

        assert raw is not None  # checked above: a transform comes with its raw rows

        export_onnx(module, config.n_features, out / ONNX_FILE, export.opset, names)
        served = transform_onnx.prepend(onnx.load(str(out / ONNX_FILE)), fitted, configs.INPUT_NAME)
        onnx.save(served, str(out / ONNX_FILE))
        parity["onnx"] = check_parity(
            "ONNX (raw rows)", expected[0], onnx_probabilities(out / ONNX_FILE, raw), tolerance
        )
        inputs = tuple(configs.Input(*spec) for spec in transform_onnx.inputs(fitted))
        signature = configs.Signature(config.n_features, config.n_classes, inputs=inputs)
    log.info("parity on %d test rows: max abs diff %s (tolerance %g)", len(expected[0]), parity, tolerance)

    write_entries(out, export, signature, torchscript_entry=fitted is None)
    gpu_entries.check_gpu_entries(out)  # what a GPU server would refuse to load fails here
    golden = golden_samples(test, expected[0], classes, export, dict(zip(names[1:], expected[1:], strict=True)), raw)
    atomic.write_json(out / GOLDEN_FILE, golden.to_json())

    extra: dict[str, Any] = {}
    if novelty is not None:
        extra["novelty"] = {
            "output": autoencoder.OUTPUT_NAME,
            "meaning": "reconstruction error / threshold; above 1 = unlike the training data",
            "threshold": novelty[1],
            "model_config": novelty[0].config.to_dict(),
        }
    if source is not None:
        extra["source"] = source  # the exact objects clean read: url, version id, ETag, size
    if fitted is not None:
        # What the served graph does to raw rows, fitted on the train split: fills, vocabularies,
        # indicators, and the encoded features the network sees.
        extra["transform"] = {**fitted, "features": transform.feature_names(fitted)}
    card = ModelCard(
        model_name=export.model_name,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),  # metadata only
        git_commit=git_commit(),
        data=data_hashes,
        # What train measured on the validation rows (evaluate adds the test metrics beside it).
        metrics=_jsonable(model_file.get("metrics", {})),
        best_epoch=model_file.get("best_epoch"),
        # Differential privacy as train measured it (epsilon spent at delta, noise, clipping); null
        # when trained without. The gate's gate.max_epsilon reads it.
        privacy=_jsonable(model_file.get("privacy")),
        params={
            "data": data.model_dump(),
            # The train params the weights came from, as train stored them in the model file (not
            # params.yaml's, which may have moved on and which this stage does not depend on).
            "train": _jsonable(model_file.get("params")),
            "export": export.model_dump(),
        },
        network=config.to_dict(),
        classes=classes,
        inputs=[TensorSpec(name=t.name, shape=[-1, t.width], datatype=t.datatype) for t in signature.tensors()],
        outputs=[TensorSpec(name=name, shape=[-1, width], datatype="FP32") for name, width in signature.outputs],
        parity={"rows": len(expected[0]), "tolerance": tolerance, "max_abs_diff": parity},
        artifacts={
            name: hashlib.sha256((out / name).read_bytes()).hexdigest()
            for name in (ONNX_FILE, TORCHSCRIPT_FILE)
            if (out / name).exists()
        },
        golden_samples=len(golden.labels),
        **extra,
    )
    atomic.write_json(out / CARD_FILE, card.to_json())
    log.info("exported %s in %.1f s", export.model_name, time.perf_counter() - started)
    return card


def main() -> None:
    p = _cli.parser(__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model file written by train")
    p.add_argument("--novelty", required=True, help="autoencoder file written by novelty (may say it is disabled)")
    _cli.add_split_inputs(p)
    p.add_argument("--out", required=True, help="candidate folder to write (replaced atomically)")

    def body(args, params):
        model, model_file = load_model(args.model)
        detector, novelty_file = autoencoder.load(args.novelty)
        novelty = None if detector is None else (detector, float(novelty_file["threshold"]))
        table = SplitTable.open(args.clean, args.split, params.data)
        raw = None
        if "transform" in model_file:  # a mixed table: raw test rows, encoded by the fitted transform
            if novelty is not None:
                raise StageError(
                    "novelty.enabled with a mixed table (a fitted transform: categorical columns or imputed gaps) "
                    "is not supported yet: set novelty.enabled: false"
                )
            raw = table.raw_rows(test=table.splits == "test")["test"]
            test = Rows(transform.encode(transform.check(model_file["transform"]), raw), raw.y)
        else:
            test = table.split_rows("test")
        hashes = {
            name: {"path": path, "md5": file_md5(path)} for name, path in (("clean", args.clean), ("split", args.split))
        }
        source = sources.read_pin(params.data.source).to_dict() if sources.is_pin(params.data.source) else None
        with atomic.atomic_dir(args.out) as tmp:
            # The temporary folder is private (0700); a server running as another user must read it.
            Path(tmp).chmod(0o755)
            run(model, model_file, test, params.data, params.export, Path(tmp), hashes, novelty, raw, source)

    _cli.main("export", body, p.parse_args())


if __name__ == "__main__":
    main()
