"""Mixed tables: test accuracy per missing-value policy, and the served latency of a mixed-row model
against an all-numeric one with the same number of columns.

    python bench/mixed_tables.py [--rows 2000] [--gaps 0.1] [--requests 300]

1. A synthetic penguin-like table (text label, island and sex as text, four measurements and a
   year; `--gaps` of bill length, body mass and sex missing) is cleaned, split and trained (mlp)
   under each policy through the stages' cores; the exported ONNX graph (raw rows in) is scored on
   the test split. `quarantine` drops the rows with gaps at clean, so its test split is smaller.
2. The same table with island and sex as integer codes and no gaps is an all-numeric table of the
   same 7 columns (no transform, one FP32 input). Both candidates are pushed to a local Triton on
   free ports; 1-row and 64-row requests alternate between the two models (HTTP, one client), and
   the medians and their ratio (mixed / numeric) are printed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic table the tests use

from mixed_data import data_section, mixed_table  # noqa: E402

from pipeline import atomic, transform  # noqa: E402
from pipeline.candidate import GOLDEN_FILE, read_golden  # noqa: E402
from pipeline.params import CleanParams, Params, parse_params  # noqa: E402
from pipeline.rows import Rows, SplitTable  # noqa: E402
from stages import clean, evaluate, export, train  # noqa: E402
from stages.split import split_stratified  # noqa: E402

LENIENT = CleanParams(min_rows=10, max_quarantine_share=0.5, max_duplicate_share=0.05)


def bench_params(missing: str, name: str, columns: dict | None = None) -> Params:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"] = data_section(missing, columns, "unused")
    raw["train"] |= {"epochs": 20, "batch_size": 32, "device": "cpu"}
    raw["train"]["model"] = {"arch": "mlp", "hidden": [64], "dropout": 0.1}
    raw["train"]["families"] = {}  # the small mlp above, not the mlp family's defaults
    raw["export"]["model_name"] = name
    return parse_params(raw)


def build(table, params: Params, out: Path) -> tuple[float, int]:
    """Clean, split, train and export `table`; returns the exported graph's test accuracy and test rows."""
    kept = clean.run(table, params.data, LENIENT).clean
    split = SplitTable.of(kept, split_stratified(kept["species"].to_numpy(), params.split), params.data)
    result, config, fitted = train.run(split, params.data, params.train, progress=False)
    model_file = {"config": config, "metrics": result.metrics, "params": {}}
    raw = None
    if fitted is not None:
        model_file["transform"] = fitted
        raw = split.raw_rows(test=split.splits == "test")["test"]
        test = Rows(transform.encode(fitted, raw), raw.y)
    else:
        test = split.split_rows("test")
    hashes = {"clean": {"path": "c", "md5": "0" * 32}, "split": {"path": "s", "md5": "1" * 32}}
    with atomic.atomic_dir(out) as tmp:
        Path(tmp).chmod(0o755)
        export.run(result.model, model_file, test, params.data, params.export, Path(tmp), hashes, raw=raw)
    return evaluate.run(out, evaluate.test_rows(split), params.data).metrics["accuracy"], len(test)


def latency(out: dict[str, Path], requests: int) -> dict[str, dict[int, float]]:
    from devtools.ports import free_ports
    from serving.client import ClientSettings, TritonClient
    from serving.loading import golden_inputs
    from serving.push import push_candidate
    from serving.server import ServerSettings, stop_server
    from serving.settings import ServingSettings
    from serving.startup import start_local_server

    scratch = Path(tempfile.mkdtemp(prefix="mixed-bench-"))
    http, grpc, metrics = free_ports(3)
    server = ServerSettings(scratch / "models", scratch / "state", http, grpc, metrics, start_timeout_s=120)
    start_local_server(server)
    try:
        client = ClientSettings.local(server, timeout_s=60, retries=0)
        settings = ServingSettings(client=client, repository=server.repository, load_timeout_s=120.0, retention=3)
        inputs, served = {}, {}
        for name, folder in out.items():
            push_candidate(folder, settings)
            golden = read_golden(folder / GOLDEN_FILE)
            inputs[name], served[name] = golden_inputs(golden), golden.model_name
        times: dict[str, dict[int, list[float]]] = {name: {1: [], 64: []} for name in out}
        with TritonClient(client) as triton:

            def rows(name: str, n: int):
                source = inputs[name]
                if isinstance(source, dict):
                    return {k: np.resize(v, (n, v.shape[1])) for k, v in source.items()}
                return np.resize(source, (n, source.shape[1]))

            batches = {(name, n): rows(name, n) for name in out for n in (1, 64)}
            for name in out:  # warm-up
                for _ in range(20):
                    triton.predict(served[name], batches[name, 1])
            for _ in range(requests):
                for n in (1, 64):
                    for name in out:
                        start = time.perf_counter()
                        triton.predict(served[name], batches[name, n])
                        times[name][n].append(time.perf_counter() - start)
        return {name: {n: float(np.median(t)) * 1e3 for n, t in cells.items()} for name, cells in times.items()}
    finally:
        stop_server(server)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--gaps", type=float, default=0.1, help="share of missing values in each gappy column")
    p.add_argument("--requests", type=int, default=300, help="requests per model and size")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    scratch = Path(tempfile.mkdtemp(prefix="mixed-tables-"))
    table = mixed_table(n=args.rows, seed=1, gaps=args.gaps)

    print(f"synthetic mixed table: {args.rows} rows, {args.gaps:.0%} gaps in bill_length_mm, body_mass_g, sex")
    for policy in ("quarantine", "impute", "indicator"):
        accuracy, n = build(table, bench_params(policy, f"mixed_{policy}"), scratch / policy)
        print(f"  {policy:<10} test accuracy {accuracy:.4f} on {n} test rows")

    numeric = table.copy()
    numeric["island"] = numeric["island"].map({"Biscoe": 0, "Dream": 1, "Torgersen": 2})
    numeric["sex"] = numeric["sex"].map({"female": 0, "male": 1}).fillna(0)
    numeric = numeric.fillna(numeric.mean(numeric_only=True))
    accuracy, _ = build(numeric, bench_params("quarantine", "all_numeric"), scratch / "numeric")
    print(f"  all-numeric (codes, gaps filled by hand) test accuracy {accuracy:.4f}")

    served = latency({"mixed": scratch / "indicator", "numeric": scratch / "numeric"}, args.requests)
    for n in (1, 64):
        mixed, plain = served["mixed"][n], served["numeric"][n]
        print(
            f"  served p50, {n:>2}-row requests: mixed {mixed:.3f} ms, all-numeric {plain:.3f} ms, ratio {mixed / plain:.3f}"
        )


if __name__ == "__main__":
    main()
