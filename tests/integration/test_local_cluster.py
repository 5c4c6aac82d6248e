"""`./launch.sh local-cluster up`, `submit`, `down` against a real local Ray head: the head listens on
loopback only and has token authentication on (a fresh machine has no token: `up` creates one,
owner-only, and the job API refuses a request without it), a submitted job runs seller-dist on a real
dataset and succeeds, and `down` leaves no process of that cluster behind (stopped by its recorded
session, never by `ray stop`)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, make_dataset

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1 and ::ffff:127.0.0.1


def listening_sockets() -> dict[int, tuple[str, int]]:
    """Socket inode -> (local address hex as in /proc/net/tcp, port) of every LISTENing TCP socket."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            addr, hexport = cols[1].split(":")
            if cols[3] == "0A":
                out[int(cols[9])] = (addr, int(hexport, 16))
    return out


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets LISTENing on `port`."""
    return {addr for addr, p in listening_sockets().values() if p == port}


def session_members(sid: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # field 6 of /proc/PID/stat: session id
            pids.append(int(d.name))
    return pids


@pytest.mark.slow
@pytest.mark.ray
def test_local_cluster_up_submit_down(tmp_path):
    port, dash, client = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "RAY_LOCAL_STATE": str(tmp_path / "state"),
        "RAY_PORT": str(port),
        "RAY_DASHBOARD_PORT": str(dash),
        "RAY_CLIENT_PORT": str(client),
        "RAY_NUM_CPUS": "1",
        "RAY_ADDRESS": f"http://127.0.0.1:{dash}",
        "OMP_NUM_THREADS": "1",
        "RAY_AUTH_TOKEN_PATH": str(tmp_path / "ray-token"),  # none yet: as on a fresh machine
    }
    env.pop("RAY_AUTH_MODE", None)  # launch.sh must export it itself
    env.pop("RAY_AUTH_TOKEN", None)

    def launch(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["./launch.sh", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )

    data = tmp_path / "data"
    make_dataset(str(data), n_records=7, n_shards=2)
    up = launch("local-cluster", "up")
    sid = int((tmp_path / "state" / "pgid").read_text()) if (tmp_path / "state" / "pgid").exists() else 0
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        assert f"RAY_ADDRESS=http://127.0.0.1:{dash}" in up.stdout
        assert session_members(sid), "the recorded session has no processes"
        # dashboard (job API) and GCS listen on loopback only
        assert listening_addresses(dash) and listening_addresses(dash) <= LOOPBACK
        assert listening_addresses(port) and listening_addresses(port) <= LOOPBACK
        # token auth: the job API refuses a request without the token, accepts one with it
        token = tmp_path / "ray-token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        assert "Token authentication is disabled" not in (tmp_path / "state" / "start.log").read_text()
        jobs = f"http://127.0.0.1:{dash}/api/jobs/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(jobs, timeout=10)
        assert refused.value.code == 401
        authorized = urllib.request.Request(
            jobs, headers={"Authorization": f"Bearer {token.read_text().strip()}"}
        )
        assert urllib.request.urlopen(authorized, timeout=10).status == 200

        status = launch("local-cluster", "status")
        assert status.returncode == 0, status.stderr[-2000:]
        assert "ALIVE" in status.stdout and "CPU: 1.0" in status.stdout

        job = launch("submit", "--", "inspect", str(data), "--json", timeout=180)
        assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
        assert re.search(r"Job 'raysubmit_\w+' succeeded", job.stdout + job.stderr)
        assert '"records": 7' in job.stdout + job.stderr  # the job really read the dataset
    finally:
        down = launch("local-cluster", "down")
    assert down.returncode == 0, down.stderr[-2000:]
    assert "stopped the local Ray head" in down.stdout
    deadline = time.monotonic() + 10
    while session_members(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session_members(sid) == []
    assert not listening_addresses(dash) and not listening_addresses(port)
    assert not (tmp_path / "state" / "pgid").exists()
    again = launch("local-cluster", "status")
    assert again.returncode == 3 and "not running" in again.stdout
