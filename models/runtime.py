"""Device and distributed environment, one place for every entry point (generate, train, scale).

torch is imported inside the functions, so that importing this module (e.g. for ``distill
--help`` or the pure scaling code) stays cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its rank among ``world`` processes and its torch device."""

    rank: int
    world: int
    local_rank: int
    device: Any  # torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str = "auto", local_rank: int = 0) -> Any:
    """``auto`` → this rank's CUDA device when CUDA is visible, else cpu; ``cuda`` without CUDA
    is a ValueError naming the fix."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                "--device cuda asked for, but no CUDA GPU is visible; use --device cpu"
            )
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device("cpu")


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def init_runtime(device: str = "auto", timeout_s: float | None = None) -> Runtime:
    """Join torchrun's process group when launched by it (nccl on CUDA, else gloo).

    ``timeout_s``: how long a collective (a barrier) may wait for the slowest rank; None keeps
    torch's default (30 min gloo, 10 min nccl).
    """
    import torch

    rank, world, local_rank = dist_env()
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"
        timeout = timedelta(seconds=timeout_s) if timeout_s else None
        if backend == "nccl":
            # nccl collectives without a device (barrier, broadcast_object_list) use the current
            # one: cuda:0 on every rank of a node unless each rank selects its own.
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group(backend, timeout=timeout)
    return Runtime(rank, world, local_rank, resolve_device(device, local_rank))


def share_from_main(value: T, world: int, device: Any = None) -> T:
    """Rank 0's ``value`` on every rank (``value`` must pickle); itself for one process.

    Ranks on other nodes need not see rank 0's files: what rank 0 read is sent to them.
    ``device``: this rank's device (nccl sends through it); None for gloo.
    """
    import torch

    if world == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0, device=device)
    return box[0]


def barrier(world: int) -> None:
    """Wait for every rank (no-op for one process)."""
    import torch

    if world > 1:
        torch.distributed.barrier()
