"""tools/soft_prompt_probe.py: which soft positions it hides from the LLM."""

from __future__ import annotations

import torch

from tools.soft_prompt_probe import hidden_positions, hiding


def test_hidden_positions_split_each_rows_soft_run_into_adapter_then_pointer() -> None:
    # two left-padded rows with 5 soft positions each at different offsets: 2 adapter, 3 pointer
    soft = torch.tensor(
        [
            [0, 0, 1, 1, 1, 1, 1, 0, 0],
            [0, 1, 1, 1, 1, 1, 0, 0, 0],
        ],
        dtype=torch.bool,
    )
    adapter = hidden_positions(soft, 2, "adapter")
    pointer = hidden_positions(soft, 2, "pointer")
    assert adapter.nonzero().tolist() == [[0, 2], [0, 3], [1, 1], [1, 2]]
    assert pointer.nonzero().tolist() == [[0, 4], [0, 5], [0, 6], [1, 3], [1, 4], [1, 5]]
    assert torch.equal(adapter | pointer, soft) and not (adapter & pointer).any()
    assert torch.equal(hidden_positions(soft, 2, "all"), soft)
    assert not hidden_positions(soft, 2, "none").any()


def test_hiding_masks_only_the_chosen_positions_of_the_attention() -> None:
    soft = torch.tensor([[0, 1, 1, 1, 0]], dtype=torch.bool)
    attn = torch.tensor([[0, 1, 1, 1, 1]])

    def collate(records):
        return {"soft_mask": soft, "attention_mask": attn.clone()}

    assert hiding(collate, 1, "pointer")([])["attention_mask"].tolist() == [[0, 1, 0, 0, 1]]
    assert hiding(collate, 1, "adapter")([])["attention_mask"].tolist() == [[0, 0, 1, 1, 1]]
