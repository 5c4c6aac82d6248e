"""The prefetch thread hands out the loader's batches in order, and its cursor is that of the
batches handed out (not of those read ahead), so a checkpoint taken mid-stream resumes exactly."""

from __future__ import annotations

import pytest
import torch

from seller_dist.data.prefetch import Prefetcher


class Loader:
    """A RankLoader stand-in: numbered batches, a cursor that counts what was read."""

    def __init__(self, n: int, fail_at: int | None = None):
        self.n, self.fail_at, self.done = n, fail_at, 0

    def __iter__(self):
        while self.done < self.n:
            if self.done == self.fail_at:
                raise ValueError(f"shard-3.tar: record 7: field 'history' is not a list (batch {self.done})")
            self.done += 1
            yield {"x": torch.tensor([self.done]), "pad": torch.zeros(1, dtype=torch.bool)}

    def state_dict(self):
        return {"epoch": 0, "batches_done": self.done}

    def load_state_dict(self, state):
        self.done = state["batches_done"]


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_order_and_cursor_of_handed_out_batches(depth):
    loader = Loader(10)
    p = Prefetcher(loader, depth)
    got = []
    for _ in range(4):
        got.append(int(next(p)["x"]))
        assert p.state_dict() == {"epoch": 0, "batches_done": len(got)}  # not what was read ahead
    p.close()
    assert got == [1, 2, 3, 4]
    resumed = Prefetcher(Loader(10), depth)
    resumed.load_state_dict(p.state_dict())
    assert [int(b["x"]) for b in resumed] == [5, 6, 7, 8, 9, 10]


def test_a_reading_error_reaches_the_training_thread_unchanged():
    p = Prefetcher(Loader(10, fail_at=2), depth=2)
    assert [int(next(p)["x"]) for _ in range(2)] == [1, 2]
    with pytest.raises(ValueError, match=r"shard-3.tar: record 7: field 'history' is not a list"):
        next(p)
    p.close()


def test_cursor_cannot_move_once_reading_started():
    p = Prefetcher(Loader(5), depth=1)
    next(p)
    with pytest.raises(RuntimeError, match="after iteration started"):
        p.load_state_dict({"epoch": 0, "batches_done": 0})
    p.close()
