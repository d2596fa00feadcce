"""Package attributes imported on first use (PEP 562), so `import frugalml` stays cheap.

A serve worker, a DDP rank or a federated client imports the package root and the data layer
on its way to one function; each export then costs only when it is read.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`: each name in `exports` is read from the
    module it maps to on first access, then kept in the package's namespace."""
    namespace = sys.modules[package].__dict__

    def attribute(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def names() -> list[str]:
        return sorted({*namespace, *exports})

    return attribute, names
