"""What a training checkpoint holds, in one place: a registry of stateful parts (`PARTS`).
Save and resume walk the same list, so no part is written and forgotten on resume, and the table in
docs/checkpoints.md is generated from it (`./launch.sh tables`): it cannot drift.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any, Literal

from seller_dist.train import checkpoint as ck

Kind = Literal["deepspeed", "safetensors", "state", "json", "text"]
Writer = Literal["every rank", "rank 0", "expert holder"]


@dataclass(frozen=True)
class Part:
    """One entry of a checkpoint: its file (`{rank}` / `{ep_rank}` filled per rank), format, writer."""

    file: str
    kind: Kind
    writer: Writer
    what: str
    restore: bool = True  # read back on resume; False: written for export / warm starts / readers
    collective: bool = False  # state_dict() is a collective: every rank calls it, `writer` writes


PARTS: dict[str, Part] = {
    "engine": Part(
        "engine/",
        "deepspeed",
        "every rank",
        "DeepSpeed `save_checkpoint(exclude_frozen_parameters=True)`: this rank's ZeRO-3 partitions "
        "of the dense trainables and their AdamW state",
        collective=True,
    ),
    "dense": Part(
        ck.DENSE_FILE,
        "safetensors",
        "rank 0",
        "full dense trainable weights (`SellerModel.trainable_state_dict()` names, gathered); read by "
        "export and warm starts, resume reads `engine/`",
        restore=False,
        collective=True,
    ),
    "experts": Part(
        "moe-rank-{ep_rank}.safetensors",
        "safetensors",
        "expert holder",
        "the experts of expert-parallel rank e (`w1 b1 w2 b2`, stacked `[E/ep_size, ...]`) and the "
        "replicated router; written by the first data-parallel replica's holder",
    ),
    "expert_optimizer": Part(
        "moe-optim-rank-{rank}.safetensors + .json",
        "state",
        "every rank",
        "AdamW state of this rank's experts: tensors in safetensors, structure in JSON",
    ),
    "data": Part(
        "data-rank-{rank}.json",
        "json",
        "every rank",
        "the data stream cursor (`RankLoader.state_dict()`: epoch, batches done, layout)",
    ),
    "progress": Part(
        ck.TRAIN_STATE_FILE,
        "json",
        "rank 0",
        "`TrainProgress`: step, LR at that step, seed, world size, the manifest's sha256, "
        "`valid_loss` / `valid_step` (the validation loss measured at this step, null when off), "
        "`init_from` of a warm-started run",
    ),
    "config": Part(ck.CONFIG_FILE, "text", "rank 0", "the run config (YAML)", restore=False),
    "model_meta": Part(
        ck.MODEL_META_FILE,
        "json",
        "rank 0",
        "ModelConfig + ModelVocab: export rebuilds shapes from it",
        restore=False,
    ),
    "manifest_sha256": Part(
        ck.MANIFEST_HASH_FILE, "text", "rank 0", "sha256 of the dataset's manifest.json bytes", restore=False
    ),
    "dataset": Part(
        ck.DATASET_FILE,
        "json",
        "rank 0",
        "which dataset the weights were trained on and which item each item-table row is",
        restore=False,
    ),
}

# written by the commit protocol (seller_dist.train.checkpoint), not by a part
PROTOCOL_FILES: tuple[tuple[str, str, str], ...] = (
    (
        f"{ck.RANKS_DIR}/rank-<r>.json",
        "rank `r`",
        "sha256 of every file rank `r` uploaded, written after them",
    ),
    (
        ck.COMMIT_MARKER,
        "rank 0, last",
        '`{"format_version", "step", "world_size", "committed_at", "files": {path: sha256}}`',
    ),
)


@dataclass
class TrainProgress:
    """train_state.json. The LR is a pure function of the step and the per-step seeds are derived
    from (seed, step, micro-batch, rank), so step + seed ARE the schedule and RNG state."""

    step: int = 0
    lr: float = 0.0
    seed: int = 0
    world_size: int = 1
    manifest_sha256: str = ""
    valid_loss: float | None = None
    valid_step: int | None = None
    init_from: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        if out["init_from"] is None:
            out.pop("init_from")  # only warm-started runs carry it
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "seed" in state and int(state["seed"]) != self.seed:
            raise ck.CheckpointError(
                f"the checkpoint was written with seed={state['seed']}, this run has seed={self.seed}: "
                "resume with the same seed (dropout, routing noise and data order depend on it) or "
                "start a new run_name"
            )
        self.step = int(state["step"])
        self.lr = float(state.get("lr", 0.0))
        self.valid_loss = state.get("valid_loss")
        self.valid_step = state.get("valid_step")
        self.init_from = state.get("init_from")


class Fixed:
    """A value written for readers (config, metadata); nothing to restore."""

    def __init__(self, value: Any):
        self.value = value

    def state_dict(self) -> Any:
        return self.value


class CheckpointState:
    """The stateful parts of one rank, by PARTS name; `save` / `load` walk them in PARTS order. A part
    has `state_dict` (and `load_state_dict` when PARTS restores it); the DeepSpeed engine instead has
    `save_into` / `load_from` (a folder DeepSpeed itself writes its partitioned state into)."""

    def __init__(self, rank: int, ep_rank: int = 0, expert_holder: bool = False):
        self.rank, self.ep_rank, self.expert_holder = rank, ep_rank, expert_holder
        self.parts: dict[str, Any] = {}

    def register(self, name: str, obj: Any) -> None:
        if name not in PARTS:
            raise KeyError(f"no checkpoint part named {name!r}: add it to PARTS (and the docs table)")
        self.parts[name] = obj

    def _file(self, part: Part) -> str:
        name = part.file.format(rank=self.rank, ep_rank=self.ep_rank)
        return name.split(" ")[0].removesuffix(".safetensors") if part.kind == "state" else name

    def _writes(self, part: Part) -> bool:
        return (
            part.writer == "every rank"
            or (part.writer == "rank 0" and self.rank == 0)
            or (part.writer == "expert holder" and self.expert_holder)
        )

    def save(self, writer: ck.CheckpointWriter) -> None:
        """Every rank calls this (collective parts gather); each part is written by its writer."""
        for name in PARTS:
            obj = self.parts.get(name)
            if obj is None:
                continue
            part = PARTS[name]
            if part.kind == "deepspeed":
                obj.save_into(str(writer.staging_dir), self._file(part).rstrip("/"))
                continue
            if not (part.collective or self._writes(part)):
                continue
            state = obj.state_dict()
            if not self._writes(part):
                continue
            file = self._file(part)
            if part.kind == "safetensors":
                writer.save_tensors(file, state)
            elif part.kind == "state":
                writer.save_state(file, state)
            elif part.kind == "json":
                writer.save_json(file, state)
            else:
                writer.save_text(file, state)

    def load(self, ckpt: ck.Checkpoint) -> None:
        """Restore every registered part marked `restore` from a committed checkpoint."""
        for name in PARTS:
            obj = self.parts.get(name)
            part = PARTS[name]
            if obj is None or not part.restore:
                continue
            file = self._file(part)
            if part.kind == "deepspeed":
                with tempfile.TemporaryDirectory(prefix=f"seller-resume-rank{self.rank}-") as tmp:
                    ckpt.download(tmp, prefix=file)
                    obj.load_from(tmp, file.rstrip("/"), ckpt.url)
            elif part.kind == "safetensors":
                obj.load_state_dict(ckpt.load_tensors(file))
            elif part.kind == "state":
                obj.load_state_dict(ckpt.load_state(file))
            elif part.kind == "json":
                obj.load_state_dict(ckpt.load_json(file))
            else:
                obj.load_state_dict(ckpt.load_text(file))


def markdown_table() -> str:
    """docs/checkpoints.md's "What a checkpoint holds" table, from PARTS."""
    rows = ["| file | part | written by | what | read on resume |", "| --- | --- | --- | --- | --- |"]
    for name, p in PARTS.items():
        file = p.file.replace("{rank}", "<r>").replace("{ep_rank}", "<e>")
        rows.append(f"| `{file}` | `{name}` | {p.writer} | {p.what} | {'yes' if p.restore else 'no'} |")
    for file, writer, what in PROTOCOL_FILES:
        rows.append(f"| `{file}` | (commit protocol) | {writer} | {what} | checked |")
    return "\n".join(rows)
