"""The seller-dist version: the installed package's version, plus the git commit when run from a
checkout (`0.1.0+1a2b3c4d5e6f`). `seller-dist --version` prints it; prep records it in the manifest."""

from __future__ import annotations

import subprocess
from pathlib import Path

# the checkout, when seller_dist is loaded from one (not from an installed wheel)
REPO_ROOT = Path(__file__).resolve().parent.parent


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("seller-dist")
    except Exception:
        return "0.1.0"


def git_commit() -> str:
    """Short commit of the checkout seller_dist was loaded from; "" when not a checkout (installed
    wheel: site-packages must not report the commit of whatever repository it happens to sit in)."""
    if not (REPO_ROOT / ".git").exists():
        return ""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except Exception:
        return ""


def code_version() -> str:
    """seller-dist version + git commit (when run from a checkout), e.g. for the dataset manifest."""
    ver = package_version()
    commit = git_commit()
    return f"{ver}+{commit}" if commit else ver
