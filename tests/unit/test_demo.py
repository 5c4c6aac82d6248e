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
