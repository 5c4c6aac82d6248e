"""One rank's training: `Trainer(cfg)` builds this rank's stream, frozen LLM, SellerModel and optimizers and
resumes from the run's newest committed checkpoint; `train_step` is a whole optimizer step (a TrainStep over
this rank's state, stream and timer) and `fit` runs the loop, with logging, validation and checkpointing
apart from the step. Every rank runs the same code (docs/training.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist

from seller_dist import storage
from seller_dist.config import TrainConfig, dump_yaml, to_dict
from seller_dist.logs import stage_log
from seller_dist.train import checkpoint as ck
from seller_dist.train import warm_start
from seller_dist.train.callbacks import CallbackList, TrainerCallback, build_callbacks
from seller_dist.train.checkpoint_state import CheckpointState, Fixed, TrainProgress
from seller_dist.train.step import StepStats, TrainStep, WorkerResult, model_inputs, rank_data, setup_rank_env

stage = stage_log(__name__)  # rank 0's stage lines: Ray forwards them to the console (seller_dist/logs.py)


class EngineCheckpoint:
    """The DeepSpeed engine's own folder: this rank's ZeRO-3 partitions + optimizer state."""

    def __init__(self, engine: Any):
        self.engine = engine

    def save_into(self, folder: str, tag: str) -> None:
        self.engine.save_checkpoint(folder, tag=tag, exclude_frozen_parameters=True, save_latest=False)

    def load_from(self, folder: str, tag: str, url: str) -> None:
        """DeepSpeed `torch.load`s its .pt files: acceptable only because `Checkpoint.download`
        verified each against the sha256 in COMMITTED, so only what this job saved is unpickled."""
        path, _ = self.engine.load_checkpoint(
            folder,
            tag=tag,
            load_module_strict=False,  # the frozen LLM was excluded on save
            load_optimizer_states=True,
            load_lr_scheduler_states=False,
        )
        if path is None:
            raise ck.CheckpointError(f"checkpoint {url}: DeepSpeed could not load {tag}/")


class DenseWeights:
    """model.safetensors: the full dense trainables, gathered from their partitions (collective);
    written, never restored (resume reads engine/)."""

    def __init__(self, state: Any):
        self.state = state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state.trainable_state_dict().items() if not k.startswith("moe.")}


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        report: Callable[[dict[str, Any]], None] | None = None,
        timer: Any = None,
        callbacks: Sequence[TrainerCallback] = (),
    ):
        """Build this rank (torch.distributed env vars or an initialized process group expected).
        `timer`: a seller_dist.train.metrics.StepTimer splitting each step into phases (`seller-dist
        bench train`); the default measures nothing and changes nothing. `callbacks` run after the
        config's `callbacks` (seller_dist.train.callbacks)."""
        self.use_gpu = setup_rank_env()
        from seller_dist.data.prefetch import Prefetcher
        from seller_dist.model.seller import SellerModel
        from seller_dist.model.vocab import ModelVocab
        from seller_dist.train.metrics import MetricsLogger, NullStepTimer, ThroughputMeter, parameter_counts
        from seller_dist.train.strategy import DeepSpeedStrategy, StrategySettings

        cfg.validate()
        self.cfg = cfg
        self.callbacks = CallbackList([*build_callbacks(cfg.callbacks), *callbacks])
        strategy = DeepSpeedStrategy(StrategySettings.from_train_config(cfg, self.use_gpu))
        strategy.init_distributed()
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = (
            torch.device("cuda", torch.cuda.current_device()) if self.use_gpu else torch.device("cpu")
        )
        self.callbacks.on_rank_start(self.rank)

        # ---- data: this rank's exact share of the split, collated with the LLM's tokenizer
        manifest, catalog, self.loader = rank_data(cfg, self.rank, self.world)
        manifest_bytes = storage.read_bytes(
            storage.join(cfg.data.manifest, "manifest.json"), cfg.data.storage
        )
        manifest_sha256 = hashlib.sha256(manifest_bytes).hexdigest()
        item_ids = catalog.item_ids[1:]  # item_ids[i - 1] is item_idx i
        collate = self.loader.stream.collate_fn
        self.batches = Prefetcher(self.loader, cfg.data.prefetch_batches, pin_memory=self.use_gpu)
        self.validator = None
        split = cfg.eval.split
        if cfg.eval.every_steps and (split not in manifest.data["splits"] or manifest.count(split) == 0):
            if cfg.checkpoint.keep_best:
                raise ValueError(
                    f"checkpoint.keep_best needs a validation loss, but {cfg.data.manifest} has no "
                    f"'{split}' records: prepare a dataset with that split or set eval.split"
                )
            if self.rank == 0:
                stage.info("[train] warning: the dataset has no '%s' records: no validation loss", split)
        elif cfg.eval.every_steps:
            from seller_dist.train.validation import Validator

            self.validator = Validator(
                manifest, cfg.eval.split, cfg.eval.batch_size or cfg.data.batch_size,
                cfg.eval.max_examples, collate, self.rank, self.world, cfg.data.storage,
            )  # fmt: skip

        # ---- model: LLM partitioned while loading; identical trainable init on every rank
        llm = strategy.load_llm(cfg.model, cfg.storage)  # same cached download as the tokenizer
        if cfg.compile_llm:
            llm.compile_layers()
        if self.rank == 0:
            stage.info("[train] %s", llm.family.summary() if llm.family else "LLM loaded")
            longest = collate.max_prompt_tokens + collate.max_target_tokens + 1  # + eos
            warning = llm.family.window_warning(longest) if llm.family else None
            if warning:
                stage.info("[train] warning: %s", warning)
            if cfg.model.uses_pointer:
                from seller_dist.model.seller import pointer_cut_warning

                cut = pointer_cut_warning(collate.title_token_counts(), cfg.model.pointer_tokens)
                if cut:
                    stage.info("[train] warning: %s", cut)
        # the newest committed checkpoint of this run wins over init_from (a restarted run resumes)
        root = ck.checkpoints_root(cfg.storage_path, cfg.run_name)
        latest = ck.latest_committed(root, cfg.storage, verify=True)
        warm = None
        if latest is None and cfg.init_from:
            warm = warm_start.for_worker(cfg, manifest.data, manifest_sha256, item_ids, llm.hidden_size)
        torch.manual_seed(cfg.seed)
        model = SellerModel(cfg.model, ModelVocab.from_manifest(manifest.data), llm, strategy.registers_llm)
        if warm is not None:  # before DeepSpeed partitions the dense trainables: every rank the same
            warm_start.load_dense(model, warm)
        self.state = strategy.prepare(model, cfg.optim)
        if warm is not None:
            warm_start.load_moe(self.state.moe, warm)
            if self.rank == 0:
                stage.info("[train] %s", warm.summary())

        # ---- what a checkpoint holds (seller_dist.train.checkpoint_state.PARTS)
        self.progress = TrainProgress(
            seed=cfg.seed, world_size=self.world, manifest_sha256=manifest_sha256,
            init_from=warm.record() if warm is not None else None,
        )  # fmt: skip
        self.checkpoint = self._checkpoint_parts(manifest, manifest_sha256, item_ids)
        self.result = WorkerResult(start_step=0, step=0)
        if latest is not None:
            self.restore(latest)

        # ---- metrics
        frozen_n, trainable_n = parameter_counts(model, self.state.moe)
        self.timer = timer if timer is not None else NullStepTimer()
        self.timer.set_model_size(frozen_n, trainable_n)
        self.meter = ThroughputMeter(frozen_n, trainable_n, cfg.logging.peak_tflops, num_devices=self.world)
        self.logger = MetricsLogger(cfg.logging, cfg.run_name, to_dict(cfg), self.rank, report)
        self.train_step = TrainStep(
            self.state, cfg.optim, cfg.max_steps, cfg.seed, self.batches, self.device,
            self.rank, self.world, self.timer, self.callbacks,
        )  # fmt: skip
        self._window: list[StepStats] = []
        self._valid_logged: int | None = None

    # ------------------------------------------------------------------------------ the loop
    def fit(self) -> WorkerResult:
        """Run the remaining steps to `max_steps`; the weights a run leaves are its checkpoints."""
        cfg = self.cfg
        self.state.train()
        try:
            for step in range(self.result.step, cfg.max_steps):
                self.timer.step_begin()
                stats = self.train_step(step)
                done = step + 1
                self.result.losses[done] = stats.loss
                self.result.step = done
                self.meter.update(stats.tokens, stats.samples, stats.seconds, stats.data_wait)
                every_ckpt = cfg.checkpoint.every_steps
                save = bool(every_ckpt and done % every_ckpt == 0) or (
                    done == cfg.max_steps and cfg.checkpoint.at_end
                )
                if self.validator is not None and (done % cfg.eval.every_steps == 0 or save):
                    self.validate(done)
                self.log(done, stats)
                if save:
                    self.save(done, stats.lr)
                self.timer.step_end(stats.own_tokens, stats.own_samples)  # this rank's own counts
        finally:
            self.logger.close()
            self.batches.close()
        return self.result

    def validate(self, done: int) -> float:
        """Validation loss after step `done`; the models go back to training mode after."""
        assert self.validator is not None
        self.state.train(False)
        with torch.no_grad():
            loss = self.validator.loss(self.state.forward, model_inputs, self.device)
        self.state.train()
        self.progress.valid_loss, self.progress.valid_step = loss, done
        self.result.valid_losses[done] = loss
        return loss

    def log(self, done: int, stats: StepStats) -> None:
        """Every `logging.every_steps`: means over the window, expert load, throughput, valid loss."""
        self._window.append(stats)
        if not (done % self.cfg.logging.every_steps == 0 or done == self.cfg.max_steps):
            return
        window, self._window = self._window, []
        load = None
        for s in window:
            if s.expert_load is not None:
                load = s.expert_load if load is None else load + s.expert_load
        load = load if load is not None else torch.zeros(0)
        if self.world > 1 and load.numel():
            load = load.to(self.device)
            dist.all_reduce(load)
        load = load / max(1e-12, float(load.sum())) if load.numel() else load
        metrics: dict[str, Any] = {
            "loss": sum(s.loss for s in window) / len(window),
            "aux_loss": sum(s.aux_loss for s in window) / len(window),
            "grad_norm": sum(s.grad_norm for s in window) / len(window),
            "lr": stats.lr,
            "epoch": self.batches.epoch,
            "expert_load": [float(x) for x in load.cpu()],
            **self.meter.summary(),
        }
        if self.cfg.model.cited_event_loss_coef > 0:  # unweighted; `loss` holds coef times it
            metrics["cited_event_loss"] = sum(s.cited_event_loss for s in window) / len(window)
        if self.progress.valid_step is not None and self.progress.valid_step != self._valid_logged:
            metrics["valid_loss"] = self.progress.valid_loss
            self._valid_logged = self.progress.valid_step
        self.logger.log(done, metrics)

    # ------------------------------------------------------------------------------ checkpoints
    def _checkpoint_parts(self, manifest: Any, manifest_sha256: str, item_ids: list[str]) -> CheckpointState:
        state, cfg = self.state, self.cfg
        holder = state.moe is not None and self.rank == state.groups.ep_rank  # first replica's holder
        parts = CheckpointState(self.rank, state.groups.ep_rank, expert_holder=holder)
        parts.register("engine", EngineCheckpoint(state.engine))
        parts.register("dense", DenseWeights(state))
        if state.moe is not None:
            parts.register("experts", state.moe)
            parts.register("expert_optimizer", state.moe_optimizer)
        parts.register("data", self.batches)
        parts.register("progress", self.progress)
        parts.register("config", Fixed(dump_yaml(cfg)))
        parts.register("model_meta", Fixed(ck.model_meta(cfg.model, state.model.vocab)))
        parts.register("manifest_sha256", Fixed(manifest_sha256 + "\n"))
        parts.register(
            "dataset", Fixed(ck.dataset_record(cfg.data.manifest, manifest_sha256, manifest.data, item_ids))
        )
        return parts

    def save(self, done: int, lr: float) -> str:
        """Every rank stages its parts and uploads; after a barrier rank 0 commits (COMMITTED last)
        and prunes; nobody moves on before the commit is visible."""
        cfg = self.cfg
        self.progress.step, self.progress.lr = done, lr
        if self.progress.valid_step != done:
            self.progress.valid_loss = self.progress.valid_step = None
        root = ck.checkpoints_root(cfg.storage_path, cfg.run_name)
        writer = ck.CheckpointWriter(root, done, self.rank, self.world, cfg.storage)
        try:
            self.checkpoint.save(writer)
            writer.upload()
        finally:
            writer.cleanup()
        if self.world > 1:
            dist.barrier()
        if self.rank == 0:
            ck.commit(writer.url, self.world, cfg.storage)
            ck.prune(
                root, cfg.checkpoint.keep, cfg.storage, "valid_loss" if cfg.checkpoint.keep_best else None
            )
        if self.world > 1:
            dist.barrier()
        self.result.checkpoint_url = writer.url
        return writer.url

    def restore(self, latest: ck.Checkpoint) -> None:
        if latest.world_size != self.world:
            raise ck.CheckpointError(
                f"checkpoint {latest.url} was written by {latest.world_size} workers, this run has "
                f"{self.world}: resume with the same workers.num_workers, or start a new run_name"
            )
        self.checkpoint.load(latest)
        self.result = WorkerResult(
            start_step=self.progress.step, step=self.progress.step, checkpoint_url=latest.url
        )
        if self.rank == 0:
            stage.info("[train] rank 0 resumed from %s at step %d", latest.url, self.progress.step)
