"""What a benchmark starts on this machine: a free loopback port (`free_port`, where `bench train` and
`bench gpu` rendezvous their ranks), the environment of a rank spawned outside Ray (`rank_env`), a
moto S3 server on 127.0.0.1 (`local_s3_server`, for `bench data` unless `--s3-root` names the user's
store) and environment scoped to a block (`scoped_env`). Runtime code of the bench; the tests start
the same server and spawn their ranks through it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from seller_dist.strategy_settings import on_gpu

DUMMY_S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (a rendezvous, a server to start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def local_s3_server(timeout_s: float = 30.0) -> Iterator[str]:
    """moto's S3 server on a free 127.0.0.1 port (dummy credentials); yields the endpoint, stops it by PID."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).with_name("moto_server")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    proc = subprocess.Popen(
        [*cmd, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **DUMMY_S3_ENV},
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"moto_server exited with code {proc.returncode} before answering "
                    "(is the dev extra installed? pip install -e '.[dev]')"
                )
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # any HTTP answer means it is up
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"moto_server did not answer on {endpoint} within {timeout_s}s"
                    ) from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def scoped_env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for a block and restore the previous values after it."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def rank_env(rank: int, world: int, port: int, cpu: bool | None = None) -> None:
    """The torch.distributed environment of a rank spawned on this machine outside Ray: rendezvous
    on 127.0.0.1:`port`, one intra-op thread, DeepSpeed's CPU accelerator when `cpu` (default: when
    there is no CUDA), its op builds cached under the repository's .cache unless set already."""
    os.environ.update(
        OMP_NUM_THREADS="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
    )
    os.environ.setdefault(
        "TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[2] / ".cache" / "torch_extensions")
    )
    if cpu or (cpu is None and not on_gpu()):
        os.environ["DS_ACCELERATOR"] = "cpu"
