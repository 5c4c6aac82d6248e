"""The README's main command: prep on the embedded default, then stream back across ranks."""

from __future__ import annotations

from seller_dist.cli import main
from seller_dist.data.shards import Manifest


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--out",
                str(out),
                "--ranks",
                "3",
                "--stages",
                "data",
                "--set",
                "source_options.num_users=40",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    manifest = Manifest.load(str(out / "data"))
    train = manifest.count("train")
    assert train > 0
    assert f"'train': {train}" in text
    assert "every train record streamed exactly once" in text
    # three ranks, equal batch counts, records add up to the manifest
    lines = [ln for ln in text.splitlines() if ln.strip().startswith("[demo]     rank")]
    assert len(lines) == 3
    batches = {ln.split(": ")[1].split(" batches")[0] for ln in lines}
    assert len(batches) == 1
    assert sum(int(ln.split(", ")[1].split(" records")[0]) for ln in lines) == train


def test_demo_console_quiet_by_default_and_everything_with_verbose(tmp_path, capsys):
    """By default the console holds the demo's own lines and everything printed also lands in
    `<out>/demo.log` (where Ray's and DeepSpeed's output goes); `--verbose` writes no log file."""
    args = ["--stages", "data", "--set", "source_options.num_users=20"]
    assert main(["demo", "--out", str(tmp_path / "quiet"), *args]) == 0
    text = capsys.readouterr().out
    log = (tmp_path / "quiet" / "demo.log").read_text()
    assert text.splitlines()[0].startswith("[demo] Ray's and DeepSpeed's own output: ")
    assert all(ln.startswith("[demo]") for ln in text.splitlines()), text
    assert "[demo] 2/2 stream the train split back" in text and "[demo] 2/2 stream" in log

    assert main(["demo", "--verbose", "--out", str(tmp_path / "verbose"), *args]) == 0
    text = capsys.readouterr().out
    assert "own output" not in text and "[demo] 2/2 stream the train split back" in text
    assert not (tmp_path / "verbose" / "demo.log").exists()


def test_the_real_llm_demo_trains_as_the_synthetic_grids_best_cells():
    """`--llm smollm2`: SELLER and `bag` train exactly as configs/experiments/synthetic_smollm2.yaml's
    `seller-chat-fulltitle` and `bag-chat-fulltitle` cells of seed 0 (the chat template asked the
    zero-shot's question, a 13-position title pointer, the LLM replicated) on the same prepared data;
    the default demo keeps the plain prompt and ZeRO-3."""
    from data_prep.pipeline import DEFAULT_CONFIG
    from seller_dist import demo
    from seller_dist.config import ExperimentConfig, PrepConfig, TrainConfig, load_config
    from seller_dist.experiment import grid, overrides_of, train_config_for
    from seller_dist.train.driver import default_config_path

    def cfg(llm: str = "bootstrap", encoder: str = "transformer") -> TrainConfig:
        options = demo.DemoOptions(llm=llm, train_steps=40)  # type: ignore[arg-type]
        overrides = demo.train_overrides(options, "d", "l", "seller", encoder)
        return load_config(TrainConfig, default_config_path(), overrides)

    exp = load_config(ExperimentConfig, "configs/experiments/synthetic_smollm2.yaml")
    cells = {c.system: c for c in grid(exp, ["seller-chat-fulltitle", "bag-chat-fulltitle"], [0])}
    for encoder, system in (("transformer", "seller-chat-fulltitle"), ("bag", "bag-chat-fulltitle")):
        ours, theirs = cfg("smollm2", encoder), train_config_for(exp, cells[system], "d", "l")
        assert ours.model == theirs.model, system
        assert (ours.optim, ours.llm_layout, ours.seed) == (theirs.optim, theirs.llm_layout, theirs.seed)
        assert (ours.data.length_buckets, ours.data.batch_size) == (64, theirs.data.batch_size)
        assert (ours.model.pointer_tokens, ours.model.prompt_instruction) == (13, demo.CHAT_INSTRUCTION)
    zero_shot = dict(o.split("=", 1) for o in demo.chat_prompt("expect_model"))
    assert zero_shot["expect_model.prompt_instruction"] == demo.CHAT_INSTRUCTION
    prep = load_config(PrepConfig, DEFAULT_CONFIG, ["output=d", *demo.SMOLLM2_PREP])
    grid_prep = load_config(PrepConfig, DEFAULT_CONFIG, ["output=d", *overrides_of(exp.prep)])
    assert prep == grid_prep
    assert (exp.budget.max_steps, exp.budget.eval_examples) == (
        demo.SMOLLM2_TRAIN_STEPS,
        demo.SMOLLM2_EVAL_LIMIT,
    )
    plain = cfg()
    assert plain.model.prompt_format != "chat" and plain.llm_layout == "zero3" and plain.optim.lr == 0.003
    assert plain.model.pointer_tokens == 5 and plain.data.length_buckets == 0
