"""User traffic for the serving tests: a thread sending unversioned requests the whole time and
sorting every answer by the model that gave it (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from serving.client import ClientSettings, TritonClient


def golden_rows(candidate: Path) -> np.ndarray:
    return np.asarray(json.loads((candidate / "golden.json").read_text())["inputs"], dtype=np.float32)


def true_outputs(candidate: Path, rows: np.ndarray) -> np.ndarray:
    """What the candidate's model really answers for `rows` (its ONNX file run in process)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(candidate / "model.onnx"), providers=["CPUExecutionProvider"])
    (outputs,) = session.run(["probabilities"], {"input": rows})
    return outputs


class Traffic(threading.Thread):
    """Unversioned requests for `name` until stopped. `models` maps a label to a candidate folder;
    each answer counts for the model whose true outputs it matches, else as "unknown". Each
    request sends the first model's golden rows, or (with `rows`) the next 4 of `rows` in turn; with
    `id_prefix`, request n has the id `<id_prefix><n>` (its rows: `chunks[n % len(chunks)]`)."""

    def __init__(
        self,
        settings: ClientSettings,
        name: str,
        models: dict[str, Path],
        limit_s: float = 600.0,
        rows: np.ndarray | None = None,
        id_prefix: str | None = None,
    ):
        super().__init__(daemon=True)
        first = next(iter(models.values()))
        self.settings, self.name, self.limit_s, self.id_prefix = settings, name, limit_s, id_prefix
        every = golden_rows(first) if rows is None else rows
        self.chunks = [every[i : i + 4] for i in range(0, len(every), 4)]
        self.expected = {
            label: [true_outputs(folder, chunk) for chunk in self.chunks] for label, folder in models.items()
        }
        self.answers: Counter[str] = Counter()
        self.failures: list[tuple[float, str]] = []  # (time.monotonic(), error)
        self.timeline: list[tuple[float, str]] = []  # (time.monotonic(), label) when the label changes
        self.stopped = threading.Event()
        self.slowest = (0.0, 0.0)  # (when it started, seconds) of the slowest answered request

    def classify(self, got: np.ndarray, chunk: int = 0) -> str:
        return next(
            (label for label, outputs in self.expected.items() if np.allclose(got, outputs[chunk], atol=1e-5)),
            "unknown",
        )

    def run(self) -> None:
        deadline = time.monotonic() + self.limit_s  # bounded even if a test forgets to stop it
        # A slow answer is still an answer: the timeout only catches a request that hangs for good.
        with TritonClient(dataclasses.replace(self.settings, retries=0, timeout_s=120.0)) as client:
            sent = 0
            while not self.stopped.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                chunk, sent = sent % len(self.chunks), sent + 1
                try:
                    request_id = "" if self.id_prefix is None else f"{self.id_prefix}{sent - 1}"
                    got = client.predict(self.name, self.chunks[chunk], request_id=request_id)
                    label = self.classify(got, chunk)
                    if time.monotonic() - started > self.slowest[1]:
                        self.slowest = (started, time.monotonic() - started)
                except Exception as error:  # every failure counts, whatever its type
                    self.failures.append((time.monotonic(), repr(error)))
                    time.sleep(0.01)
                    continue
                self.answers[label] += 1
                if not self.timeline or self.timeline[-1][1] != label:
                    self.timeline.append((time.monotonic(), label))

    def __enter__(self) -> Traffic:
        self.start()
        time.sleep(0.3)  # some requests before the operation under test
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # and some after
        self.stopped.set()
        self.join(timeout=60)

    def failures_outside(self, windows: list[tuple[float, float]]) -> list[str]:
        return [error for at, error in self.failures if not any(start <= at <= end for start, end in windows)]

    def summary(self) -> str:
        return f"answers {dict(self.answers)}, failed {len(self.failures)}, slowest answer {self.slowest[1]:.2f}s"
