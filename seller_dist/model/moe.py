"""Mixture-of-experts adapter: fused representation -> K soft-prompt vectors in the LLM hidden size.
Each of the K query tokens is routed on its own (top-1 or top-2, router in fp32) to expert MLPs, so a
soft prompt can mix experts slot by slot and the router sees B * K tokens per step even at small B;
docs/model.md, "Adapter design (MoE)", gives the load-balancing loss and the capacity rule.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from seller_dist.model.expert_parallel import ExpertParallelGroups, all_to_all, exchange_counts


class MoEOutput(NamedTuple):  # NamedTuple: ZeRO-3's module hooks see its tensors (DenseAdapter)
    out: torch.Tensor  # [N, d_out]
    aux_loss: torch.Tensor  # scalar, fp32; 1.0 for perfectly uniform routing, up to E when collapsed
    expert_load: torch.Tensor  # [E] fraction of this rank's assignments per global expert (before drops)
    dropped: torch.Tensor  # scalar long: assignments dropped by capacity on this rank


class Routing(NamedTuple):
    expert: torch.Tensor  # [N, k] long
    gate: torch.Tensor  # [N, k] fp32
    probs: torch.Tensor  # [N, E] fp32


def load_balancing_loss(probs: torch.Tensor, expert: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Switch/GShard: E * sum_e f_e * P_e, f_e = fraction of assignments to e, P_e = mean router prob."""
    if probs.shape[0] == 0:
        return probs.new_zeros(())
    f = torch.bincount(expert.reshape(-1), minlength=num_experts).to(probs.dtype) / expert.numel()
    return num_experts * (f * probs.mean(dim=0)).sum()


class Router(nn.Module):
    def __init__(self, d_in: int, num_experts: int, top_k: int):
        super().__init__()
        self.proj = nn.Linear(d_in, num_experts)
        self.top_k = top_k

    def forward(self, x: torch.Tensor) -> Routing:
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = F.linear(x.float(), self.proj.weight.float(), self.proj.bias.float())
            probs = torch.softmax(logits, dim=-1)
            top_p, expert = probs.topk(self.top_k, dim=-1)
            gate = top_p if self.top_k == 1 else top_p / top_p.sum(dim=-1, keepdim=True)
        return Routing(expert, gate, probs)


class MoEAdapter(nn.Module):
    """Router (replicated on every rank) + this rank's experts, stored as stacked tensors
    [E_local, ...] (parameters flagged `is_expert` for the gradient fixups)."""

    def __init__(
        self,
        d_in: int,
        d_hidden: int,
        d_out: int,
        num_experts: int,
        top_k: int = 2,
        capacity_factor: float = 0.0,
        groups: ExpertParallelGroups | None = None,
    ):
        super().__init__()
        self.groups = groups or ExpertParallelGroups()
        if num_experts % self.groups.ep_size:
            raise ValueError(f"ep_size={self.groups.ep_size} does not divide num_experts={num_experts}")
        self.num_experts, self.top_k, self.capacity_factor = num_experts, top_k, capacity_factor
        self.experts = self.groups.local_experts(num_experts)
        n = len(self.experts)
        self.router = Router(d_in, num_experts, top_k)
        self.w1 = nn.Parameter(torch.empty(n, d_in, d_hidden))
        self.b1 = nn.Parameter(torch.zeros(n, d_hidden))
        self.w2 = nn.Parameter(torch.empty(n, d_hidden, d_out))
        self.b2 = nn.Parameter(torch.zeros(n, d_out))
        for p in (self.w1, self.b1, self.w2, self.b2):
            p.is_expert = True
        gen = torch.Generator().manual_seed(1234)  # identical full init on every rank, then sliced
        w1 = torch.randn(num_experts, d_in, d_hidden, generator=gen) / math.sqrt(d_in)
        w2 = torch.randn(num_experts, d_hidden, d_out, generator=gen) / math.sqrt(d_hidden)
        with torch.no_grad():
            self.w1.copy_(w1[self.experts.start : self.experts.stop])
            self.w2.copy_(w2[self.experts.start : self.experts.stop])

    # ------------------------------------------------------------------------------ state
    def load_full_state_dict(self, full: dict[str, torch.Tensor]) -> None:
        """Load a state dict holding ALL E experts (an export, a single-process model): keep ours."""
        s, e = self.experts.start, self.experts.stop
        own = {k: (v[s:e] if k in ("w1", "b1", "w2", "b2") else v) for k, v in full.items()}
        self.load_state_dict(own)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """All E experts on every rank (all-gather over the expert-parallel group), for export."""
        sd = {k: v.detach().clone() for k, v in self.state_dict().items()}
        if self.groups.ep_group is None:
            return sd
        import torch.distributed as dist

        for k in ("w1", "b1", "w2", "b2"):
            parts = [torch.empty_like(sd[k]) for _ in range(self.groups.ep_size)]
            dist.all_gather(parts, sd[k].contiguous(), group=self.groups.ep_group)
            sd[k] = torch.cat(parts)
        return sd

    # ------------------------------------------------------------------------------ forward
    def _capacity(self, num_tokens: int) -> int:
        if self.capacity_factor <= 0:
            return num_tokens * self.top_k  # dropless
        return max(1, math.ceil(self.capacity_factor * num_tokens * self.top_k / self.num_experts))

    def _run_local_experts(self, x: torch.Tensor, local_expert: torch.Tensor) -> torch.Tensor:
        """x [R, d_in] rows for this rank's experts, local_expert [R] -> [R, d_out]."""
        order = torch.argsort(local_expert, stable=True)
        counts = torch.bincount(local_expert, minlength=len(self.experts)).tolist()
        xs = x[order].split(counts)
        outs = []
        for e, xe in enumerate(xs):
            h = F.gelu(xe @ self.w1[e].to(xe.dtype) + self.b1[e].to(xe.dtype))
            outs.append(h @ self.w2[e].to(xe.dtype) + self.b2[e].to(xe.dtype))
        y = torch.cat(outs) if outs else x.new_zeros((0, self.w2.shape[-1]))
        return y[torch.argsort(order)]  # back to arrival order

    def forward(self, x: torch.Tensor) -> MoEOutput:
        n, e_total, k = x.shape[0], self.num_experts, self.top_k
        routing = self.router(x)
        aux = load_balancing_loss(routing.probs, routing.expert, e_total)
        expert_load = torch.bincount(routing.expert.reshape(-1), minlength=e_total).float() / max(1, n * k)
        # assignments in priority order: all first choices (token order), then all second choices
        expert = routing.expert.t().reshape(-1)
        token = torch.arange(n, device=x.device).repeat(k)
        gate = routing.gate.t().reshape(-1)
        slot = (F.one_hot(expert, e_total).cumsum(dim=0) * F.one_hot(expert, e_total)).sum(dim=1) - 1
        keep = slot < self._capacity(n)
        dropped = (~keep).sum()
        expert, token, gate = expert[keep], token[keep], gate[keep]
        order = torch.argsort(expert, stable=True)
        expert, token, gate = expert[order], token[order], gate[order]
        send = x[token]
        counts = torch.bincount(expert, minlength=e_total)
        g = self.groups
        if g.ep_group is None:
            y = self._run_local_experts(send, expert - self.experts.start)
        else:
            e_local = len(self.experts)
            recv_counts = exchange_counts(counts, g.ep_group)  # [src rank, local expert]
            send_splits = counts.view(g.ep_size, e_local).sum(dim=1).tolist()
            recv_splits = recv_counts.view(g.ep_size, e_local).sum(dim=1).tolist()
            recv = all_to_all(send, recv_splits, send_splits, g.ep_group)
            local_expert = torch.arange(e_local, device=x.device).repeat(g.ep_size)
            local_expert = local_expert.repeat_interleave(recv_counts)
            y_local = self._run_local_experts(recv, local_expert)
            y = all_to_all(y_local, send_splits, recv_splits, g.ep_group)
        weighted = y * gate.unsqueeze(-1).to(y.dtype)
        out = y.new_zeros((n, y.shape[-1])).index_add(0, token, weighted)
        return MoEOutput(out, aux, expert_load, dropped)


class DenseAdapter(nn.Module):
    """Baseline: one MLP for every token (no routing). Same token layout as the MoE."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))

    def forward(self, x: torch.Tensor) -> MoEOutput:
        zero = x.new_zeros((), dtype=torch.float32)
        return MoEOutput(
            self.mlp(x), zero, x.new_zeros(0), torch.zeros((), dtype=torch.long, device=x.device)
        )
