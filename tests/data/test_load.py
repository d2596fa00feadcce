"""read_table and decode: every supported format, encoding and line ending, through real files.

Each error test asserts what a user needs to act on: where (file, line), what is wrong, and
the fix the message proposes.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from frugalml.data import read_table
from frugalml.data.load import decode
from frugalml.errors import ConfigError, DataError

TEXTS = ["how do I reset my pin", "my card, it was stolen"]
LABELS = ["pin", "lost_card"]


def write(folder: Path, name: str, content: str | bytes) -> Path:
    """Write bytes exactly as given: tests choose encodings and line endings themselves."""
    path = folder / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def columns(table_frame: pd.DataFrame) -> dict[str, list[str]]:
    return {"text": list(table_frame["text"]), "label": list(table_frame["label"])}


@pytest.mark.parametrize(
    ("name", "content", "lines"),
    [
        (
            "data.csv",
            'text,label\nhow do I reset my pin,pin\n"my card, it was stolen",lost_card\n',
            [2, 3],
        ),
        (
            "data.tsv",
            "text\tlabel\nhow do I reset my pin\tpin\nmy card, it was stolen\tlost_card\n",
            [2, 3],
        ),
        (
            "data.jsonl",
            '{"text": "how do I reset my pin", "label": "pin"}\n\n'
            '{"text": "my card, it was stolen", "label": "lost_card"}\n',
            [1, 3],
        ),
        (
            "data.json",
            '[{"text": "how do I reset my pin", "label": "pin"},\n'
            ' {"text": "my card, it was stolen", "label": "lost_card"}]',
            None,
        ),
        ("data.txt", "how do I reset my pin@pin\nmy card, it was stolen@lost_card\n", [1, 2]),
    ],
    ids=["csv", "tsv", "jsonl", "json-array", "txt"],
)
def test_reads_each_text_format(
    tmp_path: Path, name: str, content: str, lines: list[int] | None
) -> None:
    table = read_table(write(tmp_path, name, content))
    assert columns(table.frame) == {"text": TEXTS, "label": LABELS}
    assert table.source == str(tmp_path / name)
    assert table.encoding == "utf-8"
    assert table.notes == []
    assert (table.lines is None) if lines is None else (list(table.lines) == lines)


@pytest.mark.parametrize("name", ["data.parquet", "data.pq", "exported_without_suffix"])
def test_reads_parquet_by_its_magic_bytes(tmp_path: Path, name: str) -> None:
    pytest.importorskip("pyarrow")
    pd.DataFrame({"text": TEXTS, "label": LABELS}).to_parquet(tmp_path / name)
    table = read_table(tmp_path / name)
    assert columns(table.frame) == {"text": TEXTS, "label": LABELS}
    assert table.lines is None
    assert table.where(1) == "row 1"


def test_txt_label_is_after_the_last_at_sign(tmp_path: Path) -> None:
    content = "mail me at ana@bank.example @ noon@contact\n\n\nwhere is my card@card_arrival\n"
    table = read_table(write(tmp_path, "pairs.txt", content))
    assert columns(table.frame) == {
        "text": ["mail me at ana@bank.example @ noon", "where is my card"],
        "label": ["contact", "card_arrival"],
    }
    assert list(table.lines) == [1, 4]  # blank lines skipped but still counted


def test_txt_line_without_the_delimiter_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "pairs.txt", "good@pos\nno separator here\nbad@neg\n")
    with pytest.raises(DataError) as caught:
        read_table(path, delimiter="@")
    assert str(caught.value).startswith(f"{path}: 1 line with no '@' between text and label")
    assert "(first at line 2)" in caught.value.summary
    assert caught.value.problems == [
        "each line must read TEXT@LABEL; fix those lines or pass --delimiter"
    ]


def test_txt_without_any_known_delimiter_asks_for_one(tmp_path: Path) -> None:
    path = write(tmp_path, "notes.txt", "just some words\nand some more\n")
    with pytest.raises(DataError) as caught:
        read_table(path)
    assert "cannot tell which character separates text from label" in caught.value.summary
    assert "tried tab, '@', pipe, semicolon, comma; pass --delimiter" in caught.value.problems[0]


def test_explicit_delimiter_reads_a_headed_file(tmp_path: Path) -> None:
    path = write(tmp_path, "data.dat", "text;label\nhow do I reset my pin;pin\n")
    table = read_table(path, delimiter=";")
    assert columns(table.frame) == {"text": TEXTS[:1], "label": LABELS[:1]}


def test_a_multi_character_delimiter_splits_text_pairs(tmp_path: Path) -> None:
    path = write(tmp_path, "pairs.txt", "a | b || c||pipes\nplain text||other\n")
    table = read_table(path, delimiter="||")
    assert columns(table.frame) == {
        "text": ["a | b || c", "plain text"],
        "label": ["pipes", "other"],
    }


@pytest.mark.parametrize(
    ("name", "delimiter", "message"),
    [
        ("data.csv", "||", "--delimiter must be a single character for data.csv; got '||'"),
        ("data.dat", "::", "--delimiter must be a single character for data.dat; got '::'"),
        ("data.csv", "", "--delimiter '' cannot separate fields"),
        ("data.csv", '"', """--delimiter '"' cannot separate fields"""),
        ("pairs.txt", "\n", "--delimiter '\\n' cannot separate fields"),
    ],
)
def test_a_delimiter_pandas_cannot_use_is_refused(
    tmp_path: Path, name: str, delimiter: str, message: str
) -> None:
    path = write(tmp_path, name, "text||label\nhi||greet\n")
    with pytest.raises(ConfigError) as caught:
        read_table(path, delimiter=delimiter)
    assert caught.value.summary == message


def test_header_names_are_stripped(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "data.csv", " text , label \nhi,greet\n"))
    assert list(table.frame.columns) == ["text", "label"]


def test_rows_merged_by_an_open_quote_are_named_with_their_lines(tmp_path: Path) -> None:
    rows = ['"where is my card,card', "cancel it,cancel", "reset pin,pin", 'hello",greet']
    path = write(tmp_path, "data.csv", "\n".join(["text,label", "hi,greet", *rows, "bye,leave"]))
    table = read_table(path)
    assert len(table.frame) == 3 and list(table.lines) == [2, 3, 7]
    assert table.notes == [
        "data.csv: 1 row spans several lines through quoted line breaks (lines 3-6), so 7 "
        "lines hold 3 rows and a header; if a quote was left open, close it where the text ends"
    ]


def test_many_merged_rows_are_listed_then_counted(tmp_path: Path) -> None:
    rows = [f'"line one {i}\nline two",label{i % 2}' for i in range(7)]
    table = read_table(write(tmp_path, "data.csv", "\n".join(["text,label", *rows])))
    [note] = table.notes
    assert "7 rows span several lines" in note
    assert "(lines 2-3, lines 4-5, lines 6-7, lines 8-9, lines 10-11 and 2 more)" in note


class TestHuggingFace:
    def test_class_label_is_mapped_back_to_names(self, tmp_path: Path) -> None:
        datasets = pytest.importorskip("datasets")
        features = datasets.Features(
            {
                "sentence": datasets.Value("string"),
                "label": datasets.ClassLabel(names=["negative", "positive"]),
            }
        )
        data = {"sentence": ["awful", "lovely", "fine"], "label": [0, 1, 1]}
        datasets.Dataset.from_dict(data, features=features).save_to_disk(tmp_path / "hf")
        table = read_table(tmp_path / "hf")
        assert list(table.frame["sentence"]) == ["awful", "lovely", "fine"]
        assert list(table.frame["label"]) == ["negative", "positive", "positive"]
        assert table.lines is None

    def test_dataset_dict_split_is_chosen_and_a_missing_one_is_named(self, tmp_path: Path) -> None:
        datasets = pytest.importorskip("datasets")
        train = datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["x", "y"]})
        test = datasets.Dataset.from_dict({"text": ["c"], "label": ["x"]})
        datasets.DatasetDict({"train": train, "test": test}).save_to_disk(tmp_path / "hf")
        assert list(read_table(tmp_path / "hf", split="test").frame["text"]) == ["c"]
        with pytest.raises(DataError, match="has no split 'validation'; it has train, test"):
            read_table(tmp_path / "hf", split="validation")

    def test_plain_folder_is_refused_with_what_to_pass(self, tmp_path: Path) -> None:
        write(tmp_path, "train.csv", "text,label\n")
        with pytest.raises(DataError) as caught:
            read_table(tmp_path)
        assert caught.value.summary == (
            f"{tmp_path}: is a folder but not a saved Hugging Face dataset (no dataset_info.json)"
        )
        assert caught.value.problems == [
            "pass a file, or a folder written by datasets' save_to_disk()"
        ]


class TestMissingFile:
    def test_suggests_a_similar_name_in_the_same_folder(self, tmp_path: Path) -> None:
        write(tmp_path, "train.csv", "text,label\n")
        write(tmp_path, "unrelated.parquet", b"PAR1")
        with pytest.raises(DataError) as caught:
            read_table(tmp_path / "trian.csv")
        assert (
            str(caught.value) == f"{tmp_path / 'trian.csv'}: no such file; did you mean train.csv?"
        )

    def test_says_when_the_folder_is_missing_too(self, tmp_path: Path) -> None:
        with pytest.raises(DataError) as caught:
            read_table(tmp_path / "nope" / "train.csv")
        assert str(caught.value) == (
            f"{tmp_path / 'nope' / 'train.csv'}: no such file "
            f"(folder {tmp_path / 'nope'} does not exist either)"
        )

    def test_no_suggestion_when_nothing_is_close(self, tmp_path: Path) -> None:
        write(tmp_path, "zzzz.parquet", b"PAR1")
        with pytest.raises(DataError) as caught:
            read_table(tmp_path / "train.csv")
        assert str(caught.value) == f"{tmp_path / 'train.csv'}: no such file"


class TestEncodings:
    def test_utf8_keeps_accents_and_emoji(self, tmp_path: Path) -> None:
        table = read_table(write(tmp_path, "data.csv", "text,label\ncafé naïve 💳,ok\n"))
        assert list(table.frame["text"]) == ["café naïve 💳"]
        assert (table.encoding, table.notes) == ("utf-8", [])

    @pytest.mark.parametrize(
        ("name", "body"),
        [
            ("data.csv", "text,label\nhi,greet\n"),
            ("data.jsonl", '{"text": "hi", "label": "greet"}\n'),
            ("data.txt", "hi@greet\n"),
        ],
    )
    def test_utf8_bom_is_not_part_of_the_first_column(
        self, tmp_path: Path, name: str, body: str
    ) -> None:
        table = read_table(write(tmp_path, name, b"\xef\xbb\xbf" + body.encode()))
        assert list(table.frame.columns) == ["text", "label"]
        assert list(table.frame["text"]) == ["hi"]
        assert table.encoding == "utf-8-sig"

    def test_utf16_with_bom(self, tmp_path: Path) -> None:
        table = read_table(write(tmp_path, "data.csv", "text,label\ncafé,ok\n".encode("utf-16")))
        assert list(table.frame.columns) == ["text", "label"]
        assert list(table.frame["text"]) == ["café"]
        assert table.encoding == "utf-16"

    @pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
    def test_latin1_falls_back_with_a_note_naming_the_line(
        self, tmp_path: Path, newline: str
    ) -> None:
        content = newline.join(["text,label", "hello,greet", "café,order", ""])
        table = read_table(write(tmp_path, "menu.csv", content.encode("latin-1")))
        assert list(table.frame["text"]) == ["hello", "café"]
        assert table.encoding == "latin-1"
        [note] = table.notes
        assert "menu.csv is not valid UTF-8 (first bad byte 0xe9 at line 3)" in note
        assert "latin-1" in note
        assert "Re-save it as UTF-8" in note

    def test_decode_directly(self, tmp_path: Path) -> None:
        assert decode("café".encode(), tmp_path / "x") == ("café", "utf-8", [])
        text, encoding, notes = decode(b"\xe9", tmp_path / "x")
        assert (text, encoding, len(notes)) == ("é", "latin-1", 1)


@pytest.mark.parametrize(
    ("name", "rows"),
    [
        ("data.csv", ["text,label", "hello,greet", "bye,leave"]),
        ("data.tsv", ["text\tlabel", "hello\tgreet", "bye\tleave"]),
        (
            "data.jsonl",
            ['{"text": "hello", "label": "greet"}', '{"text": "bye", "label": "leave"}'],
        ),
        ("data.txt", ["hello@greet", "", "bye@leave"]),
    ],
)
def test_line_endings_give_the_same_rows_and_lines(
    tmp_path: Path, name: str, rows: list[str]
) -> None:
    endings = {"lf": "\n", "crlf": "\r\n", "cr": "\r"}
    tables = [
        read_table(write(tmp_path, f"{kind}-{name}", ending.join(rows) + ending))
        for kind, ending in endings.items()
    ]
    frames = [columns(t.frame) for t in tables]
    assert frames[0] == {"text": ["hello", "bye"], "label": ["greet", "leave"]}
    assert frames[1] == frames[0] and frames[2] == frames[0]
    assert [list(t.lines) for t in tables[1:]] == [list(tables[0].lines)] * 2


class TestUnreadable:
    def test_binary_file_is_called_binary(self, tmp_path: Path) -> None:
        path = write(tmp_path, "model.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
        with pytest.raises(DataError) as caught:
            read_table(path)
        assert caught.value.summary == (
            f"{path}: this looks like a binary file (it contains NUL bytes), not a text table"
        )
        assert "pass a CSV, TSV, JSONL, Parquet or text file" in caught.value.problems[0]

    @pytest.mark.parametrize("content", [b"", b"\n\n", b"  \r\n\t\n"], ids=["zero", "LF", "space"])
    def test_empty_file(self, tmp_path: Path, content: bytes) -> None:
        path = write(tmp_path, "data.csv", content)
        with pytest.raises(DataError) as caught:
            read_table(path)
        assert str(caught.value) == (
            f"{path}: the file is empty; it needs a header and at least one row"
        )

    def test_csv_row_with_too_many_fields(self, tmp_path: Path) -> None:
        path = write(tmp_path, "data.csv", "text,label\nhello,greet\nhi, there,greet,extra\n")
        with pytest.raises(DataError) as caught:
            read_table(path)
        assert caught.value.summary == f"{path}: cannot be parsed as comma-separated values"
        [problem] = caught.value.problems
        assert "Expected 2 fields in line 3, saw 4" in problem
        assert problem.endswith("quote fields that contain the delimiter, or pass --delimiter")

    def test_jsonl_bad_line_is_named(self, tmp_path: Path) -> None:
        content = (
            '{"text": "hi", "label": "greet"}\n\n{"text": "bye", "label": \n["not", "an object"]\n'
        )
        path = write(tmp_path, "data.jsonl", content)
        with pytest.raises(DataError) as caught:
            read_table(path)
        assert caught.value.summary == f"{path}: 2 lines could not be read as a JSON object"
        assert caught.value.problems[0].startswith("line 3: Expecting value")
        assert caught.value.problems[1] == (
            'line 4: expected an object like {"text": ..., "label": ...}'
        )

    def test_jsonl_lists_five_bad_lines_then_counts_the_rest(self, tmp_path: Path) -> None:
        path = write(tmp_path, "data.jsonl", "oops\n" * 8)
        with pytest.raises(DataError) as caught:
            read_table(path)
        assert len(caught.value.problems) == 6
        assert caught.value.problems[-1] == "... and 3 more"

    def test_json_array_syntax_error_names_the_line(self, tmp_path: Path) -> None:
        path = write(tmp_path, "data.json", '[\n{"text": "hi", "label": "greet"},\n{"text": }\n]')
        with pytest.raises(DataError, match="invalid JSON at line 3: Expecting value"):
            read_table(path)

    def test_jsonl_line_nested_too_deep_is_named(self, tmp_path: Path) -> None:
        deep = '{"text": ' + "[" * 100_000 + "]" * 100_000 + ', "label": "x"}'
        path = write(tmp_path, "data.jsonl", '{"text": "hi", "label": "greet"}\n' + deep + "\n")
        with pytest.raises(DataError) as caught:
            read_table(path)
        assert caught.value.summary == f"{path}: 1 line could not be read as a JSON object"
        assert caught.value.problems == [
            "line 2: nested too deeply to read (a row should be a flat object)"
        ]

    def test_json_array_nested_too_deep(self, tmp_path: Path) -> None:
        path = write(tmp_path, "data.json", "[" * 100_000 + "]" * 100_000)
        with pytest.raises(DataError, match="is nested too deeply to read; each example should"):
            read_table(path)

    def test_json_array_of_non_objects(self, tmp_path: Path) -> None:
        path = write(tmp_path, "data.json", '[["hi", "greet"]]')
        with pytest.raises(DataError, match="a JSON array must hold objects, one per example"):
            read_table(path)


class TestHubOnlyWithAPrefix:
    """A typo must never become a download: the hub is reached only through `hf://NAME`."""

    @pytest.fixture
    def hub_calls(self, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
        """Record every hub request instead of making it (and stay offline if one slips by)."""
        datasets = pytest.importorskip("datasets")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
        calls: list[tuple[str, str]] = []

        def load_dataset(name: str, split: str, **kwargs: Any) -> Any:
            calls.append((name, split))
            return datasets.Dataset.from_dict({"text": ["hi", "bye"], "label": ["a", "b"]})

        monkeypatch.setattr(datasets, "load_dataset", load_dataset)
        return calls

    @pytest.mark.parametrize("name", ["tickets", "acme/tickets", "tickets_v2"])
    def test_a_missing_name_without_extension_is_a_missing_file(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        hub_calls: list[tuple[str, str]],
        name: str,
    ) -> None:
        monkeypatch.chdir(tmp_path)
        with pytest.raises(DataError) as caught:
            read_table(name)
        assert caught.value.summary.startswith(f"{name}: no such file")
        assert caught.value.problems == [
            f"to read the Hugging Face hub dataset '{name}', pass hf://{name}"
        ]
        assert hub_calls == []

    def test_a_missing_name_suggests_the_file_it_resembles(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_calls: list[tuple[str, str]]
    ) -> None:
        monkeypatch.chdir(tmp_path)
        write(tmp_path, "tickets.csv", "text,label\nhi,a\n")
        with pytest.raises(DataError) as caught:
            read_table("tickets")
        assert caught.value.summary == "tickets: no such file; did you mean tickets.csv?"
        assert hub_calls == []

    @pytest.mark.parametrize("given", ["hf://acme/tickets", Path("hf://acme/tickets")])
    def test_the_prefix_reads_from_the_hub(
        self, hub_calls: list[tuple[str, str]], given: str | Path
    ) -> None:
        table = read_table(given, split="test")
        assert hub_calls == [("acme/tickets", "test")]
        assert columns(table.frame) == {"text": ["hi", "bye"], "label": ["a", "b"]}
        assert table.source == "hf://acme/tickets"

    def test_an_unreachable_hub_dataset_says_how_to_work_offline(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        datasets = pytest.importorskip("datasets")

        def offline(name: str, split: str, **kwargs: Any) -> Any:
            raise ConnectionError("Couldn't reach the Hugging Face Hub")

        monkeypatch.setattr(datasets, "load_dataset", offline)
        with pytest.raises(DataError) as caught:
            read_table("hf://acme/tickets")
        assert caught.value.summary == (
            "hf://acme/tickets: could not be loaded from the Hugging Face hub"
        )
        assert "ConnectionError: Couldn't reach the Hugging Face Hub" in caught.value.problems

    @pytest.mark.parametrize("given", ["hf://", "hf://a/b/c/d", "hf://../x"])
    def test_a_malformed_hub_name_is_refused(
        self, hub_calls: list[tuple[str, str]], given: str
    ) -> None:
        with pytest.raises(DataError, match="not a Hugging Face hub dataset name"):
            read_table(given)
        assert hub_calls == []


class TestNotARegularFile:
    """A FIFO blocks its reader and a device never ends: both are refused before reading."""

    def test_a_fifo_is_refused_at_once(self, tmp_path: Path) -> None:
        fifo = tmp_path / "data.csv"
        os.mkfifo(fifo)
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(read_table, fifo)
            try:
                error = future.exception(timeout=30)
            finally:
                if not future.done():  # unblock a reader stuck in open(): give it an EOF
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        assert isinstance(error, DataError)
        assert error.summary == (
            f"{fifo}: is a named pipe (FIFO), not a regular file; data is read only from files"
        )
        assert error.problems == ["save the data to a file and pass that file"]

    @pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
    def test_an_endless_device_is_refused(self) -> None:
        with pytest.raises(DataError, match=r"/dev/zero: is a device, not a regular file"):
            read_table("/dev/zero")

    def test_a_link_to_a_regular_file_is_read(self, tmp_path: Path) -> None:
        target = write(tmp_path, "real.csv", "text,label\nhi,greet\n")
        (tmp_path / "link.csv").symlink_to(target)
        assert list(read_table(tmp_path / "link.csv").frame["text"]) == ["hi"]
