"""Turn a loaded table into a Dataset, reporting every problem at once.

Each problem says where (column, line), what was found, and the likely fix, so that a
user can repair a file in one pass instead of one error per run.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from frugalml.data.dataset import Dataset
from frugalml.data.load import Table
from frugalml.errors import DataError, plural

TEXT_COLUMN_NAMES = ("text", "sentence", "question", "utterance", "query", "review", "content")
LABEL_COLUMN_NAMES = ("label", "labels", "category", "intent", "class", "sentiment", "target")
FREE_TEXT_UNIQUE_SHARE = 0.5  # a label column with more unique values than this looks like text
FREE_TEXT_MIN_ROWS = 20


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
    frame = table.frame
    text_col, col_problems = _pick_column(frame, text_col, TEXT_COLUMN_NAMES, "text")
    label_col, label_problems = _pick_column(frame, label_col, LABEL_COLUMN_NAMES, "label")
    problems = col_problems + label_problems
    if problems:
        raise DataError(f"{table.source} has {plural(len(problems), 'problem')}:", problems)
    assert text_col is not None and label_col is not None
    if text_col == label_col:
        raise DataError(
            f"{table.source}: text and label are both column '{text_col}'",
            ["pass different --text-col and --label-col"],
        )

    texts = _as_strings(frame[text_col])
    labels = _as_strings(frame[label_col])
    problems, drop, notes = [], np.zeros(len(frame), dtype=bool), []

    for column, values in ((text_col, texts), (label_col, labels)):
        empty = np.array([v == "" for v in values])
        if empty.any():
            first = table.where(int(np.argmax(empty)))
            problems.append(
                f"column '{column}': {plural(int(empty.sum()), 'row')} "
                f"{'is' if empty.sum() == 1 else 'are'} empty (first at {first}); "
                "fill them in or pass --drop-invalid"
            )
            drop |= empty

    conflicts = _conflicting_texts(texts, labels, drop, table)
    if conflicts:
        problems.append(conflicts[0])
        drop |= conflicts[1]

    valid_labels = [label for label, d in zip(labels, drop, strict=True) if not d]
    free_text = _free_text_problem(valid_labels, label_col, text_col)
    if free_text:
        raise DataError(
            f"{table.source} has {plural(len(problems) + 1, 'problem')}:", [*problems, free_text]
        )

    counts = pd.Series(valid_labels).value_counts()
    rare = counts[counts < min_per_class]
    for label, n in rare.items():
        problems.append(
            f"class '{label}' has {plural(int(n), 'example')}; a class needs at least "
            f"{min_per_class} to be split into {_split_names(min_per_class)}; "
            "add examples, merge or remove the class, or pass --drop-invalid"
        )
    drop |= np.isin(np.asarray(labels, dtype=object), list(rare.index))
    needed = min(2, min_per_class)  # training needs two classes; a test set may hold one
    if len(counts) - len(rare) < needed:
        raise DataError(
            f"{table.source} has {plural(len(problems) + 1, 'problem')}:",
            [
                *problems,
                f"column '{label_col}' has {_classes(len(counts) - len(rare))} with enough "
                f"examples; {'classification' if needed == 2 else 'a test set'} needs at least "
                f"{_classes(needed)}",
            ],
        )

    if problems and not drop_invalid:
        raise DataError(f"{table.source} has {plural(len(problems), 'problem')}:", problems)
    if problems:
        notes.append(
            f"--drop-invalid: dropped {plural(int(drop.sum()), 'row')} of {len(frame)} "
            f"for: {'; '.join(p.split(';')[0] for p in problems)}"
        )
    keep = ~drop
    dataset = Dataset.from_lists(
        [t for t, k in zip(texts, keep, strict=True) if k],
        [label for label, k in zip(labels, keep, strict=True) if k],
        name=name or table.source,
    )
    return Validated(dataset, text_col, label_col, notes)


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
    skip: np.ndarray,
    table: Table,
) -> tuple[str, np.ndarray] | None:
    seen: dict[str, tuple[int, str]] = {}
    bad_texts: set[str] = set()
    first_pair: tuple[int, int] | None = None
    for row, (text, label) in enumerate(zip(texts, labels, strict=True)):
        if skip[row]:
            continue
        key = " ".join(text.lower().split())
        if key in seen and seen[key][1] != label:
            bad_texts.add(key)
            first_pair = first_pair or (seen[key][0], row)
        seen.setdefault(key, (row, label))
    if not bad_texts or first_pair is None:
        return None
    a, b = first_pair
    mask = np.array([" ".join(t.lower().split()) in bad_texts for t in texts])
    shown = texts[a] if len(texts[a]) <= 60 else texts[a][:57] + "..."
    verb = "appears" if len(bad_texts) == 1 else "appear"
    message = (
        f"{plural(len(bad_texts), 'text')} {verb} with conflicting labels (first: "
        f"'{shown}' is '{labels[a]}' at {table.where(a)} and '{labels[b]}' at "
        f"{table.where(b)}); correct the labels or pass --drop-invalid to drop them"
    )
    return message, mask


def _free_text_problem(labels: list[str], label_col: str, text_col: str) -> str | None:
    n_unique = len(set(labels))
    if len(labels) < FREE_TEXT_MIN_ROWS or n_unique <= FREE_TEXT_UNIQUE_SHARE * len(labels):
        return None
    return (
        f"column '{label_col}' looks like free text, not labels ({n_unique} of "
        f"{len(labels)} values are unique); is '{label_col}' the text column? "
        f"pass --label-col with the column of class names (text column: '{text_col}')"
    )


def _classes(n: int) -> str:
    """`plural` would write 'classs'."""
    return f"{n} class" if n == 1 else f"{n} classes"


def _split_names(min_per_class: int) -> str:
    return "train, validation and test" if min_per_class >= 3 else "train and validation"


def texts_for_prediction(table: Table, text_col: str | None = None) -> list[str]:
    """The text column of an unlabeled table; empty texts are an error (nothing to predict)."""
    column, problems = _pick_column(table.frame, text_col, TEXT_COLUMN_NAMES, "text")
    if problems or column is None:
        raise DataError(f"{table.source} has {plural(len(problems), 'problem')}:", problems)
    texts = _as_strings(table.frame[column])
    empty = [i for i, text in enumerate(texts) if not text]
    if empty:
        raise DataError(
            f"{table.source}: column '{column}' has {plural(len(empty), 'empty row')} "
            f"(first at {table.where(empty[0])}); remove them or fill them in"
        )
    return texts
