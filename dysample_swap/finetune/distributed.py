"""Process group set-up for ``torchrun`` and the samplers that shard data across ranks.

One process (no ``torchrun``) is the special case ``world_size == 1``: the same samplers and code
paths run, so a single-process run and a multi-process run order their data the same way.

Example:
    >>> ctx = init_distributed("cpu")
    >>> ctx.world_size, ctx.is_main
    (1, True)
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence, Sized
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Sampler


@dataclass(frozen=True)
class DistContext:
    """Where this process runs: its rank, the number of processes, and its device.

    Example:
        >>> DistContext(0, 1, 0, torch.device("cpu")).is_main
        True
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and prints tables.

        Example:
            >>> DistContext(1, 2, 1, torch.device("cpu")).is_main
            False
        """
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part.

        Example:
            >>> DistContext(0, 1, 0, torch.device("cpu")).distributed
            False
        """
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA (this process's local GPU) when available, else CPU.

    Example:
        >>> pick_device("cpu")
        device(type='cpu')
    """
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError(
                "train.device=cuda but no CUDA device is available; use --set train.device=cpu (or auto)"
            )
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(preference: str = "auto") -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Backend: NCCL on CUDA, gloo on CPU. Without ``WORLD_SIZE`` > 1 nothing is initialised.

    Example:
        >>> init_distributed("cpu").rank
        0
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=10))
    return DistContext(rank, world_size, local_rank, device)


def shutdown_distributed() -> None:
    """Leave the process group (no-op for a single process).

    Example:
        >>> shutdown_distributed()
    """
    if dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True if ``flag`` is true on any rank (all ranks get the same answer).

    Example:
        >>> any_rank(True, DistContext(0, 1, 0, torch.device("cpu")))
        True
    """
    if not ctx.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def sum_across_ranks(values: list[float], ctx: DistContext) -> list[float]:
    """Element-wise sum of ``values`` over ranks.

    Example:
        >>> sum_across_ranks([1.0, 2.0], DistContext(0, 1, 0, torch.device("cpu")))
        [1.0, 2.0]
    """
    if not ctx.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def barrier(ctx: DistContext) -> None:
    """Wait until every rank gets here (a no-op in one process).

    Example:
        >>> barrier(DistContext(0, 1, 0, torch.device("cpu")))
    """
    if ctx.distributed:
        dist.barrier()


def gather_across_ranks(values: list[float], ctx: DistContext) -> list[list[float]]:
    """``values`` of every rank, in rank order (every rank gets them all).

    Example:
        >>> gather_across_ranks([1.0, 2.0], DistContext(0, 1, 0, torch.device("cpu")))
        [[1.0, 2.0]]
    """
    if not ctx.distributed:
        return [list(values)]
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    gathered = [torch.empty_like(tensor) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, tensor)
    return [t.tolist() for t in gathered]


class TrainSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled by ``seed`` and epoch, equal shards) that can start
    part-way through an epoch, so a resumed run reads exactly the batches it had not read yet.

    Call ``set_epoch(epoch)`` every epoch and ``set_start(batches_done)`` once when resuming.

    Example:
        >>> s = TrainSampler(range(8), num_replicas=2, rank=0, seed=0, batch_size=2)
        >>> s.set_epoch(1); full = list(s); s.set_start(1)
        >>> list(s) == full[2:]
        True
    """

    def __init__(self, dataset: Sized, *, num_replicas: int, rank: int, seed: int, batch_size: int) -> None:
        super().__init__(
            cast(Dataset, dataset), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.batch_size = batch_size
        self.start = 0

    def set_start(self, batches_done: int) -> None:
        """Skip the first ``batches_done`` batches of the current epoch (reset by ``set_epoch``).

        Example:
            >>> s = TrainSampler(range(4), num_replicas=1, rank=0, seed=0, batch_size=1)
            >>> s.set_start(3); len(s)
            1
        """
        self.start = batches_done * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` and start from its first batch.

        Example:
            >>> s = TrainSampler(range(4), num_replicas=1, rank=0, seed=0, batch_size=1)
            >>> s.set_start(3); s.set_epoch(1); len(s)
            4
        """
        super().set_epoch(epoch)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


class ShardSampler(Sampler[int]):
    """Evaluation shard: indices ``rank, rank + world_size, ...`` in order, no padding, so every
    validation image is evaluated exactly once across all ranks.

    Example:
        >>> list(ShardSampler(5, rank=1, world_size=2))
        [1, 3]
    """

    def __init__(self, length: int, *, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def broadcast_buffers(model: torch.nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    Under DDP each rank updates its running statistics from its own last batch; evaluating with
    rank 0's copy makes a distributed evaluation score exactly the model that rank 0 saves.

    Example:
        >>> broadcast_buffers(torch.nn.BatchNorm2d(2), DistContext(0, 1, 0, torch.device("cpu")))
    """
    if ctx.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def world_size(process_group: Any = None) -> int:
    """The number of ranks in ``process_group`` (1 without an initialised process group).

    Example:
        >>> world_size()
        1
    """
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(process_group)


def interleave_shards(shards: Sequence[Sequence[Any]]) -> list[Any]:
    """Rows gathered from several ranks, back in dataset order for shards dealt out round-robin (image ``i`` on
    rank ``i % world_size``, as :class:`ShardSampler` does); other shard sizes keep every row, one from each rank
    in turn.

    Example:
        >>> interleave_shards([[0, 2, 4], [1, 3]])
        [0, 1, 2, 3, 4]
    """
    return [shard[k] for k in range(max((len(s) for s in shards), default=0)) for shard in shards if k < len(shard)]
