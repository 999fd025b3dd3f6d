"""How the data stages' cost grows with the table: time and peak memory of clean and split.

Generates MNIST-shaped tables (label + 784 uint8 pixels, row groups of 65,536 rows as DuckDB,
Polars or Spark would write them) and runs, each in a fresh process whose peak resident memory
is read from /proc (VmHWM):

- `memory`: the clean stage as it was, the whole table in memory (bench/inmemory_clean.py), the
  baseline every ratio below is measured against, in the same run;
- `local`:  the clean stage (engine.name: local) and split (labels only);
- `spark`:  the same stages on Apache Spark (with --spark or --paths spark; needs Java 17), once per
  number of executor cores in --spark-cores: `local[n]`, or with --standalone a real standalone
  master and worker on 127.0.0.1 (bench/spark_standalone.py) whose executor gets n cores, the
  driver then being a process (and a JVM) of its own.

    python bench/data_stages.py                  # 70,000 and 700,000 rows
    python bench/data_stages.py --big            # also 7,000,000 rows (not the in-memory path; minutes)
    python bench/data_stages.py --rows 700000 --paths spark --spark-cores 1 2 --standalone
    python bench/data_stages.py --rows 7000 70000

Seconds are wall-clock seconds of the stage's work (process start and imports excluded; for
Spark the session's start too); `cpu s` is user+system CPU of the Python process (Spark's JVM
and its Python workers work outside it). Spark's driver peak is the Python driver's VmHWM plus
its JVM's (in local mode that JVM runs the executors too; standalone, it is the driver's alone).
On a shared machine compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIDE = 28
RAW_ROW_GROUP = 65_536
BIG = 7_000_000
# Targets of the data-at-scale work, checked on the numbers of this run.
CLEAN_PEAK_MB_AT_700K = 1_000
PEAK_GROWTH_700K_TO_7M = 1.1
SPLIT_PEAK_MB_AT_700K = 200


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


def make_table(rows: int, path: Path, seed: int = 0, row_group: int = RAW_ROW_GROUP) -> dict[str, int]:
    """Sparse bright strokes on black, like handwritten digits, written one row group at a time.

    Bad rows, so that every batch boundary matters: the first 0.1% of each row group repeat rows of
    the previous one (exact duplicates across batches), and the last row group has three rows with
    the unknown label 11. Returns what clean must find."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = ["label", *(f"px_{i}" for i in range(SIDE * SIDE))]
    schema = pa.schema([pa.field(name, pa.uint8()) for name in names])
    found = {"duplicates": 0, "unknown_labels": 0}
    previous = None
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, row_group):
            rng = np.random.default_rng([seed, start])
            n = min(row_group, rows - start)
            block = rng.integers(0, 256, (n, len(names)), dtype=np.uint8)
            block[:, 1:] = np.where(rng.random((n, len(names) - 1), dtype=np.float32) < 0.2, block[:, 1:], 0)
            block[:, 0] = rng.integers(0, 10, n)
            if previous is not None:
                repeats = min(n // 1000, len(previous))
                block[:repeats] = previous[-repeats:]
                found["duplicates"] += repeats
            if start + n == rows and n > 3:
                block[-3:, 0] = 11
                found["unknown_labels"] += 3
            writer.write_table(pa.Table.from_arrays(list(block.T), schema=schema), row_group_size=row_group)
            previous = block
    return found


def params(engine: str, cores: int = 0, master: str = ""):
    """The bench's params; a Spark engine with `cores` executor cores on `master` (local[n] when empty)."""
    from pipeline.params import CleanParams, EngineParams, Params

    conf = {}
    if master:  # one executor with `cores` cores; the driver reachable on 127.0.0.1
        conf = {"spark.cores.max": str(cores), "spark.executor.cores": str(cores), "spark.executor.memory": "3g"}
        conf["spark.driver.host"] = "127.0.0.1"
    return Params(
        data=contract(),
        clean=CleanParams(min_rows=100, max_quarantine_share=0.05),
        engine=EngineParams.model_validate(  # checks the name
            {"name": engine, "spark_master": master or f"local[{cores or '*'}]", "spark_conf": conf}
        ),
    )


def measure(task: str, raw: Path, workdir: Path, master: str = "") -> dict:
    """Run one stage in this process (called in a child); returns seconds and counts."""
    path, stage = task.split("-")
    if path.startswith("spark"):  # one session for the stage, whose JVM's peak memory is read before it stops
        from pipeline.engines import spark

        with spark.session(params("spark", int(path[5:]), master).engine, f"bench {stage}") as session:
            result = _run(task, raw, workdir, master)
            result["jvm_peak_mb"] = peak_mb(session.sparkContext._gateway.proc.pid)
        return result
    return _run(task, raw, workdir)


def _run(task: str, raw: Path, workdir: Path, master: str = "") -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    from pipeline.tables import write_parquet

    path, stage = task.split("-")
    # Only the stage's own module, as `python -m stages.<stage>` imports it: clean's engine and
    # Great Expectations are no part of split's memory.
    if stage == "clean":
        from stages import clean
    else:
        from stages import split
    out = workdir / f"clean-{path}.parquet"
    start = time.perf_counter()
    extra: dict = {}
    if stage == "clean" and path == "memory":
        import inmemory_clean

        result = inmemory_clean.run_file(raw, contract(), params("local").clean)
        write_parquet(result["clean"], out)
        write_parquet(result["quarantine"], workdir / f"quarantine-{path}.parquet")
        extra = {"kept": result["metrics"]["rows_kept"], "quarantined": result["metrics"]["rows_quarantined"]}
    elif stage == "clean":
        p = params(*_engine(path, master))
        quarantine = workdir / f"quarantine-{path}.parquet"
        metrics, _ = clean.run_source(str(raw), p.data, p.clean, p.engine, str(out), str(quarantine))
        extra = {"kept": metrics["rows_kept"], "quarantined": metrics["rows_quarantined"]}
    else:
        p = params(*_engine(path, master))
        # the clean table this path's clean wrote (the engines write the same rows): `--paths spark` alone works too
        split.run_file(str(out), p.data, p.split, p.engine, str(workdir / f"split-{path}.parquet"))
    return {"seconds": time.perf_counter() - start, **extra}


def _engine(path: str, master: str) -> tuple[str, int, str]:
    """`spark2` -> ("spark", 2, master); `local` -> ("local", 0, "")."""
    return ("spark", int(path[5:]), master) if path.startswith("spark") else (path, 0, "")


def child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=False, capture_output=True, text=True, cwd=ROOT
    )
    if out.returncode:
        raise SystemExit(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_mb(pid: int | str = "self") -> float:
    """A process's peak resident memory. Not ru_maxrss: on Linux a child started from a big
    parent inherits the parent's high-water mark there, which is how an earlier version of this
    bench reported ~1.6 GB for split."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_main(task: str, raw: str, workdir: str, master: str = "") -> None:
    result: dict[str, Any] = (
        dict(make_table(int(workdir), Path(raw))) if task == "make" else measure(task, Path(raw), Path(workdir), master)
    )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.update(peak_mb=peak_mb(), cpu=usage.ru_utime + usage.ru_stime)
    print(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[70_000, 700_000])
    p.add_argument("--big", action="store_true", help=f"also {BIG:,} rows (not the in-memory path)")
    p.add_argument("--spark", action="store_true", help="also the Spark engine")
    p.add_argument("--spark-cores", type=int, nargs="+", default=[2], help="Spark executor cores, one run each")
    p.add_argument("--standalone", action="store_true", help="Spark on a standalone master and worker, not local[n]")
    p.add_argument("--repeat", type=int, default=1, help="run the paths this many times, interleaved (shared machines)")
    p.add_argument("--paths", nargs="+", choices=["memory", "local", "spark"], help="only these paths (default: all)")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child_main(*args.child)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stopped: still stop the cluster (finally blocks)
    sizes = sorted(set(args.rows + ([BIG] if args.big else [])))
    chosen = args.paths or ["memory", "local"] + (["spark"] if args.spark else [])
    paths = [q for path in chosen for q in ([f"spark{n}" for n in args.spark_cores] if path == "spark" else [path])]
    with contextlib.ExitStack() as stack:
        master = ""
        if args.standalone and any(q.startswith("spark") for q in paths):
            sys.path.insert(0, str(ROOT / "bench"))
            from spark_standalone import standalone

            master = stack.enter_context(standalone(cores=max(args.spark_cores), memory="4g"))
            print(f"standalone master {master}, one worker with {max(args.spark_cores)} cores")
        runs = run_all(sizes, paths * args.repeat, master)
    report(runs, sizes)


def run_all(sizes: list[int], paths: list[str], master: str) -> dict[tuple[int, str, str], list[dict]]:
    """Each size's table made once, then each path's clean and split in order (a path listed
    again runs again); every run's result, by (rows, path, stage)."""
    header = f"{'rows':>9} {'cells M':>7} {'path':>6} {'stage':>5} {'seconds':>8} {'cpu s':>7} {'s/M cells':>9} {'peak MB':>8} {'MB/M cells':>10}"
    print(header)
    runs: dict[tuple[int, str, str], list[dict]] = {}
    for rows in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            raw = work / "raw.parquet"
            planted = child("make", str(raw), str(rows))
            cells = rows * (SIDE * SIDE + 1) / 1e6
            for path in paths:
                if path == "memory" and rows > 1_000_000:
                    continue  # ~11 bytes of RAM per cell: about 60 GB at 7M rows
                for stage in ("clean", "split"):
                    if stage == "split" and path == "memory":
                        continue  # split always read only the labels: the same code as `local`
                    r = child(f"{path}-{stage}", str(raw), str(work), master)
                    runs.setdefault((rows, path, stage), []).append(r)
                    print(
                        f"{rows:>9,} {cells:>7.1f} {path:>6} {stage:>5} {r['seconds']:>8.2f} {r['cpu']:>7.1f} "
                        f"{r['seconds'] / cells:>9.3f} {r['peak_mb']:>8.0f} {r['peak_mb'] / cells:>10.2f}"
                        + (f"  (+ driver JVM {r['jvm_peak_mb']:.0f} MB)" if "jvm_peak_mb" in r else ""),
                        flush=True,
                    )
                    if stage == "clean":
                        expected = planted["duplicates"] + planted["unknown_labels"]
                        print(f"{'':>9} kept {r['kept']:,}, quarantined {r['quarantined']:,} (planted {expected:,})")
    return runs


def report(runs: dict[tuple[int, str, str], list[dict]], sizes: list[int]) -> None:
    results = {key: found[0] for key, found in runs.items()}  # the first run of each
    print("\nratios (streamed / in-memory, same run):")
    for rows in sizes:
        old, new = results.get((rows, "memory", "clean")), results.get((rows, "local", "clean"))
        if old and new:
            print(
                f"  {rows:>9,} rows: clean time x{new['seconds'] / old['seconds']:.2f}, cpu x{new['cpu'] / old['cpu']:.2f}, "
                f"peak memory x{new['peak_mb'] / old['peak_mb']:.2f}"
            )
        sparks = sorted(
            (int(path[5:]), r)
            for (n, path, stage), r in results.items()
            if n == rows and path.startswith("spark") and stage == "clean"
        )
        for cores, spark in sparks:
            driver = spark["peak_mb"] + spark["jvm_peak_mb"]
            vs_local = f", spark/local clean time x{spark['seconds'] / new['seconds']:.2f}" if new else ""
            print(
                f"  {rows:>9,} rows: spark with {cores} executor core(s): driver peak (Python + JVM) {driver:.0f} MB{vs_local}"
            )
        if len(sparks) > 1:
            few, many = sparks[0][0], sparks[-1][0]
            for stage in ("clean", "split"):
                slow, fast = runs[rows, f"spark{few}", stage], runs[rows, f"spark{many}", stage]
                ratios = [a["seconds"] / b["seconds"] for a, b in zip(slow, fast, strict=False)]
                each = ", ".join(f"x{r:.2f}" for r in ratios)
                print(
                    f"  {rows:>9,} rows: spark {stage} time, {few} core(s) / {many} cores: "
                    f"median x{float(np.median(ratios)):.2f} ({each})"
                )
    print("targets:")
    at: dict[int, dict[str, Any]] = {
        rows: found for rows in sizes if (found := results.get((rows, "local", "clean"))) is not None
    }
    if 700_000 in at:
        peak = at[700_000]["peak_mb"]
        print(f"  clean peak at 700k: {peak:.0f} MB (<= {CLEAN_PEAK_MB_AT_700K}: {peak <= CLEAN_PEAK_MB_AT_700K})")
        old = results.get((700_000, "memory", "clean"))
        if old:
            ratio = at[700_000]["seconds"] / old["seconds"]
            print(f"  clean time per M cells vs in-memory at 700k: x{ratio:.2f} (<= 1: {ratio <= 1})")
        split_peak = results[700_000, "local", "split"]["peak_mb"]
        print(
            f"  split peak at 700k: {split_peak:.0f} MB (<= {SPLIT_PEAK_MB_AT_700K}: {split_peak <= SPLIT_PEAK_MB_AT_700K})"
        )
    if 700_000 in at and BIG in at:
        growth = at[BIG]["peak_mb"] / at[700_000]["peak_mb"]
        print(
            f"  clean peak 7M / 700k: x{growth:.2f} (<= {PEAK_GROWTH_700K_TO_7M}: {growth <= PEAK_GROWTH_700K_TO_7M})"
        )


if __name__ == "__main__":
    main()
