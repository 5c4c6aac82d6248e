"""What every benchmark and experiment artifact records about its run (seller_dist.version.provenance):
the commit and a clean, dirty or unknown tree, where a failed git call is recorded as unknown with
its reason and never read as clean; the command as typed; the machine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from seller_dist import experiment as ex
from seller_dist import version
from seller_dist.config import ExperimentConfig, load_config
from seller_dist.data.shards import SCHEMA_VERSION
from seller_dist.train import driver


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q")
    (r / "a.py").write_text("x = 1\n")
    git(r, "add", "a.py")
    git(r, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a")
    return r


def test_clean_dirty_and_untracked(repo: Path) -> None:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    assert version.git_tree(repo) == {"commit": head, "tree": "clean"}
    (repo / "b.py").write_text("new module\n")  # untracked and not ignored: it can change what runs
    assert version.git_tree(repo)["tree"] == "dirty"
    (repo / "b.py").unlink()
    (repo / "a.py").write_text("x = 2\n")
    state = version.git_tree(repo)
    assert state["tree"] == "dirty" and state["commit"] == head and state["changed"] == ["a.py"]


def test_a_failed_git_call_is_unknown_with_its_reason(tmp_path: Path, monkeypatch) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / ".git").write_text("gitdir: /nonexistent/.git\n")
    state = version.git_tree(broken)
    assert state["tree"] == "unknown" and state["commit"] is None and "git rev-parse" in state["git_error"]

    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no git at all
    state = version.git_tree(broken)
    assert state["tree"] == "unknown" and "FileNotFoundError" in state["git_error"]


def test_a_copy_without_git_records_the_stated_commit_unchecked(tmp_path: Path, monkeypatch) -> None:
    assert version.git_tree(tmp_path) == {
        "commit": None,
        "tree": "unknown",
        "git_error": "not run from a git checkout",
    }
    monkeypatch.setenv(version.STATED_COMMIT_ENV, "abc123")
    assert version.git_tree(tmp_path)["stated_commit"] == "abc123"
    assert version.git_tree(tmp_path)["commit"] is None


def test_command_line_as_typed() -> None:
    root = version.REPO_ROOT
    assert (
        version.command_line([str(root / "seller_dist" / "cli" / "__main__.py"), "bench", "data"])
        == "seller-dist bench data"
    )
    assert version.command_line(["/usr/local/bin/seller-dist", "bench", "eval", "--out", "a b.json"]) == (
        "seller-dist bench eval --out 'a b.json'"
    )
    learning = [str(root / "tests" / "learning_seller_vs_bag.py"), "--out", "x.json"]
    assert version.command_line(learning) == "python -m tests.learning_seller_vs_bag --out x.json"


def test_provenance_holds_command_date_machine_and_tree(repo: Path) -> None:
    p = version.provenance(["seller-dist", "bench", "data"], repo=repo)
    assert p["command"] == "seller-dist bench data" and p["tree"] == "clean" and p["date"].endswith("+00:00")
    m = p["machine"]
    assert m["cpus"] >= 1 and m["memory_gib"] > 0 and isinstance(m["gpus"], list) and "torch" in m["versions"]
    assert "node" not in json.dumps(m).lower()  # no host name
    json.dumps(p)


# ------------------------------------------------------------------- experiment: nothing hidden
def _experiment(tmp_path: Path, monkeypatch) -> dict:
    def train(tcfg):
        return SimpleNamespace(checkpoint=SimpleNamespace(step=tcfg.max_steps))  # a TrainResult, as used

    def evaluate(ecfg):
        return {"num_examples": 2, "run_config": {"step": 3}, "text": {"bleu4": {"mean": 1.0, "std": 0.0}}}

    monkeypatch.setattr(driver, "train", train)
    monkeypatch.setattr(ex, "_evaluate", evaluate)
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "splits": {}}))
    cfg = load_config(
        ExperimentConfig,
        None,
        [
            f"out={tmp_path / 'exp'}",
            f"data={data}",
            "llm.path=/models/x",
            "seeds=[0]",
            "table_metrics=[text/bleu4]",
        ],
    )
    cfg.systems = {"seller": {}}
    return ex.run_experiment(cfg)


def test_experiment_records_a_failed_git_call_as_unknown(tmp_path: Path, monkeypatch) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / ".git").write_text("gitdir: /nonexistent/.git\n")
    monkeypatch.setattr(version, "REPO_ROOT", broken)
    results = _experiment(tmp_path, monkeypatch)
    assert results["provenance"]["tree"] == "unknown" and results["provenance"]["git_error"]
    assert results["runs"][0]["provenance"]["tree"] == "unknown"
    md = (tmp_path / "exp" / "results.md").read_text()
    assert "(tree unknown: RuntimeError: git rev-parse HEAD" in md


def test_experiment_records_a_dirty_tree(tmp_path: Path, monkeypatch, repo: Path) -> None:
    (repo / "a.py").write_text("x = 3\n")
    monkeypatch.setattr(version, "REPO_ROOT", repo)
    results = _experiment(tmp_path, monkeypatch)
    assert results["provenance"]["tree"] == "dirty"
    md = (tmp_path / "exp" / "results.md").read_text()
    assert f"table written at {results['provenance']['commit'][:12]} (dirty tree); cells: 1 at" in md
