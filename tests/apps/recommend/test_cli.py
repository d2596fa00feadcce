"""`frugalml recommend fit|similar` on real files, through the top-level CLI."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from frugalml.cli import app
from tests.apps.recommend.test_recommend import taste_events


def test_recommend_fit_then_similar_from_the_command_line(tmp_path: Path) -> None:
    events, items = taste_events()
    events.to_csv(tmp_path / "events.csv", index=False)
    items.to_csv(tmp_path / "items.csv", index=False)
    runner = CliRunner()
    fitted = runner.invoke(app, [
        "recommend", "fit", str(tmp_path / "events.csv"), str(tmp_path / "items.csv"),
        "--out", str(tmp_path / "run"), "--time-col", "time",
        "--strategies", "popularity,ease",
    ])  # fmt: skip
    assert fitted.exit_code == 0, fitted.output
    assert "chosen: ease" in fitted.output and "ndcg@10" in fitted.output
    bundle = tmp_path / "run" / "refit" / "bundle"
    similar = runner.invoke(app, ["recommend", "similar", str(bundle), "--item", "i12", "--k", "3"])
    assert similar.exit_code == 0, similar.output
    assert all(int(line.split()[1][1:]) >= 10 for line in similar.output.splitlines())
