"""Tabular data: typed columns detected from a table, a binary target, and the checks a risk
team would ask for before any model is fitted.

A table becomes a `Dataset` of kind "tabular" whose inputs are `Records`: rows as dicts to a
caller, one pandas frame underneath (typed once: floats for numbers, booleans and dates,
strings for categories and text). The `TabularSchema` travels with the model into its
bundle, so serving checks each record against the columns the model was trained on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args, overload

import numpy as np

from frugalml.errors import DataError, plural

if TYPE_CHECKING:
    import pandas as pd

    from frugalml.data.dataset import Dataset
    from frugalml.data.load import Table

ColumnType = Literal["numeric", "categorical", "boolean", "date", "text"]
TRUE = frozenset({"true", "yes", "y", "t", "1"})
FALSE = frozenset({"false", "no", "n", "f", "0"})
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
PARSE_SHARE = 0.95  # of a column's present values that must parse as numbers (dates) to be so
HIGH_CARDINALITY = 50  # categorical levels above which a column is flagged
LEAK_AUC = 0.95  # a column alone ranking the target this well is a leakage suspect
# Columns together ranking the target this well (a linear model on their signed logs,
# cross-validated) hide a leak no column shows alone: installment / loan_amount with term
# fixes a loan's interest rate, so its grade. Real applicant data stays far below (credit_data
# 0.84, lending_club 0.75).
JOINT_LEAK_AUC = 0.97
# Names that say a value is known only after the outcome (payments, recoveries, status).
AFTER_OUTCOME = re.compile(
    r"(^|_)(paid|payment|pymnt|recover(y|ies)?|settle(ment)?|charge_?off|loan_status|"
    r"outcome|collection_recovery|last_pymnt|out_prncp|total_rec)(_|$)"
    r"|^(balance|outstanding_balance|current_balance)$",  # a loan's balance, not 'carrying' one
    re.IGNORECASE,
)
ID_NAME = re.compile(r"(^|_)(id|uuid|key|index|rownames|row_?id|record_?id)$", re.IGNORECASE)


@dataclass(frozen=True)
class Column:
    """One input column: its name, type, and (categorical) the levels seen in training."""

    name: str
    type: ColumnType
    levels: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "levels": list(self.levels)}


@dataclass(frozen=True)
class TabularSchema:
    """The columns a tabular model reads, in order; what a record sent to it must hold."""

    columns: tuple[Column, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def of_type(self, *types: ColumnType) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.type in types)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TabularSchema:
        return cls(
            tuple(Column(c["name"], c["type"], tuple(c.get("levels", ()))) for c in data["columns"])
        )

    def example(self) -> dict[str, Any]:
        """A record of the right shape (zeros, the first level, a short text): what loading a
        bundle predicts once to prove the model answers."""
        values: dict[ColumnType, Any] = {
            "numeric": 0.0, "boolean": False, "date": "2000-01-01", "text": "example",
        }  # fmt: skip
        return {
            c.name: (c.levels[0] if c.levels else "x")
            if c.type == "categorical"
            else values[c.type]
            for c in self.columns
        }

    def problems(self, records: Sequence[Any], *, where: str = "records") -> list[dict[str, Any]]:
        """Every field of every record that does not fit: missing, unknown, or of a wrong
        type. Each problem names the record, the field and what was sent. `null` is a
        missing value, which every column accepts."""
        if isinstance(records, Records):
            return []  # typed from a validated table already
        found: list[dict[str, Any]] = []
        expected = set(self.names)
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                found.append(_problem(i, None, "not_an_object", f"{where}[{i}] is not an object"))
                continue
            for name in sorted(set(record) - expected):
                found.append(
                    _problem(i, name, "unknown_field", f"{where}[{i}] has unknown field "
                             f"{name!r}; the model reads {', '.join(self.names)}")
                )  # fmt: skip
            for column in self.columns:
                if column.name not in record:
                    found.append(
                        _problem(i, column.name, "missing_field", f"{where}[{i}] lacks field "
                                 f"{column.name!r} ({column.type}); send null if it is unknown")
                    )  # fmt: skip
                    continue
                wrong = _wrong_type(column, record[column.name])
                if wrong:
                    found.append(
                        _problem(i, column.name, "wrong_type",
                                 f"{where}[{i}].{column.name} is {wrong}")
                    )  # fmt: skip
        return found

    def frame(self, records: Sequence[Any]) -> pd.DataFrame:
        """The typed frame of `records` (a `Records` or dicts): the one representation every
        tabular model reads, so training and serving convert values the same way."""
        import pandas as pd

        if isinstance(records, Records):
            return records.frame
        raw = pd.DataFrame.from_records(list(records), columns=list(self.names))
        return typed_frame(raw, self)


def _problem(item: int, field_name: str | None, code: str, message: str) -> dict[str, Any]:
    return {"item": item, "field": field_name, "code": code, "message": message}


def _wrong_type(column: Column, value: Any) -> str | None:
    if value is None:
        return None
    if column.type in ("numeric", "boolean") and isinstance(value, bool | int | float):
        return None
    if column.type == "numeric" and isinstance(value, str):
        return f"the string {value[:40]!r}; it must be a number"
    if column.type in ("categorical", "text", "date") and isinstance(value, str | int | float):
        return None
    if column.type == "boolean" and isinstance(value, str) and value.lower() in TRUE | FALSE:
        return None
    kind = type(value).__name__
    allowed = {"numeric": "a number", "boolean": "true or false"}.get(column.type, "a string")
    return f"a {kind}; it must be {allowed}"


class Records(Sequence[dict[str, Any]]):
    """Rows of a typed frame, seen as a sequence of dicts (what `predict` and the server
    take), without copying the frame: models read `frame` directly."""

    def __init__(self, frame: pd.DataFrame, schema: TabularSchema) -> None:
        self.frame = frame.reset_index(drop=True)
        self.schema = schema

    def __len__(self) -> int:
        return len(self.frame)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, i: slice) -> Records: ...

    def __getitem__(self, i: int | slice) -> dict[str, Any] | Records:
        if isinstance(i, slice):
            return Records(self.frame.iloc[i], self.schema)
        row = self.frame.iloc[i]
        return {name: _plain(row[name]) for name in self.schema.names}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def take(self, idx: np.ndarray) -> Records:
        return Records(self.frame.iloc[idx], self.schema)

    def row_hashes(self) -> np.ndarray:
        """One 64-bit hash per row: equal rows share one (they stay in one split)."""
        import pandas as pd

        return pd.util.hash_pandas_object(self.frame, index=False).to_numpy().view(np.int64)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(repr(self.schema.to_dict()).encode())
        digest.update(self.row_hashes().tobytes())
        return digest.hexdigest()


def rows_of(data: Dataset) -> Records:
    """The typed rows of a tabular dataset: what tabular rungs and checks read."""
    if not isinstance(data.records, Records):
        raise TypeError(f"{data.name} is {data.kind} data, not tabular records")
    return data.records


def _plain(value: Any) -> Any:
    """A frame cell as JSON would carry it: None for missing, Python numbers and strings."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def typed_frame(raw: pd.DataFrame, schema: TabularSchema) -> pd.DataFrame:
    """Numbers, booleans and dates as float64 (dates in days since 1970), categories and
    text as strings with None for missing: every model reads this one typing."""
    import pandas as pd

    out: dict[str, Any] = {}
    for column in schema.columns:
        values = raw[column.name] if column.name in raw else pd.Series([None] * len(raw))
        out[column.name] = _typed(values, column.type)
    return pd.DataFrame(out, index=range(len(raw)))


def _typed(values: pd.Series, kind: ColumnType) -> Any:
    import pandas as pd

    present = ~_missing(values)
    if kind == "numeric":
        numbers = pd.to_numeric(values.where(present), errors="coerce")
        return numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    if kind == "boolean":
        text = values.astype(str).str.strip().str.lower()
        return np.where(
            present & text.isin(TRUE), 1.0, np.where(present & text.isin(FALSE), 0.0, np.nan)
        )
    if kind == "date":
        dates = pd.to_datetime(values.where(present), errors="coerce", format="mixed")
        days = (dates - pd.Timestamp("1970-01-01")).dt.total_seconds() / 86400
        return days.to_numpy(dtype=np.float64, na_value=np.nan)
    strings = values.astype(object).where(present, None)
    return np.array([None if v is None else str(v).strip() for v in strings], dtype=object)


def _missing(values: pd.Series) -> np.ndarray:
    is_na = values.isna().to_numpy()
    as_text = values.astype(str).str.strip().str.lower()
    return np.asarray(is_na | as_text.isin(MISSING).to_numpy())


@dataclass
class TabularValidated:
    """A tabular dataset and what the user should read about how it was built."""

    dataset: Dataset
    schema: TabularSchema
    target: str
    positive: str
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # leakage and other suspicions
    dropped: dict[str, str] = field(default_factory=dict)  # column -> why


@dataclass(frozen=True)
class Overrides:
    """Column types the user forces (`--numeric`, `--categorical`, `--text`, `--drop`) and
    leakage suspects to keep anyway (`--keep`)."""

    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    text: tuple[str, ...] = ()
    boolean: tuple[str, ...] = ()
    date: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()

    def forced(self) -> dict[str, ColumnType]:
        kinds: dict[str, ColumnType] = {}
        for kind in get_args(ColumnType):
            kinds.update(dict.fromkeys(getattr(self, kind), kind))
        return kinds

    def named(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.text, *self.boolean, *self.date,
                *self.drop, *self.keep]  # fmt: skip


def to_tabular(
    table: Table | pd.DataFrame,
    *,
    target: str,
    positive: str | None = None,
    overrides: Overrides | None = None,
    name: str = "data",
    task: str = "tabular-classification",
) -> TabularValidated:
    """Detect column types, check the target and every column, and build a tabular Dataset.

    Problems that stop a fit (no such column, a target of one class or of more than two
    without `positive`, an override naming no column) are raised together as one DataError.
    Constant and ID-like columns are dropped with a note; leakage suspects (a column that
    alone ranks the target with AUC ≥ 0.95, or whose name says it is known only after the
    outcome) are dropped with a warning unless kept with `overrides.keep`.
    """
    import pandas as pd

    frame = table if isinstance(table, pd.DataFrame) else table.frame
    source = name if isinstance(table, pd.DataFrame) else table.source
    overrides = overrides or Overrides()
    problems = [
        f"--{flag} names column '{col}', which {source} does not have"
        + _closest(col, list(frame.columns))
        for flag in ("numeric", "categorical", "text", "boolean", "date", "drop", "keep")
        for col in getattr(overrides, flag)
        if col not in frame.columns
    ]
    y, labels, target_problems = _target(frame, target, positive, source)
    problems += target_problems
    if problems:
        raise DataError(f"{source} has {plural(len(problems), 'problem')}:", problems)
    assert y is not None
    result = TabularValidated(None, TabularSchema(()), target, labels[1])  # type: ignore[arg-type]
    forced = overrides.forced()
    columns: list[Column] = []
    for col in frame.columns:
        if col == target:
            continue
        if col in overrides.drop:
            result.dropped[col] = "--drop"
            continue
        column, why = _detect(str(col), frame[col], forced.get(str(col)))
        if why:
            result.dropped[col] = why
            result.notes.append(f"column '{col}' dropped: {why}")
            continue
        columns.append(column)
    schema = TabularSchema(tuple(columns))
    typed = typed_frame(frame, schema)
    _check_columns(typed, schema, y, overrides, result)
    _check_joint_leak(typed, schema, y, overrides, result)
    kept = tuple(c for c in schema.columns if c.name not in result.dropped)
    if not kept:
        raise DataError(
            f"{source} has no usable feature column left",
            [*(f"'{c}': {why}" for c, why in result.dropped.items())],
        )
    schema = TabularSchema(kept)
    records = Records(typed[list(schema.names)], schema)
    from frugalml.data.dataset import Dataset

    result.schema = schema
    result.dataset = Dataset((), y, labels, name, task, "tabular", records=records)
    return result


def _closest(name: str, options: list[Any]) -> str:
    import difflib

    close = difflib.get_close_matches(name, [str(o) for o in options], n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _target(
    frame: pd.DataFrame, target: str, positive: str | None, source: str
) -> tuple[np.ndarray | None, tuple[str, str], list[str]]:
    """Integer labels (1 = `positive`, the outcome predicted, e.g. 'bad') and the label map."""
    if target not in frame.columns:
        return (
            None,
            ("", ""),
            [
                f"no target column '{target}' (columns: {', '.join(map(str, frame.columns))})"
                + _closest(target, list(frame.columns))
            ],
        )
    values = frame[target]
    present = ~_missing(values)
    as_text = values.astype(str).str.strip()
    classes = sorted(set(as_text[present]))
    problems = []
    if (~present).any():
        problems.append(
            f"target '{target}': {plural(int((~present).sum()), 'row')} have no value "
            f"(first at row {int(np.flatnonzero(~present)[0])}); drop them first"
        )
    if len(classes) < 2:
        problems.append(
            f"target '{target}' has one class ({classes[0] if classes else 'none'}); a "
            "default model needs both outcomes"
        )
        return None, ("", ""), problems
    if positive is None:
        if len(classes) > 2:
            problems.append(
                f"target '{target}' has {len(classes)} classes ({', '.join(classes[:8])}); "
                "pass --positive LABEL (or several, comma-separated) for the outcome to predict"
            )
            return None, ("", ""), problems
        positive = next((c for c in classes if c.lower() in ("bad", "default", "1", "yes")),
                        classes[1])  # fmt: skip
    wanted = [p.strip() for p in positive.split(",")]
    missing = [p for p in wanted if p not in classes]
    if missing:
        problems.append(
            f"--positive {', '.join(missing)}: not a value of '{target}' "
            f"(values: {', '.join(classes[:8])})"
        )
    if problems:
        return None, ("", ""), problems
    is_pos = as_text.isin(wanted).to_numpy()
    rest = sorted(set(classes) - set(wanted))
    negative = rest[0] if len(rest) == 1 else "not " + "/".join(wanted)
    return is_pos.astype(np.int64), (negative, "/".join(wanted)), []


def _detect(name: str, values: pd.Series, forced: ColumnType | None) -> tuple[Column, str]:
    """The column's type, or why it is dropped (constant, ID-like, empty)."""
    present = ~_missing(values)
    shown = values[present]
    n = int(present.sum())
    if n == 0:
        return Column(name, "numeric"), "every value is missing"
    distinct = shown.astype(str).str.strip().nunique()
    if distinct == 1 and forced is None:
        return Column(name, "numeric"), f"constant (every value is {shown.iloc[0]!r})"
    kind = forced or _guess(shown, distinct, n)
    if forced is None and _id_like(name, shown, kind, distinct, n):
        return Column(name, kind), "ID-like (every value distinct); pass --numeric or " \
            "--categorical to keep it"  # fmt: skip
    levels: tuple[str, ...] = ()
    if kind == "categorical":
        counts = shown.astype(str).str.strip().value_counts()
        levels = tuple(str(v) for v in counts.index)
    return Column(name, kind, levels), ""


def _guess(shown: pd.Series, distinct: int, n: int) -> ColumnType:
    import pandas as pd

    text = shown.astype(str).str.strip()
    if set(text.str.lower().unique()) <= TRUE | FALSE and distinct == 2:
        return "boolean"
    if pd.to_numeric(text, errors="coerce").notna().mean() >= PARSE_SHARE:
        return "numeric"
    sample = text.iloc[: min(len(text), 500)]
    if _looks_like_dates(sample):
        return "date"
    words = float(sample.str.count(r"\S+").mean())
    if distinct > HIGH_CARDINALITY and (words >= 3 or (distinct / n > 0.1 and words > 1.2)):
        return "text"
    return "categorical"


def _looks_like_dates(sample: pd.Series) -> bool:
    import pandas as pd

    if not sample.str.contains(r"\d").mean() >= PARSE_SHARE:
        return False
    parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() >= PARSE_SHARE)


def _id_like(name: str, shown: pd.Series, kind: ColumnType, distinct: int, n: int) -> bool:
    if kind in ("text", "boolean", "date") or distinct < 0.98 * n:
        return False
    if kind == "categorical" or ID_NAME.search(name):
        return True
    import pandas as pd

    numbers = pd.to_numeric(shown, errors="coerce").to_numpy(dtype=np.float64)
    integral = bool(np.all(np.mod(numbers, 1) == 0))
    return integral and (bool(np.all(np.diff(numbers) > 0)) or bool(np.all(np.diff(numbers) < 0)))


def _check_columns(
    typed: pd.DataFrame,
    schema: TabularSchema,
    y: np.ndarray,
    overrides: Overrides,
    result: TabularValidated,
) -> None:
    """Notes on missing values and high-cardinality categoricals; leakage warnings."""
    for column in schema.columns:
        values = typed[column.name]
        n_missing = int(values.isna().sum())
        if n_missing:
            how = {"categorical": "a level of its own", "text": "an empty text"}
            result.notes.append(
                f"column '{column.name}': {plural(n_missing, 'value')} missing "
                f"({n_missing / len(values):.1%}), kept as {how.get(column.type, 'its own bin')}"
            )
        if column.type == "categorical" and len(column.levels) > HIGH_CARDINALITY:
            result.warnings.append(
                f"column '{column.name}' is a categorical with {len(column.levels)} levels "
                f"(> {HIGH_CARDINALITY}); rare levels carry little evidence: group them, or pass "
                f"--text {column.name} if it is free text"
            )
        why = _leak(column, values, y)
        if why and column.name not in overrides.keep:
            result.dropped[column.name] = "leakage suspect"
            result.warnings.append(
                f"possible leakage, column '{column.name}' dropped: {why}; pass --keep "
                f"{column.name} if it is known when the decision is made"
            )


def _leak(column: Column, values: pd.Series, y: np.ndarray) -> str:
    if AFTER_OUTCOME.search(column.name):
        return "its name says it is known only after the outcome"
    if column.type == "text":
        return ""
    score = _cross_fitted(values, y) if column.type == "categorical" else values.to_numpy()
    auc = single_column_auc(np.asarray(score, dtype=np.float64), y)
    if auc >= LEAK_AUC:
        return f"alone it ranks the target with AUC {auc:.3f}"
    return ""


def _check_joint_leak(
    typed: pd.DataFrame,
    schema: TabularSchema,
    y: np.ndarray,
    overrides: Overrides,
    result: TabularValidated,
) -> None:
    """Columns that together give the target away: when the kept columns rank it with AUC
    ≥ JOINT_LEAK_AUC, the ones whose removal alone costs the most are the carriers; they are
    dropped (all but those `--keep` names: leaving out any one breaks such a leak)."""
    columns = [c for c in schema.columns if c.type != "text" and c.name not in result.dropped]
    if len(columns) < 2 or min(int(y.sum()), int(len(y) - y.sum())) < 10:
        return
    matrix = {c.name: _joint_feature(c, typed[c.name], y) for c in columns}
    together = _joint_auc(matrix, y)
    if together < JOINT_LEAK_AUC:
        return
    without = {name: _joint_auc({k: v for k, v in matrix.items() if k != name}, y)
               for name in matrix}  # fmt: skip
    carriers = [n for n, auc in sorted(without.items(), key=lambda kv: kv[1])
                if auc < together - 0.05][:5]  # fmt: skip
    if not carriers:
        return
    shown = ", ".join(f"'{n}' (without it {without[n]:.3f})" for n in carriers)
    dropped = [n for n in carriers if n not in overrides.keep]
    for n in dropped:
        result.dropped[n] = "leakage suspect (with other columns)"
    result.warnings.append(
        f"possible leakage across columns: together the kept columns rank the target with "
        f"AUC {together:.3f}, carried by {shown}; "
        + (f"dropped {', '.join(repr(n) for n in dropped)}: pass --keep for those known "
           "when the decision is made (dropping any one of them breaks such a leak)"
           if dropped else "all kept by --keep")
    )  # fmt: skip


def _joint_feature(column: Column, values: pd.Series, y: np.ndarray) -> np.ndarray:
    """One column as a number for the joint check: categories as cross-fitted target rates,
    numbers as signed logs (so ratios and products become sums a linear model can use)."""
    if column.type == "categorical":
        return _cross_fitted(values, y)
    x = values.to_numpy(dtype=np.float64)
    return np.asarray(np.sign(x) * np.log1p(np.abs(x)))


def _joint_auc(matrix: dict[str, np.ndarray], y: np.ndarray) -> float:
    """2-fold cross-validated AUC of a logistic regression on standardized columns (median
    for missing values, plus a missing flag per column that has any)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    X = np.column_stack(list(matrix.values()))
    missing = np.isnan(X)
    X = np.where(missing, np.nanmedian(np.where(missing.all(0), 0, X), axis=0), X)
    X = (X - X.mean(0)) / np.maximum(X.std(0), 1e-12)
    X = np.column_stack([X, missing[:, missing.any(0)]])
    folds = StratifiedKFold(2, shuffle=True, random_state=0)
    score = cross_val_predict(LogisticRegression(max_iter=2000), X, y, cv=folds,
                              method="decision_function")  # fmt: skip
    return float(roc_auc_score(y, score))


def _cross_fitted(values: pd.Series, y: np.ndarray) -> np.ndarray:
    """Each row's level scored by the target rate of that level in the other half of the
    rows: a many-level column (an employment title) does not look predictive in-sample only."""
    import pandas as pd

    half = np.arange(len(values)) % 2 == 0
    out = np.full(len(values), np.nan)
    key = values.fillna("<missing>").astype(str)
    for part in (half, ~half):
        rates = pd.Series(y[~part]).groupby(key[~part].to_numpy()).mean()
        out[part] = key[part].map(rates).to_numpy(dtype=np.float64)
    return out


def single_column_auc(score: np.ndarray, y: np.ndarray) -> float:
    """The AUC of one column used as a score, either direction; missing values rank as one
    group at the middle."""
    from scipy.stats import rankdata

    filled = np.where(
        np.isnan(score), np.nanmedian(score) if np.isfinite(score).any() else 0, score
    )
    ranks = rankdata(filled)
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    auc = (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return float(max(auc, 1 - auc))
