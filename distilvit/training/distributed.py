"""The process group of a multi-process run (torchrun, accelerate launch, `train --gpus N`): rank, barrier and
main-process-first ordering on the torch.distributed group the Trainer then reuses. One process: None.
It knows nothing about what the processes train."""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

from distilvit.training import device as devices


def process_group(run_plan: devices.TrainPlan):
    """The process group of a torchrun / accelerate launch (initialised here with the plan's backend), else None."""
    if run_plan.world_size == 1:
        return None
    return _ProcessGroup(run_plan)


class _ProcessGroup:
    """Rank, barrier and main-first ordering on the torch.distributed group the Trainer then reuses.

    accelerate's PartialState was used first, but on a machine with a CUDA GPU its barrier passed
    `device_ids=[local_rank]` even for CPU processes on Gloo ("CUDA error: invalid device ordinal" on rank 1,
    accelerate 1.15, torch 2.11, H100 machine, 2026-11-25); this barrier names a device only for NCCL.
    """

    def __init__(self, run_plan: devices.TrainPlan):
        import torch.distributed as dist

        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.backend = run_plan.backend
        if self.backend == "nccl":
            torch.cuda.set_device(self.local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend=self.backend)
        self.is_main_process = dist.get_rank() == 0

    def wait_for_everyone(self) -> None:
        import torch.distributed as dist

        dist.barrier(device_ids=[self.local_rank]) if self.backend == "nccl" else dist.barrier()

    @contextmanager
    def main_process_first(self):
        if not self.is_main_process:
            self.wait_for_everyone()
        yield
        if self.is_main_process:
            self.wait_for_everyone()
