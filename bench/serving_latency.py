"""Serving latency: a real Triton vs in-process onnxruntime on the same batches.

    python bench/serving_latency.py [--candidate models/candidate] [--requests 400] [--protocol grpc]

Starts a local Triton on free 127.0.0.1 ports with a scratch repository (or, with --url and
--repository, uses a running one), pushes the candidate twice under two model configs, with and
without dynamic batching, and drives each at concurrency 1, 4 and 16 from Python threads (one
client each), with a bounded request count and time per level. The same batches then run through
an in-process onnxruntime session at the same concurrency. Prints throughput and p50/p99 latency
and the Triton/in-process ratios. Without models/candidate it builds the serving tests' toy model.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.client import ClientSettings, TritonClient  # noqa: E402
from serving.push import ServingSettings, push_candidate  # noqa: E402
from serving.repository import config_text, load_candidate, parse_config  # noqa: E402
from serving.server import ServerSettings, start_server, stop_server  # noqa: E402


def test_fixtures():
    """The serving tests' candidate builder (plain code in their conftest)."""
    spec = importlib.util.spec_from_file_location("serving_fixtures", ROOT / "tests" / "serving" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def variant(candidate: Path, out: Path, dynamic_batching: bool) -> Path:
    """A copy of the candidate under another model name, with or without dynamic batching."""
    source = load_candidate(candidate)
    name = f"{source.name}_{'dynbatch' if dynamic_batching else 'nobatch'}"
    config = parse_config(source.config)
    config.name = name
    if dynamic_batching:
        config.dynamic_batching.max_queue_delay_microseconds = (
            config.dynamic_batching.max_queue_delay_microseconds or 100
        )
    else:
        config.ClearField("dynamic_batching")
    (out / "triton" / name).mkdir(parents=True)
    shutil.copytree(source.model_files, out / "triton" / name / "1")
    (out / "triton" / name / "config.pbtxt").write_text(config_text(config))
    (out / "golden.json").write_text(json.dumps({**source.golden, "model_name": name}))
    shutil.copyfile(source.model_files / "model.onnx", out / "model.onnx")
    return out


def drive(call, batches: list[np.ndarray], concurrency: int, max_requests: int, max_seconds: float) -> dict:
    """Run `call(worker_state, batch)` from `concurrency` threads; bounded in count and time."""
    latencies: list[float] = []
    errors = [0]
    counter = iter(range(max_requests))
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds

    def worker(state):
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            started = time.perf_counter()
            try:
                call(state, batches[i % len(batches)])
            except Exception:
                errors[0] += 1
                continue
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)

    states = [call.make_state() for _ in range(concurrency)]
    threads = [threading.Thread(target=worker, args=(s,)) for s in states]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    for s in states:
        call.close_state(s)
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": errors[0],
        "throughput": len(latencies) / wall if wall else 0.0,
        "p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
    }


class TritonCall:
    def __init__(self, settings: ClientSettings, name: str):
        self.settings, self.name = settings, name

    def make_state(self):
        return TritonClient(self.settings)

    def close_state(self, client):
        client.close()

    def __call__(self, client, batch):
        client.predict(self.name, batch)


class OnnxCall:
    def __init__(self, onnx_path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # like one Triton model instance running the same file
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def make_state(self):
        return None

    def close_state(self, state):
        pass

    def __call__(self, state, batch):
        self.session.run(["probabilities"], {"input": batch})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidate", default="models/candidate", help="exported candidate (toy model if missing)")
    p.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    p.add_argument("--concurrency", default="1,4,16", help="comma-separated client threads")
    p.add_argument("--requests", type=int, default=400, help="requests per level (upper bound)")
    p.add_argument("--seconds", type=float, default=15.0, help="time cap per level")
    p.add_argument("--rows", type=int, default=1, help="rows per request")
    p.add_argument("--url", help="a running server (host:port for --protocol); needs --repository")
    p.add_argument("--repository", help="that server's live model repository")
    args = p.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    scratch = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    server = None
    try:
        candidate = Path(args.candidate)
        if not (candidate / "golden.json").exists():
            print(f"{candidate} not found: using the serving tests' toy model (64 features, 10 classes)")
            candidate = test_fixtures().build_candidate(scratch / "toy", name="toy")
        if args.url:
            url, repository = args.url, Path(args.repository or ".triton/models")
        else:
            ports = test_fixtures().free_ports(3)
            server = ServerSettings(scratch / "models", scratch / "state", *ports, start_timeout_s=60)
            start_server(server)
            url = f"127.0.0.1:{server.grpc_port if args.protocol == 'grpc' else server.http_port}"
            repository = server.repository
        client = ClientSettings(url=url, protocol=args.protocol, retries=0, timeout_s=30)
        settings = ServingSettings(client=client, repository=repository, load_timeout_s=120)

        rng = np.random.default_rng(0)
        n_features = len(load_candidate(candidate).golden["inputs"][0])
        batches = [rng.uniform(0, 16, (args.rows, n_features)).astype(np.float32) for _ in range(256)]
        onnx_call = OnnxCall(load_candidate(candidate).model_files / "model.onnx")

        rows = []
        for dynamic in (False, True):
            folder = variant(candidate, scratch / f"variant-{dynamic}", dynamic)
            pushed = push_candidate(folder, settings, prune=False)
            timing = " ".join(f"{k}={v:.2f}s" for k, v in pushed.seconds.items())
            print(f"pushed {pushed.model} v{pushed.version} ({pushed.status}): {timing}")
            triton_call = TritonCall(client, pushed.model)
            drive(triton_call, batches, 1, 20, 5)  # warm-up
            for c in levels:
                t = drive(triton_call, batches, c, args.requests, args.seconds)
                o = drive(onnx_call, batches, c, args.requests, args.seconds)
                rows.append(("dynamic" if dynamic else "none", c, t, o))

        print(f"\nTriton {args.protocol} on 127.0.0.1 vs in-process onnxruntime; {args.rows} row(s) per request\n")
        header = (
            f"{'batching':<9}{'conc':>5}{'req':>6}{'err':>5}{'triton/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'inproc/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'thr ratio':>11}{'p50 ratio':>11}"
        )
        print(header)
        print("-" * len(header))
        for batching, c, t, o in rows:
            print(
                f"{batching:<9}{c:>5}{t['requests']:>6}{t['errors']:>5}{t['throughput']:>10.0f}{t['p50']:>9.2f}"
                f"{t['p99']:>9.2f}{o['throughput']:>10.0f}{o['p50']:>9.3f}{o['p99']:>9.3f}"
                f"{t['throughput'] / o['throughput']:>11.3f}{t['p50'] / o['p50']:>11.1f}"
            )
        print("\nthr ratio = Triton throughput / in-process throughput; p50 ratio = Triton p50 / in-process p50.")
        print(json.dumps([{"batching": b, "concurrency": c, "triton": t, "inprocess": o} for b, c, t, o in rows]))
    finally:
        if server is not None:
            stop_server(server)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
