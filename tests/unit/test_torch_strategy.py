"""TorchStrategy under the job's TrainStep (seller_dist.train.step): one optimizer step equals the
plain PyTorch step written out by hand (seeded forward, loss / grad_accum backward, joint clip,
AdamW), the weights move once per step whatever grad_accum is, a NaN stops the step before any
weight moves; the settings plain torch cannot honour are refused, and so is a step that would
accumulate differently from its strategy."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from seller_dist.config import OptimConfig
from seller_dist.model.seller import SellerModel
from seller_dist.model.synthetic import synthetic_batch
from seller_dist.model.vocab import ModelVocab
from seller_dist.strategy_settings import StrategySettings
from seller_dist.train.callbacks import CallbackList
from seller_dist.train.step import NonFiniteError, TrainStep, step_seed
from seller_dist.train.strategy import TorchStrategy, TorchTrainState
from tests.fault_callbacks import NanInputs
from tests.model_helpers import tiny_model_config
from tests.tiny_llm import token_ids_of

VOCAB = ModelVocab(num_items=20, attribute_sizes=[4, 3], text_dim=8)


def optim(grad_accum: int) -> OptimConfig:
    return OptimConfig(lr=1e-2, schedule="constant", warmup_steps=0, grad_clip=0.5, grad_accum=grad_accum)


def prepared(
    llm_dir: str, grad_accum: int, cited_event_loss_coef: float = 0.0
) -> tuple[TorchStrategy, TorchTrainState, list[dict[str, torch.Tensor]]]:
    strategy = TorchStrategy(StrategySettings(4, grad_accum=grad_accum, use_gpu=False, world_size=1))
    # dropout: the step's seeds must match the reference's
    cfg = tiny_model_config(llm_dir, dropout=0.1, cited_event_loss_coef=cited_event_loss_coef)
    llm = strategy.load_llm(cfg)
    torch.manual_seed(0)
    model = SellerModel(cfg, VOCAB, llm, strategy.registers_llm)
    state = strategy.prepare(model, OptimConfig(lr=1e-2))
    state.train()
    batches = [
        {**b, "pad": torch.zeros(4, dtype=torch.bool), "hist_cited": torch.tensor([5, 4, -1, 5])}
        for b in (synthetic_batch(VOCAB, token_ids_of(llm), 8, 4, 6, seed=s) for s in range(grad_accum))
    ]
    return strategy, state, batches


def trainables(model: SellerModel, moe: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for _, p in model.trainable_named_parameters()] + [
        p.detach().clone() for p in moe.parameters()
    ]


@pytest.mark.parametrize("grad_accum, cited", [(1, 0.0), (2, 0.0), (2, 0.5)])
def test_one_step_is_the_hand_written_plain_step(tiny_llm_dir, grad_accum, cited):
    strategy, state, batches = prepared(tiny_llm_dir, grad_accum, cited)
    o = optim(grad_accum)
    model, moe = copy.deepcopy(state.model), copy.deepcopy(state.moe)  # the reference, by hand
    params = [p for _, p in model.trainable_named_parameters()] + list(moe.parameters())
    opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=0.0)
    losses, aux, cited_losses = [], [], []
    for micro, batch in enumerate(batches):
        torch.manual_seed(step_seed(7, 0, micro, 0))
        out = model({k: v for k, v in batch.items() if k != "pad"}, moe=moe)
        (out["loss"] / grad_accum).backward()
        losses.append(float(out["loss"].detach()))
        aux.append(float(out["aux_loss"]))
        cited_losses.append(float(out["cited_event_loss"]))
    norm = float(torch.nn.utils.clip_grad_norm_(params, o.grad_clip))
    opt.step()

    step = TrainStep(state, o, max_steps=10, seed=7, batches=iter(batches), device=strategy.device)
    stats = step(0)
    assert stats.loss == pytest.approx(sum(losses) / grad_accum, rel=1e-6)
    assert stats.aux_loss == pytest.approx(sum(aux) / grad_accum, rel=1e-6)
    assert stats.cited_event_loss == pytest.approx(sum(cited_losses) / grad_accum, rel=1e-6)
    assert (stats.cited_event_loss > 0.5) == (cited > 0)  # -log of a weight among 6 events, or off
    assert stats.grad_norm == pytest.approx(norm, rel=1e-5) and norm > o.grad_clip  # it clipped
    assert stats.lr == o.lr and stats.samples == 4 * grad_accum
    assert stats.tokens == sum(int(b["attention_mask"].sum()) for b in batches)
    for got, want in zip(trainables(state.model, state.moe), trainables(model, moe), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    # one optimizer step per TrainStep, however many micro-batches it took; no gradient left over
    assert {int(s["step"]) for s in state.optimizer.state.values()} == {1}
    assert all(p.grad is None for group in state.optimizer.param_groups for p in group["params"])


def test_a_nan_loss_stops_the_step_before_any_weight_moves(tiny_llm_dir):
    strategy, state, batches = prepared(tiny_llm_dir, 1)
    step = TrainStep(
        state,
        optim(1),
        10,
        0,
        itertools.cycle(batches),
        strategy.device,
        callbacks=CallbackList([NanInputs(0, 2)]),
    )
    step(0)
    before = trainables(state.model, state.moe)
    with pytest.raises(NonFiniteError, match=r"^non-finite loss at step 2 on rank 0: nan \(micro-batch 0\)"):
        step(1)
    assert all(torch.equal(a, b) for a, b in zip(before, trainables(state.model, state.moe), strict=True))


@pytest.mark.parametrize(
    "settings, refused",
    [
        (dict(world_size=2), "world_size=2"),
        (dict(offload_params=True), "offload_params"),
    ],
)
def test_settings_plain_torch_cannot_honour_are_refused(settings, refused):
    with pytest.raises(ValueError, match=f"one process without DeepSpeed: {refused} needs DeepSpeedStrategy"):
        TorchStrategy(StrategySettings(4, use_gpu=False, **{"world_size": 1, **settings}))


def test_the_step_and_the_strategy_must_accumulate_alike(tiny_llm_dir):
    strategy, state, batches = prepared(tiny_llm_dir, 2)
    with pytest.raises(ValueError, match="accumulates 2 micro-batches per step, optim.grad_accum says 1"):
        TrainStep(state, optim(1), 10, 0, iter(batches), strategy.device)
