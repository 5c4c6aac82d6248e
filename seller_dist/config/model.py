"""The SELLER model's config: encoders, fusion, the adapter and the frozen LLM (docs/model.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from seller_dist.errors import ConfigError


@dataclass
class ModelConfig:
    """SELLER model: encoders, fusion, adapter (MoE / dense / none) and the frozen LLM (docs/model.md)."""

    history_encoder: Literal["transformer", "gru", "bag"] = "transformer"
    prompt: Literal["seller", "ids"] = "seller"  # ids = PEPLER-like soft prompts from id embeddings only
    adapter: Literal["moe", "dense", "none"] = "moe"  # none = prompt text only, no soft tokens
    # events and the target item also read their titles through the frozen LLM's token embeddings
    # (mean over the title's tokens, a trainable projection in each encoder): the soft prompt can then
    # point at a title in the LLM's own space instead of learning each item id -> title mapping
    title_features: bool = True
    # with title_features: the last soft positions get the LLM embeddings of the supporting event's
    # title's tokens (times a learned per-position gain): the soft prompt spells that title in the
    # LLM's own input space, as a text profile would. "hard": the title of the event with the top
    # fusion weight, gradients reaching the attention straight through (a mixture of titles is no
    # title the LLM can copy); "soft": the attention-weighted mixture; "off": no pointer
    title_pointer: Literal["hard", "soft", "off"] = "soft"
    # the adapter writes soft positions 0..A-1 (A = num_soft_tokens - pointer_tokens), the pointed
    # title's first pointer_tokens tokens take the last positions ALONE (the adapter's output would blur
    # them), right-aligned: the title ends right before " Explanation:", as a text profile does
    pointer_tokens: int = 5
    # the adapter's output is multiplied by a learned per-soft-position gain that starts here: random
    # experts give vectors of norm ~7 where the LLM's token embeddings have norm ~1, which at 1.0
    # buries the title pointer and reads as noise to the frozen LLM
    adapter_gain_init: float = 0.1
    # fusion attention logits get a learned per-head bias for each item attribute an event shares with
    # the target (DIN-style target attention; order-free, so the bag baseline has it too)
    target_match_bias: bool = True
    # ... and a learned per-head bias for each event's recency rank (0 = the newest event). Only the
    # sequence-aware encoders use it: history_encoder=bag ignores it, a recency rank is an order
    recency_bias: bool = True
    # order of the history titles in the prompt TEXT: "time" (oldest first) or "sorted" (by token ids,
    # an order-free canonical order): an order-free baseline (history_encoder=bag) needs "sorted", or
    # the frozen LLM reads the order from the text
    history_text: Literal["time", "sorted"] = "time"
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    dropout: float = 0.1
    # position table size: >= the dataset's max_history (later positions share the last row)
    max_history: int = 50
    num_time_buckets: int = 32  # log2 time-gap buckets (0 = padding)
    num_soft_tokens: int = 8  # K soft-prompt vectors placed into the LLM input (pointer + adapter)
    num_experts: int = 8
    top_k: int = 2
    expert_hidden: int = 128
    capacity_factor: float = 0.0  # 0 = dropless; else capacity = ceil(cf * tokens * top_k / experts)
    aux_loss_coef: float = 0.01
    # the fusion attention is also trained toward the history event the training reference cites
    # (ExampleRecord.meta cited_offset, the collate's hist_cited): this times the mean -log weight on
    # that event is added to the loss; 0 = the language-model loss alone decides where it looks
    # (docs/model.md, "Supervising the fusion attention")
    cited_event_loss_coef: float = 0.0
    ep_size: int = 1  # expert-parallel group size: each rank holds num_experts / ep_size experts
    llm_path: str = ""  # local dir or s3:// / gs:// URL of a Hugging Face causal LM checkpoint
    llm_cache_dir: str = ".cache/llm"  # where object-store checkpoints are downloaded
    llm_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # code shipped inside a checkpoint (config.json auto_map) runs only when this is true
    trust_remote_code: bool = False
    # pickled *.bin weights load only when this is true, and then with torch.load(weights_only=True)
    allow_pickle_weights: bool = False
    # "plain": the collator's own prompt text; "chat": that text as the user turn of the tokenizer's
    # chat template (instruct checkpoints), the explanation as the assistant turn
    prompt_format: Literal["plain", "chat"] = "plain"
    # text that leads the prompt, e.g. "Explain why the recommended item fits this user." (the fair
    # zero-shot of an instruct model asks for what it should write); "" = none
    prompt_instruction: str = ""

    @property
    def uses_pointer(self) -> bool:
        """The soft prompt holds a title pointer (a trained SELLER prompt with title features)."""
        return (
            self.title_features
            and self.title_pointer != "off"
            and self.prompt == "seller"
            and self.adapter != "none"
        )

    @property
    def adapter_tokens(self) -> int:
        """Soft positions the adapter writes (the others hold the title pointer)."""
        return self.num_soft_tokens - (self.pointer_tokens if self.uses_pointer else 0)

    def validate(self) -> None:
        for name in ("d_model", "num_layers", "num_heads", "num_soft_tokens", "num_experts", "expert_hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise ConfigError(
                f"model.num_heads={self.num_heads} does not divide model.d_model={self.d_model}: "
                f"choose num_heads in {[h for h in range(1, self.d_model + 1) if self.d_model % h == 0]}"
            )
        if self.uses_pointer and not 1 <= self.pointer_tokens < self.num_soft_tokens:
            raise ConfigError(
                f"model.pointer_tokens={self.pointer_tokens} must be in [1, model.num_soft_tokens="
                f"{self.num_soft_tokens}): the title pointer and the adapter each need soft positions "
                "(raise num_soft_tokens, or set model.title_pointer=off)"
            )
        if self.adapter_gain_init <= 0:
            raise ConfigError(f"model.adapter_gain_init must be > 0, got {self.adapter_gain_init}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.num_time_buckets < 2 or self.max_history < 1:
            raise ConfigError("model.num_time_buckets must be >= 2 and model.max_history >= 1")
        if self.top_k not in (1, 2):
            raise ConfigError(f"model.top_k must be 1 or 2, got {self.top_k}")
        if self.top_k > self.num_experts:
            raise ConfigError(f"model.top_k={self.top_k} exceeds model.num_experts={self.num_experts}")
        if self.capacity_factor < 0:
            raise ConfigError(
                f"model.capacity_factor must be >= 0 (0 = dropless), got {self.capacity_factor}"
            )
        if self.aux_loss_coef < 0:
            raise ConfigError(f"model.aux_loss_coef must be >= 0, got {self.aux_loss_coef}")
        if self.cited_event_loss_coef < 0:
            raise ConfigError(f"model.cited_event_loss_coef must be >= 0, got {self.cited_event_loss_coef}")
        if self.cited_event_loss_coef > 0 and (self.prompt != "seller" or self.adapter == "none"):
            raise ConfigError(
                f"model.cited_event_loss_coef={self.cited_event_loss_coef} trains the fusion attention, "
                f"which model.prompt={self.prompt} / model.adapter={self.adapter} does not have: set it "
                "to 0, or use model.prompt=seller with an adapter"
            )
        if self.ep_size < 1 or self.num_experts % self.ep_size:
            divisors = [d for d in range(1, self.num_experts + 1) if self.num_experts % d == 0]
            raise ConfigError(
                f"model.ep_size={self.ep_size} does not divide model.num_experts={self.num_experts}: "
                f"choose ep_size in {divisors}"
            )
        if self.ep_size > 1 and self.adapter != "moe":
            raise ConfigError(f"model.ep_size={self.ep_size} needs model.adapter=moe (got '{self.adapter}')")
