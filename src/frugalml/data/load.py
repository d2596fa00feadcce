"""Read a labeled table from any of the formats users bring, without guessing silently.

Every reader returns a `Table`: a frame of strings plus where each row came from (a line
number when the source has lines), so that validation can point at the offending line.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from frugalml.errors import DataError, MissingExtraError, plural

_SNIFF_BYTES = 8192
_TEXT_DELIMITERS = ("\t", "@", "|", ";", ",")
_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass
class Table:
    """A loaded source: string columns, per-row source lines, and notes for the user."""

    frame: pd.DataFrame
    source: str
    lines: np.ndarray | None = None  # 1-based line of each row; None when the source has no lines
    encoding: str | None = None
    notes: list[str] = field(default_factory=list)

    def where(self, row: int) -> str:
        """'line 88' for line-based sources, 'row 87' otherwise."""
        if self.lines is not None:
            return f"line {int(self.lines[row])}"
        return f"row {row}"


def read_table(source: str | Path, *, delimiter: str | None = None, split: str = "train") -> Table:
    """Read CSV, TSV, JSONL/JSON, Parquet, `text<delim>label` text, or a Hugging Face dataset.

    `source` may also be a Hugging Face hub id (read only when online).
    """
    path = Path(source)
    if path.is_dir():
        return _read_hf_disk(path, split)
    if not path.exists():
        if _looks_like_hub_id(str(source)):
            return _read_hf_hub(str(source), split)
        raise DataError(f"{source}: no such file{_similar_files(path)}")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty; it needs a header and at least one row")
    if raw[:4] == b"PAR1":
        return _read_parquet(path)
    text, encoding, notes = decode(raw, path)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        table = _read_json_lines(text, path, whole_json=suffix == ".json")
    elif suffix in (".csv", ".tsv", ".tab") or (delimiter is not None and suffix != ".txt"):
        sep = delimiter or ("," if suffix == ".csv" else "\t")
        table = _read_delimited(text, path, sep)
    else:
        table = _read_text_pairs(text, path, delimiter)
    table.encoding = encoding
    table.notes[:0] = notes
    return table


def decode(raw: bytes, path: Path) -> tuple[str, str, list[str]]:
    """Decode UTF-8 (with or without BOM) or UTF-16 with BOM; fall back to latin-1 with a note."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8", errors="strict"), "utf-8-sig", []
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16"), "utf-16", []
    if b"\x00" in raw[:_SNIFF_BYTES]:
        raise DataError(
            f"{path}: this looks like a binary file (it contains NUL bytes), not a text table",
            [
                "pass a CSV, TSV, JSONL, Parquet or text file, or a saved Hugging Face dataset "
                "folder"
            ],
        )
    try:
        return raw.decode("utf-8"), "utf-8", []
    except UnicodeDecodeError as err:
        line = raw[: err.start].replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1
        note = (
            f"{path.name} is not valid UTF-8 (first bad byte 0x{raw[err.start]:02x} "
            f"at line {line});"
            " read it as latin-1. Re-save it as UTF-8 if accented characters look wrong."
        )
        return raw.decode("latin-1"), "latin-1", [note]


def _read_delimited(text: str, path: Path, sep: str) -> Table:
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            skipinitialspace=False,
            engine="c",
        )
    except pd.errors.ParserError as err:
        raise DataError(
            f"{path}: cannot be parsed as {_sep_name(sep)}-separated values",
            [f"{err}".strip() + "; quote fields that contain the delimiter, or pass --delimiter"],
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: has no columns; it needs a header row") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return Table(frame, str(path), lines=_record_lines(text, sep, len(frame)))


def _record_lines(text: str, sep: str, n_rows: int) -> np.ndarray:
    """First line of each data row: pandas skips blank lines and quoted fields span lines."""
    starts: list[int] = []
    previous = 0
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    try:
        for record in reader:
            if len(record) > 1 or "".join(record).strip():  # pandas' notion of a blank line
                starts.append(previous + 1)
            previous = reader.line_num
    except csv.Error:
        starts = []
    if len(starts) != n_rows + 1:  # the two parsers disagree; the plain count is the best guess
        return np.arange(n_rows) + 2
    return np.asarray(starts[1:])


def _read_text_pairs(text: str, path: Path, delimiter: str | None) -> Table:
    """Headerless `text<delim>label` lines; the label is after the last delimiter."""
    numbered = [(i + 1, line) for i, line in enumerate(text.split("\n")) if line.strip()]
    if not numbered:
        raise DataError(f"{path}: has no non-empty lines")
    sep = delimiter or _sniff_pair_delimiter([line for _, line in numbered], path)
    texts, labels, lines, missing = [], [], [], []
    for number, line in numbered:
        if sep not in line:
            missing.append(number)
            continue
        body, label = line.rsplit(sep, 1)
        texts.append(body.strip())
        labels.append(label.strip())
        lines.append(number)
    if missing:
        raise DataError(
            f"{path}: {plural(len(missing), 'line')} with no {_sep_name(sep)} between text "
            f"and label (first at line {missing[0]})",
            [f"each line must read TEXT{sep}LABEL; fix those lines or pass --delimiter"],
        )
    frame = pd.DataFrame({"text": texts, "label": labels}, dtype=str)
    return Table(frame, str(path), lines=np.asarray(lines))


def _sniff_pair_delimiter(lines: list[str], path: Path) -> str:
    for sep in _TEXT_DELIMITERS:
        if sum(sep in line for line in lines) >= 0.98 * len(lines):
            return sep
    raise DataError(
        f"{path}: cannot tell which character separates text from label",
        [
            f"tried {', '.join(map(_sep_name, _TEXT_DELIMITERS))}; pass --delimiter, "
            "or save the file as .csv/.tsv with a header"
        ],
    )


def _read_json_lines(text: str, path: Path, *, whole_json: bool) -> Table:
    stripped = text.lstrip()
    if whole_json and stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from None
        if not all(isinstance(r, dict) for r in records):
            raise DataError(f"{path}: a JSON array must hold objects, one per example")
        return Table(pd.DataFrame(records, dtype=object), str(path))
    rows, lines, bad = [], [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            bad.append(f"line {number}: {err.msg}")
            continue
        if not isinstance(record, dict):
            bad.append(f'line {number}: expected an object like {{"text": ..., "label": ...}}')
            continue
        rows.append(record)
        lines.append(number)
    if bad:
        shown = bad[:5] + ([f"... and {len(bad) - 5} more"] if len(bad) > 5 else [])
        summary = f"{path}: {plural(len(bad), 'line')} could not be read as a JSON object"
        raise DataError(summary, shown)
    # object dtype keeps numbers as written: a null among int labels must not turn 1 into '1.0'
    return Table(pd.DataFrame(rows, dtype=object), str(path), lines=np.asarray(lines))


def _read_parquet(path: Path) -> Table:
    try:
        frame = pd.read_parquet(path)
    except ImportError:
        raise MissingExtraError("Reading Parquet", "parquet") from None
    return Table(frame, str(path))


def _read_hf_disk(path: Path, split: str) -> Table:
    if not any((path / marker).exists() for marker in _HF_MARKERS):
        raise DataError(
            f"{path}: is a folder but not a saved Hugging Face dataset (no dataset_info.json)",
            ["pass a file, or a folder written by datasets' save_to_disk()"],
        )
    try:
        import datasets
    except ImportError:
        raise MissingExtraError("Reading a Hugging Face dataset", "hf") from None
    loaded = datasets.load_from_disk(str(path))
    return _from_hf(loaded, split, str(path))


def _read_hf_hub(name: str, split: str) -> Table:
    try:
        import datasets
    except ImportError:
        raise MissingExtraError("Reading a Hugging Face hub dataset", "hf") from None
    try:
        loaded = datasets.load_dataset(name, split=split)
    except Exception as err:  # the hub raises many types; all mean "cannot get it"
        raise DataError(
            f"{name}: is not a file here and could not be loaded from the Hugging Face hub",
            [
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                "if you are offline, download it elsewhere and save_to_disk(), then pass "
                "the folder",
            ],
        ) from None
    return _from_hf(loaded, split, name)


def _from_hf(loaded: object, split: str, source: str) -> Table:
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(f"{source}: has no split '{split}'; it has {', '.join(loaded)}")
        loaded = loaded[split]
    assert isinstance(loaded, datasets.Dataset)
    frame = loaded.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    for name, feature in loaded.features.items():
        if isinstance(feature, datasets.ClassLabel):  # ints on disk, names for the user
            frame[name] = [feature.int2str(int(v)) for v in frame[name]]
    return Table(frame, source)


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) <= 2 and all(p and "." not in p[-6:] for p in parts) and "\\" not in name


def _similar_files(path: Path) -> str:
    folder = path.parent if str(path.parent) else Path()
    if not folder.is_dir():
        return f" (folder {folder} does not exist either)"
    close = difflib.get_close_matches(path.name, [p.name for p in folder.iterdir()], n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _sep_name(sep: str) -> str:
    return {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}.get(sep, repr(sep))
