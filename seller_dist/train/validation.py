"""Validation loss during training: the language-model loss on a held-out split, the same number at any
worker count. The batches are planned globally like the eval job's, each rank takes every W-th, and the loss
is the sum of token losses over the count of label tokens, both summed over ranks, so neither the batching
nor which rank saw an example changes it (docs/training.md, "Validation loss").
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist

from seller_dist.data.shards import Manifest
from seller_dist.data.split_batches import plan_batches, read_batches, worker_share


class Validator:
    """This rank's share of the validation batches, collated once and kept in memory."""

    def __init__(
        self,
        manifest: Manifest,
        split: str,
        batch_size: int,
        max_examples: int,
        collate: Any,
        rank: int,
        world: int,
        storage_cfg: Any = None,
    ):
        plan = plan_batches(manifest, split, batch_size, max_examples)
        if not plan:
            raise ValueError(f"{manifest.root}: split '{split}' has no records to validate on")
        self.examples = sum(b.stop - b.start for b in plan)
        # forward passes per rank, the same on every rank (ZeRO-3 gathers, expert all-to-alls are collectives)
        self.rounds = math.ceil(len(plan) / world)
        mine = worker_share(plan, rank, world)
        self.rank_examples = sum(b.stop - b.start for b in mine)  # the examples this rank counts
        self.padded_rounds = self.rounds - len(mine)  # passes of padding only (count nothing)
        first = mine or plan[:1]  # a rank without a batch pads with the plan's first one
        read = read_batches(manifest, split, first, storage_cfg)
        self.batches = [collate(recs, [not mine] * len(recs)) for _, recs in read]
        self.rank, self.world = rank, world

    def loss(self, forward: Any, to_inputs: Any, device: torch.device) -> float:
        """Mean token loss over the split. `forward(inputs)` is the training forward (model in eval
        mode, no grad); `to_inputs(batch, device)` gives padded rows labels -100."""
        total = torch.zeros(2, dtype=torch.float64, device=device)  # [nll sum, label tokens]
        for i in range(self.rounds):
            batch = self.batches[min(i, len(self.batches) - 1)]
            inputs = to_inputs(batch, device)
            if i >= len(self.batches):  # an extra round for this rank: run it, count nothing
                inputs["labels"] = torch.full_like(inputs["labels"], -100)
            out = forward(inputs)
            n = (inputs["labels"][:, 1:] != -100).sum()
            total[0] += out["lm_loss"].double() * n
            total[1] += n
        if self.world > 1:
            dist.all_reduce(total)
        nll, tokens = (float(x) for x in total.cpu())
        return nll / tokens if tokens else math.nan
