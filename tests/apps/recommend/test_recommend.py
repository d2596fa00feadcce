"""The recommendation app on small real files: reading, splits, the ladder, the bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import frugalml
from frugalml import CostMeter
from frugalml.apps import recommend
from frugalml.apps.recommend.model import Recommender
from frugalml.errors import ConfigError, DataError
from frugalml.metrics import Outcomes, evaluate


def taste_events(n_users: int = 40, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two tastes (items 0-9 and 10-19): each user rates items of their own taste, in time."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        taste = 10 * (u % 2)
        for t, item in enumerate(rng.permutation(10)[:6] + taste):
            rows.append({"user": f"u{u}", "item": f"i{item}", "rating": 4.0, "time": t})
    items = pd.DataFrame(
        {"item": [f"i{i}" for i in range(20)],
         "title": [("space war" if i < 10 else "love story") + f" {i}" for i in range(20)]}
    )  # fmt: skip
    return pd.DataFrame(rows), items


def test_every_problem_in_the_events_is_reported_at_once() -> None:
    events, items = taste_events(4)
    bad = pd.concat(
        [events, pd.DataFrame([
            {"user": "u0", "item": "nope", "rating": 5.0, "time": 9},
            {"user": "u0", "item": events.item[0], "rating": 5.0, "time": 10},
            {"user": "lonely", "item": "i1", "rating": 5.0, "time": 1},
        ])], ignore_index=True,
    )  # fmt: skip
    with pytest.raises(DataError) as error:
        recommend.read_interactions(bad, items, rating_col="rating", time_col="time")
    text = str(error.value)
    assert "1 unknown item" in text and "'nope'" in text
    assert "1 repeated (user, item) pair" in text
    assert "1 user with one interaction" in text
    notes: list[str] = []
    data = recommend.read_interactions(
        bad, items, rating_col="rating", time_col="time", drop_invalid=True, notes=notes
    )
    assert len(data) == len(events) and len(notes) == 3  # a repeated pair keeps its last copy


def test_a_rating_threshold_keeps_only_positives() -> None:
    events, items = taste_events(4)
    events.loc[events.index % 2 == 0, "rating"] = 1.0
    data = recommend.read_interactions(events, items, rating_col="rating", threshold=3.5)
    assert len(data) == int((events.rating >= 3.5).sum())


def test_leave_last_out_holds_out_each_users_latest_events_and_cold_items_apart() -> None:
    events, items = taste_events()
    data = recommend.read_interactions(events, items, time_col="time")
    parts = recommend.split(data, cold_frac=0.1, seed=1)
    train, val, test = (p.records for p in (parts.train, parts.val, parts.test))
    assert isinstance(train, recommend.Interactions) and isinstance(test, recommend.Interactions)
    assert isinstance(val, recommend.Interactions) and parts.cold is not None
    cold = train.cold
    assert cold is not None and cold.sum() == 2
    assert not cold[train.items].any() and not cold[test.items].any()
    for u in np.unique(test.users):  # the test event is the user's latest
        assert test.times[test.users == u].min() >= train.times[train.users == u].max()
    assert test.seen is not None and len(test.seen) == len(train) + len(val)
    assert parts.train.kind == "interactions" and parts.train.task == "recommendation"


def test_bad_split_fractions_are_refused() -> None:
    events, items = taste_events(4)
    data = recommend.read_interactions(events, items)
    with pytest.raises(ConfigError, match="split fractions"):
        recommend.split(data, how="random", test_frac=0.0)


def test_the_ladder_climbs_the_rungs_and_ships_a_recommender(tmp_path: Path) -> None:
    events, items = taste_events()
    parts = recommend.split(recommend.read_interactions(events, items, time_col="time"))
    result = recommend.fit(
        parts, out=tmp_path / "run", strategies=("popularity", "item_knn", "ease"), refit=False
    )
    scores = {c.strategy: c.test.metric("ndcg@10") for c in result.ladder.candidates if c.test}
    assert set(scores) == {"popularity", "item_knn", "ease"}
    assert scores["item_knn"] > scores["popularity"] and scores["ease"] > scores["popularity"]
    bundle = frugalml.load(tmp_path / "run" / "bundle")  # verified, self-checked
    model = bundle.predictor
    assert isinstance(model, Recommender) and bundle.manifest.task == "recommendation"
    assert not list((tmp_path / "run" / "bundle").rglob("*.pkl"))
    # a new user with a space-war history, folded in without retraining
    history, unknown = model.item_indices(["i1", "i2", "i3", "nope"])
    top, _ = model.recommend(history, 5, exclude=history)
    assert unknown == ["nope"]
    assert all(i < 10 and i not in history for i in top)
    quality = recommend.evaluate(bundle, parts.test)
    assert quality.metric("recall@10") > 0.3


def test_a_text_dataset_is_not_split_like_interactions(tmp_path: Path) -> None:
    events, items = taste_events(4)
    parts = recommend.split(recommend.read_interactions(events, items))
    with pytest.raises(ConfigError, match="validation and test splits"):
        frugalml.fit(parts.train, out=tmp_path / "run", strategies=["popularity"])


def test_rank_metrics_by_hand() -> None:
    scores = np.array([[0.9, 0.8, 0.1, 0.0], [0.1, 0.2, 0.9, 0.8]])
    relevance = np.array([[0, 1, 0, 0], [0, 0, 0, 1]], dtype=float)
    popularity = np.array([0.5, 0.4, 0.2, 0.1])
    out = evaluate(
        Outcomes(relevance=relevance, scores=scores, item_popularity=popularity),
        ["mrr", "coverage@1", "popularity_bias@2"],
        n_boot=50,
    )
    assert out["mrr"][0] == pytest.approx(0.5)  # both relevant items ranked second
    assert out["coverage_at_1"][0] == pytest.approx(0.5)  # items 0 and 2
    assert out["popularity_bias_at_2"][0] == pytest.approx(((0.5 + 0.4) / 2 + 0.15) / 2)


def test_the_chosen_rung_is_refitted_on_train_and_validation(
    ease_run: frugalml.FitResult, parts: recommend.RecSplits
) -> None:
    result = ease_run
    assert result.run_dir.name == "refit"
    chosen = frugalml.load(result.run_dir.parent / "bundle").predictor
    refitted = result.bundle.predictor
    assert isinstance(chosen, Recommender) and isinstance(refitted, Recommender)
    assert result.bundle.manifest.strategy == "ease"
    assert refitted.scorer.settings["lambda"] == chosen.scorer.settings["lambda"]
    assert len(refitted.items) == len(chosen.items) + len(parts.val)  # validation learnt too
    assert any("refitted on train + validation" in n for n in result.notes)


def test_als_folds_users_in_and_beats_popularity(tmp_path: Path) -> None:
    pytest.importorskip("implicit")
    events, items = taste_events(60)
    parts = recommend.split(recommend.read_interactions(events, items, time_col="time"))
    result = recommend.fit(
        parts, out=tmp_path / "run", strategies=("popularity", "als"), refit=False,
        options={"als": {"factors": [4], "iterations": 10}},
    )  # fmt: skip
    scores = {c.strategy: c.test.metric("recall@10") for c in result.ladder.candidates if c.test}
    assert scores["als"] > scores["popularity"] + 0.2
    model = result.bundle.predictor
    assert result.bundle.manifest.strategy == "als" and isinstance(model, Recommender)
    assert "gram" in model.scorer.arrays  # a user is a ridge solve over the item factors


def test_a_content_bundle_embeds_and_ranks_items_added_after_training(content_run: Path) -> None:
    bundle = content_run / "refit" / "bundle"
    assert (bundle / "model" / "encoder").is_dir()  # the bundle stands alone
    model = frugalml.load(bundle).predictor
    assert isinstance(model, Recommender) and model.encoder is not None
    new = model.add_items(["n1", "n2"], ["space war robot", "love story kiss"])
    assert list(new) == [20, 21] and len(model.catalogue) == 22
    space = model.item_indices(["i1", "i2", "i3"])[0]
    top, _ = model.recommend(space, 5, exclude=space)
    assert 20 in top and 21 not in top  # the new space item reaches a space-war fan
    top, _ = model.similar(vector=model.embed(["space war"])[0], k=5)
    assert all(i < 10 or i == 20 for i in top)
    with pytest.raises(ConfigError, match="already in the catalogue"):
        model.add_items(["i1"], ["space war"])


def test_holdout_keeps_each_users_latest_share_apart() -> None:
    from frugalml.apps.recommend.lambdarank import holdout

    events, items = taste_events(4)
    data = recommend.read_interactions(events, items, time_col="time")
    data = data.select((data.users != 3) | (data.times == 0))  # u3: one event, nothing held
    early, late = holdout(data, 0.4, by="latest")
    shuffled = holdout(data, 0.4, by="random")[1]
    assert len(early) + len(late) == len(data)
    assert len(shuffled) == len(late) and not np.array_equal(shuffled.times, late.times)
    for u in range(len(data.user_ids)):
        n = int((data.users == u).sum())
        assert (late.users == u).sum() == (max(1, int(0.4 * n)) if n >= 2 else 0)
        assert (shuffled.users == u).sum() == (late.users == u).sum()
        if (late.users == u).any():
            assert late.times[late.users == u].min() > early.times[early.users == u].max()


def test_the_lambdarank_rung_reranks_the_cheaper_rungs_candidates(
    tmp_path: Path, parts: recommend.RecSplits, taste_backbone: Path
) -> None:
    pytest.importorskip("lightgbm")
    options = {"lambdarank": {"backbone": str(taste_backbone), "cache": False, "trees": 40,
                              "min_child": 5, "candidates": 8}}  # fmt: skip
    result = recommend.fit(
        parts, out=tmp_path / "run", strategies=("popularity", "lambdarank"), refit=False,
        metric="recall@10", options=options,
    )  # fmt: skip
    scores = {c.strategy: c.test.metric("recall@10") for c in result.ladder.candidates if c.test}
    assert scores["lambdarank"] > scores["popularity"] + 0.2
    model = frugalml.load(tmp_path / "run" / "bundle").predictor  # verified, self-checked
    assert isinstance(model, Recommender) and model.scorer.kind == "lambdarank"
    assert {"ranker", "item_knn.values", "ease.values", "content.vectors"} <= set(
        model.scorer.arrays
    )
    space = model.item_indices(["i1", "i2", "i3"])[0]
    top, _ = model.recommend(space, 5, exclude=space)
    assert all(i < 10 and i not in space for i in top)


def test_the_two_tower_rung_fine_tunes_the_encoder_on_what_users_pick_next(
    tmp_path: Path, parts: recommend.RecSplits, taste_backbone: Path
) -> None:
    from frugalml.apps.recommend.two_tower import next_item_pairs

    train = parts.train.records
    assert isinstance(train, recommend.Interactions)
    pairs = next_item_pairs(train, 2, 2)  # 4 events per user: 2 pairs each, front-padded
    assert pairs.shape == (2 * len(np.unique(train.users)), 3) and (pairs[:, 1:] >= 0).all()
    options = {"two_tower": {"backbone": str(taste_backbone), "temperature": 0.1,
                             "train": {"epochs": 3, "lr": 1e-3, "batch_size": 16}}}  # fmt: skip
    result = recommend.fit(
        parts, out=tmp_path / "run", strategies=("popularity", "two_tower"), refit=False,
        metric="recall@10", options=options,
    )  # fmt: skip
    scores = {c.strategy: c.test.metric("recall@10") for c in result.ladder.candidates if c.test}
    assert scores["two_tower"] > scores["popularity"] + 0.2
    model = frugalml.load(tmp_path / "run" / "bundle").predictor
    assert isinstance(model, Recommender) and model.encoder is not None
    tuned = model.embed(["space war 1"])[0]
    frozen = recommend_frozen_vector(taste_backbone, "space war 1")
    assert not np.allclose(tuned, frozen, atol=1e-4)  # the shipped encoder is the tuned one
    new = model.add_items(["n1"], ["space war robot"])
    space = model.item_indices(["i1", "i2", "i3"])[0]
    assert new[0] in model.recommend(space, 8, exclude=space)[0]


def recommend_frozen_vector(backbone: Path, text: str) -> np.ndarray:
    from frugalml.models import text_encoder

    return text_encoder(str(backbone), max_length=32).encode([text])[0]


def test_the_popularity_weight_is_the_best_on_validation_that_reaches_the_coverage_floor(
    parts: recommend.RecSplits,
) -> None:
    from frugalml.apps.recommend.rungs import EaseConfig, EaseStrategy, _scored

    def fitted(floor: float, weights: tuple[float, ...]) -> Recommender:
        config = EaseConfig(lambdas=(10.0,), popularity_weights=weights, min_coverage=floor)
        return EaseStrategy(config).fit(parts.train, parts.val, budget=None, meter=CostMeter())  # type: ignore[arg-type]

    weights = (0.0, -0.5, -2.0)
    tried = {w: _scored(fitted(0.0, (w,)), parts.val)[:2] for w in weights}  # (ndcg, coverage)
    best = max(weights, key=lambda w: tried[w][0])
    assert fitted(0.0, weights).scorer.settings["popularity"] == best
    widest = max(tried.values(), key=lambda t: t[1])[1]
    reach = [w for w in weights if tried[w][1] >= widest]
    chosen = fitted(widest, weights).scorer.settings["popularity"]
    assert chosen == max(reach, key=lambda w: tried[w][0])
    # an unreachable floor: the widest coverage
    assert fitted(1.0, weights).scorer.settings["popularity"] in reach


def test_a_negative_popularity_weight_lifts_the_long_tail(ease_run: frugalml.FitResult) -> None:
    model = ease_run.bundle.predictor
    assert isinstance(model, Recommender)
    rows = [model.history(u) for u in model.user_ids]
    plain = model.score([r for r in rows if r is not None])
    lifted = model.reweighted(plain, -2.0)
    top = lambda s: np.argsort(-s, axis=1)[:, :3]  # noqa: E731
    assert model.popularity[top(lifted)].mean() < model.popularity[top(plain)].mean()


def test_a_pool_reweights_only_each_users_best_unseen_items(
    ease_run: frugalml.FitResult,
) -> None:
    model = ease_run.bundle.predictor
    assert isinstance(model, Recommender)
    rows = [r for r in (model.history(u) for u in model.user_ids) if r is not None]
    plain = model.scorer.score(rows, len(model.catalogue))
    prior = model.log_popularity()
    pooled = model.reweighted(plain, -2.0, pool=4, seen=rows)
    for r, row in enumerate(rows):
        unseen = np.setdiff1d(np.arange(plain.shape[1]), row)
        best = unseen[np.argsort(-plain[r, unseen], kind="stable")]
        pool, rest = best[:4], best[4:]
        # the pool is the scorer's best 4, reordered by the weight; the rest below, in order
        z = (plain[r, pool] - plain[r, pool].mean()) / plain[r, pool].std()
        assert np.allclose(pooled[r, pool], z - 2.0 * prior[pool], atol=1e-5)
        assert pooled[r, pool].min() > pooled[r, rest].max()
        assert (np.diff(pooled[r, rest]) <= 1e-6).all()
    whole = model.reweighted(plain, -2.0)  # the whole catalogue: obscure items pulled up
    assert not np.allclose(np.argsort(-pooled, 1)[:, :4], np.argsort(-whole, 1)[:, :4])


def test_validation_quality_from_the_top_10_equals_the_registrys() -> None:
    from frugalml.apps.recommend.rungs import _quality

    rng = np.random.default_rng(0)
    scores = rng.standard_normal((30, 50)).astype(np.float32)
    relevance = (rng.random((30, 50)) < 0.1).astype(np.float32)
    outcomes = Outcomes(relevance=relevance, scores=scores, item_popularity=np.zeros(50))
    registry = evaluate(outcomes, ["ndcg@10", "coverage@10"])
    assert _quality(outcomes) == pytest.approx(
        (registry["ndcg_at_10"][0], registry["coverage_at_10"][0])
    )


def test_the_pool_is_chosen_with_the_weight_pinned_by_the_refit_and_saved(
    parts: recommend.RecSplits, tmp_path: Path
) -> None:
    from frugalml.apps.recommend.rungs import EaseConfig, EaseStrategy, _scored

    def fitted(weights: tuple[float, ...], pools: tuple[int | None, ...]) -> Recommender:
        config = EaseConfig(lambdas=(10.0,), popularity_weights=weights, pools=pools,
                            min_coverage=0.0)  # fmt: skip
        return EaseStrategy(config).fit(parts.train, parts.val, budget=None, meter=CostMeter())  # type: ignore[arg-type]

    tried = {p: _scored(fitted((-2.0,), (p,)), parts.val)[0] for p in (None, 3, 8)}
    chosen = fitted((-2.0,), (None, 3, 8)).scorer.settings
    assert chosen["popularity"] == -2.0
    assert tried[chosen["pool"]] == max(tried.values())
    result = recommend.fit(
        parts, out=tmp_path / "run", strategies=("ease",),
        options={"ease": {"lambdas": [10.0], "popularity_weights": [0.0, -2.0],
                          "pools": [3, 8], "min_coverage": 0.0}},
    )  # fmt: skip
    first = frugalml.load(tmp_path / "run" / "bundle").predictor
    assert isinstance(first, Recommender) and first.pool in (3, 8, None)
    loaded = frugalml.load(result.bundle.path).predictor  # the refit, from its files
    assert isinstance(loaded, Recommender)
    assert (loaded.popularity_weight, loaded.pool) == (first.popularity_weight, first.pool)
