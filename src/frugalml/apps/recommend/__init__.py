"""Personalised recommendation: interactions and item text in, the cheapest recommender that
is good enough out, climbed on the one ladder and served with `/v1/recommend`.

    from frugalml.apps import recommend
    events = recommend.read_interactions("ratings.csv", "movies.csv", text_cols=("title",))
    parts = recommend.split(events)                       # per-user leave-last-out
    result = recommend.fit(parts, out="runs/movies", target=0.3)   # ndcg@10
"""

from frugalml.apps.recommend.data import (
    Catalogue,
    Interactions,
    RecSplits,
    read_interactions,
    split,
)
from frugalml.apps.recommend.demo import movielens
from frugalml.apps.recommend.fit import RUNGS, evaluate, fit

__all__ = [
    "RUNGS",
    "Catalogue",
    "Interactions",
    "RecSplits",
    "evaluate",
    "fit",
    "movielens",
    "read_interactions",
    "split",
]
