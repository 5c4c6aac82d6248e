"""The console a person reads (seller_dist/console.py, `quiet_console`): our stage and progress lines on
the console, Ray's and DeepSpeed's own output in the log file. `seller-dist train` and `demo` run
inside it unless `--verbose`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seller_dist.console import console_line

REPO = Path(__file__).resolve().parents[2]

# lines as Ray's driver prints them (ray._private.worker.print_worker_logs), seen in a demo run
RAY_NOISE = [
    "\x1b[36m(RayTrainWorker pid=7681)\x1b[0m Reporting training result 1: TrainingReport(checkpoint=None, "
    "metrics={'step': 5, 'loss': 4.39}, validation=False) from rank 0",
    "\x1b[36m(PlacementGroupCleaner pid=7645)\x1b[0m Failed to query Ray Train Controller actor state. "
    "State API may be temporarily unavailable. Continuing to monitor.",
    "(RayTrainWorker pid=7681) /x/torch/distributed/c10d_logger.py:83: FutureWarning: "
    "`torch.distributed.all_gather_into_tensor` is deprecated.",
    "(RayTrainWorker pid=7708, ip=10.0.0.2) DeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built successfully",
    "(RayTrainWorker pid=7681) step=5 aux_loss=1.181 expert_load/0=0.3667 loss=4.399",
    "\x1b[33m(raylet)\x1b[0m [2026-12-05 22:58:33,464 E 7487 7555] core_worker.cc:2465: Actor ...",
    "\x1b[36m(autoscaler +2s)\x1b[0m Tip: use `ray status` to view detailed cluster status.",
    "[INFO] Running in WANDB offline mode",  # transformers' print on import, in the driver
]


def test_console_line_keeps_our_lines_and_drops_rays():
    for line in RAY_NOISE:
        assert console_line(line) is None, line
    # a worker's tagged line shows, without Ray's prefix
    assert (
        console_line(
            "\x1b[36m(RayTrainWorker pid=7681)\x1b[0m [train] step=5/20 loss=4.399 tokens/s=9878 eta=4s"
        )
        == "[train] step=5/20 loss=4.399 tokens/s=9878 eta=4s"
    )
    assert console_line("(_EvalWorker pid=12, ip=10.0.0.3) [eval] worker 1: 150 explanations") == (
        "[eval] worker 1: 150 explanations"
    )
    # the driver's own lines show as they are, tables and blank lines included
    for line in ["[demo] 1/8 prepare synthetic data -> outputs/demo/data", "| text/bleu4 | 65.27 |", ""]:
        assert console_line(line) == line


CHILD = textwrap.dedent(
    """
    import logging, os, sys, warnings
    from seller_dist.console import quiet_console

    logging.basicConfig(level=logging.INFO)
    ray_like = logging.getLogger("ray.train")
    with quiet_console(sys.argv[1]):
        print("[demo] 1/8 a stage line")
        print("(RayTrainWorker pid=7681) Reporting training result 1: {'loss': 4.3}")
        print("(RayTrainWorker pid=7681) [train] step=5/20 loss=4.399")
        print("a driver", end="")
        print(" line in pieces")
        os.write(1, b"raw C-level stdout\\n")
        os.write(2, b"raw C-level stderr\\n")
        print("stderr of a library", file=sys.stderr)
        warnings.warn("a DeprecationWarning", DeprecationWarning, stacklevel=1)
        ray_like.info("Started a local Ray instance.")
        logging.getLogger("seller_dist.x").warning("our own warning")
        logging.getLogger("seller_dist.x").info("our own info")
        subprocess_out = __import__("subprocess").run(["echo", "child process output"])
    print("after the block")
    """
)


def test_quiet_console_routes_every_stream_to_the_log_and_ours_to_the_console(tmp_path):
    log = tmp_path / "run" / "train.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "always"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(log)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "[demo] 1/8 a stage line",
        "[train] step=5/20 loss=4.399",
        "a driver line in pieces",
        "after the block",
    ]
    assert proc.stderr.splitlines() == ["WARNING seller_dist.x: our own warning"]
    text = log.read_text()
    for want in [
        "Reporting training result 1",
        "(RayTrainWorker pid=7681) [train] step=5/20",
        "raw C-level stdout",
        "raw C-level stderr",
        "stderr of a library",
        "a DeprecationWarning",
        "Started a local Ray instance.",
        "our own warning",
        "our own info",
        "child process output",
    ]:
        assert want in text, want
    assert "after the block" not in text


@pytest.mark.slow
@pytest.mark.ray
def test_quiet_console_with_real_ray_workers(tmp_path):
    """Lines printed in Ray workers reach the driver through Ray's log forwarding: ours show without
    Ray's prefix, the rest only in the log. About 10 s (a local Ray)."""
    child = textwrap.dedent(
        """
        import sys, warnings
        from seller_dist.console import quiet_console
        from seller_dist.ray_cluster import init_ray

        with quiet_console(sys.argv[1]):
            print("[train] driver stage line")
            init_ray(None, 2, runtime_env={"env_vars": {"PYTHONPATH": sys.argv[2]}})
            import ray

            @ray.remote(num_cpus=1)
            def work(rank):
                import logging, sys, warnings
                logging.basicConfig(level=logging.INFO)
                warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
                logging.getLogger("ray.train").info("Reporting training result 1: {'step': 5}")
                print("DeepSpeed info line", file=sys.stderr)
                if rank == 0:
                    print("[train] step=5/20 loss=4.399 tokens/s=9878 eta=4s", flush=True)
                return rank

            assert ray.get([work.remote(0), work.remote(1)]) == [0, 1]
            # Ray forwards worker output asynchronously: wait until the workers' stderr line has come
            # through (Ray's dedup folds the second copy), then a little longer for stdout, as a
            # driver that keeps running would
            import pathlib, time
            deadline = time.time() + 60
            while time.time() < deadline:
                text = pathlib.Path(sys.argv[1]).read_text() if pathlib.Path(sys.argv[1]).exists() else ""
                if "DeepSpeed info line" in text:
                    break
                time.sleep(0.2)
            time.sleep(3.0)
        print("done")
        """
    )
    log = tmp_path / "train.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "always", "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-c", child, str(log), str(REPO)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [
        "[train] driver stage line",
        "[train] step=5/20 loss=4.399 tokens/s=9878 eta=4s",
        "done",
    ], proc.stdout
    assert "pid=" not in proc.stdout + proc.stderr
    text = log.read_text()
    for want in [
        "Started a local Ray instance",
        "deprecated thing",
        "Reporting training result",
        "DeepSpeed info",
    ]:
        assert want in text, (want, text[-3000:])
    assert "\x1b[" not in text  # RAY_COLOR_PREFIX=0 inside: a plain-text log


def test_stage_lines_show_as_they_are_on_stdout_and_other_records_on_stderr():
    """setup_logging (what `seller-dist` runs): a job's stage lines on stdout, once and bare; every
    other record on stderr with time, level and logger."""
    child = textwrap.dedent(
        """
        import logging
        from seller_dist.logs import setup_logging, stage_log

        setup_logging()
        stage_log("seller_dist.demo").info("[demo] 1/2 a stage line")
        logging.getLogger("seller_dist.demo").info("a diagnostic")
        logging.getLogger("ray").warning("a library warning")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[demo] 1/2 a stage line\n"
    err = proc.stderr.splitlines()
    assert [line.split(" ", 2)[2] for line in err] == [
        "INFO seller_dist.demo: a diagnostic",
        "WARNING ray: a library warning",
    ]
