"""Data-parallel training through PyTorch's own engine: `torchrun --nproc-per-node N -m atld_deploy train ...`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; the process group uses NCCL on GPUs and gloo on CPUs.
`--batch-size` stays the *global* batch: each process takes every N-th example of each batch, so a run
can be resumed with a different process count and still walk the same data order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This process's share of a global batch of indices."""
        return idx[self.rank :: self.world]


def init_distributed(device: str) -> DistContext:
    """Join the process group torchrun set up, or return a single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistContext(rank, world, local)


def wrap(module: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """DDP-wrap `module` for the training forward when running distributed (identity otherwise)."""
    if not ctx.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
