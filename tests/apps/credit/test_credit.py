"""The credit rungs and report end to end on synthetic applicants: reason codes that add up,
monotone bins, a bundle that loads and serves records (bad ones refused with the field)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

import frugalml
from frugalml.apps.credit.api import CreditResult, fit_credit
from frugalml.apps.credit.boosting import LightgbmPredictor
from frugalml.apps.credit.data import synthetic_applicants
from frugalml.apps.credit.evaluate import cutoff, psi
from frugalml.apps.credit.scorecard import ScorecardPredictor
from frugalml.errors import DataError

pytest.importorskip("optbinning")
pytest.importorskip("lightgbm")


@pytest.fixture(scope="module")
def credit(tmp_path_factory: pytest.TempPathFactory) -> CreditResult:
    frame = synthetic_applicants(900)
    frame["sex"] = np.resize(["f", "m"], len(frame))
    out = tmp_path_factory.mktemp("credit") / "run"
    return fit_credit(frame, out=out, target="status", protected=["sex"], cost_fn=5, cost_fp=1)


def candidate(result: CreditResult, name: str) -> frugalml.Bundle:
    return frugalml.load(result.fit.run_dir / "candidates" / name)


def test_both_rungs_climb_and_the_report_is_written(credit: CreditResult) -> None:
    names = [c.strategy for c in credit.fit.ladder.candidates]
    assert names == ["scorecard", "lightgbm"]
    report = json.loads((credit.fit.run_dir / "credit_report.json").read_text())
    assert report["test"]["auc"] > 0.65  # 135 noisy test rows: chance is 0.5
    assert set(report["fairness"]["sex"]["groups"]) == {"f", "m"}
    assert "sex" not in report["columns"]  # protected: measured, never a feature
    assert 0 < report["decision"]["threshold"] < 1
    assert "Reason codes" in credit.report_md.read_text()


def test_scorecard_points_sum_to_the_score_and_bins_are_monotone(credit: CreditResult) -> None:
    model = candidate(credit, "scorecard").predictor
    assert isinstance(model, ScorecardPredictor)
    data = synthetic_applicants(50, seed=3).drop(columns=["status", "applicant_id"])
    data = data.to_dict("records")
    points, score = model.points(data), model.score(data)
    assert np.array_equal(points.sum(axis=1), score)
    raw = model.logits(data)[:, 1]
    assert np.allclose(score, model.offset - model.factor * raw, atol=1e-9)
    for f in model.features:
        if f.numeric and len(f.woe) > 2:
            steps = np.diff(f.woe)
            assert (steps >= 0).all() or (steps <= 0).all(), f.name
    reasons = model.explain(data[:3])
    assert all(len(r) <= 3 and all(x["unit"] == "points" for x in r) for r in reasons)


def test_lightgbm_contributions_sum_to_the_raw_score(credit: CreditResult) -> None:
    model = candidate(credit, "lightgbm").predictor
    assert isinstance(model, LightgbmPredictor)
    data = (
        synthetic_applicants(40, seed=4).drop(columns=["status", "applicant_id"]).to_dict("records")
    )
    contributions = model.contributions(data)
    assert np.abs(contributions.sum(axis=1) - model.raw(data)).max() < 1e-6
    # calibrated on out-of-fold scores over all of train: the ladder leaves temperature at 1
    assert model.calibration and model.platt != (1.0, 0.0) and model.temperature == 1.0
    assert candidate(credit, "scorecard").predictor.temperature != 1.0  # fitted on val
    assert "job_title" in model.names  # the text column enters as a score


def test_bundle_predict_checks_records_and_gives_reasons(credit: CreditResult) -> None:
    bundle = frugalml.load(credit.fit.run_dir / "bundle")
    record = bundle.predictor.schema.example()
    answer = bundle.predict([record])[0]
    assert set(answer) == {"label", "probabilities", "reasons"}
    with pytest.raises(DataError) as err:
        bundle.predict([{**record, "income": "high"}])
    assert "income" in err.value.problems[0]


def test_records_are_served_and_bad_ones_refused_naming_the_field(
    credit: CreditResult,
) -> None:
    from tests.serve.harness import serving, wait_ready

    bundle = credit.fit.run_dir / "bundle"
    record = frugalml.load(bundle).predictor.schema.example()
    with serving(bundle) as url:
        wait_ready(url)
        ok = httpx.post(f"{url}/v1/predict", json={"records": [record, record]})
        assert ok.status_code == 200, ok.text
        predictions = ok.json()["predictions"]
        assert len(predictions) == 2 and "reasons" in predictions[0]
        missing = {k: v for k, v in record.items() if k != "debt"}
        refused = httpx.post(f"{url}/v1/predict", json={"records": [record, missing]})
        assert refused.status_code == 422
        error = refused.json()["error"]
        assert (
            error["code"] == "missing_field" and error["item"] == 1 and "'debt'" in error["message"]
        )
        typed = httpx.post(f"{url}/v1/predict", json={"records": [{**record, "income": "x"}]})
        assert (
            typed.status_code == 422 and typed.json()["error"]["problems"][0]["field"] == "income"
        )
        texts = httpx.post(f"{url}/v1/predict", json={"texts": ["hello"]})
        assert texts.status_code == 422 and texts.json()["error"]["code"] == "texts_not_supported"


def test_cutoff_minimises_expected_cost() -> None:
    p = np.array([0.05, 0.1, 0.3, 0.6, 0.9])
    y = np.array([0, 0, 1, 1, 1])
    d = cutoff(p, y, cost_fn=5, cost_fp=1)
    assert d["threshold"] == pytest.approx(0.3) and d["expected_cost"] == 0.0
    assert d["approval_rate"] == pytest.approx(0.4)


def test_psi_is_zero_for_the_same_population_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=5000)
    assert psi(x, x) == pytest.approx(0.0, abs=1e-9)
    assert psi(x, x + 1) > 0.25
    assert psi(np.array(["a", "b"] * 50, dtype=object), np.array(["a"] * 100, dtype=object),
               categorical=True) > 0.25  # fmt: skip


def test_no_pickles_and_the_model_files_are_json_text_and_onnx(credit: CreditResult) -> None:
    """The shipped LightGBM bundle: schema and features JSON, the booster's text (for TreeSHAP
    reasons) and its ONNX graph (for probabilities)."""
    assert credit.fit.ladder.chosen.strategy == "lightgbm"
    files = json.loads((credit.fit.run_dir / "bundle" / "manifest.json").read_text())["files"]
    assert {Path(f).suffix for f in files} == {".json", ".txt", ".onnx"}


def test_lightgbm_compresses_to_onnx_with_probabilities_at_parity(
    credit: CreditResult, tmp_path: Path
) -> None:
    pytest.importorskip("onnxmltools")
    from frugalml.apps.credit.api import split
    from frugalml.ship.compress import compress

    train, val, test, _ = split(credit.validated.dataset, 0)
    source = candidate(credit, "lightgbm")
    result = compress(source.path, train, val, tmp_path / "onnx", to="int8")
    onnx_step = next(s for s in result.steps if s.name == "onnx")
    assert onnx_step.accepted and result.shipped.name == "onnx"
    assert onnx_step.details["parity"]["max_abs_proba_diff"] <= 1e-5
    assert result.skipped["int8"].startswith("nothing to quantize: a 'lightgbm' model")
    shipped = frugalml.load(result.bundle)
    model = shipped.predictor
    assert isinstance(model, LightgbmPredictor) and model.session is not None
    assert shipped.manifest.predictor["format"] == "onnx"
    records = list(test.inputs)
    gap = np.abs(shipped.predict_proba(records) - source.predict_proba(records)).max()
    assert gap <= 1e-5
    assert model.explain(records[:2]) == source.predictor.explain(records[:2])
