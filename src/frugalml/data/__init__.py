"""Data in: load any supported source, validate it with clear errors, split it.

The names below are imported on first use: a process that only needs `Dataset` (a serve
worker, a strategy) never imports pandas, which reading and validating tables need.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from frugalml.data.dataset import Dataset
    from frugalml.data.demo import DEMO_INTENTS, out_of_scope_texts
    from frugalml.data.load import Table, read_table
    from frugalml.data.split import Splits, split_off_validation, stratified_split
    from frugalml.data.validate import Validated, texts_for_prediction, to_dataset
else:
    from frugalml._lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "DEMO_INTENTS": "frugalml.data.demo",
            "Dataset": "frugalml.data.dataset",
            "Splits": "frugalml.data.split",
            "Table": "frugalml.data.load",
            "Validated": "frugalml.data.validate",
            "out_of_scope_texts": "frugalml.data.demo",
            "read_table": "frugalml.data.load",
            "split_off_validation": "frugalml.data.split",
            "stratified_split": "frugalml.data.split",
            "texts_for_prediction": "frugalml.data.validate",
            "to_dataset": "frugalml.data.validate",
        },
    )

__all__ = [
    "DEMO_INTENTS",
    "Dataset",
    "Splits",
    "Table",
    "Validated",
    "out_of_scope_texts",
    "read_table",
    "split_off_validation",
    "stratified_split",
    "texts_for_prediction",
    "to_dataset",
]
