"""Expected user errors end `seller-dist` with ONE stderr line `seller-dist <cmd>: error: <message>` and
exit 2, no traceback; `--debug` / SELLER_DEBUG=1 shows the traceback; bugs keep theirs.

The CLI runs in a subprocess (the honest check for "no traceback"): about 1.5 s a run, no Ray, no
workers. Every error here is the ONLY stderr line (prep's progress bars show on a terminal only).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest

from data_prep.safe_pickle import UnreadablePickleError, UnsafePickleError
from data_prep.sources import SourceConfigError, get_source
from seller_dist import cli
from seller_dist.config import ConfigError
from seller_dist.data.bad_records import TooManyBadRecords
from seller_dist.errors import UserError, one_line_message, user_error_of
from tests.conftest import make_dataset
from tests.unit.test_source_xrec import RunsCode, write_xrec_dir

TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def seller_dist(*args: str, cwd: Path, debug_env: bool = False) -> Run:
    env = {k: v for k, v in os.environ.items() if k != "SELLER_DEBUG"}
    if debug_env:
        env["SELLER_DEBUG"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "seller_dist.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(run: Run, cmd: str, *fragments: str, exact: bool = True) -> str:
    """Exit 2, no traceback, the error on one line (the only stderr line when `exact`)."""
    assert run.code == 2, run.err
    assert TRACEBACK not in run.err, run.err
    lines = run.err_lines
    assert lines, "nothing on stderr"
    if exact:
        assert len(lines) == 1, run.err
    last = lines[-1]
    prefix = f"seller-dist {cmd}: error: "
    assert last.startswith(prefix) and len(last) > len(prefix), run.err
    for fragment in fragments:
        assert fragment in last, last
    return last


def assert_traceback(run: Run, exc_name: str) -> None:
    assert run.code not in (0, 2), run.err
    assert TRACEBACK in run.err, run.err
    assert exc_name in run.err, run.err


def check(
    cmd_args: list[str],
    cwd: Path,
    cmd: str,
    fragments: tuple[str, ...],
    exc_name: str,
    exact: bool = True,
    debug: str = "in-process",
) -> str:
    """The one-line error (subprocess), then the traceback with debugging on: `debug` is "flag"
    (`seller-dist --debug ...` in a subprocess), "env" (SELLER_DEBUG=1, subprocess) or "in-process"
    (cli.main(["--debug", ...]) raises: what prints the traceback; saves a second interpreter)."""
    line = assert_one_line_error(seller_dist(*cmd_args, cwd=cwd), cmd, *fragments, exact=exact)
    if debug == "in-process":
        with pytest.raises(Exception) as e:
            cli.main(["--debug", *cmd_args])
        assert exc_name in [c.__name__ for c in type(e.value).__mro__], repr(e.value)
        assert user_error_of(e.value) is not None
    elif debug == "env":
        assert_traceback(seller_dist(*cmd_args, cwd=cwd, debug_env=True), exc_name)
    else:
        assert_traceback(seller_dist("--debug", *cmd_args, cwd=cwd), exc_name)
    return line


# ------------------------------------------------------------------------------------ the CLI
def test_version(tmp_path):
    run = seller_dist("--version", cwd=tmp_path)
    assert run.code == 0, run.err
    line = run.out.strip()
    assert line.startswith(f"seller-dist {version('seller-dist')}"), line
    assert "\n" not in line
    from seller_dist.version import code_version

    assert line == f"seller-dist {code_version()}"


def test_config_unknown_key(tmp_path):
    line = check(
        ["prep", "--set", "max_histroy=3", "--set", f"output={tmp_path / 'ds'}"],
        tmp_path,
        "prep",
        ("unknown config key 'max_histroy'; did you mean 'max_history'?",),
        "ConfigError",
    )
    assert not (tmp_path / "ds").exists(), line


def test_config_bad_value_and_seller_debug_env(tmp_path):
    check(
        ["prep", "--set", "max_history=0", "--set", f"output={tmp_path / 'ds'}"],
        tmp_path,
        "prep",
        ("max_history must be >= 1, got 0",),
        "ConfigError",
        debug="env",
    )


def test_config_file_missing_or_not_yaml(tmp_path):
    missing = tmp_path / "nope.yaml"
    check(
        ["prep", "--config", str(missing)],
        tmp_path,
        "prep",
        (f"config file {missing} does not exist",),
        "ConfigError",
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("output: [unclosed\nmax_history: 3\n")  # yaml's message spans several lines
    line = assert_one_line_error(seller_dist("prep", "--config", str(bad), cwd=tmp_path), "prep")
    assert f"config file {bad} is not valid YAML" in line


def test_source_option_error_is_one_line(tmp_path):
    check(
        ["prep", "--set", "source=yelp", "--set", f"output={tmp_path / 'ds'}"],
        tmp_path,
        "prep",
        ("yelp: inputs.review is required",),
        "SourceConfigError",
    )


def test_prep_missing_input_file(tmp_path):
    review = tmp_path / "no-such-review.json"
    args = ["prep", "--set", "source=yelp", "--set", f"inputs.review={review}"]
    args += ["--set", f"output={tmp_path / 'ds'}"]
    line = check(
        args, tmp_path, "prep", (str(review), "No such file or directory"), "FileNotFoundError", False, "flag"
    )
    assert "[Errno" not in line
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_prep_unsafe_pickle(tmp_path):
    d = write_xrec_dir(tmp_path / "xrec")
    marker = tmp_path / "pwned"
    (d / "tst.pkl").write_bytes(pickle.dumps(RunsCode(marker)))
    args = ["prep", "--set", "source=xrec", "--set", f"inputs.dir={d}", "--set", f"output={tmp_path / 'ds'}"]
    check(
        args, tmp_path, "prep", ("tst.pkl: refused to unpickle global", "system"), "UnsafePickleError", False
    )
    assert not marker.exists()


def test_prep_bad_input_over_the_error_rate(tmp_path):
    review = tmp_path / "review.json"
    good = {
        "review_id": "r1",
        "user_id": "u1",
        "business_id": "b1",
        "stars": 4,
        "date": "2020-01-01 10:00:00",
        "text": "good",
    }
    review.write_text(json.dumps(good) + "\nnot json\n{garbage\nxx\n[1, 2\n")
    args = ["prep", "--set", "source=yelp", "--set", f"inputs.review={review}", "--set", "engine=local"]
    args += ["--set", f"output={tmp_path / 'ds'}"]
    check(
        args,
        tmp_path,
        "prep",
        ("input records are bad", "max_error_rate", "Fix the input or raise max_error_rate"),
        "TooManyBadRecords",
    )
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_prep_output_already_holds_a_dataset(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    check(
        ["prep", "--set", f"output={out}", "--set", "source_options.num_users=5"],
        tmp_path,
        "prep",
        (f"output {out} already holds a prepared dataset", "overwrite=true"),
        "PrepError",
    )
    assert (out / "manifest.json").read_text() == "{}"


def test_train_preflight_missing_manifest(tmp_path):
    nowhere = tmp_path / "nowhere"
    check(
        ["train", "--set", f"data.manifest={nowhere}", "--set", f"storage_path={tmp_path / 'runs'}"],
        tmp_path,
        "train",
        (f"data.manifest: no manifest at {nowhere}/manifest.json: run seller-dist prep",),
        "ConfigError",
    )
    assert not (tmp_path / "runs").exists()


def test_train_config_error(tmp_path):
    check(
        ["train", "--set", "model.ep_size=3"],
        tmp_path,
        "train",
        ("model.ep_size=3 does not divide model.num_experts",),
        "ConfigError",
    )


def test_eval_missing_checkpoint(tmp_path):
    data = tmp_path / "data"
    make_dataset(str(data), n_records=4, n_shards=1, splits=("train", "test"))
    missing = tmp_path / "runs" / "checkpoints" / "step-00000007"
    args = ["eval", "--checkpoint", str(missing), "--data", str(data), "--out", str(tmp_path / "out")]
    check(
        args,
        tmp_path,
        "eval",
        (f"eval.checkpoint: checkpoint {missing} does not exist",),
        "EvalPreflightError",
    )
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- in process
def test_bugs_keep_their_traceback(monkeypatch, capsys):
    """Anything that is not a user error propagates out of cli.main (traceback, exit 1)."""
    from seller_dist.cli import inspect

    def boom(args):
        raise KeyError("a bug")

    monkeypatch.setattr(inspect, "run", boom)
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["inspect", "somewhere"])
    assert "error:" not in capsys.readouterr().err


def test_multi_line_messages_print_on_one_line(monkeypatch, capsys):
    from seller_dist.cli import inspect

    def fails(args):
        raise ConfigError("first line\n   second line\n\nthird")

    monkeypatch.setattr(inspect, "run", fails)
    monkeypatch.delenv("SELLER_DEBUG", raising=False)
    assert cli.main(["inspect", "somewhere"]) == 2
    assert capsys.readouterr().err == "seller-dist inspect: error: first line second line third\n"
    with pytest.raises(ConfigError):
        cli.main(["--debug", "inspect", "somewhere"])
    monkeypatch.setenv("SELLER_DEBUG", "1")
    with pytest.raises(ConfigError):
        cli.main(["inspect", "somewhere"])


def test_error_classes_are_user_errors_and_keep_their_old_base():
    from seller_dist.data.shards import ShardError
    from seller_dist.eval.generations import GenerationsError
    from seller_dist.eval.job import EvalPreflightError
    from seller_dist.train.checkpoint import CheckpointCorruptError

    assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)
    assert issubclass(EvalPreflightError, UserError)
    assert issubclass(TooManyBadRecords, UserError) and issubclass(TooManyBadRecords, RuntimeError)
    for cls in (UnsafePickleError, UnreadablePickleError):
        assert issubclass(cls, UserError) and issubclass(cls, pickle.UnpicklingError)
    assert issubclass(ShardError, UserError) and issubclass(ShardError, RuntimeError)
    assert issubclass(CheckpointCorruptError, UserError)
    assert issubclass(GenerationsError, UserError) and issubclass(GenerationsError, ValueError)


def test_source_constructor_errors_are_source_config_errors():
    from seller_dist.data.bad_records import BadRecordReport

    with pytest.raises(ValueError, match="yelp: inputs.review is required") as e:
        get_source("yelp", {}, {}, BadRecordReport())
    assert isinstance(e.value, SourceConfigError) and isinstance(e.value, UserError)
    with pytest.raises(SourceConfigError, match="unknown source 'nope'"):
        get_source("nope", {}, {}, BadRecordReport())


def test_user_error_of_and_one_line_message():
    assert user_error_of(KeyError("x")) is None
    assert user_error_of(ValueError("x")) is None  # a plain ValueError may be a bug
    e = FileNotFoundError(2, "No such file or directory", "/x/review.json")
    assert user_error_of(e) is e
    assert one_line_message(e) == "/x/review.json: No such file or directory"
    assert one_line_message(FileNotFoundError("xrec: /d/tst.pkl not found")) == "xrec: /d/tst.pkl not found"
    assert one_line_message(UserError("")) == "UserError"

    class Wrapped(RuntimeError, ConfigError):  # what Ray's RayTaskError.as_instanceof_cause() builds
        pass

    cause = ConfigError("the worker's message")
    wrapped = Wrapped("Traceback ...\n  remote frames\nConfigError: the worker's message")
    wrapped.cause = cause
    assert user_error_of(wrapped) is cause
    assert one_line_message(user_error_of(wrapped)) == "the worker's message"


def test_prep_help_lists_the_sources_and_points_to_the_docs(capsys):
    from data_prep.sources import SOURCE_CLASSES
    from seller_dist import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["prep", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert all(name in out for name in SOURCE_CLASSES) and "docs/sources.md" in out
