"""What the credit rungs share: free-text columns turned into one score each, the schema file,
and the reason-code shape.

A text column (an employment title) enters a scorecard or a tree as one number: the log-odds
of a TF-IDF logistic regression fitted on it alone. Training rows get out-of-fold scores (a
row's own label never reaches its feature), new rows the model fitted on all of training.
Everything is plain JSON: the vocabulary, idf and coefficients, never a pickle.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from frugalml.data.tabular import Column, TabularSchema

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_FILE = "schema.json"
TEXT_FOLDS = 5


@dataclass(frozen=True)
class TextScore:
    """One text column → log-odds of the positive class from its words and word pairs."""

    column: str
    vocabulary: tuple[str, ...]
    idf: np.ndarray
    coef: np.ndarray
    intercept: float

    @classmethod
    def fit(
        cls, texts: Sequence[str], y: np.ndarray, column: str, *, seed: int = 0
    ) -> tuple[TextScore, np.ndarray]:
        """The scorer fitted on all `texts`, and each text's out-of-fold score."""
        from sklearn.model_selection import StratifiedKFold

        texts = list(texts)
        oof = np.zeros(len(texts))
        folds = StratifiedKFold(TEXT_FOLDS, shuffle=True, random_state=seed)
        for fit_idx, held_idx in folds.split(np.zeros(len(y)), y):
            part = cls._fit_one([texts[i] for i in fit_idx], y[fit_idx], column)
            oof[held_idx] = part.score([texts[i] for i in held_idx])
        return cls._fit_one(texts, y, column), oof

    @classmethod
    def _fit_one(cls, texts: list[str], y: np.ndarray, column: str) -> TextScore:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        try:
            X = vectorizer.fit_transform(texts)
        except ValueError:  # no word seen twice: the column says nothing
            return cls(column, (), np.zeros(0), np.zeros(0), 0.0)
        head = LogisticRegression(C=1.0, max_iter=1000).fit(X, y)
        vocab = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__)
        return cls(column, tuple(vocab), vectorizer.idf_.copy(), head.coef_[0].copy(),
                   float(head.intercept_[0]))  # fmt: skip

    def score(self, texts: Sequence[str | None]) -> np.ndarray:
        if not self.vocabulary or len(texts) == 0:
            return np.full(len(texts), self.intercept)
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(
            ngram_range=(1, 2), sublinear_tf=True, vocabulary=list(self.vocabulary)
        )
        vectorizer.idf_ = self.idf
        X = vectorizer.transform([t if isinstance(t, str) else "" for t in texts])
        return np.asarray(X @ self.coef + self.intercept, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "vocabulary": list(self.vocabulary),
            "idf": self.idf.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextScore:
        return cls(
            data["column"],
            tuple(data["vocabulary"]),
            np.asarray(data["idf"], dtype=np.float64),
            np.asarray(data["coef"], dtype=np.float64),
            float(data["intercept"]),
        )

    def roundtrip(self) -> TextScore:
        """The scorer as it will be after JSON: live and saved models then score alike."""
        return TextScore.from_dict(json.loads(json.dumps(self.to_dict())))


def fit_text_scores(
    frame: pd.DataFrame, schema: TabularSchema, y: np.ndarray, *, seed: int = 0
) -> tuple[list[TextScore], dict[str, np.ndarray]]:
    """A scorer per text column, and the out-of-fold training scores by column."""
    scorers, oof = [], {}
    for column in schema.of_type("text"):
        scorer, scores = TextScore.fit(frame[column.name].fillna("").tolist(), y, column.name,
                                       seed=seed)  # fmt: skip
        scorers.append(scorer.roundtrip())
        oof[column.name] = scores
    return scorers, oof


def text_features(
    frame: pd.DataFrame, scorers: Sequence[TextScore], given: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Each text column's score: `given` (out-of-fold, while training) or computed now."""
    return {
        s.column: given[s.column]
        if given and s.column in given
        else s.score(frame[s.column].tolist())
        for s in scorers
    }


def numeric_view(schema: TabularSchema, *, text: bool) -> list[Column]:
    """The columns a model uses: all but text, plus text columns (as scores) when asked."""
    return [c for c in schema.columns if c.type != "text" or text]


def save_schema(folder: Path, schema: TabularSchema) -> None:
    (folder / SCHEMA_FILE).write_text(json.dumps(schema.to_dict(), ensure_ascii=False))


def load_schema(folder: Path) -> TabularSchema:
    return TabularSchema.from_dict(json.loads((folder / SCHEMA_FILE).read_text()))


def reason(feature: str, value: Any, impact: float, unit: str) -> dict[str, Any]:
    """One reason code: the feature, its value for this applicant, how far it pushed the
    score towards default (in `unit`: 'points' below the best, or 'log-odds')."""
    return {"feature": feature, "value": value, "impact": round(float(impact), 6), "unit": unit}


def top_reasons(
    impacts: np.ndarray, names: Sequence[str], values: list[list[Any]], unit: str, top: int
) -> list[list[dict[str, Any]]]:
    """Per row, the `top` features with the largest positive impact, largest first."""
    out = []
    for row, impact in enumerate(impacts):
        order = np.argsort(-impact, kind="stable")[:top]
        out.append([reason(names[j], values[row][j], impact[j], unit) for j in order
                    if impact[j] > 0])  # fmt: skip
    return out
