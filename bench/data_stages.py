"""How the data stages' cost grows with the table: time and peak memory of clean and split.

Generates MNIST-shaped tables (label + 784 uint8 pixels) synthetically at two sizes, runs the
clean core (read Parquet, validate with Great Expectations, quarantine, write) and the split core
on each in a fresh process, and prints seconds and peak memory per million cells.

    python bench/data_stages.py                 # 70,000 and 700,000 rows
    python bench/data_stages.py --rows 7000 70000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIDE = 28


def contract():
    from pipeline.params import DataParams

    return DataParams(
        source="",
        label="label",
        feature_prefix="px_",
        image_shape=[SIDE, SIDE],
        value_range=[0, 255],
        classes=list(range(10)),
    )


def make_table(rows: int, path: Path, seed: int = 0) -> None:
    """Sparse bright strokes on black, like handwritten digits, plus a few bad rows."""
    import pandas as pd

    from pipeline.tables import write_parquet

    rng = np.random.default_rng(seed)
    pixels = np.zeros((rows, SIDE * SIDE), np.uint8)
    for start in range(0, rows, 50_000):  # in chunks: the 700k table never exists as int64
        stop = min(rows, start + 50_000)
        block = rng.integers(0, 256, (stop - start, SIDE * SIDE), dtype=np.uint8)
        pixels[start:stop] = np.where(rng.random(block.shape, dtype=np.float32) < 0.2, block, 0)
    table = pd.DataFrame(pixels, columns=[f"px_{i}" for i in range(SIDE * SIDE)], copy=False)
    table.insert(0, "label", rng.integers(0, 10, rows).astype(np.uint8))
    table.iloc[: rows // 1000] = table.iloc[rows // 1000 : 2 * (rows // 1000)].to_numpy()  # 0.1% duplicates
    write_parquet(table, path)


def measure(stage: str, raw: Path, workdir: Path) -> dict:
    """Run one stage core in this process (called in a child); returns seconds."""
    from pipeline.params import CleanParams, SplitParams
    from pipeline.tables import read_parquet, read_source, write_parquet
    from stages import clean, split

    start = time.perf_counter()
    if stage == "clean":
        result = clean.run(read_source(raw), contract(), CleanParams(min_rows=100, max_quarantine_share=0.05))
        write_parquet(result.clean, workdir / "clean.parquet")
        write_parquet(result.quarantine, workdir / "quarantine.parquet")
        extra = {"kept": result.metrics["rows_kept"], "quarantined": result.metrics["rows_quarantined"]}
    else:
        labels = read_parquet(workdir / "clean.parquet", columns=["label"])["label"].to_numpy()
        assignment, _ = split.run(labels, SplitParams())
        write_parquet(assignment, workdir / "split.parquet")
        extra = {}
    return {"seconds": time.perf_counter() - start, **extra}


def child(stage: str, raw: Path, workdir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", stage, str(raw), str(workdir)],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["peak_mb"] = result.pop("maxrss_kb") / 1024
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[70_000, 700_000])
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        stage, raw, workdir = args.child
        result = measure(stage, Path(raw), Path(workdir))
        result["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps(result))
        return

    print(
        f"{'rows':>9} {'cells (M)':>9} {'stage':>6} {'seconds':>8} {'s / M cells':>11} {'peak MB':>8} {'MB / M cells':>12}"
    )
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            raw = work / "raw.parquet"
            make_table(rows, raw)
            cells = rows * (SIDE * SIDE + 1) / 1e6
            for stage in ("clean", "split"):
                r = child(stage, raw, work)
                print(
                    f"{rows:>9,} {cells:>9.1f} {stage:>6} {r['seconds']:>8.2f} {r['seconds'] / cells:>11.3f} "
                    f"{r['peak_mb']:>8.0f} {r['peak_mb'] / cells:>12.1f}",
                    flush=True,
                )
                if stage == "clean":
                    print(f"{'':>9} kept {r['kept']:,} rows, quarantined {r['quarantined']:,}", flush=True)


if __name__ == "__main__":
    main()
