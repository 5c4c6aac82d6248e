"""DeepSpeed builds its CPU comm op with the first `ninja` on PATH; every process of one environment
must find the same one, or two ninjas with different build logs rebuild the op each time they
alternate (seller_dist/train/strategy.py, prefer_environment_ninja)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from seller_dist.train import strategy


def test_the_interpreters_ninja_comes_first_once(tmp_path, monkeypatch):
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "ninja").write_text("")
    monkeypatch.setattr(sys, "executable", str(bindir / "python"))
    monkeypatch.setenv("PATH", os.pathsep.join(["/usr/local/bin", "/usr/bin"]))
    strategy.prefer_environment_ninja()
    assert os.environ["PATH"] == os.pathsep.join([str(bindir), "/usr/local/bin", "/usr/bin"])
    strategy.prefer_environment_ninja()  # already first: unchanged
    assert os.environ["PATH"].count(str(bindir)) == 1

    (bindir / "ninja").unlink()  # an interpreter without its own ninja leaves PATH alone
    monkeypatch.setenv("PATH", "/usr/bin")
    strategy.prefer_environment_ninja()
    assert os.environ["PATH"] == "/usr/bin"


def test_this_environment_resolves_its_own_ninja(monkeypatch):
    """Here: the venv's pip ninja, whatever PATH the process started with (a test process started as
    .venv/bin/python has no venv on PATH; a Ray worker of `launch.sh local-cluster` has it first)."""
    own = Path(sys.executable).parent / "ninja"
    if not own.is_file():
        pytest.skip(f"{sys.executable} has no ninja of its own: nothing to prefer")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    strategy.prefer_environment_ninja()
    found = subprocess.run(["sh", "-c", "command -v ninja"], capture_output=True, text=True).stdout.strip()
    assert found == str(own)
