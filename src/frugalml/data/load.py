"""Read a labeled table from any of the formats users bring, without guessing silently.

Every reader returns a `Table`: a frame of strings plus where each row came from (a line
number when the source has lines), so that validation can point at the offending line.
Files are read as streams, never whole into memory: the strings pandas parses are the ones
the Dataset keeps (object columns, no Arrow copy), so loading and validating peak at 2-3x
the file size (benchmarks/load_memory.py; was 9-13x). JSON arrays are the exception: they
are read whole. Only `hf://NAME` reaches the Hugging Face hub.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import json
import re
import stat
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from frugalml.errors import ConfigError, DataError, MissingExtraError, plural

_SNIFF_BYTES = 8192
_CHUNK_BYTES = 1 << 20
# Rows pandas tokenizes at a time: its buffers for one chunk live beside the strings parsed so
# far, so a whole-file chunk (its default up to ~500k rows) adds a full copy (2.9x vs 1.6x).
_CSV_CHUNK_ROWS = 10_000
_TEXT_DELIMITERS = ("\t", "@", "|", ";", ",")
_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
HF_PREFIX = "hf://"
# `Path("hf://org/name")` reads "hf:/org/name": accept both spellings of the prefix.
_HF_SOURCE = re.compile(r"^hf:/{1,2}(.*)$")
_HF_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_SHOWN = 5  # bad lines or merged rows listed by line; the rest are counted

if TYPE_CHECKING:  # the readers import pandas when called: a Dataset alone never needs it
    import pandas as pd


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

    A Hugging Face hub dataset is read only when named `hf://NAME`: a missing local file is
    reported as missing, never looked up online (a typo must not become a download).
    """
    hub = hub_name(source)
    if hub is not None:
        return _read_hf_hub(hub, split)
    path = Path(source)
    if path.is_dir():
        return _read_hf_disk(path, split)
    if not path.exists():
        hint = [f"to read the Hugging Face hub dataset '{source}', pass {HF_PREFIX}{source}"]
        raise DataError(
            f"{source}: no such file{_similar_files(path)}",
            hint if _looks_like_hub_id(str(source)) else [],
        )
    require_regular_file(path)
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if _is_blank(path, head):
        raise DataError(f"{path}: the file is empty; it needs a header and at least one row")
    if head[:4] == b"PAR1":
        return _read_parquet(path)
    encoding, notes = sniff_encoding(path, head)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        table = _read_json_lines(path, encoding, whole_json=suffix == ".json")
    elif suffix in (".csv", ".tsv", ".tab") or (delimiter is not None and suffix != ".txt"):
        sep = ("," if suffix == ".csv" else "\t") if delimiter is None else delimiter
        _check_delimiter(sep, path, single=True)
        table = _read_delimited(path, encoding, sep)
    else:
        if delimiter is not None:
            _check_delimiter(delimiter, path, single=False)
        table = _read_text_pairs(path, encoding, delimiter)
    table.encoding = encoding
    table.notes[:0] = notes
    return table


def hub_name(source: str | Path) -> str | None:
    """The dataset name in `hf://NAME` (or `hf://ORG/NAME`); None for anything else."""
    match = _HF_SOURCE.match(str(source))
    if match is None:
        return None
    name = match.group(1)
    if not _HF_NAME.match(name) or ".." in name:
        raise DataError(
            f"{source}: not a Hugging Face hub dataset name",
            [f"write {HF_PREFIX}NAME or {HF_PREFIX}ORG/NAME, e.g. {HF_PREFIX}imdb"],
        )
    return name


def require_regular_file(path: Path) -> None:
    """Refuse FIFOs, devices and sockets before opening: a FIFO blocks, /dev/zero never ends."""
    mode = path.stat().st_mode  # follows symlinks: a link to a regular file is fine
    if stat.S_ISREG(mode):
        return
    kinds = {
        stat.S_ISDIR: "a folder",
        stat.S_ISFIFO: "a named pipe (FIFO)",
        stat.S_ISCHR: "a device",
        stat.S_ISBLK: "a device",
        stat.S_ISSOCK: "a socket",
    }
    kind = next((name for test, name in kinds.items() if test(mode)), "a special file")
    raise DataError(
        f"{path}: is {kind}, not a regular file; data is read only from files",
        ["save the data to a file and pass that file"],
    )


def _is_blank(path: Path, head: bytes) -> bool:
    """Whitespace only (or nothing): read on only while the file is blank so far."""
    if head.strip():
        return False
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            if chunk.strip():
                return False
    return True


def sniff_encoding(path: Path, head: bytes) -> tuple[str, list[str]]:
    """UTF-8 (with or without BOM) or UTF-16 with BOM; latin-1 with a note when not UTF-8.

    UTF-8 is checked by streaming the file, so a bad byte far down still gives latin-1.
    """
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig", []
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16", []
    if b"\x00" in head:
        raise _binary(path)
    bad = _first_non_utf8(path)
    if bad is None:
        return "utf-8", []
    offset, byte = bad
    note = (
        f"{path.name} is not valid UTF-8 (first bad byte 0x{byte:02x} "
        f"at line {_line_at(path, offset)});"
        " read it as latin-1. Re-save it as UTF-8 if accented characters look wrong."
    )
    return "latin-1", [note]


def decode(raw: bytes, path: Path) -> tuple[str, str, list[str]]:
    """Decode UTF-8 (with or without BOM) or UTF-16 with BOM; fall back to latin-1 with a note."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8", errors="strict"), "utf-8-sig", []
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16"), "utf-16", []
    if b"\x00" in raw[:_SNIFF_BYTES]:
        raise _binary(path)
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


def _binary(path: Path) -> DataError:
    return DataError(
        f"{path}: this looks like a binary file (it contains NUL bytes), not a text table",
        ["pass a CSV, TSV, JSONL, Parquet or text file, or a saved Hugging Face dataset folder"],
    )


def _first_non_utf8(path: Path) -> tuple[int, int] | None:
    """Offset and value of the first byte that is not UTF-8, read a chunk at a time."""
    offset, carry = 0, b""
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            data = carry + chunk
            try:
                _, used = codecs.utf_8_decode(data, "strict", False)
            except UnicodeDecodeError as err:
                return offset + err.start, data[err.start]
            carry, offset = data[used:], offset + used
    return (offset, carry[0]) if carry else None  # a sequence cut off by the end of the file


def _line_at(path: Path, offset: int) -> int:
    """The line holding byte `offset`, counting LF, CRLF and CR line endings alike."""
    breaks, previous = 0, b""
    with path.open("rb") as handle:
        while offset > 0 and (chunk := handle.read(min(_CHUNK_BYTES, offset))):
            offset -= len(chunk)
            breaks += chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
            breaks -= previous.endswith(b"\r") and chunk.startswith(b"\n")
            previous = chunk
    return breaks + 1


def _open_text(path: Path, encoding: str) -> IO[str]:
    """Universal newlines: CRLF and CR arrive as LF, as every reader here expects."""
    return path.open(encoding=encoding, newline=None)


def _check_delimiter(sep: str, path: Path, *, single: bool) -> None:
    """CSV/TSV need one character (pandas' C parser and the csv module both do)."""
    if sep == "" or any(c in sep for c in "\r\n") or (single and sep == '"'):
        raise ConfigError(f"--delimiter {sep!r} cannot separate fields", ["pass e.g. ',' or ';'"])
    if single and len(sep) != 1:
        raise ConfigError(
            f"--delimiter must be a single character for {path.name}; got {sep!r}",
            [
                "re-save the file with a one-character separator such as ',', ';' or a tab, "
                "or, for a headerless TEXT<delim>LABEL file, name it .txt (any separator works "
                "there)"
            ],
        )


def _read_delimited(path: Path, encoding: str, sep: str) -> Table:
    import pandas as pd

    try:
        with _open_text(path, encoding) as handle:
            # object columns hold the parsed strings themselves, which the Dataset then
            # shares; dtype=str would add an Arrow copy of every column
            chunks = pd.read_csv(
                handle,
                sep=sep,
                dtype=object,
                keep_default_na=False,
                na_values=[""],
                skipinitialspace=False,
                engine="c",
                chunksize=_CSV_CHUNK_ROWS,
            )
            frame = pd.concat(list(chunks), ignore_index=True)
    except pd.errors.ParserError as err:
        raise DataError(
            f"{path}: cannot be parsed as {_sep_name(sep)}-separated values",
            [f"{err}".strip() + "; quote fields that contain the delimiter, or pass --delimiter"],
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: has no columns; it needs a header row") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    lines, notes = _record_lines(path, encoding, sep, len(frame))
    return Table(frame, str(path), lines=lines, notes=notes)


def _record_lines(path: Path, encoding: str, sep: str, n_rows: int) -> tuple[np.ndarray, list[str]]:
    """First line of each data row (pandas skips blank lines and quoted fields span lines),
    and a note naming the rows that span several lines: a quote left open merges rows."""
    starts, ends = array("q"), array("q")
    previous, total = 0, 0
    try:
        with _open_text(path, encoding) as handle:
            reader = csv.reader(handle, delimiter=sep)
            for record in reader:
                if len(record) > 1 or "".join(record).strip():  # pandas' notion of a blank line
                    starts.append(previous + 1)
                    ends.append(reader.line_num)
                previous = reader.line_num
            total = reader.line_num
    except csv.Error:
        starts = array("q")
    if len(starts) != n_rows + 1:  # the two parsers disagree; the plain count is the best guess
        return np.arange(n_rows) + 2, []
    first, last = np.asarray(starts[1:]), np.asarray(ends[1:])
    return first, _merged_rows_note(path, first, last, total)


def _merged_rows_note(path: Path, first: np.ndarray, last: np.ndarray, total: int) -> list[str]:
    spanning = np.flatnonzero(last > first)
    if len(spanning) == 0:
        return []
    shown = ", ".join(f"lines {first[i]}-{last[i]}" for i in spanning[:_SHOWN])
    more = f" and {len(spanning) - _SHOWN} more" if len(spanning) > _SHOWN else ""
    return [
        f"{path.name}: {plural(len(spanning), 'row')} "
        f"{'spans' if len(spanning) == 1 else 'span'} several lines through quoted line "
        f"breaks ({shown}{more}), so {plural(total, 'line')} hold {plural(len(first), 'row')} "
        "and a header; if a quote was left open, close it where the text ends"
    ]


def _read_text_pairs(path: Path, encoding: str, delimiter: str | None) -> Table:
    """Headerless `text<delim>label` lines; the label is after the last delimiter."""
    import pandas as pd

    sep = delimiter or _sniff_pair_delimiter(path, encoding)
    texts: list[str] = []
    labels: list[str] = []
    lines, missing = array("q"), array("q")
    for number, line in _numbered_lines(path, encoding):
        if sep not in line:
            missing.append(number)
            continue
        body, label = line.rsplit(sep, 1)
        texts.append(body.strip())
        labels.append(label.strip())
        lines.append(number)
    if not texts and not missing:
        raise DataError(f"{path}: has no non-empty lines")
    if missing:
        raise DataError(
            f"{path}: {plural(len(missing), 'line')} with no {_sep_name(sep)} between text "
            f"and label (first at line {missing[0]})",
            [f"each line must read TEXT{sep}LABEL; fix those lines or pass --delimiter"],
        )
    frame = pd.DataFrame({"text": texts, "label": labels}, dtype=object)
    return Table(frame, str(path), lines=np.asarray(lines))


def _numbered_lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """Non-blank lines (without their line break) and their 1-based numbers."""
    with _open_text(path, encoding) as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line.rstrip("\n")


def _sniff_pair_delimiter(path: Path, encoding: str) -> str:
    counts, n_lines = dict.fromkeys(_TEXT_DELIMITERS, 0), 0
    for _, line in _numbered_lines(path, encoding):
        n_lines += 1
        for sep in _TEXT_DELIMITERS:
            counts[sep] += sep in line
    if n_lines == 0:
        raise DataError(f"{path}: has no non-empty lines")
    for sep in _TEXT_DELIMITERS:
        if counts[sep] >= 0.98 * n_lines:
            return sep
    raise DataError(
        f"{path}: cannot tell which character separates text from label",
        [
            f"tried {', '.join(map(_sep_name, _TEXT_DELIMITERS))}; pass --delimiter, "
            "or save the file as .csv/.tsv with a header"
        ],
    )


def _read_json_lines(path: Path, encoding: str, *, whole_json: bool) -> Table:
    import pandas as pd

    if whole_json and _first_char(path, encoding) == "[":
        return _read_json_array(path, encoding)
    columns: dict[str, list[Any]] = {}
    lines, n_bad = array("q"), 0
    bad: list[str] = []
    with _open_text(path, encoding) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            problem = _json_object(line, columns, len(lines))
            if problem is None:
                lines.append(number)
            else:
                n_bad += 1
                if len(bad) < _SHOWN:
                    bad.append(f"line {number}: {problem}")
    if n_bad:
        shown = bad + ([f"... and {n_bad - _SHOWN} more"] if n_bad > _SHOWN else [])
        summary = f"{path}: {plural(n_bad, 'line')} could not be read as a JSON object"
        raise DataError(summary, shown)
    # object dtype keeps numbers as written: a null among int labels must not turn 1 into '1.0'
    frame = pd.DataFrame(columns, dtype=object)
    return Table(frame, str(path), lines=np.asarray(lines))


def _json_object(line: str, columns: dict[str, list[Any]], n_rows: int) -> str | None:
    """Append one JSON object's values to `columns` (None where a key is absent); else why not."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return err.msg
    except RecursionError:
        return "nested too deeply to read (a row should be a flat object)"
    if not isinstance(record, dict):
        return 'expected an object like {"text": ..., "label": ...}'
    for key, value in record.items():
        column = columns.get(key)
        if column is None:
            column = columns[key] = [None] * n_rows
        column.append(value)
    for column in columns.values():
        if len(column) == n_rows:
            column.append(None)
    return None


def _first_char(path: Path, encoding: str) -> str:
    with _open_text(path, encoding) as handle:
        while chunk := handle.read(_SNIFF_BYTES):
            if chunk.strip():
                return chunk.lstrip()[0]
    return ""


def _read_json_array(path: Path, encoding: str) -> Table:
    """A JSON array is read whole: unlike JSON lines it cannot be split into rows by lines."""
    import pandas as pd

    try:
        with _open_text(path, encoding) as handle:
            records = json.load(handle)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from None
    except RecursionError:
        raise DataError(
            f"{path}: is nested too deeply to read; each example should be a flat object"
        ) from None
    if not all(isinstance(r, dict) for r in records):
        raise DataError(f"{path}: a JSON array must hold objects, one per example")
    return Table(pd.DataFrame(records, dtype=object), str(path))


def _read_parquet(path: Path) -> Table:
    import pandas as pd

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
    source = f"{HF_PREFIX}{name}"
    try:
        import datasets
    except ImportError:
        raise MissingExtraError("Reading a Hugging Face hub dataset", "hf") from None
    try:
        loaded = datasets.load_dataset(name, split=split)
    except Exception as err:  # the hub raises many types; all mean "cannot get it"
        raise DataError(
            f"{source}: could not be loaded from the Hugging Face hub",
            [
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                "if you are offline, download it elsewhere and save_to_disk(), then pass "
                "the folder",
            ],
        ) from None
    return _from_hf(loaded, split, source)


def _from_hf(loaded: object, split: str, source: str) -> Table:
    import datasets
    import pandas as pd

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
