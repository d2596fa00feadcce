"""Dataset and the stratified splits every strategy trains, tunes and reports on."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from frugalml.data import Dataset, Splits, split_off_validation, stratified_split
from frugalml.data.split import duplicate_groups


def make(counts: dict[str, int], name: str = "bank") -> Dataset:
    """`counts` examples of each class, every text unique so splits can be compared as sets."""
    texts = [f"{label} question {i}" for label, n in counts.items() for i in range(n)]
    labels = [label for label, n in counts.items() for _ in range(n)]
    return Dataset.from_lists(texts, labels, name=name)


def as_set(data: Dataset) -> set[tuple[str, str]]:
    return {(text, data.labels[y]) for text, y in zip(data.texts, data.y, strict=True)}


def parts(splits: Splits) -> list[Dataset]:
    return [splits.train, splits.val, splits.test]


Rows = tuple[list[str], list[str]]


class TestDataset:
    def test_from_lists_sorts_the_label_map(self) -> None:
        data = Dataset.from_lists(["a", "b", "c", "d"], ["pin", "card", "pin", "atm"])
        assert data.labels == ("atm", "card", "pin")
        assert data.y.tolist() == [2, 1, 2, 0]
        assert data.y.dtype == np.int64
        assert (len(data), data.name, data.task) == (4, "data", "text-classification")
        assert data.class_counts().tolist() == [1, 1, 2]

    def test_given_label_map_keeps_its_order_and_counts_absent_classes(self) -> None:
        data = Dataset.from_lists(["a", "b"], ["pin", "card"], label_names=["pin", "atm", "card"])
        assert data.labels == ("pin", "atm", "card")
        assert data.y.tolist() == [0, 2]
        assert data.class_counts().tolist() == [1, 0, 1]

    def test_label_outside_the_given_map_is_refused(self) -> None:
        with pytest.raises(ValueError, match=r"labels not in the label map: \['refund'\]"):
            Dataset.from_lists(["a", "b"], ["pin", "refund"], label_names=["pin"])

    def test_texts_and_labels_must_have_the_same_length(self) -> None:
        with pytest.raises(ValueError, match="2 texts but 1 labels"):
            Dataset(("a", "b"), np.array([0]), ("pin",))

    def test_subset_keeps_the_label_map_and_task(self) -> None:
        data = Dataset.from_lists(["a", "b", "c"], ["x", "y", "z"], name="full")
        part = data.subset(np.array([2, 0]), "part")
        assert part.texts == ("c", "a")
        assert part.y.tolist() == [2, 0]
        assert (part.labels, part.task, part.name) == (data.labels, data.task, "part")
        assert data.subset(np.array([1])).name == "full"

    def test_fingerprint_is_stable_for_equal_data(self) -> None:
        data = make({"pin": 3, "card": 3})
        again = make({"pin": 3, "card": 3}, name="another name")
        assert data.fingerprint() == again.fingerprint()
        assert len(data.fingerprint()) == 64

    @pytest.mark.parametrize(
        "change",
        [
            pytest.param(lambda t, lbl: (["pin question 0!", *t[1:]], lbl), id="one-text"),
            pytest.param(lambda t, lbl: (t, ["card", *lbl[1:]]), id="one-label"),
            pytest.param(lambda t, lbl: (t[:-1], lbl[:-1]), id="one-row-fewer"),
            pytest.param(lambda t, lbl: (t[::-1], lbl[::-1]), id="row-order"),
        ],
    )
    def test_fingerprint_changes_with_any_single_change(
        self, change: Callable[[list[str], list[str]], Rows]
    ) -> None:
        texts = [f"pin question {i}" for i in range(3)] + [f"card question {i}" for i in range(3)]
        labels = ["pin"] * 3 + ["card"] * 3
        before = Dataset.from_lists(texts, labels).fingerprint()
        assert Dataset.from_lists(*change(texts, labels)).fingerprint() != before

    def test_fingerprint_changes_with_the_label_map(self) -> None:
        texts, labels = ["a", "b"], ["pin", "card"]
        sorted_map = Dataset.from_lists(texts, labels)
        other_map = Dataset.from_lists(texts, labels, label_names=["pin", "card"])
        wider_map = Dataset.from_lists(texts, labels, label_names=["atm", "card", "pin"])
        prints = {d.fingerprint() for d in (sorted_map, other_map, wider_map)}
        assert len(prints) == 3


class TestStratifiedSplit:
    @pytest.mark.parametrize("seed", [0, 1, 7])
    def test_a_three_example_class_lands_once_in_each_split(self, seed: int) -> None:
        splits = stratified_split(make({"pin": 3, "card": 40, "atm": 5}), seed=seed)
        for part in parts(splits):
            assert part.class_counts().min() >= 1
        assert [p.class_counts()[2] for p in parts(splits)] == [1, 1, 1]  # 'pin' is class 2

    @pytest.mark.parametrize(("val_frac", "test_frac"), [(0.15, 0.15), (0.1, 0.3), (0.3, 0.1)])
    def test_splits_partition_the_data(self, val_frac: float, test_frac: float) -> None:
        data = make({"pin": 3, "card": 17, "atm": 50})
        splits = stratified_split(data, val_frac=val_frac, test_frac=test_frac, seed=3)
        train, val, test = (as_set(p) for p in parts(splits))
        assert not train & val and not train & test and not val & test
        assert train | val | test == as_set(data)
        assert sum(len(p) for p in parts(splits)) == len(data)
        assert all(p.labels == data.labels for p in parts(splits))

    def test_fractions_are_respected_on_a_thousand_rows(self) -> None:
        data = make({"pin": 100, "card": 200, "atm": 300, "refund": 400})
        splits = stratified_split(data, val_frac=0.2, test_frac=0.1, seed=0)
        assert len(splits.val) == pytest.approx(200, abs=5)
        assert len(splits.test) == pytest.approx(100, abs=5)
        assert len(splits.train) == pytest.approx(700, abs=5)
        # Stratified: each class keeps its share in every split.
        for part in parts(splits):
            shares = part.class_counts() / len(part)
            np.testing.assert_allclose(shares, data.class_counts() / len(data), atol=0.02)

    def test_same_seed_same_split_and_another_seed_another(self) -> None:
        data = make({"pin": 300, "card": 300})
        first = [as_set(p) for p in parts(stratified_split(data, seed=11))]
        again = [as_set(p) for p in parts(stratified_split(data, seed=11))]
        other = [as_set(p) for p in parts(stratified_split(data, seed=12))]
        assert first == again
        assert first[0] != other[0] and first[1] != other[1] and first[2] != other[2]

    def test_rows_keep_their_original_order_within_a_split(self) -> None:
        data = make({"pin": 30, "card": 30})
        for part in parts(stratified_split(data, seed=5)):
            positions = [data.texts.index(text) for text in part.texts]
            assert positions == sorted(positions)

    def test_split_names_extend_the_dataset_name(self) -> None:
        splits = stratified_split(make({"pin": 5, "card": 5}, name="bank"))
        assert [p.name for p in parts(splits)] == ["bank:train", "bank:val", "bank:test"]


class TestSplitOffValidation:
    def test_leaves_the_test_set_empty(self) -> None:
        data = make({"pin": 2, "card": 20})
        splits = split_off_validation(data, val_frac=0.2, seed=4)
        assert len(splits.test) == 0
        assert splits.test.labels == data.labels
        assert splits.test.y.dtype == np.int64
        assert as_set(splits.train) | as_set(splits.val) == as_set(data)
        assert not as_set(splits.train) & as_set(splits.val)
        assert [p.name for p in parts(splits)] == ["bank:train", "bank:val", "bank:test"]

    def test_a_two_example_class_lands_once_in_train_and_validation(self) -> None:
        splits = split_off_validation(make({"pin": 2, "card": 20}), val_frac=0.5)
        assert splits.train.class_counts().tolist() == [10, 1]
        assert splits.val.class_counts().tolist() == [10, 1]

    def test_same_as_stratified_split_with_no_test_fraction(self) -> None:
        data = make({"pin": 9, "card": 20})
        ours = split_off_validation(data, val_frac=0.25, seed=2)
        theirs = stratified_split(data, val_frac=0.25, test_frac=0.0, seed=2)
        assert [as_set(p) for p in parts(ours)] == [as_set(p) for p in parts(theirs)]


class TestDuplicatesStayTogether:
    """Copies of a text in train and test make test scores a memory test (issue 11: 1.000)."""

    @staticmethod
    def copies(counts: dict[str, int], times: int) -> Dataset:
        """Each text `times` over, the copies differing in case and spacing only."""
        base = make(counts)
        texts, labels = [], []
        for k in range(times):
            for text, y in zip(base.texts, base.y, strict=True):
                texts.append(text.upper() if k % 2 else "  ".join(text.split()) + " ")
                labels.append(base.labels[y])
        return Dataset.from_lists(texts, labels, name="copies")

    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_every_copy_of_a_text_lands_in_the_same_split(self, seed: int) -> None:
        data = self.copies({"pin": 20, "card": 40, "atm": 3}, times=5)
        splits = stratified_split(data, seed=seed)
        seen = [{" ".join(t.lower().split()) for t in p.texts} for p in parts(splits)]
        assert not seen[0] & seen[1] and not seen[0] & seen[2] and not seen[1] & seen[2]
        assert sum(len(p) for p in parts(splits)) == len(data)
        assert [p.class_counts()[0] for p in parts(splits)] == [5, 5, 5]  # 3 atm texts x5
        assert len(splits.val) == pytest.approx(0.15 * len(data), abs=10)

    def test_copies_stay_together_when_only_validation_is_split_off(self) -> None:
        data = self.copies({"pin": 10, "card": 10}, times=3)
        splits = split_off_validation(data, val_frac=0.3, seed=0)
        train = {" ".join(t.lower().split()) for t in splits.train.texts}
        assert not train & {" ".join(t.lower().split()) for t in splits.val.texts}

    def test_a_class_with_one_distinct_text_stays_in_train(self) -> None:
        data = Dataset.from_lists(["same"] * 3 + [f"q{i}" for i in range(9)], ["a"] * 3 + ["b"] * 9)
        splits = stratified_split(data)
        assert [p.class_counts()[0] for p in parts(splits)] == [3, 0, 0]

    def test_groups_are_numbered_in_order_of_first_appearance(self) -> None:
        groups = duplicate_groups(["b", "a", "B ", "c", " a", "b"])
        assert groups.tolist() == [0, 1, 0, 2, 1, 0]
