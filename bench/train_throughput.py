"""Training throughput: the train stage's loop against a plain hand-written PyTorch loop.

Both train the same model (from params.yaml `train`) on the same rows, with the same batch size,
optimizer and learning-rate schedule, for the same number of epochs (early stopping off), and both
score the validation rows after every epoch. The stage's loop (`pipeline.training.fit`) also does
what the plain one leaves out: deterministic CPU kernels, mixed-precision hooks, loss and metric
bookkeeping (loss, accuracy, macro F1), early-stopping state, and resumable checkpoints
(`train.checkpoint_interval_s` apart, and after the last epoch), written atomically on a
background thread.

Two data sets:
- digits: scikit-learn's digits (8x8), 70% train / 15% validation; an epoch takes milliseconds,
  so per-epoch costs (checkpoint, metrics) weigh most here;
- synthetic: 20,000 training rows of 28x28 (MNIST-shaped, class templates plus noise); an epoch
  takes seconds, so per-step costs show.

Runs alternate (which loop goes first swaps every repeat, so slow drift on a shared machine hits
both alike). Prints samples/s of each loop's best run, their ratio, and the median of the ratios
of the repeats' pairs (goal >= 0.97). It also prints the ratio of the loops' median CPU time
(every thread of the process, the checkpoint writer's included): on a machine other jobs keep
busy, wall time mostly measures the neighbours, and with `--threads 1` CPU time still measures
the work each loop does.

    python bench/train_throughput.py [--sets digits synthetic] [--epochs 10] [--repeats 8] [--augment]
                                     [--checkpoint-interval-s S] [--threads N]
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
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.augment import augment_images  # noqa: E402
from pipeline.compute import device_tensors, select_device  # noqa: E402
from pipeline.models import build_model, config_for, set_input_scale  # noqa: E402
from pipeline.optimizers import make_optimizer, make_scheduler  # noqa: E402
from pipeline.params import DataParams, TrainParams, load_params  # noqa: E402
from pipeline.rows import Rows  # noqa: E402
from pipeline.scaling import input_scale  # noqa: E402
from pipeline.training import fit  # noqa: E402


def digits_rows(seed: int = 0) -> tuple[Rows, Rows]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    x, y = digits.data[order].astype(np.uint8), digits.target[order].astype(np.int64)  # stored as clean does
    n_train, n_val = int(0.7 * len(y)), int(0.15 * len(y))
    return Rows(x[:n_train], y[:n_train]), Rows(x[n_train : n_train + n_val], y[n_train : n_train + n_val])


def synthetic_rows(n_train: int = 20_000, n_val: int = 2_000, side: int = 28, seed: int = 0) -> tuple[Rows, Rows]:
    """MNIST-shaped rows: one random template per class, plus noise, as 0..255 pixel values."""
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 255, (10, side * side)).astype(np.float32)
    y = rng.integers(0, 10, n_train + n_val)
    x = np.clip(templates[y] + rng.normal(0, 60, (len(y), side * side)), 0, 255).astype(np.uint8)
    return Rows(x[:n_train], y[:n_train]), Rows(x[n_train:], y[n_train:])


def plain_loop(config, train: Rows, val: Rows, params: TrainParams, data: DataParams, augment: bool) -> None:
    """The textbook loop: shuffle, slice, forward, loss, backward, step; then score the validation
    rows, as any loop that early-stops must."""
    device = select_device(params.device)
    torch.manual_seed(params.seed)
    generator = torch.Generator().manual_seed(params.seed)
    model = build_model(config)
    offset, factor = input_scale(train.x, data)
    set_input_scale(model, torch.from_numpy(offset), torch.from_numpy(factor))
    model.to(device).train()
    optimizer = make_optimizer(model, params)
    total = -(-len(train) // params.batch_size) * params.epochs
    scheduler = make_scheduler(optimizer, params, total)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=params.label_smoothing)
    x, y = device_tensors(train, device)
    x_val, y_val = device_tensors(val, device)
    a = params.augment
    for _ in range(params.epochs):
        order = torch.randperm(len(y), generator=generator).to(device)
        for start in range(0, len(y), params.batch_size):
            idx = order[start : start + params.batch_size]
            xb = x[idx].float()  # rows stay uint8 until a batch is taken, as in the stage
            if augment and data.image_shape is not None:
                xb = augment_images(xb, data.image_shape, float(offset[0]), a.max_shift, a.max_rotation, generator)
            loss = loss_fn(model(xb), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_val.float()).argmax(1) == y_val).float().mean().item()  # noqa: F841
        model.train()
    if device.type == "cuda":
        torch.cuda.synchronize()


def compare(name: str, train: Rows, val: Rows, params: TrainParams, data: DataParams, repeats: int) -> float:
    """Time both loops `repeats` times each; print and return the median ratio of the pairs."""
    augment = params.augment.enabled and data.image_shape is not None
    config = config_for(params.model, data, train.x.shape[1])
    samples = len(train) * params.epochs
    print(
        f"[{name}] {len(train)} rows x {params.epochs} epochs, batch {params.batch_size}, {config.arch}, "
        f"augment {augment}, checkpoint interval {params.checkpoint_interval_s:g} s (0 = every epoch)",
        flush=True,
    )
    times: dict[str, list[float]] = {"plain": [], "stage": []}
    cpu: dict[str, list[float]] = {"plain": [], "stage": []}  # process CPU seconds (all threads)
    with tempfile.TemporaryDirectory() as tmp:
        # One untimed short run of each first: kernel selection and allocator warm-up.
        warm = params.model_copy(update={"epochs": 1})
        plain_loop(config, train, val, warm, data, augment)
        fit(config, train, val, warm, data, progress=False)
        checkpoint = Path(tmp) / "checkpoint.pt"
        runs = {
            "plain": lambda: plain_loop(config, train, val, params, data, augment),
            "stage": lambda: fit(config, train, val, params, data, checkpoint, progress=False),
        }
        for repeat in range(repeats):
            for loop in sorted(runs, reverse=repeat % 2 == 1):
                checkpoint.unlink(missing_ok=True)  # a fresh run each time, not a resume
                start, start_cpu = time.perf_counter(), time.process_time()
                runs[loop]()
                times[loop].append(time.perf_counter() - start)
                cpu[loop].append(time.process_time() - start_cpu)
    plain, stage = samples / min(times["plain"]), samples / min(times["stage"])
    pairs = statistics.median(p / s for p, s in zip(times["plain"], times["stage"], strict=True))
    print(f"  plain loop:  {plain:10.0f} samples/s (best of {repeats})")
    print(f"  train stage: {stage:10.0f} samples/s (best of {repeats})")
    cpu_ratio = statistics.median(cpu["plain"]) / statistics.median(cpu["stage"])
    print(f"  ratio:       {stage / plain:10.3f} best-vs-best, {pairs:.3f} median of pairs (goal >= 0.97)")
    print(
        f"  CPU time:    {cpu_ratio:10.3f} plain/stage, medians (steadier than wall time on a busy machine)", flush=True
    )
    return pairs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--sets", nargs="+", choices=["digits", "synthetic"], default=["digits", "synthetic"])
    p.add_argument("--epochs", type=int, default=10, help="digits epochs (synthetic: --synthetic-epochs)")
    p.add_argument("--repeats", type=int, default=8, help="digits repeats (synthetic: --synthetic-repeats)")
    p.add_argument("--synthetic-epochs", type=int, default=2)
    p.add_argument("--synthetic-repeats", type=int, default=3)
    p.add_argument("--augment", action="store_true", help="augment in both loops (default: params, if on)")
    p.add_argument("--checkpoint-interval-s", type=float, help="override train.checkpoint_interval_s")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    params = load_params(args.params)
    device = select_device(params.train.device)
    print(f"device {device.type}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}")

    def train_params(epochs: int) -> TrainParams:
        return params.train.model_copy(
            update={
                "epochs": epochs,
                "checkpoint_interval_s": (
                    params.train.checkpoint_interval_s
                    if args.checkpoint_interval_s is None
                    else args.checkpoint_interval_s
                ),
                "early_stopping": params.train.early_stopping.model_copy(update={"patience": epochs + 1}),
                "augment": params.train.augment.model_copy(
                    update={"enabled": args.augment or params.train.augment.enabled}
                ),
            }
        )

    if "digits" in args.sets:
        compare("digits", *digits_rows(), train_params(args.epochs), params.data, args.repeats)
    if "synthetic" in args.sets:
        data = params.data.model_copy(update={"image_shape": [28, 28], "value_range": [0.0, 255.0]})
        compare("synthetic", *synthetic_rows(), train_params(args.synthetic_epochs), data, args.synthetic_repeats)


if __name__ == "__main__":
    main()
