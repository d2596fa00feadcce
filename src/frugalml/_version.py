"""The version, written once: pyproject.toml's, read from the installed package's metadata."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path


def _version() -> str:
    try:
        return metadata.version("frugalml")
    except metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        found = pyproject.is_file() and re.search(
            r'^version\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"), re.MULTILINE
        )
        return found.group(1) if found else "0+unknown"


__version__ = _version()
