"""frugalml: find the cheapest model that is good enough, prove what it cost, ship it."""

__version__ = "0.1.0"

from frugalml.api import FitResult, fit, load_dataset  # noqa: E402
from frugalml.bundle import Bundle, load  # noqa: E402
from frugalml.costs import CostCard, CostMeter, Prices  # noqa: E402
from frugalml.data import Dataset  # noqa: E402
from frugalml.errors import FrugalError  # noqa: E402

__all__ = [
    "Bundle", "CostCard", "CostMeter", "Dataset", "FitResult", "FrugalError", "Prices",
    "__version__", "fit", "load", "load_dataset",
]
