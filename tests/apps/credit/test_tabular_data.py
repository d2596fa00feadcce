"""Tabular data in: column types detected and overridable, ID-like and constant columns
dropped with a note, leakage suspects dropped with a warning, every problem at once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from frugalml.apps.credit.data import synthetic_applicants
from frugalml.data.split import stratified_split
from frugalml.data.tabular import Overrides, to_tabular
from frugalml.errors import DataError


def test_types_are_detected_and_ids_dropped_with_a_note() -> None:
    frame = synthetic_applicants(300)
    frame["opened"] = pd.date_range("2019-01-01", periods=300, freq="D").strftime("%Y-%m-%d")
    frame["country"] = "FR"
    v = to_tabular(frame, target="status")
    types = {c.name: c.type for c in v.schema.columns}
    assert types == {
        "income": "numeric", "debt": "numeric", "records": "boolean", "home": "categorical",
        "age": "numeric", "job_title": "text", "opened": "date",
    }  # fmt: skip
    assert v.dropped["applicant_id"].startswith("ID-like")
    assert v.dropped["country"].startswith("constant")
    assert any("'income'" in n and "missing" in n for n in v.notes)
    assert v.dataset.labels == ("good", "bad") and v.positive == "bad"
    assert v.dataset.kind == "tabular" and len(v.dataset) == 300


def test_overrides_force_types_and_drop_columns() -> None:
    frame = synthetic_applicants(200)
    v = to_tabular(frame, target="status",
                   overrides=Overrides(categorical=("age",), drop=("debt",)))  # fmt: skip
    types = {c.name: c.type for c in v.schema.columns}
    assert types["age"] == "categorical" and "debt" not in types
    assert v.dropped["debt"] == "--drop"


def test_every_problem_is_reported_at_once() -> None:
    frame = synthetic_applicants(100)
    frame["status"] = "good"
    with pytest.raises(DataError) as err:
        to_tabular(frame, target="status", overrides=Overrides(numeric=("incme",)))
    problems = err.value.problems
    assert len(problems) == 2
    assert "'incme'" in problems[0] and "did you mean 'income'" in problems[0]
    assert "one class" in problems[1]


def test_a_many_class_target_needs_a_positive_label() -> None:
    frame = synthetic_applicants(100)
    frame["status"] = np.resize(["A", "B", "C"], 100)
    with pytest.raises(DataError, match="pass --positive"):
        to_tabular(frame, target="status")
    v = to_tabular(frame, target="status", positive="B,C")
    assert v.dataset.labels == ("A", "B/C")
    assert v.dataset.y.sum() == int(frame["status"].isin(["B", "C"]).sum())


def test_leakage_suspects_are_dropped_with_a_warning_unless_kept() -> None:
    frame = synthetic_applicants(400)
    frame["recovered"] = np.where(frame["status"] == "bad", 1.0, 0.0) + 0.001 * np.arange(400)
    frame["paid_total"] = 1.0 + np.arange(400) % 7  # known only after the outcome, by name
    v = to_tabular(frame, target="status")
    assert v.dropped["recovered"] == v.dropped["paid_total"] == "leakage suspect"
    assert any("AUC 1.000" in w and "'recovered'" in w for w in v.warnings)
    assert any("after the outcome" in w and "'paid_total'" in w for w in v.warnings)
    frame["num_cc_carrying_balance"] = np.arange(400) % 5  # known at application time
    assert "num_cc_carrying_balance" in to_tabular(frame, target="status").schema.names
    kept = to_tabular(frame, target="status", overrides=Overrides(keep=("recovered",)))
    assert "recovered" in kept.schema.names


def test_a_leak_across_columns_is_caught_and_its_carriers_dropped() -> None:
    """A rate no column holds (installment / amount) but that fixes the target: each column
    alone ranks it poorly, together a linear model on their logs ranks it almost perfectly."""
    rng = np.random.default_rng(0)
    frame = synthetic_applicants(600)
    rate = rng.uniform(0.05, 0.25, 600)
    frame["amount"] = rng.lognormal(9, 0.6, 600).round(0)
    frame["installment"] = (frame["amount"] * rate).round(2)
    frame["status"] = np.where(rate > 0.17, "bad", "good")
    v = to_tabular(frame, target="status")
    assert v.dropped["installment"] == v.dropped["amount"] == "leakage suspect (with other columns)"
    assert any("across columns" in w and "'installment'" in w for w in v.warnings)
    assert "income" in v.schema.names  # innocent columns stay
    kept = to_tabular(frame, target="status", overrides=Overrides(keep=("amount",)))
    assert "amount" in kept.schema.names and "installment" not in kept.schema.names


def test_real_applicant_columns_raise_no_joint_leak_warning() -> None:
    v = to_tabular(synthetic_applicants(600), target="status")
    assert not any("across columns" in w for w in v.warnings) and not v.dropped.keys() - {
        "applicant_id"
    }


def test_a_many_level_title_is_not_mistaken_for_leakage() -> None:
    """Target rates of a level are cross-fitted: a level seen once predicts nothing."""
    frame = synthetic_applicants(400)
    frame["code"] = [f"c{i // 2}" for i in range(400)]  # 200 levels, two rows each
    v = to_tabular(frame, target="status", overrides=Overrides(categorical=("code",)))
    assert "code" in v.schema.names
    assert any("'code' is a categorical with 200 levels" in w for w in v.warnings)


def test_records_split_keep_schema_and_fingerprint() -> None:
    data = to_tabular(synthetic_applicants(300), target="status").dataset
    splits = stratified_split(data, seed=0)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 300
    assert splits.test.records is not None and splits.test.records.schema == data.records.schema
    record = splits.test.inputs[0]
    assert set(record) == set(data.records.schema.names)
    assert splits.train.fingerprint() != splits.val.fingerprint()
    assert (
        data.fingerprint()
        == to_tabular(synthetic_applicants(300), target="status").dataset.fingerprint()
    )


def test_schema_names_every_bad_field() -> None:
    schema = to_tabular(synthetic_applicants(100), target="status").schema
    good = schema.example()
    assert schema.problems([good]) == []
    bad = {**good, "income": "lots", "extra": 1}
    del bad["debt"]
    found = {(p["field"], p["code"]) for p in schema.problems([good, bad])}
    assert found == {("income", "wrong_type"), ("extra", "unknown_field"),
                     ("debt", "missing_field")}  # fmt: skip
    assert schema.problems([{**good, "income": None}]) == []  # null is a missing value
