"""Fitted runs the recommendation tests share: each is fitted once per session, since the
ladder, not the fixture, is what the tests check (and the fast suite must stay fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

import frugalml
from frugalml.apps import recommend
from tests.apps.recommend.test_recommend import taste_events
from tests.conftest import build_tiny_backbone

TASTE_WORDS = ["space", "war", "love", "story", "robot", "kiss", *map(str, range(30))]


@pytest.fixture(scope="session")
def parts() -> recommend.RecSplits:
    """Two tastes, 40 users, per-user leave-last-out."""
    events, items = taste_events()
    return recommend.split(recommend.read_interactions(events, items, time_col="time"))


@pytest.fixture(scope="session")
def taste_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_backbone(tmp_path_factory.mktemp("taste-bert"), TASTE_WORDS)


@pytest.fixture(scope="session")
def content_run(
    parts: recommend.RecSplits, taste_backbone: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """RUN_DIR of the content rung on the tiny BERT, refitted (RUN_DIR/refit/bundle)."""
    out = tmp_path_factory.mktemp("recommend-content") / "run"
    recommend.fit(
        parts, out=out, strategies=("content",),
        # text alone: an item added later has no popularity yet, so a popularity weight
        # (chosen on validation otherwise) would rightly rank it below the chosen ones
        options={"content": {"backbone": str(taste_backbone), "cache": False,
                             "popularity_weights": [0.0]}},
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def ease_run(
    parts: recommend.RecSplits, tmp_path_factory: pytest.TempPathFactory
) -> frugalml.FitResult:
    """Popularity and EASE climbed, the chosen one refitted (its run_dir: RUN/refit)."""
    out = tmp_path_factory.mktemp("recommend-ease") / "run"
    return recommend.fit(parts, out=out, strategies=("popularity", "ease"))
