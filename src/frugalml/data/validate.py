"""Turn a loaded table into a Dataset, reporting every problem at once.

Each problem says where (column, line), what was found, and the likely fix, so that a
user can repair a file in one pass instead of one error per run.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from frugalml.data.dataset import Dataset
from frugalml.data.load import Table
from frugalml.data.split import duplicate_groups
from frugalml.errors import DataError, plural

if TYPE_CHECKING:  # tables hold pandas frames, which their readers import
    import pandas as pd

TEXT_COLUMN_NAMES = ("text", "sentence", "question", "utterance", "query", "review", "content")
LABEL_COLUMN_NAMES = ("label", "labels", "category", "intent", "class", "sentiment", "target")
FREE_TEXT_UNIQUE_SHARE = 0.5  # a label column with more unique values than this looks like text
FREE_TEXT_MIN_ROWS = 20
# A text column where this share of values are numbers, or distinct one-word codes with
# digits, gives a model nothing to learn from: warn (issue 11 shipped a chance-level model).
UNLEARNABLE_SHARE = 0.9
UNLEARNABLE_SAMPLE = 20_000  # values looked at, evenly spaced: a warning needs no full scan
_NUMBER = re.compile(r"[-+]?(\d[\d,_ ]*)?[.,]?\d+([eE][-+]?\d+)?%?")
_CODE = re.compile(r"[\w#:./-]*\d[\w#:./-]*", re.ASCII)


@dataclass
class Validated:
    dataset: Dataset
    text_col: str
    label_col: str
    notes: list[str] = field(default_factory=list)


def to_dataset(
    table: Table,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    drop_invalid: bool = False,
    min_per_class: int = 3,
    name: str | None = None,
) -> Validated:
    """Validate `table` and build a Dataset; raise DataError listing every problem found.

    `min_per_class` is what the split needs: 3 for train/validation/test, 2 when the
    user brings a test set, 1 for that test set (which may hold a single class).
    With `drop_invalid`, offending rows are dropped and noted.
    """
    import pandas as pd

    frame = table.frame
    text_col, label_col = _text_and_label_columns(table, text_col, label_col)
    texts = _as_strings(frame[text_col])
    labels = _as_strings(frame[label_col])
    problems, drop = _empty_values(table, {text_col: texts, label_col: labels})
    # integer views shared by every check: 8 bytes a row, not a copy of the strings
    groups = duplicate_groups(texts)
    codes, names = pd.factorize(pd.Series(labels, dtype=object))
    conflicts = _conflicting_texts(texts, labels, codes, groups, drop, table)
    if conflicts:
        problems.append(conflicts[0])
        drop |= conflicts[1]

    counts = np.bincount(codes[~drop], minlength=len(names))
    free_text = _free_text_problem(counts, label_col, text_col)
    if free_text:
        raise DataError(
            f"{table.source} has {plural(len(problems) + 1, 'problem')}:", [*problems, free_text]
        )
    distinct = _distinct_per_class(codes[~drop], groups[~drop], len(names))
    rare = np.flatnonzero((counts > 0) & (distinct < min_per_class))
    for c in rare:
        problems.append(
            _rare_class_problem(str(names[int(c)]), int(counts[c]), int(distinct[c]), min_per_class)
        )
    drop |= np.isin(codes, rare)
    needed = min(2, min_per_class)  # training needs two classes; a test set may hold one
    enough = int((counts > 0).sum()) - len(rare)
    if enough < needed:
        raise DataError(
            f"{table.source} has {plural(len(problems) + 1, 'problem')}:",
            [
                *problems,
                f"column '{label_col}' has {_classes(enough)} with enough "
                f"examples; {'classification' if needed == 2 else 'a test set'} needs at least "
                f"{_classes(needed)}",
            ],
        )

    if problems and not drop_invalid:
        raise DataError(f"{table.source} has {plural(len(problems), 'problem')}:", problems)
    notes = []
    if problems:
        notes.append(
            f"--drop-invalid: dropped {plural(int(drop.sum()), 'row')} of {len(frame)} "
            f"for: {'; '.join(p.split(';')[0] for p in problems)}"
        )
    keep = ~drop
    notes += _duplicates_note(groups[keep]) + _unlearnable_note(texts, keep, text_col)
    dataset = Dataset.from_lists(
        [t for t, k in zip(texts, keep, strict=True) if k],
        [label for label, k in zip(labels, keep, strict=True) if k],
        name=name or table.source,
    )
    return Validated(dataset, text_col, label_col, notes)


def _text_and_label_columns(
    table: Table, text_col: str | None, label_col: str | None
) -> tuple[str, str]:
    text, text_problems = _pick_column(table.frame, text_col, TEXT_COLUMN_NAMES, "text")
    label, label_problems = _pick_column(table.frame, label_col, LABEL_COLUMN_NAMES, "label")
    problems = text_problems + label_problems
    if problems:
        raise DataError(f"{table.source} has {plural(len(problems), 'problem')}:", problems)
    assert text is not None and label is not None
    if text == label:
        raise DataError(
            f"{table.source}: text and label are both column '{text}'",
            ["pass different --text-col and --label-col"],
        )
    return text, label


def _empty_values(table: Table, columns: dict[str, list[str]]) -> tuple[list[str], np.ndarray]:
    problems, drop = [], np.zeros(len(table.frame), dtype=bool)
    for column, values in columns.items():
        empty = np.fromiter((v == "" for v in values), dtype=bool, count=len(values))
        if empty.any():
            first = table.where(int(np.argmax(empty)))
            problems.append(
                f"column '{column}': {plural(int(empty.sum()), 'row')} "
                f"{'is' if empty.sum() == 1 else 'are'} empty (first at {first}); "
                "fill them in or pass --drop-invalid"
            )
            drop |= empty
    return problems, drop


def _pick_column(
    frame: pd.DataFrame,
    wanted: str | None,
    candidates: Sequence[str],
    role: str,
) -> tuple[str | None, list[str]]:
    columns = [str(c) for c in frame.columns]
    if wanted is not None:
        if wanted in columns:
            return wanted, []
        close = difflib.get_close_matches(wanted, columns, n=1, cutoff=0.5)
        lowered = [c for c in columns if c.lower() == wanted.lower()]
        hints = lowered or close
        hint = hints[0] if hints else None
        fix = f"did you mean '{hint}'?" if hint else f"pass --{role}-col with one of them"
        return None, [f"column '{wanted}' not found (columns: {', '.join(columns)}); {fix}"]
    by_lower = {c.lower(): c for c in columns}
    for name in candidates:
        if name in by_lower:
            return by_lower[name], []
    return None, [
        f"no {role} column found among {', '.join(columns)} (looked for "
        f"{', '.join(candidates[:4])}, ...); pass --{role}-col NAME"
    ]


def _as_strings(column: pd.Series) -> list[str]:
    """Missing values become '' (reported as empty); numbers keep their written form."""
    return ["" if _is_missing(v) else str(v).strip() for v in column.tolist()]


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _conflicting_texts(
    texts: list[str],
    labels: list[str],
    codes: np.ndarray,
    groups: np.ndarray,
    skip: np.ndarray,
    table: Table,
) -> tuple[str, np.ndarray] | None:
    """Copies of a text (one `groups` id) under different labels: none of them can be trusted."""
    import pandas as pd

    rows = np.flatnonzero(~skip)
    n_labels = int(codes.max(initial=0)) + 1
    keys = groups[rows] * n_labels + codes[rows]  # one per (text, label) pair
    pairs = pd.unique(keys)  # in order of first appearance
    pair_groups = pairs // n_labels
    bad = np.flatnonzero(np.bincount(pair_groups) > 1)
    if len(bad) == 0:
        return None
    later = np.ones(len(pairs), dtype=bool)  # pairs after the first of their text
    later[np.unique(pair_groups, return_index=True)[1]] = False
    first_conflict = int(np.argmax(later))
    b = int(rows[np.argmax(keys == pairs[first_conflict])])
    a = int(rows[np.argmax(groups[rows] == pair_groups[first_conflict])])
    shown = texts[a] if len(texts[a]) <= 60 else texts[a][:57] + "..."
    verb = "appears" if len(bad) == 1 else "appear"
    message = (
        f"{plural(len(bad), 'text')} {verb} with conflicting labels (first: "
        f"'{shown}' is '{labels[a]}' at {table.where(a)} and '{labels[b]}' at "
        f"{table.where(b)}); correct the labels or pass --drop-invalid to drop them"
    )
    return message, np.isin(groups, bad)


def _distinct_per_class(codes: np.ndarray, groups: np.ndarray, n_labels: int) -> np.ndarray:
    """Distinct texts per class: copies of a text cannot be split across train and test."""
    import pandas as pd

    pairs = pd.unique(groups * n_labels + codes)
    return np.bincount(pairs % n_labels, minlength=n_labels)


def _rare_class_problem(label: str, n: int, distinct: int, min_per_class: int) -> str:
    has = plural(n, "example") + (
        "" if distinct == n else f" but {plural(distinct, 'distinct text')}"
    )
    needs = f"{min_per_class}" if distinct == n else f"{min_per_class} distinct texts"
    return (
        f"class '{label}' has {has}; a class needs at least {needs} to be split into "
        f"{_split_names(min_per_class)}; add examples, merge or remove the class, or pass "
        "--drop-invalid"
    )


def _duplicates_note(groups: np.ndarray) -> list[str]:
    """How many kept rows repeat an earlier text; the split keeps each text's copies together."""
    sizes = np.bincount(groups)
    sizes = sizes[sizes > 0]
    repeats = int(len(groups) - len(sizes))
    if repeats == 0:
        return []
    texts = int((sizes > 1).sum())
    return [
        f"{plural(repeats, 'row')} {'repeats' if repeats == 1 else 'repeat'} an earlier text "
        f"(ignoring case and spacing; {plural(texts, 'text')} "
        f"{'occurs' if texts == 1 else 'occur'} more than once); each text's copies stay in one "
        "split, so validation and test never score a text seen in training"
    ]


def _unlearnable_note(texts: list[str], keep: np.ndarray, column: str) -> list[str]:
    """A warning when the text column holds numbers or ID-like codes rather than language."""
    rows = np.flatnonzero(keep)
    sample = [texts[i] for i in rows[:: max(1, len(rows) // UNLEARNABLE_SAMPLE)]]
    if not sample:
        return []
    numbers = [t for t in sample if _NUMBER.fullmatch(t)]
    if len(numbers) >= UNLEARNABLE_SHARE * len(sample):
        return [
            f"column '{column}' looks numeric: {len(numbers) / len(sample):.0%} of its values "
            f"are numbers (e.g. '{numbers[0]}'); a text model learns little from them; if "
            "another column holds the text, pass --text-col"
        ]
    codes = [t for t in sample if _CODE.fullmatch(t)]
    if len(set(codes)) >= UNLEARNABLE_SHARE * len(sample):
        return [
            f"column '{column}' looks like identifiers: {len(codes) / len(sample):.0%} of its "
            f"values are distinct single tokens with digits (e.g. '{codes[0]}'); labels cannot "
            "be learned from IDs; if another column holds the text, pass --text-col"
        ]
    return []


def _free_text_problem(counts: np.ndarray, label_col: str, text_col: str) -> str | None:
    """`counts`: rows per label value; mostly unique values are text, not class names."""
    n_rows, n_unique = int(counts.sum()), int((counts > 0).sum())
    if n_rows < FREE_TEXT_MIN_ROWS or n_unique <= FREE_TEXT_UNIQUE_SHARE * n_rows:
        return None
    return (
        f"column '{label_col}' looks like free text, not labels ({n_unique} of "
        f"{n_rows} values are unique); is '{label_col}' the text column? "
        f"pass --label-col with the column of class names (text column: '{text_col}')"
    )


def _classes(n: int) -> str:
    """`plural` would write 'classs'."""
    return f"{n} class" if n == 1 else f"{n} classes"


def _split_names(min_per_class: int) -> str:
    return "train, validation and test" if min_per_class >= 3 else "train and validation"


def prediction_column(table: Table, text_col: str | None = None) -> str:
    """The column of an unlabeled table that holds the texts (`text_col`, else detected)."""
    column, problems = _pick_column(table.frame, text_col, TEXT_COLUMN_NAMES, "text")
    if problems or column is None:
        raise DataError(f"{table.source} has {plural(len(problems), 'problem')}:", problems)
    return column


def texts_for_prediction(table: Table, text_col: str | None = None) -> list[str]:
    """The text column of an unlabeled table; empty texts are an error (nothing to predict)."""
    column = prediction_column(table, text_col)
    texts = _as_strings(table.frame[column])
    empty = [i for i, text in enumerate(texts) if not text]
    if empty:
        raise DataError(
            f"{table.source}: column '{column}' has {plural(len(empty), 'empty row')} "
            f"(first at {table.where(empty[0])}); remove them or fill them in"
        )
    return texts
