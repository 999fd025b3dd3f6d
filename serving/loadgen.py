"""A load generator for Triton: client threads sending requests as fast as answers come back.

`drive` runs one cell (one model, one concurrency) and reports rows/s and p50/p99 latency;
`alternate` runs rounds over several models and concurrencies, rotating which model goes first in
each round, so that a change of load on the machine hits every model alike. The tune stage, the
gate's speed check and bench/serving_latency.py all measure with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def drive(
    call: Callable[[Any, np.ndarray], None],
    make_state: Callable[[], Any],
    batches: list[np.ndarray],
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    probe: Callable[[], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Run `call(state, batch)` from `concurrency` threads until `max_requests` or `max_seconds`;
    `probe` snapshots CPU times right before the start and right after the last request."""
    latencies: list[float] = []
    errors = [0]
    counter = iter(range(max_requests))
    lock = threading.Lock()
    start = threading.Barrier(concurrency + 1)

    def worker(state: Any) -> None:
        start.wait()
        while time.perf_counter() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            begun = time.perf_counter()
            try:
                call(state, batches[i % len(batches)])
            except Exception:
                with lock:
                    errors[0] += 1
                continue
            elapsed = time.perf_counter() - begun
            with lock:
                latencies.append(elapsed)

    states = [make_state() for _ in range(concurrency)]
    threads = [threading.Thread(target=worker, args=(state,)) for state in states]
    for thread in threads:
        thread.start()
    before = probe() if probe else {}
    deadline = time.perf_counter() + max_seconds
    started = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    after = probe() if probe else {}
    for state in states:
        if hasattr(state, "close"):
            state.close()
    ms = np.array(latencies) * 1000
    first = batches[0]
    rows = len(next(iter(first.values())) if isinstance(first, dict) else first)
    return {
        "requests": len(latencies),
        "errors": errors[0],
        "requests_per_s": len(latencies) / wall,
        "rows_per_s": rows * len(latencies) / wall,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        "cpu_before": before,
        "cpu_after": after,
    }


def alternate(
    calls: dict[str, tuple[Callable[[Any, Any], None], Callable[[], Any]]],
    batches: list[Any],
    concurrencies: list[int],
    rounds: int,
    max_requests: int,
    max_seconds: float,
) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """Every model of `calls` ({name: (call, make_state)}) at every concurrency, `rounds` times.
    Within a round the models take turns cell by cell, and the first model moves one place each
    round: a burst of load elsewhere on the machine lands on all of them. Returns
    {name: {concurrency: [one cell per round]}} (the cells as `drive` returns them)."""
    names = list(calls)
    cells: dict[str, dict[int, list[dict[str, Any]]]] = {n: {c: [] for c in concurrencies} for n in names}
    for k in range(rounds):
        order = names[k % len(names) :] + names[: k % len(names)]
        for c in concurrencies:
            for name in order:
                call, make_state = calls[name]
                cell = drive(call, make_state, batches, c, max_requests, max_seconds)
                cell.pop("cpu_before")
                cell.pop("cpu_after")
                cells[name][c].append(cell)
    return cells
