"""Data-parallel pretraining under ``torchrun``: joining the process group and rank-aware helpers.

torchrun (alone, or under SLURM with the usual rendezvous flags) starts one process per device and sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; :func:`setup` joins the group from
them — gloo on CPU, nccl on CUDA, one GPU per local rank. Outside torchrun the context is a world of
one and every helper here is a no-op, so the single-process path runs the same code.

How results stay independent of the rank count: the sampler draws one global batch per step and each
rank takes its contiguous slice; masks and crops are drawn for the whole global batch from the step's
seed and each rank keeps its own rows, so every clip gets the mask and crop it would get in a single
process. Gradients are averaged over ranks (DDP), which equals the gradient of the global-batch mean
loss, so every rank takes the same optimizer step and the EMA target stays identical everywhere
(checked at every checkpoint). Batch-statistic regularisers see the gathered global batch.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import inspect
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ..errors import PicoJepaError
from ..progress import console
from ..utils import resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    control: Any = None  # gloo group for CPU-side agreement (flags, small objects); None: the default group
    owned: bool = False  # this process created the group and tears it down

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def setup(device: str = "auto") -> DistContext:
    """Join the process group torchrun describes (or use one the caller made); a world of one otherwise."""
    if dist.is_available() and dist.is_initialized():
        return _context(resolve_device(device), owned=False)
    if env_world_size() <= 1:
        return DistContext(device=resolve_device(device))
    if not dist.is_available():
        raise PicoJepaError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise PicoJepaError(f"local rank {local} has no GPU: this node has {torch.cuda.device_count()}; "
                                f"start at most that many processes per node (--nproc-per-node)")
        torch.cuda.set_device(local)
        resolved = torch.device("cuda", local)
    dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo", init_method="env://")
    return _context(resolved, owned=True)


def _context(device: torch.device, owned: bool) -> DistContext:
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    # Agreement on flags and file lists stays on the CPU: on nccl it would force a GPU sync every step.
    control = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    return DistContext(rank, world, local, device, control, owned)


def teardown(ctx: DistContext) -> None:
    if ctx.owned and dist.is_initialized():
        # Objects in reference cycles (a model wrapped for data parallelism, its reducer's pending work) are
        # freed here, while the group and the interpreter are alive: freed at interpreter exit instead, gloo's
        # threads can abort the process ("terminate called without an active exception", seen under load).
        gc.collect()
        dist.destroy_process_group()
        gc.collect()


@contextlib.contextmanager
def quiet_unless_main(ctx: DistContext) -> Iterator[None]:
    """Only rank 0 talks: the others would print the same lines again."""
    before = console.quiet
    console.quiet = before or not ctx.is_main
    try:
        yield
    finally:
        console.quiet = before


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        dist.barrier(group=ctx.control)


def local_leader_first(ctx: DistContext, fn: Callable[[], T]) -> T:
    """Run ``fn`` on each node's local rank 0, then on the other ranks: the clip cache is built once per
    node and found ready by the rest (its entries are written atomically, so nodes sharing a cache
    folder are safe too)."""
    if not ctx.active:
        return fn()
    result = fn() if ctx.local_rank == 0 else None
    barrier(ctx)
    return result if ctx.local_rank == 0 else fn()  # type: ignore[return-value]


def split_batch(global_batch: int, ctx: DistContext) -> int:
    """Clips per rank; the global batch must split evenly so every rank's mean loss weighs the same."""
    if global_batch < ctx.world or global_batch % ctx.world:
        raise PicoJepaError(f"the batch size ({global_batch}) must be a positive multiple of the number of ranks "
                            f"({ctx.world}): each rank trains on an equal slice of every global batch")
    return global_batch // ctx.world


def all_agree(ctx: DistContext, flag: bool) -> bool:
    """True only if ``flag`` is true on every rank (a step that one rank must skip is skipped by all)."""
    if not ctx.active:
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MIN, group=ctx.control)
    return bool(t.item())


def all_sum(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a copy; the input is left alone)."""
    if not ctx.active:
        return tensor
    out = tensor.clone()
    dist.all_reduce(out)
    return out


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    if not ctx.active:
        return [obj]
    found: list[Any] = [None] * ctx.world
    dist.all_gather_object(found, obj, group=ctx.control)
    return found


def check_same(ctx: DistContext, value: str, what: str) -> None:
    """Refuse to train when ranks disagree on something that must be shared (e.g. the video list)."""
    values = gather_objects(ctx, value)
    if len(set(values)) > 1:
        raise PicoJepaError(f"the ranks see different {what}: every node must read the same data at the same "
                            f"paths with the same settings")


def merge_records(ctx: DistContext, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Union of every rank's skipped-video records, rank order, first occurrence of each path kept."""
    if not ctx.active:
        return records
    merged, seen = [], set()
    for part in gather_objects(ctx, records):
        for rec in part:
            if rec["path"] not in seen:
                seen.add(rec["path"])
                merged.append(rec)
    return merged


def fingerprint(module: torch.nn.Module) -> str:
    """Hash of every tensor's bytes: equal only for bit-identical replicas."""
    h = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_replicas(ctx: DistContext, module: torch.nn.Module) -> None:
    """Every rank must hold bit-identical weights (online, predictor and EMA target); a mismatch is a bug
    that would make the checkpoint depend on which rank wrote it."""
    if not ctx.active:
        return
    prints = gather_objects(ctx, fingerprint(module))
    if len(set(prints)) > 1:
        differing = [r for r, p in enumerate(prints) if p != prints[0]]
        raise RuntimeError(f"model replicas diverged across ranks (ranks {differing} differ from rank 0)")


def wrap(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """DDP around the JEPA module. Its only buffers are the fixed position tables, identical everywhere by
    construction, so they are not re-broadcast before every forward."""
    from torch.nn.parallel import DistributedDataParallel

    no_buffer_sync = ({"forward_sync_buffers": False}
                      if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                      else {"broadcast_buffers": False})  # the older spelling (torch < 2.13)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, **no_buffer_sync)


class _GatherRows(torch.autograd.Function):
    """All ranks' rows (N_r, D) → (ΣN_r, D) in rank order, differentiable.

    Every rank computes the same loss on the gathered rows, so the gradient reaching rank r's rows is the
    sum over ranks of their copy's gradient (an all-reduce); DDP then averages the parameter gradients,
    which leaves exactly the single-process gradient of that loss.
    """

    @staticmethod
    def forward(ctx: Any, rows: torch.Tensor, group_rank: int, world: int) -> torch.Tensor:
        count = torch.tensor([rows.shape[0]], device=rows.device)
        counts = [torch.zeros_like(count) for _ in range(world)]
        dist.all_gather(counts, count)
        sizes = [int(c.item()) for c in counts]
        longest = max(sizes)
        padded = rows.new_zeros((longest, *rows.shape[1:]))
        padded[: rows.shape[0]] = rows
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, group_rank
        return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start: start + ctx.sizes[ctx.rank]], None, None


def row_gatherer(ctx: DistContext) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """For :attr:`JEPA.gather_embeddings`: batch-statistic regularisers see the global batch."""
    if not ctx.active:
        return None
    return lambda rows: _GatherRows.apply(rows, ctx.rank, ctx.world)
