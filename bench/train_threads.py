"""What `train.cpu_threads` costs and saves: one crossval fold of the project's model, run as the
DVC stage runs it (`python -m stages.crossval`), with one intra-op thread (the default) and with
torch's default of one thread per core (`cpu_threads: 0`), on an idle machine and beside one
busy process (what another Airflow task, a second Celery worker process or the test suite is).

    dvc repro split                  # the fold reads data/clean.parquet and data/split.parquet
    python bench/train_threads.py    # about a minute on an idle machine; minutes with torch's default under load

Prints wall seconds and CPU seconds of each run and the ratio torch's default / one thread in
each condition. The busy process is a plain Python loop (another task's share of the CPU): a thread
pool that waits for all its threads at every operator stalls whenever one of them is not running.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def fold(threads: int, workdir: Path) -> tuple[float, float]:
    """Wall and CPU seconds of crossval fold 0 with `train.cpu_threads: threads`."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["cpu_threads"] = threads
    path = workdir / f"params-{threads}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    cmd = [sys.executable, "-m", "stages.crossval", "--params", str(path), "--fold", "0"]
    cmd += ["--clean", "data/clean.parquet", "--split", "data/split.parquet", "--metrics", str(workdir / "fold.json")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs of each setting per condition (default 2)")
    args = parser.parse_args()
    if not (ROOT / "data" / "split.parquet").exists():
        raise SystemExit("no data/split.parquet: run `dvc repro split` first")
    print(f"{os.cpu_count()} cores; crossval fold 0 of params.yaml's model, best of {args.repeat}")
    print(f"{'condition':<22}{'cpu_threads':>12}{'wall s':>9}{'cpu s':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for condition in ("idle", "one busy process"):
            busy = None
            if condition != "idle":
                busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                best = {}
                for threads in (1, 0):
                    runs = [fold(threads, Path(tmp)) for _ in range(args.repeat)]
                    best[threads] = min(runs)
                    print(f"{condition:<22}{threads:>12}{best[threads][0]:>9.1f}{best[threads][1]:>9.1f}")
                print(f"{condition:<22}{'ratio 0 / 1':>12}{best[0][0] / best[1][0]:>9.2f}")
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()


if __name__ == "__main__":
    main()
