"""ShardWriter's hand-built USTAR members are byte-identical to tarfile's (what shards always were)."""

from __future__ import annotations

import io
import random
import tarfile

import pytest

from seller_dist.data import shards


def tarfile_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            shards._add_member(tar, name, data)
    return buf.getvalue()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ustar_members_equal_tarfile_bytes(seed):
    rng = random.Random(seed)
    members = []
    for i in range(rng.randint(1, 40)):
        name = rng.choice([f"train-{i:016x}.json", f"i{i:09d}.emb.npy", "é" * rng.randint(1, 40) + ".json"])
        size = rng.choice([0, 1, 511, 512, 513, 1024, rng.randint(0, 20_000)])
        members.append((name, bytes(rng.getrandbits(8) for _ in range(size))))
    ours = b"".join(shards.ustar_member(n, d) for n, d in members)
    assert ours + shards.end_of_archive(len(ours)) == tarfile_bytes(members)


def test_names_over_100_bytes_fail_as_with_tarfile():
    with pytest.raises(ValueError, match="name is too long"):
        tarfile_bytes([("n" * 120 + ".json", b"{}")])
    with pytest.raises(ValueError, match="name is too long"):
        shards.ustar_member("n" * 120 + ".json", b"{}")


def test_shard_writer_output_reads_back(tmp_path):
    w = shards.ShardWriter(str(tmp_path), "train", max_records=3, max_bytes=1 << 20)
    for i in range(7):
        w.write({"__key__": f"k{i}", "json": f'{{"i": {i}}}'.encode()})
    infos = w.close()
    assert [i.count for i in infos] == [3, 3, 1]
    for info in infos:
        data = (tmp_path / info.path).read_bytes()
        members = [(m, b) for m, b in ((f"k{j}.json", f'{{"i": {j}}}'.encode()) for j in range(7))]
        assert data == tarfile_bytes([x for x in members if x[0] in data.decode("latin-1")])
