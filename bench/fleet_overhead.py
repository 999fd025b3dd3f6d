"""What shared-nothing workers cost per stage task: the fleet's task bodies vs one shared workspace.

A generated DVC pipeline (a `prep` stage writing `--mb` MB, then `--stages` stages each reading it
and writing a small file) runs, in the same process and on the same disk:

- baseline: the way tasks ran when all workers shared one workspace: `dvc repro --single-item
  <stage>` per stage in one checkout, then `dvc push` once;
- fleet: `orchestration.steps` per task (a fresh checkout of the run commit, lock entries merged
  from upstream results, inputs pulled from the DVC remote, outputs and run cache pushed), on one
  worker root, then alternating between two worker roots (every input crosses the remote).

Prints wall times, the ratio to the baseline and the median per-task pull and push seconds.

    python bench/fleet_overhead.py [--stages 6] [--mb 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestration import steps  # noqa: E402
from orchestration.workspace import dvc_command  # noqa: E402

PARAMS = """
data: {source: data.bin, label: label, classes: [0, 1]}
train: {model: {arch: mlp}}
airflow: {demo_batches: false, gpu_stages: []}
"""
GIT = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}


def project(folder: Path, stages: int, mb: int) -> tuple[Path, list[str]]:
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(textwrap.dedent(PARAMS))
    (folder / "prep.py").write_text(f"import os\nopen('data.bin', 'wb').write(os.urandom({mb} * 2**20))\n")
    (folder / "use.py").write_text(
        "import hashlib, sys\nh = hashlib.md5(open('data.bin', 'rb').read()).hexdigest()\n"
        "open(f'out/{sys.argv[1]}.txt', 'w').write(h)\n"
    )
    (folder / "out").mkdir()
    (folder / "out" / ".gitkeep").write_text("")
    body = ["stages:", "  prep:", "    cmd: python prep.py", "    deps: [prep.py]", "    outs: [data.bin]"]
    body += ["  use:", f"    foreach: {list(range(stages))}", "    do:", "      cmd: python use.py ${item}"]
    body += ["      deps: [data.bin, use.py]", "      outs:", "        - out/${item}.txt"]
    (folder / "dvc.yaml").write_text("\n".join(body) + "\n")
    (folder / ".gitignore").write_text("/.airflow/\n/.dvc-remote/\n/data.bin\n")
    env = {**os.environ, **GIT}
    for cmd in (["git", "init", "-q"], dvc_command("init", "-q"), ["git", "add", "-A"], ["git", "commit", "-qm", "b"]):
        subprocess.run(cmd, cwd=folder, env=env, check=True, capture_output=True)
    return folder, ["prep", *(f"use@{i}" for i in range(stages))]


def baseline(folder: Path, order: list[str]) -> float:
    env = {**os.environ, **GIT}
    subprocess.run(
        dvc_command("remote", "add", "-d", "r", str(folder / ".dvc-remote")), cwd=folder, env=env, check=True
    )
    started = time.perf_counter()
    for name in order:
        subprocess.run(
            dvc_command("repro", "--single-item", name), cwd=folder, env=env, check=True, capture_output=True
        )
    subprocess.run(dvc_command("push", "-q"), cwd=folder, env=env, check=True)
    return time.perf_counter() - started


def fleet(folder: Path, order: list[str], roots: list[str], run_id: str) -> tuple[float, list[dict]]:
    workers = [
        steps.Fleet.resolve(folder, {**os.environ, "RETRAIN_WORKER_ROOT": str(folder.parent / root)}) for root in roots
    ]
    started = time.perf_counter()
    prepared = steps.prepare(workers[0], run_id, None)
    results: list[dict] = []
    for i, name in enumerate(order):
        results.append(steps.stage(workers[i % len(workers)], run_id, prepared, name, results))
    return time.perf_counter() - started, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=6, help="stages reading the prep output")
    parser.add_argument("--mb", type=int, default=20, help="size of the prep output in MB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        base_dir, order = project(Path(tmp) / "baseline", args.stages, args.mb)
        base_s = baseline(base_dir, order)
        one_dir, _ = project(Path(tmp) / "one", args.stages, args.mb)
        one_s, one = fleet(one_dir, order, ["w1"], "one-worker")
        two_dir, _ = project(Path(tmp) / "two", args.stages, args.mb)
        two_s, two = fleet(two_dir, order, ["wa", "wb"], "two-workers")
    n = len(order)
    print(
        f"{n} stage tasks, {args.mb} MB input shared by {args.stages} of them (machine load: {os.getloadavg()[0]:.1f})"
    )
    print(f"baseline (one shared workspace, dvc repro per stage, one dvc push): {base_s:6.1f}s")
    for label, seconds, results in (("fleet, one worker", one_s, one), ("fleet, two workers", two_s, two)):
        pulls = statistics.median(r["pull_s"] for r in results)
        pushes = statistics.median(r["push_s"] for r in results)
        print(
            f"{label:<20} {seconds:6.1f}s  ratio {seconds / base_s:4.2f}  per task +{(seconds - base_s) / n:4.2f}s  "
            f"median pull {pulls:.2f}s, push {pushes:.2f}s  outcomes {sorted({r['outcome'] for r in results})}"
        )


if __name__ == "__main__":
    main()
