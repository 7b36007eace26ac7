"""torch.distributed for a training stage that runs as several processes (resources: nodes x tasks
or gpus). The engine starts them through srun and exports torchrun's variables (MASTER_ADDR,
MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK); here the process group is joined with NCCL on GPUs
and gloo on CPUs, with a timeout, so a dead rank fails the job instead of hanging the others.

Data parallel, with `batch_size` the *global* batch: every rank draws the same seeded permutation
and takes its share (rank r: positions r, r + world, ...) of each global batch; DDP averages the
gradients, so the update is the single-process one on the same global batch and the learning rate
needs no scaling. A last batch that does not split evenly gives some ranks one image fewer.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
from torch import nn


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's share of a global batch of indices."""
        return idx[self.rank::self.world_size] if self.active else idx

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the ranks (float64, on the CPU for gloo or the GPU for NCCL)."""
        if not self.active:
            return list(values)
        import torch.distributed as dist
        t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(t)
        return t.tolist()

    def from_main(self, *values: float) -> list[float]:
        """Rank 0's values on every rank: decisions (best epoch, early stop) must be the same."""
        if not self.active:
            return list(values)
        import torch.distributed as dist
        t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.broadcast(t, src=0)
        return t.tolist()


def _collective_device() -> torch.device:
    import torch.distributed as dist
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def setup(env, timeout_s: float) -> Dist:
    """Join the process group of a several-process stage (a no-op for one process); `env` is the
    loop's FitEnv (world_size, rank, device, log)."""
    world, rank = env.world_size, env.rank
    if world == 1:
        return Dist()
    import torch.distributed as dist
    # Imported before the group exists, not after: torch.distributed.nn.functional binds
    # `group.WORLD` as the default argument of its collectives when first imported, and DDP imports
    # it (through torch._dynamo) on construction. Imported after init_process_group, it holds the
    # group until the interpreter exits: destroy_process_group then frees nothing, gloo's worker
    # threads (and rank 0's store server) outlive teardown, and a worker thread still finishing its
    # last collective while the interpreter shuts down aborts the process ("terminate called
    # without an active exception", SIGABRT; seen under CPU load in tests/jobs/training/test_distributed.py).
    import torch.distributed.nn  # noqa: F401
    local = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if env.device == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s))
    env.log.info("torch.distributed: rank %d of %d (local %d), backend %s, rendezvous %s:%s, timeout %g s",
                 rank, world, local, backend, os.environ.get("MASTER_ADDR"),
                 os.environ.get("MASTER_PORT"), timeout_s)
    return Dist(rank, world, local)


def teardown(d: Dist) -> None:
    """Leave the process group (call it in a `finally`, on every exit path: fit does). With nothing
    else holding the group (see `setup`), this joins gloo's threads while Python still runs."""
    if d.active:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()


def wrap(model: nn.Module, d: Dist, device: torch.device, sync_bn: bool) -> nn.Module:
    """The module the training steps call: DDP around `model` (BatchNorm synchronised when asked)."""
    if not d.active:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP
    if sync_bn:
        if device.type != "cuda":
            raise ValueError("sync_bn: torch's SyncBatchNorm runs on GPUs only; on CPU tasks set sync_bn: false "
                             "(each rank then normalises with its share of the batch)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DDP(model, device_ids=[d.local_rank] if device.type == "cuda" else None)
