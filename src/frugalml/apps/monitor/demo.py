"""`frugalml monitor demo`: PhraseBank-style sentences (written here from templates, so they ship
with the package), replayed with synthetic times and an injected negative shock on one company.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

COMPANIES = {
    "KEST": "Kestrel Oyj",
    "LNTR": "Lantern Bank",
    "MRBL": "Marble Foods",
    "NRDC": "Nordic Cable",
    "ORVL": "Orvall Paper",
    "PLSR": "Pulsar Telecom",
}
TEMPLATES = {
    "negative": [
        "{c} shares fell {n} percent after a profit warning",
        "{c} reports an operating loss of EUR {m} million",
        "{c} to cut {n} jobs as sales decline",
        "{c} net sales decreased by {n} percent in the quarter",
        "Analysts downgrade {c} after weak demand and falling margins",
        "{c} warns that full-year profit will be lower than expected",
        "{c} posts a pretax loss as orders dropped sharply",
        "Operating profit of {c} fell to EUR {m} million from a year earlier",
    ],
    "positive": [
        "{c} net sales rose {n} percent to EUR {m} million",
        "{c} operating profit increased to EUR {m} million",
        "{c} wins a EUR {m} million order and raises its outlook",
        "{c} shares jumped {n} percent on strong quarterly earnings",
        "Analysts upgrade {c} after record order intake",
        "{c} expects profit to grow clearly this year",
        "{c} reports higher margins and improved cash flow",
        "Sales of {c} grew by {n} percent thanks to strong demand",
    ],
    "neutral": [
        "{c} will publish its interim report on {d}",
        "{c} appoints a new chief financial officer",
        "{c} is headquartered in Helsinki and employs {n}00 people",
        "The annual general meeting of {c} will be held in {d}",
        "{c} operates in {n} countries",
        "{c} signed a distribution agreement with a local partner",
        "The board of {c} proposes a dividend in line with its policy",
        "{c} changes the date of its capital markets day to {d}",
    ],
}
MONTHS = ["March", "April", "May", "June", "September", "October"]


def sentences(rng: random.Random, label: str, ticker: str | None = None) -> str:
    ticker = ticker or rng.choice(list(COMPANIES))
    name = COMPANIES[ticker] if rng.random() < 0.5 else f"${ticker}"
    return rng.choice(TEMPLATES[label]).format(
        c=name, n=rng.randint(2, 40), m=rng.randint(1, 900), d=rng.choice(MONTHS)
    )


def training_rows(n_per_class: int = 60, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {"text": sentences(rng, label), "label": label}
        for label in TEMPLATES
        for _ in range(n_per_class)
    ]


def stream(
    n: int = 3000,
    *,
    seed: int = 1,
    start: float = 1_735_689_600.0,  # 2025-01-01T00:00:00Z
    every_s: float = 6.0,
    base: float = 0.15,
    shock_ticker: str = "KEST",
    shock_at: float = 0.7,  # fraction of the stream where the shock starts
    shock_share: float = 0.7,
) -> list[dict[str, Any]]:
    """Events one `every_s` apart; from `shock_at`, `shock_ticker`'s texts turn negative."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        ticker = rng.choice(list(COMPANIES))
        shocked = ticker == shock_ticker and i >= shock_at * n
        negative = rng.random() < (shock_share if shocked else base)
        other = "positive" if rng.random() < 0.4 else "neutral"
        text = sentences(rng, "negative" if negative else other, ticker)
        events.append({"id": f"demo-{i}", "time": start + i * every_s, "text": text})
    return events


def watchlist() -> dict[str, list[str]]:
    return {name: [ticker, name.split()[0]] for ticker, name in COMPANIES.items()}


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
