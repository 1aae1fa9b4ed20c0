"""Data-parallel training across processes started by ``torchrun``: the one module that uses torch.distributed.

``torchrun --nproc-per-node N -m ppgen run SPEC`` starts N copies of the program with WORLD_SIZE, RANK and
LOCAL_RANK in their environment. ``setup`` joins them into one process group (gloo on the CPU; NCCL on CUDA,
process r using cuda:LOCAL_RANK). Outside torchrun there is one process of rank 0 and every function here
is a cheap identity, so callers need no special case. Gradients are averaged by
``torch.nn.parallel.DistributedDataParallel`` (Li et al. 2020, arXiv:2006.15704), whose reducer overlaps the
all-reduce with the backward pass.
"""

import atexit
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ppgen.device import resolve_device
from ppgen.errors import PpgenError
from ppgen.infer.launch import launched

__all__ = [
    "setup",
    "is_distributed",
    "rank",
    "world_size",
    "is_main",
    "shard",
    "rank_seed",
    "all_reduce_sum",
    "all_reduce_mean",
    "any_rank",
    "all_gather_object",
    "broadcast_object",
    "barrier",
    "average_gradients",
    "data_parallel",
]

# Process 0 may evaluate a model alone for a long time while the others wait for its metrics.
CONTROL_TIMEOUT = timedelta(hours=24)
_control_group: list = []  # a gloo group for small host-side messages, made by ``setup``


def setup(device: str = "auto") -> torch.device:
    """Join torchrun's process group (once per process) and return the device this process trains on.

    A process group the caller made itself (``torch.distributed.init_process_group``) is used as it is.

    Args:
        device: "auto", "cpu" or "cuda" (see ``ppgen.device.resolve_device``); under torchrun "cuda" means
            cuda:LOCAL_RANK.
    """
    resolved = resolve_device(device)
    if launched():
        local_rank = int(os.environ["LOCAL_RANK"])
        if resolved.type == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise PpgenError(
                    f"torchrun started process LOCAL_RANK={local_rank}, but this machine has"
                    f" {torch.cuda.device_count()} CUDA devices (use --nproc-per-node <= that number)"
                )
            resolved = torch.device("cuda", local_rank)
            torch.cuda.set_device(resolved)
        if not dist.is_initialized():
            if resolved.type == "cuda":
                dist.init_process_group(backend="nccl", device_id=resolved)
            else:
                dist.init_process_group(backend="gloo")
            atexit.register(_shutdown)
    elif resolved.type == "cuda" and is_distributed():
        resolved = torch.device("cuda", torch.cuda.current_device())
    if is_distributed() and not _control_group:  # every process gets here at the same point
        _control_group.append(dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT))
    return resolved


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
    _control_group.clear()


def is_distributed() -> bool:
    """Whether this process trains together with others (a process group of two or more)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank: 0 .. world_size() - 1 (0 outside torchrun)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes training together (1 outside torchrun)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this is process 0, the one that writes files and shows progress."""
    return rank() == 0


def shard(size: int) -> slice:
    """This process's contiguous part of range(size): an even split, the first ``size % world_size()``
    processes taking one item more than the others."""
    base, extra = divmod(size, world_size())
    start = rank() * base + min(rank(), extra)
    return slice(start, start + base + (rank() < extra))


def rank_seed(seed: int) -> int:
    """The seed of this process's random numbers: ``seed`` itself in process 0 (so a one-process run is
    unchanged), and an independent stream derived from (seed, rank) in the others."""
    if rank() == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank()]).generate_state(1, dtype=np.uint32)[0])


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of ``tensor`` over processes (a new tensor; ``tensor`` itself is unchanged)."""
    if not is_distributed():
        return tensor
    total = tensor.clone()
    # NCCL reduces CUDA tensors only; host-side figures go through the gloo group.
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=_control_group[0] if tensor.device.type == "cpu" else None)
    return total


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The elementwise mean of a floating-point ``tensor`` over processes (a new tensor)."""
    return all_reduce_sum(tensor) / world_size() if is_distributed() else tensor


def any_rank(flags: Sequence[bool]) -> list[bool]:
    """For each flag, whether it is true in any process (one small host-side message)."""
    if not is_distributed():
        return list(flags)
    values = torch.tensor([bool(flag) for flag in flags], dtype=torch.uint8)
    dist.all_reduce(values, op=dist.ReduceOp.MAX, group=_control_group[0])
    return [bool(value) for value in values.tolist()]


def all_gather_object(obj) -> list:
    """Every process's ``obj`` (picklable: tensors on the CPU, numbers, lists, dicts), in rank order."""
    if not is_distributed():
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj, group=_control_group[0])
    return gathered


def broadcast_object(obj=None):
    """Process 0's ``obj`` in every process; the others pass nothing and wait (up to CONTROL_TIMEOUT) for it."""
    if not is_distributed():
        return obj
    message = [obj]
    dist.broadcast_object_list(message, src=0, group=_control_group[0])
    return message[0]


def barrier() -> None:
    """Wait until every process gets here."""
    if is_distributed():
        dist.barrier(group=_control_group[0])


def average_gradients(tensors: Iterable[torch.Tensor]) -> None:
    """Replace the gradients of ``tensors`` (trained outside the modules that ``data_parallel`` wraps, such as
    tensors in Pyro's parameter store) by their mean over processes, in one all-reduce; a tensor without a
    gradient counts as a zero gradient."""
    tensors = list(tensors)
    if not is_distributed() or not tensors:
        return
    gradients = [torch.zeros_like(t) if t.grad is None else t.grad for t in tensors]
    flat = all_reduce_mean(torch.cat([g.reshape(-1) for g in gradients]))
    for tensor, mean in zip(tensors, flat.split([g.numel() for g in gradients])):
        tensor.grad = mean.view_as(tensor).clone()


class _Loss(nn.Module):
    """The loss of a batch as an nn.Module whose parameters are those of ``modules``, for DDP to wrap."""

    def __init__(self, loss: Callable[..., torch.Tensor], modules: Sequence[nn.Module]):
        super().__init__()
        self.loss = loss
        self.trained = nn.ModuleList(modules)

    def forward(self, *batch: torch.Tensor) -> torch.Tensor:
        return self.loss(*batch)


def data_parallel(
    loss: Callable[..., torch.Tensor], modules: Sequence[nn.Module], device: torch.device
) -> Callable[..., torch.Tensor]:
    """``loss`` (batch tensors -> differentiable scalar) made data-parallel: when there are several
    processes, backward through its result leaves in every module parameter the mean of that gradient
    over processes, so each process's loss must estimate the same quantity from its own shard.

    The modules must hold identical parameters in every process (process 0's are broadcast once, here).
    Buffers are not synchronized after that (those of ppgen's models are constants). ``static_graph``
    lets a module have parameters that the loss never uses, provided the same ones go unused every step.
    """
    if not is_distributed():
        return loss
    wrapper = _Loss(loss, modules)
    if not any(p.requires_grad for p in wrapper.parameters()):
        return loss
    return nn.parallel.DistributedDataParallel(
        wrapper,
        device_ids=[device.index] if device.type == "cuda" else None,
        forward_sync_buffers=False,
        static_graph=True,
    )
