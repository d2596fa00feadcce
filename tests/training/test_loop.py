"""The one training loop: learns, checkpoints, resumes to the same weights, stops on a deadline."""

from __future__ import annotations

import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from frugalml.config import Budget
from frugalml.costs import CostMeter
from frugalml.data.split import Splits
from frugalml.training.loop import (
    Batch,
    TrainableStateError,
    TrainConfig,
    _schedule,
    bucketed_batches,
    build_optimizer,
    load_trainable,
    train,
    trainable_state,
)

torch = pytest.importorskip("torch")
FAST = TrainConfig(epochs=4, lr=5e-3, head_lr=2e-2, batch_size=16, patience=10)


def fit(
    splits: Splits,
    backbone: Path,
    config: TrainConfig,
    workdir: Path | None,
    budget: Budget | None = None,
) -> tuple[Any, Any, Any]:  # (predictor, train state, cost card)
    from frugalml.training.finetune import fit_classifier

    with CostMeter() as meter:
        result = fit_classifier(
            splits.train,
            splits.val,
            backbone=backbone,
            config=config,
            max_length=32,
            budget=budget or Budget(),
            meter=meter,
            workdir=workdir,
        )
    return (*result, meter.card)


def test_loss_goes_down_and_flops_are_counted(demo_splits: Splits, tiny_backbone: Path) -> None:
    _, state, card = fit(demo_splits, tiny_backbone, FAST, None)
    losses = [h["loss"] for h in state.history]
    assert losses[-1] < losses[0] * 0.8
    assert state.best_score == max(h["val"] for h in state.history)
    assert card.flops and card.flops > 0


def test_resume_after_a_crash_reaches_the_same_weights(
    demo_splits: Splits,
    tiny_backbone: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    straight, _, _ = fit(demo_splits, tiny_backbone, FAST, tmp_path / "a")
    import frugalml.metrics as evaluate_module

    calls = {"n": 0}
    real = evaluate_module.macro_f1

    def crash_on_third_epoch(*args: object) -> float:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill during epoch 2")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr("frugalml.training.finetune.macro_f1", crash_on_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(demo_splits, tiny_backbone, FAST, tmp_path / "b")
    monkeypatch.setattr("frugalml.training.finetune.macro_f1", real)
    resumed, state, _ = fit(demo_splits, tiny_backbone, FAST, tmp_path / "b")
    assert [h["epoch"] for h in state.history] == [0, 1, 2, 3]  # epochs 0-1 from the checkpoint
    texts = list(demo_splits.test.texts)
    np.testing.assert_allclose(resumed.logits(texts), straight.logits(texts), atol=1e-5)


def test_deadline_stops_cleanly_and_keeps_the_best_weights(
    demo_splits: Splits,
    tiny_backbone: Path,
) -> None:
    start = time.perf_counter()
    predictor, state, _ = fit(
        demo_splits, tiny_backbone, TrainConfig(epochs=50), None, Budget(max_wall_s=0.01)
    )
    assert state.stopped == "deadline"
    assert len(state.history) == 1 and time.perf_counter() - start < 30
    proba = predictor.predict_proba(["my card is lost"])
    assert proba.shape == (1, len(demo_splits.train.labels))


def test_bucketed_batches_cover_everything_once_with_little_padding() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, 1000)
    batches = bucketed_batches(lengths, 16, seed=1)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    naive = sum(len(b) * lengths[b].max() for b in np.array_split(rng.permutation(1000), 63))
    assert padded < 0.75 * naive
    assert [b.tolist() for b in bucketed_batches(lengths, 16, seed=1)] == [
        b.tolist() for b in batches
    ]


def test_schedule_warms_up_then_decays_to_zero() -> None:
    values = [_schedule(step, 100, 0.1) for step in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[50] == pytest.approx(50 / 90) and values[-1] == pytest.approx(1 / 90)
    assert all(a >= b for a, b in pairwise(values[9:]))


# -- the loop's contracts, on a toy model whose every step can be followed -----------------
class Toy(torch.nn.Module):
    """An 'encoder' and a new 'head' (or, with `head="classifier"`, another name for it)."""

    def __init__(self, head: str = "head", seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = torch.nn.Linear(4, 4)
        setattr(self, head, torch.nn.Linear(4, 2))
        self.head_name = head

    def forward(self, x: Any) -> Any:
        return getattr(self, self.head_name)(torch.tanh(self.encoder(x)))


def toy_batches(n: int, size: int = 4, seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"x": torch.randn(size, 4, generator=g), "y": torch.randint(0, 2, (size,), generator=g)}
        for _ in range(n)
    ]


class Source:
    """A batch source that records which epochs were asked for and how many batches it gave."""

    def __init__(self, batches: list[Batch], length: int | None = None) -> None:
        self.batches, self.length = batches, len(batches) if length is None else length
        self.calls: list[int] = []
        self.yielded = 0

    def __len__(self) -> int:
        return self.length

    def __call__(self, epoch: int) -> Any:
        self.calls.append(epoch)
        for batch in self.batches:
            self.yielded += 1
            yield batch


def toy_loss(model: Any, batch: Batch) -> Any:
    return torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"])


def rising() -> Any:
    """An evaluation that improves every epoch, so the loop keeps the last weights."""
    scores = iter(range(1000))
    return lambda model: float(next(scores))


TOY = TrainConfig(epochs=3, lr=1e-2, head_lr=5e-2, warmup_ratio=0.0, patience=5)


def test_each_epoch_is_iterated_once_and_len_sets_the_steps() -> None:
    source = Source(toy_batches(5))
    state = train(Toy(), source, toy_loss, rising(), TOY.model_copy(update={"grad_accum": 2}))
    assert source.calls == [0, 1, 2]  # no pass over epoch 0 just to count its batches
    assert source.yielded == 15
    assert state.step == 3 * 3  # 5 batches in groups of 2: two full groups and a flushed one


def test_a_source_that_yields_other_than_its_len_is_refused() -> None:
    with pytest.raises(RuntimeError, match="more than its len"):
        train(Toy(), Source(toy_batches(4), length=3), toy_loss, rising(), TOY)
    with pytest.raises(RuntimeError, match="yielded 3 batches, not its len"):
        train(Toy(), Source(toy_batches(3), length=4), toy_loss, rising(), TOY)


def test_the_last_partial_accumulation_group_steps_at_its_own_scale() -> None:
    """Accumulating [b1, b2], [b3] equals plain steps on b1+b2 joined, then b3: the epoch's
    last group steps before the next epoch (nothing leaks) and is averaged over its own size."""
    b1, b2, b3 = toy_batches(3)
    joined = {k: torch.cat([b1[k], b2[k]]) for k in b1}
    accumulated, plain = Toy(), Toy()
    state = train(
        accumulated,
        Source([b1, b2, b3]),
        toy_loss,
        rising(),
        TOY.model_copy(update={"grad_accum": 2}),
    )
    train(plain, Source([joined, b3]), toy_loss, rising(), TOY)
    assert state.step == 2 * TOY.epochs
    assert all(p.grad is None for p in accumulated.parameters())  # stepped and cleared
    for (name, a), b in zip(
        accumulated.state_dict().items(), plain.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_the_head_learns_at_head_lr_under_a_wrapper_too() -> None:
    model = Toy()
    for wrapped in (model, torch.nn.DataParallel(model), torch.compile(model)):
        optimizer = build_optimizer(wrapped, TOY, ("head",))
        names = {id(p): n for n, p in model.named_parameters()}
        lr = {names[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]}
        assert lr == {
            "encoder.weight": TOY.lr,
            "encoder.bias": TOY.lr,
            "head.weight": TOY.head_lr,
            "head.bias": TOY.head_lr,
        }


def test_trainable_state_has_the_models_own_names_and_is_a_copy() -> None:
    model = Toy()
    model.encoder.requires_grad_(False)
    state = trainable_state(torch.nn.DataParallel(model))
    assert sorted(state) == ["head.bias", "head.weight"]
    before = state["head.weight"].clone()
    with torch.no_grad():
        model.head.weight.add_(1.0)
    torch.testing.assert_close(state["head.weight"], before)


def test_load_trainable_copies_in_place_and_refuses_any_mismatch() -> None:
    model, other = Toy(seed=0), Toy(seed=1)
    weight = model.head.weight
    load_trainable(model, trainable_state(other))
    assert model.head.weight is weight  # the same tensor: an optimizer holding it follows
    torch.testing.assert_close(model.head.weight, other.head.weight)
    state = trainable_state(other)
    state["head.weight"] = torch.zeros(3, 4)
    del state["encoder.bias"]
    state["lora_A.weight"] = torch.zeros(1)
    with pytest.raises(TrainableStateError) as error:
        load_trainable(model, state)
    message = str(error.value)
    assert "1 trained weight missing: encoder.bias" in message
    assert "1 key the model does not train: lora_A.weight" in message
    assert "'head.weight' has shape (3, 4); the model's is (2, 4)" in message
    torch.testing.assert_close(model.encoder.weight, other.encoder.weight)  # nothing loaded
    torch.testing.assert_close(model.head.weight, other.head.weight)


def test_a_checkpoint_of_another_model_is_refused_not_half_loaded(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    train(Toy(), Source(toy_batches(2)), toy_loss, rising(), TOY, checkpoint_dir=folder)
    renamed = Toy(head="classifier", seed=1)
    before = trainable_state(renamed)
    with pytest.raises(TrainableStateError) as error:
        train(
            renamed,
            Source(toy_batches(2)),
            toy_loss,
            rising(),
            TOY,
            head_prefixes=("classifier",),
            checkpoint_dir=folder,
        )
    message = str(error.value)
    assert str(folder / "last.safetensors") in message and f"delete {folder}" in message
    assert "missing: classifier.bias, classifier.weight" in message
    assert "does not train: head.bias, head.weight" in message
    for name, value in trainable_state(renamed).items():
        torch.testing.assert_close(value, before[name])
