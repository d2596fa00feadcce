"""frugalml: find the cheapest model that is good enough, prove what it cost, ship it."""

__version__ = "0.1.0"

from frugalml.api import FitResult, fit, load_dataset
from frugalml.bundle import Bundle, load
from frugalml.costs import CostCard, CostMeter, Prices
from frugalml.data import Dataset
from frugalml.errors import FrugalError

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
