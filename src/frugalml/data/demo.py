"""The embedded demo: bank customer-service questions the project wrote itself."""

from __future__ import annotations

import csv
from pathlib import Path

DEMO_DIR = Path(__file__).parent / "demo"
DEMO_INTENTS = DEMO_DIR / "bank_intents.csv"
DEMO_OUT_OF_SCOPE = DEMO_DIR / "out_of_scope.csv"


def out_of_scope_texts() -> list[str]:
    """Questions that match none of the demo intents, for fallback checks."""
    with DEMO_OUT_OF_SCOPE.open(encoding="utf-8", newline="") as handle:
        return [row["text"] for row in csv.DictReader(handle)]
