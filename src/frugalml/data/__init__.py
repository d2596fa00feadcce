"""Data in: load any supported source, validate it with clear errors, split it."""

from frugalml.data.dataset import Dataset
from frugalml.data.demo import DEMO_INTENTS, out_of_scope_texts
from frugalml.data.load import Table, read_table
from frugalml.data.split import Splits, split_off_validation, stratified_split
from frugalml.data.validate import Validated, texts_for_prediction, to_dataset

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
