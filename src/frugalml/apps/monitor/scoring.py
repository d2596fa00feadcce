"""Scoring a batch of texts: sentiment from any frugalml bundle, topics from rules or a bundle.

A batch is scored with one `predict_proba` call per bundle (the micro-batch), so the cost per
text is the model's batched cost. Topics come from the event's own `entities`, cashtags
(`$AAPL`), a watch-list of names and aliases, or a topic classifier trained with the ladder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from frugalml.errors import ConfigError

if TYPE_CHECKING:
    from frugalml import Bundle

ALL = "*"  # the topic every event belongs to
CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z][A-Za-z.]{0,9})(?![A-Za-z])")


def negative_index(labels: Sequence[str], name: str | None = None) -> int:
    """Which output is 'negative': `name`, else the label called negative (or neg)."""
    wanted = [name] if name else ["negative", "neg"]
    lowered = [label.lower() for label in labels]
    for want in wanted:
        if want.lower() in lowered:
            return lowered.index(want.lower())
    raise ConfigError(
        f"the sentiment model's labels are {list(labels)}, none of them "
        f"{' or '.join(repr(w) for w in wanted)}; name the negative one with --negative-label"
    )


@dataclass
class Scores:
    labels: list[str]
    negative: np.ndarray  # probability of the negative class
    confidence: np.ndarray  # probability of the predicted class
    is_negative: np.ndarray  # predicted label is the negative one


class Scorer:
    """Sentiment of a batch of texts with one bundle call."""

    def __init__(self, bundle: Bundle, negative_label: str | None = None) -> None:
        self.bundle = bundle
        self.negative = negative_index(bundle.labels, negative_label)

    def score(self, texts: Sequence[str]) -> Scores:
        return self.from_proba(np.asarray(self.bundle.predict_proba(list(texts))))

    def from_proba(self, proba: np.ndarray) -> Scores:
        top = proba.argmax(1)
        return Scores(
            [self.bundle.labels[i] for i in top],
            proba[:, self.negative].astype(float),
            proba.max(1).astype(float),
            top == self.negative,
        )


class Watchlist:
    """Names and aliases → entity, matched as whole words, case-insensitively.

    The file is JSON or YAML mapping each entity to its aliases:
    `{"Apple": ["Apple Inc", "AAPL", "iPhone maker"], "Nokia": ["Nokia Oyj"]}`."""

    def __init__(self, aliases: dict[str, list[str]]) -> None:
        self.entity = {entity.lower(): entity for entity in aliases}
        for entity, names in aliases.items():
            for name in names:
                self.entity[name.lower()] = entity
        names = sorted(self.entity, key=len, reverse=True)
        pattern = "|".join(re.escape(n) for n in names) or r"(?!x)x"
        self.pattern = re.compile(rf"(?<!\w)(?:{pattern})(?!\w)", re.IGNORECASE)

    @classmethod
    def read(cls, path: Path) -> Watchlist:
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read the watch-list {path}: {err}") from None
        bad = not isinstance(data, dict) or not all(
            isinstance(v, list) and all(isinstance(a, str) for a in v) for v in data.values()
        )
        if bad:
            raise ConfigError(
                f"the watch-list {path} must map each entity to a list of aliases, e.g. "
                + json.dumps({"Apple": ["Apple Inc", "AAPL"]})
            )
        return cls({str(k): v for k, v in data.items()})

    def find(self, text: str) -> set[str]:
        return {self.entity[m.group(0).lower()] for m in self.pattern.finditer(text)}


class TopicRules:
    """Topics of a text from rules: cashtags and a watch-list."""

    def __init__(self, watchlist: Watchlist | None = None, cashtags: bool = True) -> None:
        self.watchlist, self.cashtags = watchlist, cashtags

    def topics(self, texts: Sequence[str]) -> list[set[str]]:
        found = []
        for text in texts:
            topics = set()
            if self.cashtags:  # a cashtag the watch-list knows is its entity
                for tag in CASHTAG.findall(text):
                    topics.add(self._entity(tag))
            if self.watchlist:
                topics |= self.watchlist.find(text)
            found.append(topics)
        return found

    def _entity(self, tag: str) -> str:
        if self.watchlist:
            for alias in (f"${tag}".lower(), tag.lower()):
                if alias in self.watchlist.entity:
                    return self.watchlist.entity[alias]
        return f"${tag.upper()}"


class TopicModel:
    """Topics of a text from a classifier: its top label when at least `min_probability`."""

    def __init__(self, bundle: Bundle, min_probability: float = 0.5) -> None:
        self.bundle, self.min_probability = bundle, min_probability

    def topics(self, texts: Sequence[str]) -> list[set[str]]:
        proba = np.asarray(self.bundle.predict_proba(list(texts)))
        top = proba.argmax(1)
        return [
            {self.bundle.labels[i]} if proba[row, i] >= self.min_probability else set()
            for row, i in enumerate(top)
        ]
