"""Data-parallel training: launching under torchrun, the process group, and the few collectives
the training loop needs.

`train.distributed` asks for `nproc_per_node` processes on each of `nnodes` hosts. A stage started
the usual way (`python -m stages.train ...`, as DVC and Airflow run it) re-executes itself under
`python -m torch.distributed.run` when that is more than one process, so `dvc.yaml` and the DAG stay
as they are. Inside torchrun every process joins one process group: NCCL on CUDA (one GPU per
process, `LOCAL_RANK`), gloo on CPU.

A multi-host run needs a rendezvous that every host can reach: `TRAIN_RDZV_ENDPOINT=host:port`
(and optionally `TRAIN_RDZV_ID`, the same on every host) come from the environment, never from
params, because they name machines of one deployment.

Without torchrun (one process, the default) nothing here starts a process group: `current()` is
rank 0 of 1 and every collective below returns its input.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from pipeline.errors import StageError
from pipeline.params import DistributedParams

log = logging.getLogger(__name__)

ENDPOINT_ENV = "TRAIN_RDZV_ENDPOINT"
RUN_ID_ENV = "TRAIN_RDZV_ID"


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    group: bool = False  # in a torch.distributed process group (under torchrun)

    @property
    def main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, metrics and the model."""
        return self.rank == 0


ALONE = World()  # one process, no process group


def current() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), group=True)
    return ALONE


def under_torchrun(env: Mapping[str, str] = os.environ) -> bool:
    """torchrun (torch.distributed.run) started this process."""
    return "LOCAL_RANK" in env and "WORLD_SIZE" in env and "TORCHELASTIC_RUN_ID" in env


def torchrun_command(
    params: DistributedParams, module: str, argv: list[str], env: Mapping[str, str] = os.environ
) -> list[str] | None:
    """The command that runs `python -m <module> <argv>` under torchrun, or None when this process
    should train by itself (one process asked for, or already under torchrun)."""
    if params.world_size == 1 or under_torchrun(env):
        return None
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={params.nproc_per_node}"]
    cmd += [f"--nnodes={params.nnodes}", "--max-restarts=0"]  # a failed rank fails the stage; DVC reruns resume
    if params.nnodes == 1:
        cmd.append("--standalone")  # a local rendezvous on a free port
    else:
        endpoint = env.get(ENDPOINT_ENV)
        if not endpoint:
            raise StageError(
                f"train.distributed.nnodes is {params.nnodes}: set {ENDPOINT_ENV}=<host>:<port> (a port on the "
                "first host that every host can reach) in each host's environment, or set nnodes: 1"
            )
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={env.get(RUN_ID_ENV, module)}"]
    return [*cmd, "-m", module, *argv]


def relaunch_under_torchrun(params: DistributedParams, module: str) -> None:
    """Replace this process with torchrun running the same stage, when params ask for DDP."""
    cmd = torchrun_command(params, module, sys.argv[1:])
    if cmd is None:
        return
    log.info("%d processes per host on %d host(s): running under torchrun", params.nproc_per_node, params.nnodes)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, cmd)


@contextlib.contextmanager
def session(device: str) -> Iterator[World]:
    """Join the process group for the block when torchrun started us (else: rank 0 of 1).

    `device` is `train.device`; CUDA (given or found by "auto") means NCCL with one GPU per
    process, anything else gloo.
    """
    if not under_torchrun() or dist.is_initialized():
        yield current()
        return
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        local_rank, visible = int(os.environ["LOCAL_RANK"]), torch.cuda.device_count()
        if local_rank >= visible:
            raise StageError(
                f"process {local_rank} has no GPU: {visible} visible (CUDA_VISIBLE_DEVICES) for "
                f"train.distributed.nproc_per_node {os.environ.get('LOCAL_WORLD_SIZE')}; give the worker as "
                "many GPUs as processes per host"
            )
        torch.cuda.set_device(local_rank)  # "cuda" now means this process's GPU
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        world = current()
        log.info("process %d of %d (%s)", world.rank, world.size, dist.get_backend())
        yield world
    finally:
        dist.destroy_process_group()


# --- collectives (no-ops in one process) ------------------------------------------------------


def sum_(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """The element-wise sum over all processes (in place)."""
    if world.size > 1:
        dist.all_reduce(tensor)
    return tensor


def gather_rows(part: torch.Tensor, total: int, world: World) -> torch.Tensor:
    """Reassemble rows that were dealt out as `rows[rank::size]` into their original order."""
    if world.size == 1:
        return part
    per_rank = -(-total // world.size)
    padded = torch.zeros((per_rank, *part.shape[1:]), dtype=part.dtype, device=part.device)
    padded[: len(part)] = part
    parts = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(parts, padded)
    # parts[r][i] is row i * size + r
    return torch.stack(parts, dim=1).reshape(per_rank * world.size, *part.shape[1:])[:total]


def broadcast_buffers(module: torch.nn.Module, world: World) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics drift apart while training)."""
    if world.size > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def from_main(obj: Any, world: World) -> Any:
    """Rank 0's `obj` on every process (e.g. the checkpoint only rank 0 reads)."""
    if world.size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, world: World) -> list[Any]:
    """Every process's `obj`, in rank order, on every process."""
    if world.size == 1:
        return [obj]
    found: list[Any] = [None] * world.size
    dist.all_gather_object(found, obj)
    return found


def agree(flag: bool, world: World, device: torch.device) -> bool:
    """Rank 0's `flag` on every process (a decision all of them must take alike)."""
    if world.size == 1:
        return flag
    box = torch.tensor([flag], dtype=torch.uint8, device=device)
    dist.broadcast(box, src=0)
    return bool(box.item())
