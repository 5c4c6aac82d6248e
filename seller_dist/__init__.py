"""seller-dist: train and evaluate SELLER on GPU clusters (Ray Train + DeepSpeed ZeRO-3).
`seller_dist.__version__` is the installed package's version; `seller-dist --version` adds the git
commit when run from a checkout (seller_dist/version.py)."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    if name == "__version__":  # computed on first use: importing seller_dist stays free
        from seller_dist.version import package_version

        return package_version()
    raise AttributeError(f"module 'seller_dist' has no attribute {name!r}")
