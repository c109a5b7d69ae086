"""Processes of a run: one, or several started by `torchrun` (PyTorch's elastic agent).

`Dist.from_env()` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), joins the
process group (NCCL on GPUs, gloo on CPU) and picks the rank's device. Only rank 0 writes
logs, checkpoints and predictions; every rank reads its share of the same global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    """This process's place in the run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def initialized(self) -> bool:
        return self.world > 1

    @classmethod
    def from_env(cls, device: str) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.startswith("cuda"):
            index = local_rank if device == "cuda" or world > 1 else torch.device(device).index
            target = torch.device("cuda", index or 0)
            torch.cuda.set_device(target)
        else:
            target = torch.device(device)
        if world > 1 and not dist.is_initialized():
            backend = "nccl" if target.type == "cuda" else "gloo"
            dist.init_process_group(backend, device_id=target if target.type == "cuda" else None)
        return cls(rank=rank, world=world, local_rank=local_rank, device=target)

    def barrier(self) -> None:
        if self.initialized:
            dist.barrier()

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (in place; returned for convenience)."""
        if self.initialized:
            dist.all_reduce(tensor)
        return tensor

    def broadcast_object(self, value):
        """Rank 0's `value` on every rank."""
        if not self.initialized:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, value) -> list:
        """Every rank's `value`, in rank order (on every rank)."""
        if not self.initialized:
            return [value]
        out = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def close(self) -> None:
        if self.initialized and dist.is_initialized():
            dist.barrier()  # gloo aborts a rank whose peer leaves while it still talks to it
            dist.destroy_process_group()
