"""User-fixable errors: one base class the CLI prints without a traceback.

Each error carries a list of problems so that everything wrong with an input is reported
at once, each with where it is, what was found, and how to fix it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence


class FrugalError(Exception):
    """A problem the user can fix; the CLI prints it and exits with code 2."""

    def __init__(self, summary: str, problems: Sequence[str] = ()) -> None:
        self.summary = summary
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        if not self.problems:
            return self.summary
        return "\n".join([self.summary, *(f"  - {p}" for p in self.problems)])


class DataError(FrugalError, ValueError):
    """The input data cannot be read or fails validation."""


class ConfigError(FrugalError, ValueError):
    """An option or configuration value is not allowed."""


class BundleError(FrugalError, ValueError):
    """A model bundle is missing, incomplete, tampered with or of an unknown version."""


class OutputExistsError(FrugalError, FileExistsError):
    """Refuses to overwrite a user's folder."""


class OutOfMemoryError(FrugalError, MemoryError):
    """Work forecast to need more memory than is available, refused before allocating it."""


class CapabilityError(FrugalError, TypeError):
    """A model cannot do what was asked of it (e.g. sentence vectors from a TF-IDF model)."""


class OutputError(FrugalError, OSError):
    """An output (run folder, prediction file) cannot be written where the user asked."""


class MissingExtraError(FrugalError, ImportError):
    """An optional dependency is not installed; names the install command."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(f"{feature} needs the '{extra}' extra: pip install 'frugalml[{extra}]'")


def installed(*modules: str) -> bool:
    """Whether every module can be imported, without importing any (some take seconds)."""
    return all(importlib.util.find_spec(module) is not None for module in modules)


def require_extra(feature: str, extra: str, *modules: str) -> None:
    """Raise `MissingExtraError` naming the pip extra unless every module is installed."""
    if not installed(*modules):
        raise MissingExtraError(feature, extra)


def plural(n: int, word: str) -> str:
    """'1 row', '2 rows' — messages read better than 'row(s)'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
