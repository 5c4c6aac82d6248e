"""Fail an image build whose installed packages break seller-dist's own requirements.

The Dockerfile runs this after installing the project on top of Ray's image: a package the base image
ships at another version, or one that a later install moved, stops the build here instead of a job
on the cluster. The requirements are read from the installed project's metadata (pyproject.toml's
list), so no pin is written twice. Usage: python check_pins.py [--torch VERSION]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from importlib.metadata import PackageNotFoundError, requires, version

from packaging.requirements import Requirement

PROJECT = "seller-dist"


def base_requirements(requirements: Iterable[str]) -> list[Requirement]:
    """The requirements outside the optional extras (dev, gcs: not installed in the image)."""
    reqs = [Requirement(line) for line in requirements]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def unmet_requirements(
    requirements: Iterable[str], installed_version: Callable[[str], str | None]
) -> list[str]:
    """One line per base requirement that the installed version does not satisfy."""
    unmet = []
    for req in base_requirements(requirements):
        have = installed_version(req.name)
        if have is None:
            unmet.append(f"{req.name}: required {req.specifier or 'any version'}, not installed")
        elif not req.specifier.contains(have, prereleases=True):
            unmet.append(f"{req.name}: required {req.specifier}, installed {have}")
    return unmet


def installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", help="the exact torch version the image was built with (launch.sh's pin)")
    args = parser.parse_args(argv)
    wanted = list(requires(PROJECT) or [])
    if args.torch:
        wanted.append(f"torch=={args.torch}")  # a local label (+cu130) still matches
    unmet = unmet_requirements(wanted, installed)
    for line in unmet:
        print(f"check_pins: {line}", file=sys.stderr)
    if not unmet:
        print(f"check_pins: all {len(base_requirements(wanted))} requirements of {PROJECT} met")
    return 1 if unmet else 0


if __name__ == "__main__":
    sys.exit(main())
