"""Expert parallelism by hand: process groups, an autograd all-to-all, and the gradient fixups.
DeepSpeed's MoE refuses ZeRO-3 and ZeRO-3 all-gathers can deadlock when ranks route to different
experts, so the experts are plain parameters of a module OUTSIDE the ZeRO-3 engine, E / ep_size per
rank (docs/model.md, "Expert parallelism", gives the rank layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class ExpertParallelGroups:
    """Who holds which experts. `ep_group` is None for a single process (no communication)."""

    ep_size: int = 1
    ep_rank: int = 0
    world_size: int = 1
    rank: int = 0
    ep_group: Any = None
    edp_group: Any = None  # ranks holding the same experts; None when that group is just this rank
    edp_size: int = 1

    @staticmethod
    def create(ep_size: int) -> ExpertParallelGroups:
        """Build the groups; every rank must call this at the same point (new_group is collective)."""
        if not (dist.is_available() and dist.is_initialized()):
            if ep_size != 1:
                raise RuntimeError(
                    f"model.ep_size={ep_size} needs torch.distributed to be initialized (a multi-rank job)"
                )
            return ExpertParallelGroups()
        world, rank = dist.get_world_size(), dist.get_rank()
        if world % ep_size:
            raise ValueError(
                f"model.ep_size={ep_size} does not divide the world size {world}: "
                f"choose ep_size in {[d for d in range(1, world + 1) if world % d == 0]}"
            )
        ep_group = edp_group = None
        for start in range(0, world, ep_size):  # every rank creates every group, in the same order
            g = dist.new_group(list(range(start, start + ep_size)))
            if start <= rank < start + ep_size:
                ep_group = g
        edp_size = world // ep_size
        for offset in range(ep_size):
            g = dist.new_group(list(range(offset, world, ep_size)))
            if rank % ep_size == offset:
                edp_group = g
        return ExpertParallelGroups(
            ep_size=ep_size,
            ep_rank=rank % ep_size,
            world_size=world,
            rank=rank,
            ep_group=ep_group if ep_size > 1 else None,
            edp_group=edp_group if edp_size > 1 else None,
            edp_size=edp_size,
        )

    def local_experts(self, num_experts: int) -> range:
        per = num_experts // self.ep_size
        return range(self.ep_rank * per, (self.ep_rank + 1) * per)


class _AllToAll(torch.autograd.Function):
    """all_to_all_single whose backward is the reverse exchange (output splits <-> input splits)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, out_splits: list[int], in_splits: list[int], group) -> torch.Tensor:
        ctx.out_splits, ctx.in_splits, ctx.group = out_splits, in_splits, group
        x = x.contiguous()
        out = x.new_empty((sum(out_splits), *x.shape[1:]))
        dist.all_to_all_single(out, x, out_splits, in_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        back = grad.new_empty((sum(ctx.in_splits), *grad.shape[1:]))
        dist.all_to_all_single(back, grad, ctx.in_splits, ctx.out_splits, group=ctx.group)
        return back, None, None, None


def all_to_all(x: torch.Tensor, out_splits: list[int], in_splits: list[int], group) -> torch.Tensor:
    """Send rows x[sum(in_splits[:j]) : ...] to group rank j; receive out_splits[j] rows from it."""
    return _AllToAll.apply(x, out_splits, in_splits, group)


def exchange_counts(counts: torch.Tensor, group) -> torch.Tensor:
    """counts [ep * E_local] (rows this rank sends to each global expert) -> rows it will receive,
    laid out [src rank, local expert]. Not differentiable; counts only."""
    out = torch.empty_like(counts)
    dist.all_to_all_single(out, counts.contiguous(), group=group)
    return out


def reduce_moe_gradients(moe: nn.Module, groups: ExpertParallelGroups) -> None:
    """Call once after `engine.backward(loss)`, before the MoE optimizer steps: turns the MoE
    gradients into those of the mean loss over all ranks, as DeepSpeed gives the dense modules."""
    if groups.world_size == 1:
        return
    for p in moe.parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:  # every rank must join each collective, even with no tokens this step
            p.grad = torch.zeros_like(p)
        if getattr(p, "is_expert", False):
            # the all-to-all backward already summed every sender's share into the owner's gradient
            if groups.edp_group is not None:
                dist.all_reduce(p.grad, group=groups.edp_group)
        else:
            dist.all_reduce(p.grad)  # the router is replicated on every rank
        p.grad.div_(groups.world_size)


def expert_grad_norm_sq(moe: nn.Module, groups: ExpertParallelGroups) -> torch.Tensor:
    """Squared L2 norm of the MoE gradients over ALL experts (each counted once) + the router, for
    clipping that combines it with the engine's norm by hand."""
    device = next(moe.parameters()).device  # NCCL reduces device tensors only
    expert_sq = torch.zeros((), dtype=torch.float64, device=device)
    router_sq = torch.zeros((), dtype=torch.float64, device=device)
    for p in moe.parameters():
        if p.grad is None:
            continue
        sq = p.grad.detach().double().pow(2).sum()
        if getattr(p, "is_expert", False):
            expert_sq += sq
        else:
            router_sq += sq
    if groups.ep_group is not None:
        dist.all_reduce(expert_sq, group=groups.ep_group)  # experts are disjoint across the ep group
    return expert_sq + router_sq
