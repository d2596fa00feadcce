"""to_dataset: column detection and every data problem, reported at once with line numbers.

Files are written to disk and read with the real loader, so the line numbers asserted here
are the ones a user would see in their editor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from frugalml.data import DEMO_INTENTS, Validated, read_table, to_dataset
from frugalml.errors import DataError

# Line 2 onwards: three examples of each of two classes, so a file built from it is valid.
VALID_ROWS = [
    "how do I reset my pin,pin",
    "forgot my pin,pin",
    "pin is blocked,pin",
    "card never arrived,card_arrival",
    "where is my new card,card_arrival",
    "card still not here,card_arrival",
]


def load(folder: Path, content: str, filename: str = "data.csv", **kwargs: Any) -> Validated:
    path = folder / filename
    path.write_text(content, encoding="utf-8")
    return to_dataset(read_table(path), **kwargs)


def problems_of(folder: Path, content: str, filename: str = "data.csv", **kwargs: Any) -> list[str]:
    with pytest.raises(DataError) as caught:
        load(folder, content, filename, **kwargs)
    assert caught.value.summary.startswith(str(folder / filename))
    return caught.value.problems


def csv_text(*extra_rows: str, header: str = "text,label") -> str:
    return "\n".join([header, *VALID_ROWS, *extra_rows]) + "\n"


def read_table_lines(folder: Path, content: str) -> list[int]:
    path = folder / "lines.csv"
    path.write_text(content, encoding="utf-8")
    lines = read_table(path).lines
    assert lines is not None
    return [int(n) for n in lines]


def jsonl_rows(label_as: Any = str) -> list[str]:
    """VALID_ROWS as JSON lines; `label_as` maps each label to what is written."""
    pairs = (row.rsplit(",", 1) for row in VALID_ROWS)
    return [json.dumps({"text": text, "label": label_as(label)}) for text, label in pairs]


def test_valid_file_gives_a_dataset_without_notes(tmp_path: Path) -> None:
    validated = load(tmp_path, csv_text())
    assert (validated.text_col, validated.label_col, validated.notes) == ("text", "label", [])
    data = validated.dataset
    assert data.labels == ("card_arrival", "pin")
    assert data.texts[0] == "how do I reset my pin"
    assert list(data.y) == [1, 1, 1, 0, 0, 0]
    assert data.name == str(tmp_path / "data.csv")
    assert load(tmp_path, csv_text(), name="bank").dataset.name == "bank"


def test_demo_intents_load_cleanly() -> None:
    table = read_table(DEMO_INTENTS)
    validated = to_dataset(table)
    assert len(validated.dataset) == 560
    assert len(validated.dataset.labels) == 14
    assert table.notes == [] and validated.notes == []
    assert table.encoding == "utf-8"


class TestColumns:
    @pytest.mark.parametrize(
        ("header", "text_col", "label_col"),
        [
            ("sentence,category", "sentence", "category"),
            ("Text,Label", "Text", "Label"),
            ("utterance,intent", "utterance", "intent"),
            ("id,review,sentiment", "review", "sentiment"),
        ],
    )
    def test_detected_by_name(
        self, tmp_path: Path, header: str, text_col: str, label_col: str
    ) -> None:
        rows = [
            f"{i},{row}" if header.startswith("id") else row for i, row in enumerate(VALID_ROWS)
        ]
        validated = load(tmp_path, "\n".join([header, *rows]))
        assert (validated.text_col, validated.label_col) == (text_col, label_col)
        assert validated.dataset.labels == ("card_arrival", "pin")

    def test_named_explicitly(self, tmp_path: Path) -> None:
        validated = load(tmp_path, csv_text(header="body,tag"), text_col="body", label_col="tag")
        assert len(validated.dataset) == 6

    @pytest.mark.parametrize("wanted", ["txt", "TEXT", "texts"])
    def test_missing_column_suggests_the_closest(self, tmp_path: Path, wanted: str) -> None:
        assert problems_of(tmp_path, csv_text(), text_col=wanted) == [
            f"column '{wanted}' not found (columns: text, label); did you mean 'text'?"
        ]

    def test_missing_text_and_label_columns_are_both_reported(self, tmp_path: Path) -> None:
        problems = problems_of(tmp_path, csv_text(header="foo,bar"))
        assert problems == [
            "no text column found among foo, bar (looked for text, sentence, question, "
            "utterance, ...); pass --text-col NAME",
            "no label column found among foo, bar (looked for label, labels, category, "
            "intent, ...); pass --label-col NAME",
        ]

    def test_missing_column_with_nothing_close_lists_the_option(self, tmp_path: Path) -> None:
        [problem] = problems_of(tmp_path, csv_text(), label_col="zzz")
        assert problem == (
            "column 'zzz' not found (columns: text, label); pass --label-col with one of them"
        )

    def test_same_column_for_text_and_label(self, tmp_path: Path) -> None:
        with pytest.raises(DataError, match="text and label are both column 'text'"):
            load(tmp_path, csv_text(), label_col="text")


class TestEmptyValues:
    def test_empty_text_counts_rows_and_names_the_first_line(self, tmp_path: Path) -> None:
        content = csv_text(",pin", "   ,pin", '"",card_arrival')  # lines 8, 9 and 10
        assert problems_of(tmp_path, content) == [
            "column 'text': 3 rows are empty (first at line 8); fill them in or pass --drop-invalid"
        ]

    def test_empty_label(self, tmp_path: Path) -> None:
        content = csv_text("orphan question,")
        assert problems_of(tmp_path, content) == [
            "column 'label': 1 row is empty (first at line 8); fill them in or pass --drop-invalid"
        ]

    def test_line_numbers_skip_blank_lines_and_follow_quoted_newlines(self, tmp_path: Path) -> None:
        rows = [VALID_ROWS[0], "", '"a question\nover two lines",pin', *VALID_ROWS[1:], ",pin"]
        content = "\n".join(["text,label", *rows]) + "\n"
        assert read_table_lines(tmp_path, content) == [2, 4, 6, 7, 8, 9, 10, 11]
        [problem] = problems_of(tmp_path, content)
        assert "(first at line 11)" in problem

    def test_txt_line_numbers_count_blank_lines(self, tmp_path: Path) -> None:
        rows = [row.replace(",", "@") for row in VALID_ROWS]
        content = "\n".join(["", *rows[:3], "", "", *rows[3:], "question without label@"])
        [problem] = problems_of(tmp_path, content, "data.txt")
        assert problem.startswith("column 'label': 1 row is empty (first at line 10)")

    def test_jsonl_missing_key_and_null_are_empty(self, tmp_path: Path) -> None:
        content = "\n".join(
            [*jsonl_rows(), "", '{"label": "pin"}', '{"text": null, "label": "pin"}']
        )
        [problem] = problems_of(tmp_path, content, "data.jsonl")
        assert problem.startswith("column 'text': 2 rows are empty (first at line 8)")

    def test_json_array_points_at_the_row(self, tmp_path: Path) -> None:
        rows = jsonl_rows()
        content = "[" + ",".join([*rows[:2], '{"text": "", "label": "pin"}', *rows[2:]]) + "]"
        [problem] = problems_of(tmp_path, content, "data.json")
        assert "(first at row 2)" in problem


class TestClasses:
    @pytest.mark.parametrize(
        ("min_per_class", "splits"),
        [(3, "train, validation and test"), (2, "train and validation")],
    )
    def test_rare_class_says_how_many_it_needs(
        self, tmp_path: Path, min_per_class: int, splits: str
    ) -> None:
        assert problems_of(
            tmp_path, csv_text("close my account,close"), min_per_class=min_per_class
        ) == [
            f"class 'close' has 1 example; a class needs at least {min_per_class} to be split "
            f"into {splits}; add examples, merge or remove the class, or pass --drop-invalid"
        ]

    def test_two_examples_are_enough_when_the_user_brings_a_test_set(self, tmp_path: Path) -> None:
        validated = load(
            tmp_path, csv_text("close my account,close", "shut it,close"), min_per_class=2
        )
        assert validated.dataset.class_counts().tolist() == [3, 2, 3]

    def test_only_one_class(self, tmp_path: Path) -> None:
        content = "\n".join(["text,label", *VALID_ROWS[:3]])
        assert problems_of(tmp_path, content) == [
            "column 'label' has 1 class with enough examples; classification needs at least "
            "2 classes"
        ]

    def test_a_test_set_may_hold_a_single_class(self, tmp_path: Path) -> None:
        validated = load(tmp_path, "text,label\nhello there,greeting\n", min_per_class=1)
        assert validated.dataset.labels == ("greeting",)

    def test_a_test_set_needs_a_labeled_row(self, tmp_path: Path) -> None:
        assert problems_of(tmp_path, "text,label\n", min_per_class=1) == [
            "column 'label' has 0 classes with enough examples; a test set needs at least 1 class"
        ]

    def test_one_class_left_after_rare_ones_is_still_an_error_with_drop_invalid(
        self, tmp_path: Path
    ) -> None:
        content = "\n".join(["text,label", *VALID_ROWS[:4]])
        problems = problems_of(tmp_path, content, drop_invalid=True)
        assert problems[0].startswith("class 'card_arrival' has 1 example")
        assert problems[1].startswith("column 'label' has 1 class with enough examples")

    def test_label_column_that_looks_like_free_text(self, tmp_path: Path) -> None:
        rows = [f"question {i},customer wrote note number {i}" for i in range(24)]
        [problem] = problems_of(tmp_path, "\n".join(["text,label", *rows]))
        assert problem == (
            "column 'label' looks like free text, not labels (24 of 24 values are unique); "
            "is 'label' the text column? pass --label-col with the column of class names "
            "(text column: 'text')"
        )

    def test_numeric_labels_keep_their_written_form(self, tmp_path: Path) -> None:
        content = "\n".join(jsonl_rows(label_as={"pin": 10, "card_arrival": 2}.get))
        assert load(tmp_path, content, "data.jsonl").dataset.labels == ("10", "2")

    def test_json_null_does_not_turn_integer_labels_into_floats(self, tmp_path: Path) -> None:
        rows = jsonl_rows(label_as={"pin": 1, "card_arrival": 2}.get)
        content = "\n".join([*rows, '{"text": "unlabeled", "label": null}'])
        validated = load(tmp_path, content, "data.jsonl", drop_invalid=True)
        assert validated.dataset.labels == ("1", "2")


class TestConflicts:
    def test_names_both_lines_and_both_labels(self, tmp_path: Path) -> None:
        # The repeat differs in case and spacing only: it is the same question.
        content = csv_text("is my card blocked,pin", "Is my card  BLOCKED,card_arrival")
        assert problems_of(tmp_path, content) == [
            "1 text appears with conflicting labels (first: 'is my card blocked' is 'pin' at "
            "line 8 and 'card_arrival' at line 9); correct the labels or pass --drop-invalid "
            "to drop them"
        ]

    def test_duplicates_with_the_same_label_are_fine(self, tmp_path: Path) -> None:
        validated = load(tmp_path, csv_text("forgot my pin,pin"))
        assert len(validated.dataset) == 7


class TestDuplicates:
    def test_repeated_texts_are_counted_in_a_note(self, tmp_path: Path) -> None:
        content = csv_text(
            "forgot my pin,pin", "Forgot  my PIN,pin", "card still not here,card_arrival"
        )
        validated = load(tmp_path, content)
        assert len(validated.dataset) == 9  # duplicates are kept, but kept together
        assert validated.notes == [
            "3 rows repeat an earlier text (ignoring case and spacing; 2 texts occur more than "
            "once); each text's copies stay in one split, so validation and test never score "
            "a text seen in training"
        ]

    def test_a_class_needs_distinct_texts_to_be_split(self, tmp_path: Path) -> None:
        content = csv_text(
            "close my account,close", "close my account,close", "Close my account,close"
        )
        assert problems_of(tmp_path, content) == [
            "class 'close' has 3 examples but 1 distinct text; a class needs at least 3 distinct "
            "texts to be split into train, validation and test; add examples, merge or remove "
            "the class, or pass --drop-invalid"
        ]


class TestUnlearnableTextColumn:
    def test_a_numeric_text_column_is_warned_about(self, tmp_path: Path) -> None:
        rows = [f"{i * 7.5:.2f},{'high' if i % 2 else 'low'}" for i in range(40)]
        validated = load(tmp_path, "\n".join(["text,label", *rows]))
        [note] = validated.notes
        assert note == (
            "column 'text' looks numeric: 100% of its values are numbers (e.g. '0.00'); a text "
            "model learns little from them; if another column holds the text, pass --text-col"
        )

    def test_an_id_like_text_column_is_warned_about(self, tmp_path: Path) -> None:
        rows = [f"TCK-{i:05d},{'open' if i % 3 else 'closed'}" for i in range(40)]
        validated = load(tmp_path, "\n".join(["text,label", *rows]))
        [note] = validated.notes
        assert note.startswith(
            "column 'text' looks like identifiers: 100% of its values are distinct single "
            "tokens with digits (e.g. 'TCK-00000')"
        )

    def test_texts_with_some_numbers_are_not_warned_about(self, tmp_path: Path) -> None:
        rows = [f"order {i} has not arrived,late" for i in range(20)]
        rows += [f"refund {i} please,refund" for i in range(20)]
        rows += [f"{i},refund" for i in range(5)]  # a few bare numbers among real texts
        assert load(tmp_path, "\n".join(["text,label", *rows])).notes == []


# One file with three different problems: line 8 has no text, class 'close' has
# one example (line 9), and line 11 repeats line 10 with another label.
THREE_PROBLEMS = csv_text(
    ",pin", "close my account,close", "is my card blocked,pin", "is my card blocked,card_arrival"
)


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        load(tmp_path, THREE_PROBLEMS)
    error = caught.value
    assert error.summary == f"{tmp_path / 'data.csv'} has 3 problems:"
    assert [p.split(";")[0] for p in error.problems] == [
        "column 'text': 1 row is empty (first at line 8)",
        "1 text appears with conflicting labels (first: 'is my card blocked' is 'pin' at "
        "line 10 and 'card_arrival' at line 11)",
        "class 'close' has 1 example",
    ]
    assert str(error) == "\n".join([error.summary, *(f"  - {p}" for p in error.problems)])


def test_drop_invalid_drops_the_offending_rows_and_says_how_many(tmp_path: Path) -> None:
    validated = load(tmp_path, THREE_PROBLEMS, drop_invalid=True)
    data = validated.dataset
    # Both rows of the conflicting text go: neither label can be trusted.
    assert data.texts == tuple(row.rsplit(",", 1)[0] for row in VALID_ROWS)
    assert data.labels == ("card_arrival", "pin")
    [note] = validated.notes
    assert note.startswith(
        "--drop-invalid: dropped 4 rows of 10 for: column 'text': 1 row is empty"
    )
    assert "conflicting labels" in note and "class 'close' has 1 example" in note
