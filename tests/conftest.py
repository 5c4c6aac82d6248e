"""Shared fixtures: a real S3 server (moto) on 127.0.0.1, small prepared datasets, a tiny tokenizer.

Helpers are plain functions too (`from tests.conftest import make_dataset`), so spawned test ranks
and other fixtures can build the same data.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seller_dist.bench.local_services import DUMMY_S3_ENV as S3_ENV
from seller_dist.bench.local_services import free_port as free_port  # re-exported: tests import it from here
from seller_dist.bench.local_services import local_s3_server as moto_s3_server
from seller_dist.bench.local_services import scoped_env
from seller_dist.config import StorageConfig
from seller_dist.data import shards
from seller_dist.data.schema import ACTIONS, ExampleRecord, HistoryEvent, ItemRecord

# ------------------------------------------------------------------------- running side by side
# Ray starts its workers at niceness 15; beside another xdist worker's tests (ranks, bootstraps at
# niceness 0) the Ray group, the run's longest chain, then gets a fraction of a core. The tests'
# Rays run their workers at 0.
os.environ.setdefault("RAY_worker_niceness", "0")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns the marks into groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """For `pytest -n 2 --dist loadgroup` (./launch.sh test): tests marked `ray` form one group, run
    one at a time (two local Rays on one machine contend for the agents' fixed ports), and each other
    file is a group of its own (its module fixtures built once). The Ray group is queued first and
    the other slow files next, so the longest work starts first on the two workers."""
    for item in items:
        group = "ray" if item.get_closest_marker("ray") else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: (not item.get_closest_marker("ray"), not item.get_closest_marker("slow")))


UNGROUPED: list[str] = []  # tests a `--dist loadgroup` worker was given outside their group


def pytest_collection_finish(session: pytest.Session) -> None:
    """pytest-xdist marks a grouped test's node id with `@group`; on pytest 9.2 the mark silently does
    nothing (pytest-dev/pytest-xdist#1386) and the Ray tests would run side by side: every test then
    fails at setup with that message rather than the run passing or flaking without its groups."""
    if session.config.getoption("loadgroup", False):  # set on a worker of `--dist loadgroup`
        UNGROUPED.extend(item.nodeid for item in session.items if "@" not in item.nodeid)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if UNGROUPED:
        pytest.fail(
            f"--dist loadgroup ignored the xdist_group of {len(UNGROUPED)} tests: this pytest and "
            "pytest-xdist do not group (pytest-dev/pytest-xdist#1386); see pyproject.toml's pytest pin",
            pytrace=False,
        )


def shared_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> tuple[Path, bool]:
    """A folder every xdist worker of this run shares (built once, under a lock, by whoever comes
    first), else one of this session's; the flag says whether it is this session's own to remove."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return tmp_path_factory.mktemp(name), True
    return tmp_path_factory.getbasetemp().parent / name, False


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 endpoint (moto server) with AWS_ENDPOINT_URL and dummy credentials set for the session."""
    with moto_s3_server() as endpoint:
        env = {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}
        with scoped_env(env):
            yield endpoint


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A fresh, empty bucket on the test S3 server, as "s3://<bucket>"."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=name)
    return f"s3://{name}"


# ----------------------------------------------------------------------------------------- datasets
CATEGORIES = ("books", "games", "garden", "kitchen", "music")
BRANDS = ("acme", "globex", "initech", "umbrella")


def make_items(num_items: int, seed: int = 0) -> list[ItemRecord]:
    rng = random.Random(seed)
    return [
        ItemRecord(
            item_id=f"i{i}",
            item_idx=i,
            title=f"item {i} {rng.choice(('lamp', 'novel', 'kettle', 'drum', 'rake'))}",
            attributes={"category": rng.choice(CATEGORIES), "brand": rng.choice(BRANDS)},
            text=f"description of item {i}",
        )
        for i in range(1, num_items + 1)
    ]


def make_records(
    n: int,
    split: str = "train",
    num_items: int = 50,
    max_history: int = 5,
    seed: int = 0,
    key_prefix: str = "",
) -> list[ExampleRecord]:
    """`n` valid, varied ExampleRecords (keys "<prefix><split>-<i>")."""
    rng = random.Random(seed * 7919 + zlib.crc32(split.encode()))
    items = make_items(num_items, seed)
    out = []
    for i in range(n):
        t0 = 1_600_000_000 + rng.randrange(10**6)
        hist = []
        t = t0
        for _ in range(rng.randint(1, max_history)):
            it = items[rng.randrange(num_items)]
            hist.append(
                HistoryEvent(
                    item_id=it.item_id,
                    item_idx=it.item_idx,
                    timestamp=t,
                    action=rng.choice(ACTIONS),
                    rating=rng.choice((None, 1.0, 4.5)),
                    title=it.title,
                )
            )
            t += rng.choice((0, 5, 60, 3600, 86400 * 3))
        tgt = items[rng.randrange(num_items)]
        out.append(
            ExampleRecord(
                key=f"{key_prefix}{split}-{i:06d}",
                user_id=f"u{rng.randrange(100)}",
                item_id=tgt.item_id,
                item_idx=tgt.item_idx,
                timestamp=t + rng.randrange(100_000),
                history=hist,
                item_attributes=dict(tgt.attributes),
                item_title=tgt.title,
                explanation=f"because you liked {hist[-1].title} you may like {tgt.title}",
                split=split,
                meta={"i": i},
            )
        )
    return out


def _split_counts(n: int, parts: int) -> list[int]:
    base, extra = divmod(n, parts)
    return [base + (1 if p < extra else 0) for p in range(parts)]


def make_dataset(
    root: str,
    n_records: int,
    n_shards: int,
    splits: tuple[str, ...] = ("train",),
    num_items: int = 50,
    max_history: int = 5,
    embedding_dim: int = 8,
    seed: int = 0,
    storage_cfg: StorageConfig | None = None,
    records: dict[str, list[ExampleRecord]] | None = None,
) -> dict[str, Any]:
    """Write a complete prepared dataset at `root` (local path or s3://): every split gets `n_records`
    records in `n_shards` shards (sizes differ by at most one), an item catalog with `embedding_dim`-d
    embeddings (0 = none), and manifest.json last. Returns the manifest."""
    items = make_items(num_items, seed)
    manifest = shards.new_manifest({"name": "test", "seed": seed}, "test")
    for split in splits:
        recs = (records or {}).get(split) or make_records(n_records, split, num_items, max_history, seed)
        writer = shards.ShardWriter(
            root, split, max_records=10**9, max_bytes=1 << 40, storage_cfg=storage_cfg
        )
        pos = 0
        for size in _split_counts(len(recs), n_shards):
            for r in recs[pos : pos + size]:
                writer.write({"__key__": r.key, "json": r.to_json()})
            writer.flush()
            pos += size
        infos = writer.close()
        manifest["splits"][split] = {"count": len(recs), "shards": [vars(s) for s in infos]}
    emb_rng = np.random.default_rng(seed)
    iw = shards.ShardWriter(root, "items", max_records=10**9, max_bytes=1 << 40, storage_cfg=storage_cfg)
    for it in items:
        sample = {"__key__": it.item_id}
        if embedding_dim:
            it.has_embedding = True
            buf = io.BytesIO()
            np.save(buf, emb_rng.standard_normal(embedding_dim).astype(np.float32), allow_pickle=False)
            sample["emb.npy"] = buf.getvalue()
        sample["json"] = it.to_json()
        iw.write(sample)
    manifest["items"] = {
        "count": len(items),
        "shards": [vars(s) for s in iw.close()],
        "embedding_dim": embedding_dim,
    }
    manifest["vocab"] = {
        "num_items": num_items,
        "num_users": 100,
        "attribute_fields": {
            "brand": sorted({it.attributes["brand"] for it in items}),
            "category": sorted({it.attributes["category"] for it in items}),
        },
        "actions": list(ACTIONS),
        "max_history": max_history,
    }
    shards.write_manifest(root, manifest, storage_cfg)
    return manifest


# ---------------------------------------------------------------------------------------- tokenizer
TOKENIZER_CORPUS = [
    "User history: item 1 lamp; item 2 novel; item 3 kettle. Recommended: item 4 drum. Profile: Explanation:",
    "because you liked item 7 rake you may like item 9 lamp",
    "because you liked the novel you may like another novel by the same author",
    "the kettle matches your kitchen purchases and the garden rake fits your recent garden views",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 books games garden kitchen music",
]


def build_tiny_tokenizer(out_dir: str | Path, vocab_size: int = 400) -> str:
    """Train a byte-level BPE tokenizer offline and save it as a Hugging Face tokenizer directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|bos|>", "<|eos|>", "<|pad|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TOKENIZER_CORPUS * 4, trainer=trainer)
    # BOS added by the tokenizer, as bootstrap-llm's (and Llama's) tokenizers do
    tok.post_processor = processors.TemplateProcessing(
        single="<|bos|> $A", special_tokens=[("<|bos|>", tok.token_to_id("<|bos|>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>"
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return str(out)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Hugging Face tokenizer directory (byte-level BPE with bos/eos/pad), built once."""
    d = tmp_path_factory.mktemp("tiny_tokenizer")
    path = build_tiny_tokenizer(d / "tok")
    yield path
    shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------------------- tiny LLM
@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Hugging Face checkpoint: random tiny Llama (hidden 64, 2 layers) + byte-level BPE
    tokenizer with <|pad|> <|bos|> <|eos|> <|soft|>, built once per session (seller_dist.model.bootstrap)."""
    from tests.tiny_llm import build_tiny_llm

    d = tmp_path_factory.mktemp("tiny_llm")
    yield build_tiny_llm(d / "llm", init_std=0.15)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> str:
    """The 60-user synthetic dataset the training tests read (tests.train_helpers.prep_small), once."""
    from tests.train_helpers import prep_small

    root = tmp_path_factory.mktemp("train_data") / "data"
    prep_small(str(root))
    return str(root)


# ---------------------------------------------------------------------------------------- real LLM
@pytest.fixture(scope="session")
def real_llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SmolLM2-135M-Instruct imported once per run from its packaged GGUF (tests/real_llm_helpers.py),
    shared by the run's xdist workers."""
    from filelock import FileLock

    from tests.real_llm_helpers import import_real_llm, real_llm_missing

    if (why := real_llm_missing()) is not None:
        pytest.skip(why)
    d, own = shared_dir(tmp_path_factory, "real_llm")
    with FileLock(f"{d}.lock"):
        done = d / "smollm2" / "config.json"
        path = str(done.parent) if done.exists() else import_real_llm(d / "smollm2")
    yield path
    if own:
        shutil.rmtree(d, ignore_errors=True)
