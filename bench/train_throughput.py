"""Training throughput: the train stage's loop against a plain hand-written PyTorch loop.

Both train the same model (from params.yaml `train`) on the same rows (scikit-learn's digits,
70% train / 15% validation), with the same batch size, optimizer and learning-rate schedule, for
the same number of epochs (early stopping off), and both score the validation rows after every
epoch. The stage's loop (`pipeline.training.fit`) also does what the plain one leaves out: mixed
precision and loss scaling hooks, loss and metric bookkeeping, and an atomic checkpoint after
every epoch. Runs alternate and each loop keeps its best time, which damps
noise from other work on the machine. Prints samples/s of both and the ratio (target >= 0.95).

    python bench/train_throughput.py [--epochs 10] [--repeats 8] [--augment]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.models import build_model  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from pipeline.rows import Rows  # noqa: E402
from pipeline.training import (  # noqa: E402
    augment_images,
    config_for,
    device_tensors,
    fit,
    input_scale,
    make_optimizer,
    make_scheduler,
    select_device,
)


def digits_rows(seed: int = 0) -> tuple[Rows, Rows]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    x, y = digits.data[order].astype(np.float32), digits.target[order].astype(np.int64)
    n_train, n_val = int(0.7 * len(y)), int(0.15 * len(y))
    return Rows(x[:n_train], y[:n_train]), Rows(x[n_train : n_train + n_val], y[n_train : n_train + n_val])


def plain_loop(config, train: Rows, val: Rows, params, data, augment: bool) -> None:
    """The textbook loop: shuffle, slice, forward, loss, backward, step; then score the validation
    rows, as any loop that early-stops must."""
    device = select_device(params.device)
    torch.manual_seed(params.seed)
    generator = torch.Generator().manual_seed(params.seed)
    model = build_model(config)
    offset, factor = input_scale(train.x, data)
    model.scale.offset.copy_(torch.from_numpy(offset))
    model.scale.factor.copy_(torch.from_numpy(factor))
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
            xb = x[idx]
            if augment:
                xb = augment_images(xb, data.image_shape, float(offset[0]), a.max_shift, a.max_rotation, generator)
            loss = loss_fn(model(xb), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()  # noqa: F841
        model.train()
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--augment", action="store_true", help="augment in both loops (default: params, if on)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    params = load_params(args.params)
    augment = args.augment or params.train.augment.enabled
    train_params = params.train.model_copy(
        update={
            "epochs": args.epochs,
            "early_stopping": params.train.early_stopping.model_copy(update={"patience": args.epochs + 1}),
            "augment": params.train.augment.model_copy(update={"enabled": augment}),
        }
    )
    train, val = digits_rows()
    config = config_for(train_params, params.data, train.x.shape[1])
    samples = len(train) * args.epochs
    device = select_device(train_params.device)
    print(
        f"device {device.type}, {torch.get_num_threads()} CPU threads, {len(train)} rows x {args.epochs} epochs, "
        f"batch {train_params.batch_size}, {config['arch']}, augment {augment}"
    )

    best = {"plain": float("inf"), "stage": float("inf")}
    with tempfile.TemporaryDirectory() as tmp:
        # One untimed short run of each first: kernel selection and allocator warm-up.
        warm = train_params.model_copy(update={"epochs": 1})
        plain_loop(config, train, val, warm, params.data, augment)
        fit(config, train, val, warm, params.data, progress=False)
        checkpoint = Path(tmp) / "checkpoint.pt"
        runs = {
            "plain": lambda: plain_loop(config, train, val, train_params, params.data, augment),
            "stage": lambda: fit(config, train, val, train_params, params.data, checkpoint, progress=False),
        }
        for repeat in range(args.repeats):
            # Alternate which loop goes first, so slow drift on a shared machine hits both alike.
            for name in sorted(runs, reverse=repeat % 2 == 1):
                checkpoint.unlink(missing_ok=True)  # a fresh run each time, not a resume
                start = time.perf_counter()
                runs[name]()
                best[name] = min(best[name], time.perf_counter() - start)

    plain, stage = samples / best["plain"], samples / best["stage"]
    print(f"plain loop:  {plain:10.0f} samples/s")
    print(f"train stage: {stage:10.0f} samples/s  (checkpoint every epoch included)")
    print(f"ratio:       {stage / plain:10.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
