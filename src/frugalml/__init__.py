"""frugalml: find the cheapest model that is good enough, prove what it cost, ship it.

The names below are imported on first use: `import frugalml` loads none of the ladder, the
data layer or a deep-learning stack, so a process that only serves a bundle never pays for them.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from frugalml._version import __version__
    from frugalml.api import FitResult, fit, load_dataset
    from frugalml.bundle import Bundle, load
    from frugalml.costs import CostCard, CostMeter, Prices
    from frugalml.data.dataset import Dataset
    from frugalml.errors import FrugalError
else:
    from frugalml._lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "__version__": "frugalml._version",
            "Bundle": "frugalml.bundle",
            "CostCard": "frugalml.costs",
            "CostMeter": "frugalml.costs",
            "Dataset": "frugalml.data.dataset",
            "FitResult": "frugalml.api",
            "FrugalError": "frugalml.errors",
            "Prices": "frugalml.costs",
            "fit": "frugalml.api",
            "load": "frugalml.bundle",
            "load_dataset": "frugalml.api",
        },
    )

__all__ = [
    "Bundle",
    "CostCard",
    "CostMeter",
    "Dataset",
    "FitResult",
    "FrugalError",
    "Prices",
    "__version__",
    "fit",
    "load",
    "load_dataset",
]
