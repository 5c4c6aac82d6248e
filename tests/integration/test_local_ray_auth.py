"""The local Ray a driver starts for itself (no cluster address: eval, prep, bench on one machine)
listens on loopback only and has token authentication on, even in an environment that sets none of
Ray's variables (the driver calls prepare_ray_environment() before importing ray, as the seller-dist
CLI does): launch.sh creates the token owner-only when there is none (as on a fresh machine), a
process with another token cannot join that Ray, and one with the token can.

Found on 2026-12-01: with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER set only after `import ray`, the local
Ray's GCS listened on [::] and its agents on the machine's external address."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integration.test_local_cluster import LOOPBACK, listening_sockets

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]

HEAD = textwrap.dedent(
    """
    import sys
    from seller_dist.ray_cluster import init_ray, prepare_ray_environment
    prepare_ray_environment()
    import ray
    init_ray(None, 1)
    print(ray.get_runtime_context().gcs_address, flush=True)
    sys.stdin.read()  # stay up until the test closes stdin
    """
)
JOIN = textwrap.dedent(
    """
    import sys, ray
    try:
        ray.init(address=sys.argv[1])
        print("joined", ray.get(ray.remote(lambda: 6 * 7).remote()))
    except Exception as e:
        print("refused", type(e).__name__)
    """
)


def process_tree(root: int) -> set[int]:
    """`root` and every process below it (Ray's GCS, raylet, agents and workers under the driver)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) if d.name.isdigit() else None
        except OSError:
            continue
        if ppid is not None:
            children.setdefault(ppid, []).append(int(d.name))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(children.get(pid, []))
    return tree


def sockets_of(pids: set[int]) -> set[int]:
    """Inodes of the sockets these processes hold open."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(int(target[8:-1]))
    return inodes


def test_local_ray_refuses_a_process_without_its_token(tmp_path):
    token = tmp_path / "token"
    unset = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
    # launch.sh exports RAY_AUTH_MODE=token for every command and creates the missing token
    cli = subprocess.run(["./launch.sh", "cli", "--help"], cwd=REPO, env=env, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text()) == 64
    env["PYTHONPATH"] = str(REPO)
    head = subprocess.Popen(
        [sys.executable, "-c", HEAD], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        gcs = head.stdout.readline().strip()
        assert gcs.startswith("127.0.0.1:"), gcs
        # the sockets this Ray listens on, not other processes' (the suite may run beside it)
        mine = sockets_of(process_tree(head.pid))
        opened = {a for inode, a in listening_sockets().items() if inode in mine}
        assert opened and {addr for addr, _ in opened} <= LOOPBACK, opened

        def join(token_path: Path) -> subprocess.CompletedProcess:
            # a refused client retries its GCS connection once a second for NUM_REDIS_GET_RETRIES (20)
            # unless told otherwise: 2 tries show the refusal as well, 18 s sooner
            client = {
                "RAY_AUTH_MODE": "token",
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "RAY_gcs_server_port_wait_time_s": "2",
            }
            return subprocess.run(
                [sys.executable, "-c", JOIN, gcs],
                env={**env, **client, "RAY_AUTH_TOKEN_PATH": str(token_path)},
                capture_output=True,
                text=True,
                timeout=120,
            )

        other = tmp_path / "other-token"
        other.write_text("0" * 64)
        refused = join(other)  # the GCS answers InvalidAuthToken; the client gives up after its retries
        assert refused.stdout.strip().startswith("refused"), refused.stdout + refused.stderr[-2000:]
        assert "InvalidAuthToken" in refused.stderr, refused.stderr[-2000:]
        joined = join(token)
        assert joined.stdout.strip().endswith("joined 42"), joined.stdout + joined.stderr[-2000:]
    finally:
        head.stdin.close()
        head.wait(timeout=60)
