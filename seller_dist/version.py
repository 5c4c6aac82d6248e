"""The seller-dist version: the installed package's version, plus the git commit when run from a
checkout (`0.1.0+1a2b3c4d5e6f`). `seller-dist --version` prints it; prep records it in the manifest.
`provenance()` is what every benchmark and experiment artifact records about its run."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# the checkout, when seller_dist is loaded from one (not from an installed wheel)
REPO_ROOT = Path(__file__).resolve().parent.parent
STATED_COMMIT_ENV = "SELLER_SOURCE_COMMIT"


def installed_version(package: str) -> str | None:
    """The installed version of a distribution; None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def package_version() -> str:
    return installed_version("seller-dist") or "0.1.0"


def git_commit() -> str:
    """Short commit of the checkout seller_dist was loaded from; "" when not a checkout (installed
    wheel: site-packages must not report the commit of whatever repository it happens to sit in)."""
    if not (REPO_ROOT / ".git").exists():
        return ""
    try:
        return _git(REPO_ROOT, "rev-parse", "--short=12", "HEAD").strip()
    except Exception:
        return ""


def code_version() -> str:
    """seller-dist version + git commit (when run from a checkout), e.g. for the dataset manifest."""
    ver = package_version()
    commit = git_commit()
    return f"{ver}+{commit}" if commit else ver


def _git(repo: Path, *args: str) -> str:
    """Output of a read-only git call; raises on any failure (no git, not a repository, timeout)."""
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=20)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()[:200]}")
    return proc.stdout


def git_tree(repo: Path | None = None) -> dict[str, Any]:
    """The commit and whether the tree was clean: `tree` is "clean", "dirty" (tracked changes or
    untracked files that are not ignored) or "unknown", with `git_error` saying why, so a failed git
    call is recorded, never read as clean. A copy without .git (a GPU machine given the files only)
    records the commit its sender states in SELLER_SOURCE_COMMIT as `stated_commit`, unchecked."""
    repo = REPO_ROOT if repo is None else repo
    out: dict[str, Any] = {"commit": None, "tree": "unknown"}
    if not (repo / ".git").exists():
        out["git_error"] = "not run from a git checkout"
        if os.environ.get(STATED_COMMIT_ENV):  # a copy of a checkout: what its sender says it is
            out["stated_commit"] = os.environ[STATED_COMMIT_ENV]
        return out
    try:
        out["commit"] = _git(repo, "rev-parse", "HEAD").strip() or None
        changed = _git(repo, "status", "--porcelain").splitlines()
    except Exception as e:  # noqa: BLE001 - any failure is recorded as unknown, with its reason
        return {**out, "git_error": f"{type(e).__name__}: {e}"}
    out["tree"] = "dirty" if changed else "clean"
    if changed:
        out["changed_paths"] = len(changed)
        out["changed"] = [line[3:] for line in changed[:20]]
    return out


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as a user types it: `seller-dist ...` for the CLI (script or `python -m
    seller_dist.cli`), `python -m <module> ...` for another module of the checkout."""
    argv = list(sys.argv if argv is None else argv)
    head = Path(argv[0]) if argv and argv[0] != "-c" else Path("python -c")
    prog = head.name
    with contextlib.suppress(ValueError):
        rel = head.resolve().relative_to(REPO_ROOT)
        if rel.suffix == ".py":
            module = ".".join(rel.with_suffix("").parts).removesuffix(".__main__")  # a package's -m
            prog = "seller-dist" if module == "seller_dist.cli" else f"python -m {module}"
    return " ".join([prog, *(shlex.quote(a) for a in argv[1:])])


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return None


def _gpus() -> list[dict[str, Any]]:
    """GPUs nvidia-smi lists (it creates no CUDA context in this process); [] where it is absent."""
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        name, mem, driver = ([p.strip() for p in line.split(",")] + ["", ""])[:3]
        gpus.append({"name": name, "memory_mib": int(mem) if mem.isdigit() else None, "driver": driver})
    return gpus


def machine() -> dict[str, Any]:
    """The machine a run measured: CPU model and count, memory, GPUs, OS, Python and the versions
    of the libraries that set the speed (no host name)."""
    versions = {pkg: installed_version(pkg) for pkg in ("torch", "deepspeed", "ray", "transformers")}
    return {
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpus": _gpus(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def provenance(command: Sequence[str] | None = None, repo: Path | None = None) -> dict[str, Any]:
    """What every benchmark and experiment artifact records about where its numbers came from: the
    exact command, the date (UTC), the seller-dist version, the commit and whether the tree was
    clean (`git_tree`), and the machine. `command` defaults to this process's argv."""
    return {
        "command": command_line(command),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "version": package_version(),
        **git_tree(repo),
        "machine": machine(),
    }
