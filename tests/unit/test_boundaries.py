"""Package boundaries: `data_prep` (converters from public datasets) builds on `seller_dist`, never the
other way round.

`data_prep` may import `seller_dist`'s foundations (config, storage, errors, the data contract under
`seller_dist.data`: schema, shards, the bad-record report, the synthetic reference template, sentence
embeddings). `seller_dist` imports `data_prep` only in the entry points below, which RUN a prep, and
only inside a function, so importing any `seller_dist` module never loads `data_prep`. What both sides
need lives in `seller_dist`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# seller_dist module -> why it may import data_prep (lazily, inside a function)
PREP_ENTRY_POINTS = {
    "seller_dist/cli/prep.py": "`seller-dist prep` runs data_prep.pipeline with the config it is given",
    "seller_dist/cli/fetch_movielens.py": "`seller-dist fetch-movielens` fetches the recbole source's input",
    "seller_dist/demo.py": "`seller-dist demo` prepares the synthetic dataset it trains on",
    "seller_dist/experiment.py": "`seller-dist experiment` prepares each experiment's dataset",
    "seller_dist/bench/data.py": "`seller-dist bench data` (and bench train/eval) prepare the dataset they time",
}
# seller_dist packages data_prep must not reach into: what runs on the prepared data, not what prepares it
NOT_FOR_PREP = ("seller_dist.train", "seller_dist.model", "seller_dist.eval", "seller_dist.bench")

# a string naming a data_prep module (a command table, importlib); the bare package name is a logger
# name (seller_dist/console.py lets our own loggers through), not an import
MODULE_NAME = re.compile(r"data_prep(\.\w+)+")


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) of every import in `path`, and every string constant
    that is a data_prep module name (importlib / a command table naming the module)."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    top |= {id(c) for n in tree.body if isinstance(n, (ast.If, ast.Try)) for c in ast.walk(n)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, node.lineno, id(node) in top))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and MODULE_NAME.fullmatch(node.value)
        ):
            out.append((node.value, node.lineno, False))
    return out


def _is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_seller_dist_imports_data_prep_only_lazily_in_prep_entry_points():
    bad, eager, used = [], [], set()
    for path in _modules("seller_dist"):
        rel = path.relative_to(ROOT).as_posix()
        for module, line, at_top in _imports(path):
            if not _is_under(module, "data_prep"):
                continue
            if rel not in PREP_ENTRY_POINTS:
                bad.append(f"{rel}:{line} imports {module}")
            elif at_top:
                eager.append(f"{rel}:{line} imports {module} at module level")
            used.add(rel)
    assert not bad, (
        "seller_dist must not depend on data_prep; move what both use into seller_dist "
        "(or add a prep entry point to PREP_ENTRY_POINTS with its reason):\n  " + "\n  ".join(bad)
    )
    assert not eager, "a prep entry point imports data_prep inside the function that runs prep:\n  " + (
        "\n  ".join(eager)
    )
    assert used == set(PREP_ENTRY_POINTS), f"stale PREP_ENTRY_POINTS: {sorted(set(PREP_ENTRY_POINTS) - used)}"


def test_data_prep_uses_only_seller_dist_foundations():
    bad = [
        f"{path.relative_to(ROOT).as_posix()}:{line} imports {module}"
        for path in _modules("data_prep")
        for module, line, _ in _imports(path)
        if any(_is_under(module, p) for p in NOT_FOR_PREP)
    ]
    assert not bad, "data_prep reaches past seller_dist's foundations:\n  " + "\n  ".join(bad)


def test_the_checker_sees_lazy_and_eager_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "import os\nfrom data_prep.x import y\n"
        "def f():\n    import data_prep.pipeline\n    return 'data_prep.pipeline', 'see data_prep docs'\n"
    )
    found = [(m, top) for m, _, top in _imports(src) if _is_under(m, "data_prep")]
    assert sorted(found) == [
        ("data_prep.pipeline", False),
        ("data_prep.pipeline", False),
        ("data_prep.x", True),
    ]


def test_the_product_never_imports_the_tests_or_the_repository_tools():
    """Test models, the moto helper and fault injectors live under tests/, the docs' table generator and
    the cost model under tools/; the product reaches tests/ only through configuration (e.g. a
    `callbacks` entry naming a tests/ class), never by an import."""
    bad = [
        f"{path.relative_to(ROOT).as_posix()}:{line} imports {module}"
        for package in ("seller_dist", "data_prep")
        for path in _modules(package)
        for module, line, _ in _imports(path)
        if _is_under(module, "tests") or _is_under(module, "tools")
    ]
    assert not bad, "the product package imports the tests or tools/:\n  " + "\n  ".join(bad)
