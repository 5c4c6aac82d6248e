"""`seller-dist export`: a committed checkpoint -> trainable weights for inference without Ray or DeepSpeed.
Training may shard the experts over `ep_size` ranks; inference in one process wants them in one table,
so export gathers them into the ep_size=1 layout beside the dense weights and config (the folder:
docs/checkpoints.md, "Export"), and `load_exported` rebuilds the model next to the LLM at `llm_path`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from seller_dist import storage
from seller_dist.config import ModelConfig, StorageConfig
from seller_dist.train import checkpoint as ck

log = logging.getLogger(__name__)

EXPORT_FORMAT_VERSION = 1
WEIGHTS_FILE = "trainable.safetensors"
CONFIG_FILE = "seller_config.json"
DATASET_FILE = "dataset.json"
MOE_PREFIX = "moe."
EXPERT_KEYS = ("w1", "b1", "w2", "b2")  # stacked per-expert tensors of MoEAdapter: dim 0 = expert


def gather_experts(
    parts: list[dict[str, torch.Tensor]], where: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Per expert-parallel rank MoE state dicts (in ep_rank order) -> one ep_size=1 state dict."""
    full: dict[str, torch.Tensor] = {}
    for key in parts[0]:
        if key in EXPERT_KEYS:
            full[key] = torch.cat([p[key] for p in parts])
        else:  # replicated (router): every rank must hold the same values
            for e, p in enumerate(parts[1:], start=1):
                if not torch.equal(p[key], parts[0][key]):
                    raise ValueError(
                        f"{where}: replicated MoE tensor {key} differs between ep ranks 0 and {e}; "
                        "the router gradients were not all-reduced"
                    )
            full[key] = parts[0][key]
    return full


@dataclass
class TrainedWeights:
    """Everything inference needs besides the frozen LLM: model config (ep_size=1), vocab sizes and
    the trainable weights with all experts gathered. Small: it travels to eval workers by value."""

    source: str  # the checkpoint or export URL it came from
    step: int | None
    model: ModelConfig
    vocab: dict[str, Any]
    weights: dict[str, torch.Tensor]
    train_config: str | None = None  # the run's config.yaml, when read from a checkpoint
    manifest_sha256: str | None = None  # of the dataset it was trained on, when known
    # identity of what was read: sha256 of a checkpoint's COMMITTED marker (it lists every file's
    # hash) or of an export's trainable.safetensors
    sha256: str | None = None
    dataset: dict[str, Any] | None = None  # checkpoint.dataset_record(...) of its dataset, when known
    init_from: dict[str, Any] | None = None  # where its run warm-started from, when it did


def from_checkpoint(checkpoint_url: str, storage_cfg: StorageConfig | None = None) -> TrainedWeights:
    """A committed checkpoint (every file's sha256 verified first) -> TrainedWeights."""
    ckpt = ck.Checkpoint.open(checkpoint_url, storage_cfg, verify=True)
    meta = ckpt.load_json(ck.MODEL_META_FILE)
    model_cfg = ModelConfig(**meta["model"])
    weights: dict[str, torch.Tensor] = (
        dict(ckpt.load_tensors(ck.DENSE_FILE)) if ckpt.has(ck.DENSE_FILE) else {}
    )
    if model_cfg.adapter == "moe":
        names = [ck.moe_file(e) for e in range(model_cfg.ep_size)]
        missing = [n for n in names if not ckpt.has(n)]
        if missing:
            raise ck.CheckpointError(
                f"checkpoint {checkpoint_url} has model.ep_size={model_cfg.ep_size} but lacks {missing}"
            )
        moe = gather_experts([ckpt.load_tensors(n) for n in names], f"checkpoint {checkpoint_url}")
        weights.update({f"{MOE_PREFIX}{k}": v for k, v in moe.items()})
    train_state = ckpt.load_json(ck.TRAIN_STATE_FILE) if ckpt.has(ck.TRAIN_STATE_FILE) else {}
    return TrainedWeights(
        source=checkpoint_url,
        step=ckpt.step,
        model=dataclasses.replace(model_cfg, ep_size=1),
        vocab=dict(meta["vocab"]),
        weights=weights,
        train_config=ckpt.load_text(ck.CONFIG_FILE) if ckpt.has(ck.CONFIG_FILE) else None,
        manifest_sha256=(
            ckpt.load_text(ck.MANIFEST_HASH_FILE).strip() if ckpt.has(ck.MANIFEST_HASH_FILE) else None
        ),
        sha256=ckpt.marker_sha256 or None,
        dataset=ckpt.load_json(ck.DATASET_FILE) if ckpt.has(ck.DATASET_FILE) else None,
        init_from=train_state.get("init_from"),
    )


def from_export(folder_url: str, storage_cfg: StorageConfig | None = None) -> TrainedWeights:
    """An export folder (local or object store) -> TrainedWeights."""
    from safetensors.torch import load as load_safetensors

    config_url = storage.join(folder_url, CONFIG_FILE)
    try:
        config = json.loads(storage.read_bytes(config_url, storage_cfg))
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder_url} is not an export folder: no {CONFIG_FILE}") from None
    if int(config.get("format_version", -1)) > EXPORT_FORMAT_VERSION:
        raise ValueError(f"{config_url}: format_version {config['format_version']} is newer than this code")
    raw_weights = storage.read_bytes(storage.join(folder_url, WEIGHTS_FILE), storage_cfg)
    weights = load_safetensors(raw_weights)
    dataset_url = storage.join(folder_url, DATASET_FILE)
    dataset = (
        storage.read_json(dataset_url, storage_cfg) if storage.exists(dataset_url, storage_cfg) else None
    )
    return TrainedWeights(
        source=folder_url,
        step=config.get("step"),
        model=ModelConfig(**{**config["model"], "ep_size": 1}),
        vocab=dict(config["vocab"]),
        weights=dict(weights),
        train_config=config.get("train_config"),
        manifest_sha256=config.get("manifest_sha256"),
        sha256=ck.sha256_bytes(raw_weights),
        dataset=dataset,
        init_from=config.get("init_from"),
    )


class NoCommittedCheckpointError(ck.CheckpointError):
    """A run's checkpoints folder without a committed step (empty, or every step cut off mid-write)."""


def committed_checkpoint_url(url: str, storage_cfg: StorageConfig | None = None) -> str:
    """A checkpoint URL …/step-N as given, or a run's checkpoints folder -> its newest committed
    step. The one place that resolves "the newest checkpoint of a run" for export, eval and warm
    starts: a newer step cut off before its COMMITTED marker is skipped, never half-read."""
    url = url.rstrip("/")
    if ck.is_step_url(url):
        return url
    latest = ck.latest_committed(url, storage_cfg, verify=False)
    if latest is None:
        raise NoCommittedCheckpointError(f"no committed checkpoint under {url}")
    return latest.url


def load_trained(url: str, storage_cfg: StorageConfig | None = None) -> TrainedWeights:
    """A committed checkpoint, a run's checkpoints folder (the newest committed one) or an export
    folder. Errors say which was expected and what was found."""
    url = url.rstrip("/")
    if storage.exists(storage.join(url, CONFIG_FILE), storage_cfg):
        return from_export(url, storage_cfg)
    if ck.is_step_url(url):
        if not storage.exists(url, storage_cfg):
            raise ck.CheckpointError(f"checkpoint {url} does not exist")
        return from_checkpoint(url, storage_cfg)
    if not storage.exists(url, storage_cfg):
        raise ck.CheckpointError(
            f"checkpoint {url} does not exist (expected a committed checkpoint …/step-N, a run's "
            "checkpoints folder or an export folder)"
        )
    try:
        checkpoint_url = committed_checkpoint_url(url, storage_cfg)
    except NoCommittedCheckpointError:
        raise ck.CheckpointError(
            f"{url} holds no committed checkpoint and is not an export folder (no {CONFIG_FILE})"
        ) from None
    return from_checkpoint(checkpoint_url, storage_cfg)


def export(checkpoint_url: str, out_dir: str | Path, storage_cfg: StorageConfig | None = None) -> Path:
    """Write trainable.safetensors + seller_config.json for a committed checkpoint …/step-N (verified
    first); `committed_checkpoint_url` turns a run's checkpoints folder into one."""
    trained = from_checkpoint(checkpoint_url, storage_cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in trained.weights.items()}, str(out / WEIGHTS_FILE))
    config = {
        "format_version": EXPORT_FORMAT_VERSION,
        "model": dataclasses.asdict(trained.model),
        "vocab": trained.vocab,
        "llm_path": trained.model.llm_path,
        "source_checkpoint": checkpoint_url,
        "step": trained.step,
        "train_config": trained.train_config,
        "manifest_sha256": trained.manifest_sha256,
        "checkpoint_sha256": trained.sha256,
        "init_from": trained.init_from,
    }
    if trained.dataset is not None:
        (out / DATASET_FILE).write_text(json.dumps(trained.dataset, sort_keys=True))
    else:  # never leave an earlier export's item ids beside these weights
        (out / DATASET_FILE).unlink(missing_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    log.info("exported %s (%d tensors) to %s", checkpoint_url, len(trained.weights), out)
    return out


@dataclass
class ExportedSeller:
    """A plain PyTorch SellerModel (+ its single-process MoE adapter) ready for `generate`."""

    model: Any  # seller_dist.model.seller.SellerModel
    moe: Any  # MoEAdapter or None

    @torch.no_grad()
    def generate(self, batch: dict[str, torch.Tensor], gen: Any = None, generator: Any = None) -> dict:
        return self.model.generate(batch, moe=self.moe, gen=gen, generator=generator)


def build_seller(
    trained: TrainedWeights,
    llm: Any = None,
    llm_path: str | None = None,
    storage_cfg: StorageConfig | None = None,
) -> ExportedSeller:
    """SellerModel + MoE with the trained weights, on the CPU in eval mode. `llm`: an already
    loaded FrozenLLM, else it is read from `llm_path` (default: the path it was trained with)."""
    from seller_dist.model.seller import SellerModel
    from seller_dist.model.vocab import ModelVocab
    from seller_dist.train.strategy import load_frozen_llm

    model_cfg = trained.model
    if llm is None:
        path = llm_path or model_cfg.llm_path
        if not path:
            raise ValueError(f"{trained.source} names no llm_path: pass llm_path= (the base LLM)")
        # as for a strategy that does not train in bf16: the config's llm_dtype
        llm = load_frozen_llm(dataclasses.replace(model_cfg, llm_path=path), torch.float32, storage_cfg)
    model = SellerModel(model_cfg, ModelVocab(**trained.vocab), llm).eval()
    weights = trained.weights
    model.load_trainable_state_dict({k: v for k, v in weights.items() if not k.startswith(MOE_PREFIX)})
    moe = None
    if model_cfg.adapter == "moe":
        moe = model.make_moe()
        moe.load_full_state_dict(
            {k[len(MOE_PREFIX) :]: v for k, v in weights.items() if k.startswith(MOE_PREFIX)}
        )
        moe.eval()
    return ExportedSeller(model, moe)


def load_exported(
    out_dir: str | Path, llm_path: str | None = None, storage_cfg: StorageConfig | None = None
) -> ExportedSeller:
    """Rebuild the model from an export folder with plain PyTorch (no Ray, no DeepSpeed)."""
    return build_seller(from_export(str(out_dir), storage_cfg), llm_path=llm_path, storage_cfg=storage_cfg)
