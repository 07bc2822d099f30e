"""Several processes on one audit: ``torchrun --nproc_per_node N -m pipeline hydra.run.dir=DIR ...``.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` for every process. Each rank then:
- audits its own shard of the sorted index, records ``rank, rank + N, rank + 2N, ...`` (the shard depends
  only on the index, so a resumed run, even with another N, finds every record in exactly one shard);
- uses GPU ``LOCAL_RANK`` when the device is CUDA;
- writes its own Parquet parts (``parts/samples-r<rank>-<seq>.parquet``), so no two processes share a file.
Rank 0 builds the caches first (the built-in dataset and model) while the others wait, and merges the parts
and writes the summary once every rank has flushed. The processes only synchronise at those points, through
a gloo process group (CPU tensors: it works with or without GPUs, and across nodes sharing the run folder).
Without torchrun nothing here does anything: one process, rank 0, the whole index (``runtime.rank`` must be 0).
With ``runtime.ranks_from=submitit`` (a SLURM task per GPU started by hydra-submitit-launcher, no torchrun) the
same variables come from SLURM through submitit's ``TorchDistributedEnvironment``.

These ranks split the work of one job; a sharded run (``runtime.shards``, :mod:`pipeline.shards`) splits the
dataset between jobs first, and the ranks of a job split its shard.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def from_environment(config_rank: int = 0, source: str = "torchrun") -> Ranks:
    """The ranks torchrun set in the environment, or a single process (rank 0).

    ``config_rank`` (``runtime.rank``) other than 0 without torchrun is a ConfigError: one process audits
    the whole index, so a lone "rank 1" never wrote a report and two hand-started ranks audited every id
    twice. Several processes need torchrun, which sets ``WORLD_SIZE`` and makes the ranks shard and wait.
    ``source="submitit"`` (``runtime.ranks_from``) sets them from the SLURM tasks of a submitit job first.
    """
    if source == "submitit" and "WORLD_SIZE" not in os.environ:
        export_submitit_ranks()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        if config_rank != 0:
            from pipeline.errors import ConfigError

            raise ConfigError(
                "runtime.rank",
                f"rank {config_rank} without torchrun: a single process audits everything as "
                "rank 0; to split a run over processes start them with torchrun --nproc_per_node N "
                "(it sets RANK and WORLD_SIZE), and leave runtime.rank at 0",
            )
        return Ranks()
    return Ranks(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def export_submitit_ranks() -> None:
    """``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` from the tasks of the
    submitit job this process runs in (nothing outside one: a single process)."""
    try:
        import submitit
        from submitit.core.job_environment import JobEnvironment

        JobEnvironment()  # raises outside a submitit job
    except (ImportError, RuntimeError):
        return
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def start(ranks: Ranks, timeout_minutes: float) -> None:
    """Join the process group (gloo) when there are several ranks. ``timeout_minutes`` bounds every wait,
    including the last one, where fast ranks wait for the slowest to finish its shard."""
    if ranks.is_distributed and not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=timeout_minutes))


def stop(ranks: Ranks) -> None:
    if ranks.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    """Wait until every rank gets here (no-op for one process)."""
    if ranks.is_distributed:
        dist.barrier()


def gather(ranks: Ranks, value: T) -> list[T]:
    """Every rank's ``value`` (a picklable object), in rank order, on every rank; ``[value]`` for one process."""
    if not ranks.is_distributed:
        return [value]
    values: list = [None] * ranks.world_size
    dist.all_gather_object(values, value)
    return values


def shard(items: list[T], ranks: Ranks) -> list[T]:
    """This rank's share of ``items``: every ``world_size``-th item from position ``rank``."""
    return items[ranks.rank :: ranks.world_size] if ranks.is_distributed else items


def on_main(ranks: Ranks, work: Callable[[], T]) -> T | None:
    """``work()`` on rank 0 only (taking a lock, writing a file), its refusal on every rank: a
    :class:`~pipeline.errors.ConfigError` raised there is raised by every rank, so that all of them stop.
    Returns ``work()``'s result on rank 0, None on the others."""
    from pipeline.errors import ConfigError

    result, refusal = None, None
    if ranks.is_main:
        try:
            result = work()
        except ConfigError as error:
            refusal = (error.option, error.reason)
    refusal = gather(ranks, refusal)[0]
    if refusal is not None:
        raise ConfigError(*refusal)
    return result
