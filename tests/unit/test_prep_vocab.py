"""prep's vocab_from: the catalog keeps an earlier dataset's item indices and appends new items after
them (data_prep.vocab + Catalog.build), and the manifest records the lineage."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest

from data_prep.examples import Catalog
from data_prep.sources.base import RawItem
from data_prep.vocab import ParentItem, ParentVocab, VocabError, lineage_entry, load_parent
from seller_dist.config import ConfigError, PrepConfig
from seller_dist.data.catalog import ItemCatalog
from seller_dist.data.schema import ACTIONS
from tests.warm_start_helpers import prep_window, write_windows


def parent_vocab() -> ParentVocab:
    items = [
        ParentItem("c", 1, "Old C", {"category": "books"}, "old c text"),
        ParentItem("m", 2, "Old M", {"category": "games"}),
        ParentItem("x", 3),  # an item the parent only saw in events (no metadata)
        ParentItem("e", 4, "Old E", {"category": "garden"}),
    ]
    return ParentVocab("s3://b/day-1", "ab" * 32, 4, list(ACTIONS), {it.item_id: it for it in items})


def test_parent_items_keep_their_index_and_new_ones_follow_sorted():
    raw = [
        RawItem("m", "New M", {"category": "toys"}, "new m text"),
        RawItem("b", "B", {"category": "books"}),
    ]
    cat = Catalog.build(raw, {"m", "e", "z", "a", "b"}, parent_vocab())
    assert {iid: it.item_idx for iid, it in cat.items.items()} == {
        "c": 1,  # absent from the new window: kept, same index
        "m": 2,
        "x": 3,
        "e": 4,
        "a": 5,  # new items after the parent's largest index, in sorted item_id order
        "b": 6,
        "z": 7,
    }
    # metadata: the new window's item file wins, else the parent's
    assert (cat["m"].title, cat["m"].attributes, cat["m"].text) == (
        "New M",
        {"category": "toys"},
        "new m text",
    )
    assert (cat["c"].title, cat["c"].attributes, cat["c"].text) == (
        "Old C",
        {"category": "books"},
        "old c text",
    )
    assert (cat["e"].title, cat["e"].has_metadata) == ("Old E", True)  # only in events now: parent's metadata
    assert (cat["x"].has_metadata, cat["a"].has_metadata, cat["b"].has_metadata) == (False, False, True)
    assert len(cat) == 7  # contiguous: manifest vocab.num_items == largest item_idx


def test_same_inputs_give_the_same_indices_whatever_their_order():
    raw = [RawItem(f"n{i}", f"N{i}", {}) for i in range(20)]
    events = [f"q{i}" for i in range(20)] + ["c", "m"]
    a = Catalog.build(raw, events, parent_vocab())
    rng = random.Random(3)
    rng.shuffle(raw)
    rng.shuffle(events)
    b = Catalog.build(raw, set(events), parent_vocab())
    assert {k: v.item_idx for k, v in a.items.items()} == {k: v.item_idx for k, v in b.items.items()}
    assert [it.item_id for it in sorted(a.items.values(), key=lambda it: it.item_idx)][4:] == sorted(
        [f"n{i}" for i in range(20)] + [f"q{i}" for i in range(20)]
    )


def test_without_parent_indices_follow_sorted_ids():
    cat = Catalog.build([RawItem("b", "B", {})], {"a", "c"})
    assert {iid: it.item_idx for iid, it in cat.items.items()} == {"a": 1, "b": 2, "c": 3}


@pytest.fixture(scope="module")
def day1(tmp_path_factory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("vocab")
    raw1, raw2 = write_windows(tmp)
    prep_window(raw1, tmp / "d1")
    return str(tmp / "d1"), raw2


@pytest.mark.parametrize("suffix", ["", "/", "/manifest.json"])
def test_load_parent_reads_manifest_and_catalog(day1, suffix):
    root, _ = day1
    parent = load_parent(root + suffix)
    raw = Path(root, "manifest.json").read_bytes()
    assert parent.url == root and parent.manifest_sha256 == hashlib.sha256(raw).hexdigest()
    assert parent.num_items == 40 and parent.actions == list(ACTIONS)
    assert [it.item_idx for it in parent.items.values()] == list(range(1, 41))
    assert parent.items["i007"].attributes["category"] == "kitchen"
    assert lineage_entry(parent) == {
        "parent": root,
        "parent_manifest_sha256": parent.manifest_sha256,
        "parent_num_items": 40,
        "depth": 1,
    }


def test_load_parent_without_manifest_fails_naming_the_url(tmp_path):
    with pytest.raises(VocabError, match=rf"vocab_from: no manifest at {tmp_path}/day-0/manifest.json"):
        load_parent(str(tmp_path / "day-0"))


def _tampered(root: str, out: Path, edit) -> str:
    """A copy of the dataset at `out` whose manifest `edit` changed (the shards are shared by symlink)."""
    out.mkdir()
    for p in Path(root).iterdir():
        if p.name != "manifest.json":
            (out / p.name).symlink_to(p)
    data = json.loads(Path(root, "manifest.json").read_text())
    edit(data)
    (out / "manifest.json").write_text(json.dumps(data))
    return str(out)


def test_actions_must_be_the_fixed_list_or_a_prefix(day1, tmp_path):
    root, _ = day1

    def prefix(d):
        d["vocab"]["actions"] = ["view", "click"]

    assert load_parent(_tampered(root, tmp_path / "prefix", prefix)).actions == ["view", "click"]

    def other(d):
        d["vocab"]["actions"] = ["view", "like"]

    with pytest.raises(VocabError, match=r"was prepared with actions \['view', 'like'\], which is not \["):
        load_parent(_tampered(root, tmp_path / "other", other))


def test_a_catalog_with_a_gap_is_refused(day1, tmp_path):
    root, _ = day1

    def gap(d):
        d["vocab"]["num_items"] += 1  # item_idx 41 has no entry in items/

    with pytest.raises(VocabError, match=r"has no item at item_idx 41 \(of 41\)"):
        load_parent(_tampered(root, tmp_path / "gap", gap))


def test_prep_config_validates_vocab_from(tmp_path):
    with pytest.raises(ConfigError, match="vocab_from is empty"):
        PrepConfig(output=str(tmp_path / "d2"), vocab_from=" ").validate()
    with pytest.raises(ConfigError, match="is this run's output: give the EARLIER dataset"):
        PrepConfig(output=str(tmp_path / "d2"), vocab_from=f"{tmp_path}/d2/manifest.json").validate()
    PrepConfig(output=str(tmp_path / "d2"), vocab_from=str(tmp_path / "d1")).validate()


def test_prep_with_vocab_from_keeps_indices_and_records_lineage(day1, tmp_path):
    root, raw2 = day1
    manifest = prep_window(raw2, tmp_path / "d2", vocab_from=root)
    parent_sha = hashlib.sha256(Path(root, "manifest.json").read_bytes()).hexdigest()
    assert manifest["lineage"] == {
        "parent": root,
        "parent_manifest_sha256": parent_sha,
        "parent_num_items": 40,
        "depth": 1,
    }
    old, new = ItemCatalog.load(root), ItemCatalog.load(str(tmp_path / "d2"))
    assert new.item_ids[:41] == old.item_ids  # i000-i009 are not in window 2 and keep their index too
    assert new.item_ids[41:] == ["a-new"] + [f"i{i:03d}" for i in range(40, 50)]
    assert (
        new.titles[3] == old.titles[3] and new.attributes[3] == old.attributes[3]
    )  # i002: parent's metadata
    assert manifest["vocab"]["num_items"] == 51 and manifest["vocab"]["actions"] == list(ACTIONS)
    # a grandchild counts the windows since the first fresh vocabulary
    grand = prep_window(raw2, tmp_path / "d3", vocab_from=str(tmp_path / "d2"))
    assert grand["lineage"]["depth"] == 2 and grand["lineage"]["parent_num_items"] == 51


def test_prep_with_a_missing_vocab_from_fails_before_touching_the_output(day1, tmp_path):
    root, raw2 = day1
    published = tmp_path / "published"
    shutil.copytree(root, published)
    with pytest.raises(VocabError, match=rf"no manifest at {tmp_path}/nowhere/manifest.json"):
        prep_window(raw2, published, vocab_from=str(tmp_path / "nowhere"))  # with overwrite=true
    assert load_parent(str(published)).num_items == 40  # still published, untouched
