"""What the `novelty` output costs a served request: the same classifier with and without it.

    python bench/novelty_serving.py [--repeats 3] [--seconds 3]

Exports one classifier (train.model of params.yaml, untrained: speed does not depend on the
weights) twice through the export stage's code: alone, and with the autoencoder of `novelty:`
(untrained, threshold 1). Both go into one local Triton on free 127.0.0.1 ports as the local
entry runs them (serving/backend/model.py + ONNX, export: params). Each is driven over gRPC from
Python threads (bench/serving_latency.py's load generator), in interleaved rounds, with 1-row
requests at concurrency 1 and 16 and 64-row requests at concurrency 1; the novelty model's
requests ask for both outputs. Printed: median p50 latency and rows/s of each, and their ratios
(with / without). The same rows also go through both ONNX files in this process (onnxruntime,
one thread), which shows the graph's own share of the cost.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serving_latency import drive  # noqa: E402

from devtools.ports import free_ports  # noqa: E402
from pipeline import atomic  # noqa: E402
from pipeline.autoencoder import Autoencoder, AutoencoderConfig  # noqa: E402
from pipeline.models import build_model, config_for  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from pipeline.rows import Rows  # noqa: E402
from serving.client import ClientSettings, TritonClient  # noqa: E402
from serving.server import ServerSettings, stop_server  # noqa: E402
from serving.startup import start_local_server  # noqa: E402

CELLS = [(1, 1), (16, 1), (1, 64)]  # (concurrency, rows per request)


def export_pair(scratch: Path, params) -> dict[str, Path]:
    """Two candidates of the same classifier: without and with the novelty output."""
    import torch
    from sklearn.datasets import load_digits

    from stages import export

    digits = load_digits()
    rows = Rows(digits.data[:256].astype(np.uint8), digits.target[:256].astype(np.int64))
    torch.manual_seed(0)
    config = config_for(params.train.model, params.data, rows.x.shape[1])
    model = build_model(config).eval()
    detector = Autoencoder(AutoencoderConfig.of(params.novelty, params.data, rows.x.shape[1])).eval()
    out = {}
    for name, novelty in (("plain", None), ("novelty", (detector, 1.0))):
        folder = scratch / name
        export_params = params.export.model_copy(update={"model_name": name})
        with atomic.atomic_dir(folder) as tmp:
            Path(tmp).chmod(0o755)
            export.run(model, {"config": config}, rows, params.data, export_params, Path(tmp), {}, novelty)
        out[name] = folder
    return out


def install(repository: Path, candidates: dict[str, Path]) -> None:
    import shutil

    for name, folder in candidates.items():
        shutil.copytree(folder / "triton" / name, repository / name)


def triton_call(settings: ClientSettings, model: str, outputs: list[str]):
    import tritonclient.grpc as grpcclient

    def call(client, batch: np.ndarray) -> None:
        tensor = grpcclient.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        result = client.infer(model, [tensor], outputs=[grpcclient.InferRequestedOutput(o) for o in outputs])
        for o in outputs:
            result.as_numpy(o)

    return call, lambda: grpcclient.InferenceServerClient(settings.url)


def onnx_seconds(path: Path, outputs: list[str], batch: np.ndarray, repeats: int = 2000) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(100):
        session.run(outputs, {"input": batch})
    started = time.perf_counter()
    for _ in range(repeats):
        session.run(outputs, {"input": batch})
    return (time.perf_counter() - started) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are shown")
    p.add_argument("--seconds", type=float, default=3.0, help="time cap per cell and round")
    p.add_argument("--requests", type=int, default=3000, help="request cap per cell and round")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("torch.onnx", "onnxscript", "onnx_ir"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    params = load_params(args.params)
    scratch = Path(tempfile.mkdtemp(prefix="novelty-bench-"))
    candidates = export_pair(scratch / "candidates", params)
    outputs = {"plain": ["probabilities"], "novelty": ["probabilities", "novelty"]}
    rng = np.random.default_rng(0)
    batches = {r: [rng.uniform(0, 16, (r, 64)).astype(np.float32) for _ in range(64)] for r in (1, 64)}

    print("in-process onnxruntime (1 thread), seconds per call:")
    for r in (1, 64):
        plain = onnx_seconds(candidates["plain"] / "model.onnx", outputs["plain"], batches[r][0])
        both = onnx_seconds(candidates["novelty"] / "model.onnx", outputs["novelty"], batches[r][0])
        print(f"  {r:>2} rows: without {plain * 1e6:8.1f} us  with {both * 1e6:8.1f} us  ratio {both / plain:.3f}")

    http, grpc, metrics = free_ports(3)
    server = ServerSettings(scratch / "models", scratch / "state", http, grpc, metrics, start_timeout_s=120)
    try:
        start_local_server(server)
        assert isinstance(server.repository, Path)
        install(server.repository, candidates)
        settings = ClientSettings.local(server, protocol="grpc", timeout_s=60, retries=0)
        with TritonClient(settings) as client:
            for name in candidates:
                client.load(name, timeout_s=120)
        calls = {name: triton_call(settings, name, outputs[name]) for name in candidates}
        for call, make_state in calls.values():
            drive(call, make_state, batches[1], 4, 200, 2.0)  # warm-up
        cells: dict[tuple[str, int, int], list[dict]] = {}
        for _ in range(args.repeats):
            for c, r in CELLS:
                for name, (call, make_state) in calls.items():
                    cell = drive(call, make_state, batches[r], c, args.requests, args.seconds)
                    if cell["errors"]:
                        print(f"  {name} c={c} rows={r}: {cell['errors']} failed requests")
                    cells.setdefault((name, c, r), []).append(cell)
    finally:
        stop_server(server)

    print(f"Triton gRPC on 127.0.0.1, medians of {args.repeats} interleaved rounds:")
    print(
        f"{'cell':>10} {'p50 ms without':>15} {'with':>8} {'ratio':>6} {'rows/s without':>15} {'with':>8} {'ratio':>6}"
    )
    for c, r in CELLS:

        def med(name: str, key: str, c: int = c, r: int = r) -> float:
            return statistics.median(cell[key] for cell in cells[(name, c, r)])

        p50 = med("plain", "p50_ms"), med("novelty", "p50_ms")
        rate = med("plain", "rows_per_s"), med("novelty", "rows_per_s")
        print(
            f"{f'c={c} x{r}':>10} {p50[0]:>15.3f} {p50[1]:>8.3f} {p50[1] / p50[0]:>6.3f} "
            f"{rate[0]:>15.0f} {rate[1]:>8.0f} {rate[1] / rate[0]:>6.3f}"
        )


if __name__ == "__main__":
    main()
