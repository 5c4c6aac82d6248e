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


def test_the_real_llm_demo_trains_on_the_prompt_that_measured_best():
    """`--llm smollm2`: SELLER and `bag` train on the instruct model's chat template, asked the same
    question as the zero-shot row, with the LLM replicated (docs/results.md, MovieLens with a real
    LLM); the default demo keeps the plain prompt and ZeRO-3."""
    from seller_dist import demo
    from seller_dist.config import TrainConfig, load_config
    from seller_dist.train.driver import default_config_path

    def cfg(llm: str = "bootstrap", encoder: str = "transformer") -> TrainConfig:
        options = demo.DemoOptions(llm=llm, train_steps=40)  # type: ignore[arg-type]
        overrides = demo.train_overrides(options, "d", "l", "seller", encoder)
        return load_config(TrainConfig, default_config_path(), overrides)

    real, bag = cfg("smollm2"), cfg("smollm2", encoder="bag")
    for c in (real, bag):
        assert c.model.prompt_format == "chat" and c.model.prompt_instruction == demo.CHAT_INSTRUCTION
        assert c.llm_layout == "replicated" and c.optim.lr == 0.01
    assert bag.model.history_encoder == "bag" and bag.model.history_text == "sorted"
    zero_shot = dict(o.split("=", 1) for o in demo.chat_prompt("expect_model"))
    assert zero_shot["expect_model.prompt_instruction"] == real.model.prompt_instruction
    plain = cfg()
    assert plain.model.prompt_format != "chat" and plain.llm_layout == "zero3" and plain.optim.lr == 0.003
    assert (demo.SMOLLM2_TRAIN_STEPS, demo.SMOLLM2_EVAL_LIMIT) == (40, 50)  # the MovieLens grid's budget
