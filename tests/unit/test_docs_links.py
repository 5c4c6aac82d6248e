"""Every link in the Markdown docs resolves: relative Markdown links (and their #anchors) and the
repository paths the text names (`docs/model.md`, `seller_dist/train/worker.py`, ...)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", "outputs", ".cache", "node_modules", "build", "dist"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# a repository path named in the text: a known top-level folder, or a root-level doc (not a git
# object `REV:path`, which names a path of an earlier commit)
PATH = re.compile(
    r"(?<![\w/.~$:-])((?:docs|tests|seller_dist|data_prep|cluster|ds_configs)/[\w./-]*\w"
    r"|BENCHMARKS\.md|README\.md)"
)
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def markdown_files() -> list[Path]:
    return sorted(p for p in REPO.rglob("*.md") if not SKIP_DIRS.intersection(p.relative_to(REPO).parts))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    out: set[str] = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else HEADING.match(line)
        if m:
            base, n = slug(m.group(1)), 0
            while (base if n == 0 else f"{base}-{n}") in out:
                n += 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    bad = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with anchor #{anchor}")
    for name in PATH.findall(text):
        placeholder = re.search(r"[A-Z]{3,}", name) and name not in ("BENCHMARKS.md", "README.md")
        if placeholder or any(c in name for c in "*{}<>") or name.endswith("/"):
            continue  # a pattern or a placeholder (`docs/bench/gpu-suite-h200-DATE.json`), not a path
        if not ((REPO / name).exists() or (path.parent / name).exists()):
            bad.append(f"{name}: no such path in the repository")
    return bad


def test_markdown_links_and_named_paths_resolve():
    problems = {str(p.relative_to(REPO)): bad for p in markdown_files() if (bad := broken_links(p))}
    assert problems == {}


def test_slug_follows_github():
    assert slug("Lineage (`vocab_from`)") == "lineage-vocab_from"
    assert slug("Splits: `split: time` or `split: source`") == "splits-split-time-or-split-source"
