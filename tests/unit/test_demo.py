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
