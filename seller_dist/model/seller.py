"""SELLER: history + item encoders -> fusion -> K query tokens -> adapter -> soft prompts -> frozen LLM.
The baselines (`bag`, `gru`, `prompt: ids`, `adapter: dense | none`) are configurations of this one
class (docs/model.md, "Baselines"). The MoE adapter is NOT a submodule: `make_moe()` builds it and it
is passed as `model(batch, moe=moe)`, so a ZeRO-3 engine wrapping this model never partitions the
experts; the frozen LLM (`self.llm`) is never part of `trainable_state_dict()`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from seller_dist.config import ModelConfig
from seller_dist.model.expert_parallel import ExpertParallelGroups
from seller_dist.model.fusion import CrossAttentionFusion, attribute_match
from seller_dist.model.item_encoder import ItemEncoder
from seller_dist.model.llm import FrozenLLM, GenerationConfig
from seller_dist.model.moe import DenseAdapter, MoEAdapter, MoEOutput
from seller_dist.model.sequence_encoder import EventEmbedding, build_history_encoder
from seller_dist.model.vocab import ModelVocab


def pointer_cut_warning(title_token_counts: list[int], pointer_tokens: int) -> str | None:
    """A line for the user when the title pointer's positions cut many titles: an explanation that
    copies a cut title names no history item (docs/model.md, "Title pointer")."""
    if not title_token_counts:
        return None
    counts = sorted(title_token_counts)
    cut = sum(1 for n in counts if n > pointer_tokens) / len(counts)
    if cut < 0.1:
        return None
    p95 = counts[min(len(counts) - 1, int(0.95 * len(counts)))]
    return (
        f"{cut:.0%} of this dataset's titles are longer than model.pointer_tokens={pointer_tokens} "
        f"tokens (95th percentile {p95}, longest {counts[-1]}): the title pointer spells them cut and "
        f"an explanation that copies it names no item; set model.pointer_tokens={p95} and raise "
        'model.num_soft_tokens by as much (docs/model.md, "Title pointer")'
    )


def cited_event_loss(attention: torch.Tensor, cited: torch.Tensor) -> torch.Tensor:
    """Mean -log of the fusion weight [B, L] on each row's cited column ([B], -1 = none, left out);
    0 with a gradient path when no row cites (every rank runs the same backward)."""
    rows = cited >= 0
    if not bool(rows.any()):
        return attention.sum() * 0.0
    w = attention[rows].float().gather(1, cited[rows, None]).squeeze(1)
    return -torch.log(w.clamp(min=1e-8)).mean()


class SellerModel(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab: ModelVocab, llm: FrozenLLM, register_llm: bool = True):
        """`register_llm=False` keeps the frozen LLM out of this module's submodules (a replicated
        LLM beside a ZeRO-3 engine, which would otherwise partition every parameter it wraps)."""
        super().__init__()
        cfg.validate()
        self.cfg, self.vocab = cfg, vocab
        if register_llm:
            self.llm = llm
        else:
            self.__dict__["llm"] = llm  # a plain attribute: not in parameters(), to(), state_dict()
        d = cfg.d_model
        if cfg.adapter == "none":
            return  # nothing trainable
        self.item_embedding = nn.Embedding(vocab.num_items + 1, d, padding_idx=0)
        if cfg.prompt == "seller":
            # the encoders project the (constant) LLM title embeddings themselves, each with its own
            # Linear(H -> d)
            self.title_dim = llm.hidden_size if cfg.title_features else 0
            self.title_gain = (  # per pointer position and hidden unit, on the LLM's title embeddings
                nn.Parameter(torch.ones(cfg.pointer_tokens, llm.hidden_size)) if cfg.uses_pointer else None
            )
            self.history = build_history_encoder(
                cfg, self.item_embedding, vocab.attribute_sizes, self.title_dim
            )
            self.item_encoder = ItemEncoder(cfg, vocab, self.item_embedding, self.title_dim)
            self.fusion = CrossAttentionFusion(
                cfg, len(vocab.attribute_sizes), ordered=cfg.history_encoder != "bag"
            )
        else:
            self.user_embedding = nn.Embedding(vocab.num_users + 1, d) if vocab.num_users else None
            self.ids_mix = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, d), nn.LayerNorm(d))
        a = cfg.adapter_tokens  # K, less the title pointer's positions
        self.slots = nn.Parameter(torch.randn(a, d) * 0.02)  # one learned query per adapter position
        self.adapter_gain = nn.Parameter(torch.full((a, 1), cfg.adapter_gain_init))  # see ModelConfig
        self.query_norm = nn.LayerNorm(d)
        if cfg.adapter == "dense":
            self.adapter = DenseAdapter(d, cfg.expert_hidden, llm.hidden_size)

    # ------------------------------------------------------------------------------ parts
    def make_moe(self, groups: ExpertParallelGroups | None = None) -> MoEAdapter:
        """This rank's MoE adapter (its experts only). Keep it outside any ZeRO-3 engine."""
        if self.cfg.adapter != "moe":
            raise ValueError(f"model.adapter is '{self.cfg.adapter}', not 'moe'")
        groups = groups or ExpertParallelGroups()
        if groups.ep_size != self.cfg.ep_size:
            raise ValueError(f"groups.ep_size={groups.ep_size} != model.ep_size={self.cfg.ep_size}")
        c = self.cfg
        return MoEAdapter(
            c.d_model,
            c.expert_hidden,
            self.llm.hidden_size,
            c.num_experts,
            c.top_k,
            c.capacity_factor,
            groups,
        )

    def _user_and_item(
        self, batch: dict[str, torch.Tensor], pointer_mode: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """fused [B, d], attention [B, L] and the attended titles' mean LLM embedding [B, H] (or None)
        for either prompt kind."""
        mask = batch["hist_mask"].bool()
        if self.cfg.prompt == "seller":
            pointer = None
            if self.title_dim:
                titles = self._title_features(batch)
                batch = {**batch, **titles}
            hist = self.history(batch)
            item = self.item_encoder(batch)
            match = None
            if self.fusion.match is not None:
                if "hist_attrs" not in batch:
                    raise ValueError(
                        "model.target_match_bias=true needs hist_attrs in the batch (SellerCollator "
                        "writes it); set model.target_match_bias=false to train without it"
                    )
                match = attribute_match(batch["hist_attrs"], batch["item_attrs"])
            f = self.fusion(item, hist.states, hist.mask, hist.summary, match)
            if self.cfg.uses_pointer:  # [B, P, H]: attended titles' first P token embeddings
                tokens = titles["hist_title_tokens"]
                weights = f.attention.to(tokens.dtype)
                if (pointer_mode or self.cfg.title_pointer) == "hard":  # one-hot forward, soft backward
                    top = torch.zeros_like(weights).scatter_(1, weights.argmax(dim=1, keepdim=True), 1.0)
                    top = top * batch["hist_mask"].any(dim=1, keepdim=True).to(top.dtype)
                    weights = top + weights - weights.detach()
                pointer = torch.einsum("bl,blkh->bkh", weights, tokens)
            return f.fused, f.attention, pointer
        item = self.item_embedding(batch["item"])
        if self.user_embedding is not None and "user" in batch:
            user = self.user_embedding(batch["user"].clamp(0, self.user_embedding.num_embeddings - 1))
        else:  # no user column: a bag of the history's item ids (still ids only, no order/attributes)
            m = mask.unsqueeze(-1).to(item.dtype)
            user = (self.item_embedding(batch["hist_item"]) * m).sum(1) / m.sum(1).clamp(min=1)
            if self.user_embedding is not None:
                # + the "unknown user" row: every trainable parameter gets a gradient each step
                # (ZeRO-3 ranks must agree on which parameters have gradients)
                user = user + self.user_embedding.weight[0].to(user.dtype)
        fused = self.ids_mix(torch.cat([user, item], dim=-1))
        return fused, torch.zeros(mask.shape, dtype=torch.float32, device=mask.device), None

    def _title_features(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Constants from the frozen LLM's input embeddings (no gradient): hist_title_emb [B, L, H] and
        item_title_emb [B, H], the mean over each title's tokens; hist_title_tokens [B, L, P, H], each
        history title's first P token embeddings, right-aligned (for the title pointer)."""
        if "hist_title_ids" not in batch or "item_title_ids" not in batch:
            raise ValueError(
                "model.title_features=true needs hist_title_ids and item_title_ids in the batch "
                "(SellerCollator writes them); set model.title_features=false to train without titles"
            )
        hist, item = batch["hist_title_ids"], batch["item_title_ids"]
        b, length, n = hist.shape
        ids = torch.cat([hist.reshape(b * length, n), item], dim=0)
        real = (ids >= 0).unsqueeze(-1)
        with torch.no_grad():  # frozen: the LLM's own token space, no gradient into it
            emb = self.llm.embedding(ids.clamp(min=0)) * real.to(self.llm.embedding.weight.dtype)
            mean = emb.sum(dim=1) / real.sum(dim=1).clamp(min=1).to(emb.dtype)
            mean = mean / self.llm.embed_scale  # encoder inputs in the embedding table's units
        mean = mean.to(self.slots.dtype)
        return {
            "hist_title_emb": mean[: b * length].view(b, length, -1),
            "item_title_emb": mean[b * length :],
            "hist_title_tokens": self._first_tokens(emb[: b * length], real[: b * length, :, 0]).view(
                b, length, self.cfg.pointer_tokens, -1
            ),
        }

    def _first_tokens(self, emb: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """[R, N, H] (zero past each title's end, `real` [R, N] marks its tokens) -> [R, P, H]: each
        title's first P token embeddings RIGHT-aligned, zeros before a title shorter than P, so the
        title's last token sits right before " Explanation:" as in a text profile."""
        k = self.cfg.pointer_tokens
        out = emb[:, :k].to(self.slots.dtype)
        if out.shape[1] < k:
            out = torch.cat([out, out.new_zeros(out.shape[0], k - out.shape[1], out.shape[2])], dim=1)
        shift = k - real[:, :k].sum(dim=1, keepdim=True)  # [R, 1] zeros to move to the front
        src = (torch.arange(k, device=out.device)[None, :] - shift) % k
        return out.gather(1, src[..., None].expand_as(out))

    def soft_prompts(
        self, batch: dict[str, torch.Tensor], moe: MoEAdapter | None = None, pointer_mode: str | None = None
    ) -> tuple[torch.Tensor | None, MoEOutput, torch.Tensor]:
        """(soft [B, K, H] or None for adapter=none, adapter stats, attention [B, L]); `pointer_mode`
        ("hard" / "soft") overrides model.title_pointer for this call (generation)."""
        b = batch["item"].shape[0]
        if self.cfg.adapter == "none":
            dev = batch["item"].device
            zero = torch.zeros((), device=dev)
            stats = MoEOutput(zero, zero, torch.zeros(0, device=dev), zero.long())
            return None, stats, torch.zeros(batch["hist_mask"].shape, device=dev)
        fused, attention, pointer = self._user_and_item(batch, pointer_mode)
        queries = self.query_norm(fused[:, None, :] + self.slots[None].to(fused.dtype))  # [B, A, d]
        tokens = queries.reshape(b * self.cfg.adapter_tokens, -1)
        if self.cfg.adapter == "moe":
            if moe is None:
                raise ValueError(
                    "model.adapter=moe: pass the MoE adapter as `moe=` (from model.make_moe()); it lives "
                    "outside the model so a ZeRO-3 engine never partitions the experts"
                )
            stats = moe(tokens)
        else:
            stats = self.adapter(tokens)
        soft = self.adapter_gain[None].to(stats.out.dtype) * stats.out.view(b, self.cfg.adapter_tokens, -1)
        if self.llm.embed_scale != 1.0:  # in the units the LLM's embedding module outputs (llm_family)
            soft = soft * self.llm.embed_scale
        if pointer is not None:  # [adapter positions | pointer positions], K in all: the title comes last
            soft = torch.cat([soft, self.title_gain[None].to(soft.dtype) * pointer.to(soft.dtype)], dim=1)
        return soft, stats, attention

    # ------------------------------------------------------------------------------ training
    def forward(self, batch: dict[str, torch.Tensor], moe: MoEAdapter | None = None) -> dict[str, Any]:
        soft, stats, attention = self.soft_prompts(batch, moe)
        soft_mask = batch["soft_mask"].bool()
        attn = batch["attention_mask"]
        if soft is None:
            attn = attn.masked_fill(soft_mask, 0)
        embeds = self.llm.embed_with_soft(batch["input_ids"], soft_mask, soft)
        lm_loss = self.llm.lm_loss(embeds, attn, batch["labels"])
        aux = stats.aux_loss.float()
        loss = lm_loss + self.cfg.aux_loss_coef * aux if self.cfg.adapter == "moe" else lm_loss
        cited = torch.zeros((), device=lm_loss.device)
        if self.cfg.cited_event_loss_coef > 0:
            if "hist_cited" not in batch:
                raise ValueError(
                    "model.cited_event_loss_coef > 0 needs hist_cited in the batch (SellerCollator "
                    "writes it from each record's meta cited_offset)"
                )
            cited = cited_event_loss(attention, batch["hist_cited"])
            loss = loss + self.cfg.cited_event_loss_coef * cited
        return {
            "loss": loss,
            "lm_loss": lm_loss.detach(),
            "aux_loss": aux.detach(),
            "cited_event_loss": cited.detach(),
            "expert_load": stats.expert_load.detach(),
            "dropped_tokens": stats.dropped.detach(),
            "attention": attention.detach(),
        }

    @torch.no_grad()
    def generate(
        self,
        batch: dict[str, torch.Tensor],
        moe: MoEAdapter | None = None,
        gen: GenerationConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Batched generation from LEFT-padded prompts: {"tokens": [B, <=max_new], "attention": [B, L],
        "expert_load": [E] tokens routed to each expert (empty without MoE)}."""
        gen = gen or GenerationConfig()
        if gen.pointer not in ("hard", "trained"):
            raise ValueError(f"GenerationConfig.pointer must be 'hard' or 'trained', got {gen.pointer!r}")
        soft, stats, attention = self.soft_prompts(batch, moe, "hard" if gen.pointer == "hard" else None)
        soft_mask = batch["soft_mask"].bool()
        attn = batch["attention_mask"]
        if soft is None:
            attn = attn.masked_fill(soft_mask, 0)
        embeds = self.llm.embed_with_soft(batch["input_ids"], soft_mask, soft)
        tokens = self.llm.generate(embeds, attn, gen, generator)
        return {"tokens": tokens, "attention": attention, "expert_load": stats.expert_load}

    def train(self, mode: bool = True) -> SellerModel:
        super().train(mode)
        self.llm.train(False)
        return self

    # ------------------------------------------------------------------------------ state
    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad and not n.startswith("llm.")]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Trainable weights only (never the LLM). Under ZeRO-3 call inside
        `deepspeed.zero.GatheredParameters(params)` or the tensors are empty partitions."""
        return {n: p.detach().clone() for n, p in self.trainable_named_parameters()}

    def indexed_parameters(self) -> dict[str, tuple[str, int]]:
        """Trainable tables whose ROWS are vocabulary entries, not learned axes: name -> ("item", 0)
        for the item_idx-indexed embedding, ("attribute", f) for the value table of attribute field f
        (sorted field order, 1-based value index as the collate writes it). A warm start on another
        dataset maps these rows by item id / attribute value (seller_dist.train.warm_start)."""
        out: dict[str, tuple[str, int]] = {}
        item = getattr(self, "item_embedding", None)
        for name, p in self.trainable_named_parameters():
            if item is not None and p is item.weight:
                out[name] = ("item", 0)
        for mod_name, mod in self.named_modules():
            if isinstance(mod, (ItemEncoder, EventEmbedding)):
                for f in range(len(mod.fields)):
                    out[f"{mod_name}.fields.{f}.weight"] = ("attribute", f)
        return out

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = dict(self.trainable_named_parameters())
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(
                f"trainable state does not match this model config: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        with torch.no_grad():
            for n, p in own.items():
                p.copy_(state[n])
