"""The router model's config: what serving/backend/router.py reads from its `parameters`.

The router fronts the model's name during a rollout. Its inputs and outputs are the champion's
(what clients call today), it runs on the CPU in the Python backend whatever backend serves the
versions behind it (onnxruntime, libtorch on GPUs), and everything it needs to know comes in the
config it is loaded with: which models and versions it calls, the mode and share, the step, and
the latency buckets it counts in. A new step is a reload with a new config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Latency buckets of the router's histogram: 160 buckets from 50 us, each 2^(1/8) (9%) wider than
# the one before, up to ~52 s; a slower answer counts in the last one. Fine enough to tell a 20%
# shift at p95 apart, and few enough to read every poll.
LATENCY_START_S = 50e-6
LATENCY_RATIO = 2.0**0.125
LATENCY_BUCKETS = 160


def latency_bounds() -> np.ndarray:
    """Upper bound (seconds) of each latency bucket the router counts in."""
    return LATENCY_START_S * LATENCY_RATIO ** np.arange(LATENCY_BUCKETS)


ROUTER_SOURCE = Path(__file__).resolve().parents[1] / "backend" / "router.py"
ROUTER_FILE = "model.py"


@dataclass(frozen=True)
class Routing:
    """What the router of one step does: the parameters its config carries."""

    rollout_id: str
    step: int
    mode: str  # shadow | canary
    share: float  # canary: percent of requests the candidate answers
    champion: tuple[str, int]  # (model name, version) it calls
    candidate: tuple[str, int]
    shadow_in_flight: int

    def parameters(self) -> dict[str, str]:
        return {
            "rollout_id": self.rollout_id,
            "rollout_step": str(self.step),
            "rollout_mode": self.mode,
            "rollout_share": f"{self.share:g}",
            "rollout_champion_model": self.champion[0],
            "rollout_champion_version": str(self.champion[1]),
            "rollout_candidate_model": self.candidate[0],
            "rollout_candidate_version": str(self.candidate[1]),
            "rollout_shadow_in_flight": str(self.shadow_in_flight),
            "rollout_latency_buckets": f"{LATENCY_START_S!r},{LATENCY_RATIO!r},{LATENCY_BUCKETS}",
        }


def router_config(champion: Any, name: str, version: int, routing: Routing) -> Any:
    """The router's ModelConfig: the champion's name, batch size, inputs and outputs (what clients
    call), the Python backend on one CPU instance, dynamic batching (requests that arrive together
    are routed together, concurrently), `version` alone, and `routing` in its parameters."""
    from tritonclient.grpc.model_config_pb2 import ModelConfig, ModelInstanceGroup

    config = ModelConfig(name=name, backend="python", max_batch_size=champion.max_batch_size)
    config.input.extend(champion.input)
    config.output.extend(champion.output)
    config.dynamic_batching.SetInParent()
    config.instance_group.add(kind=ModelInstanceGroup.KIND_CPU, count=1)
    config.version_policy.specific.versions[:] = [version]
    for key, value in routing.parameters().items():
        config.parameters[key].string_value = value
    return config


def router_files(version: int) -> dict[str, bytes]:
    """The router's model file, keyed as load_model's `files` wants it."""
    return {f"file:{version}/{ROUTER_FILE}": ROUTER_SOURCE.read_bytes()}


def incompatible(champion: Any, candidate: Any) -> str | None:
    """Why the router cannot put `candidate` behind the champion's name (None: it can): clients
    send the champion's inputs and read its outputs, so the candidate must take the same inputs
    and give at least the same outputs, each with the same type and shape."""

    def tensors(items: Any) -> dict[str, tuple[int, list[int]]]:
        return {t.name: (int(t.data_type), list(t.dims)) for t in items}

    if tensors(candidate.input) != tensors(champion.input):
        return f"its inputs {tensors(candidate.input)} are not the champion's {tensors(champion.input)}"
    theirs, ours = tensors(champion.output), tensors(candidate.output)
    missing = {name: spec for name, spec in theirs.items() if ours.get(name) != spec}
    if missing:
        return f"it lacks the champion's outputs {missing} (it has {ours})"
    if candidate.max_batch_size < champion.max_batch_size:
        return f"its max_batch_size {candidate.max_batch_size} is below the champion's {champion.max_batch_size}"
    return None
