"""Peak host memory of the model stages (train, export, evaluate) on a large MNIST-shaped table.

Writes a synthetic clean table (label + 784 uint8 pixels, `bench/data_stages.py`'s generator) and
its split, then runs each stage's CLI, as dvc.yaml does, in a child process and reads the child's
peak resident memory from the OS (`wait4`). The table is made in a child of its own: a child's peak
counts the pages it shared with its parent when it was started, so the parent must stay small. The model is a small MLP trained for one epoch: the
point is what the stages hold of the table, not the model.

With `--baseline REV` the same CLIs of an earlier git revision run on the same files in the same
run, and the ratio current / baseline is printed (below 1 = less memory now).

    python bench/stage_memory.py                          # 700,000 rows
    python bench/stage_memory.py --rows 70000 --baseline <rev>
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = ("train", "export", "evaluate")


def bench_params(code: Path, out: Path) -> Path:
    """That revision's params.yaml with the data contract of the table and a one-epoch MLP."""
    raw = yaml.safe_load((code / "params.yaml").read_text())
    raw["data"] |= {
        "source": "unused",
        "label": "label",
        "feature_prefix": "px_",
        "image_shape": [28, 28],
        "value_range": [0, 255],
        "classes": list(range(10)),
    }
    raw["train"] |= {"epochs": 1, "batch_size": 4096, "device": "cpu"}
    raw["train"]["model"] |= {"arch": "mlp", "hidden": [64]}
    raw["train"].pop("families", None)  # one epoch of the mlp above; a baseline revision may not know the key
    raw["train"]["augment"] |= {"enabled": False}
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def commands(work: Path, params: Path, tag: str) -> dict[str, list[str]]:
    """Each stage's CLI with the arguments dvc.yaml gives it (outputs under `work/<tag>`)."""
    out = work / tag
    data = ["--clean", str(work / "clean.parquet"), "--split", str(work / "split.parquet"), "--params", str(params)]
    return {
        "train": ["stages.train", *data, "--out", f"{out}/model.pt", "--checkpoint", f"{out}/train.pt"]
        + ["--live", f"{out}/dvclive"],
        "export": ["stages.export", *data, "--model", f"{out}/model.pt", "--out", f"{out}/candidate"],
        "evaluate": ["stages.evaluate", *data, "--candidate", f"{out}/candidate", "--metrics", f"{out}/m.json"]
        + ["--confusion", f"{out}/c.csv", "--report", f"{out}/r.json"],
    }


def peak(code: Path, args: list[str]) -> tuple[float, float]:
    """(seconds, peak resident MB) of `python -m <args>` run from the code tree `code`."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        child = subprocess.Popen([sys.executable, "-m", *args], cwd=code, env=env, stdout=log, stderr=log)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            log.seek(0)
            sys.stderr.write(log.read().decode()[-4000:])
            raise SystemExit(f"{args[0]} failed in {code} (exit {child.returncode})")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def make_inputs(rows: int, work: Path) -> None:
    from data_stages import make_table

    from pipeline.params import SplitParams
    from pipeline.tables import read_parquet, write_parquet
    from stages.split import split_stratified

    make_table(rows, work / "clean.parquet")
    labels = read_parquet(work / "clean.parquet", columns=["label"])["label"].to_numpy()
    write_parquet(split_stratified(labels, SplitParams()), work / "split.parquet")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=700_000)
    p.add_argument("--baseline", help="git revision whose stage CLIs to compare with (e.g. the commit before a change)")
    p.add_argument("--make-inputs", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.make_inputs:
        make_inputs(args.rows, Path(args.make_inputs))
        return

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--make-inputs", tmp], check=True)
        size = (work / "clean.parquet").stat().st_size / 2**20
        print(f"{args.rows:,} rows x 784 uint8 pixels ({size:.0f} MB Parquet) in {time.perf_counter() - started:.0f} s")
        trees = {"current": ROOT}
        if args.baseline:
            trees["baseline"] = work / "baseline"
            trees["baseline"].mkdir()
            archive = subprocess.run(
                ["git", "archive", args.baseline], capture_output=True, check=True
            )  # the repository here
            subprocess.run(["tar", "-x", "-C", str(trees["baseline"])], input=archive.stdout, check=True)
        results: dict[str, dict[str, tuple[float, float]]] = {}
        for tag, code in trees.items():
            cmds = commands(work, bench_params(code, work / f"params-{tag}.yaml"), tag)
            results[tag] = {stage: peak(code, cmds[stage]) for stage in STAGES}

    header = f"{'stage':>9} {'seconds':>8} {'peak MB':>8}"
    if args.baseline:
        header += f" {'baseline s':>10} {'baseline MB':>11} {'MB ratio':>8}"
    print(header)
    for stage in STAGES:
        seconds, mb = results["current"][stage]
        line = f"{stage:>9} {seconds:>8.1f} {mb:>8.0f}"
        if args.baseline:
            base_s, base_mb = results["baseline"][stage]
            line += f" {base_s:>10.1f} {base_mb:>11.0f} {mb / base_mb:>8.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
