"""The desk's out-of-scope detectors on vectors whose geometry is known."""

from __future__ import annotations

import numpy as np
import pytest

from frugalml.apps.desk.oos import (
    LEARNED,
    Either,
    OosClass,
    OosIntent,
    Signals,
    auroc,
    choose_held_out_groups,
    fit_detectors,
    label,
    restore,
)


def _around(centre: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    x = centre + 0.3 * rng.normal(size=(n, len(centre)))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _signals(x: np.ndarray) -> Signals:
    return Signals(np.zeros((len(x), 2)), np.full((len(x), 2), 0.5), x)


def test_the_oos_intent_separates_what_one_hyperplane_cannot_and_restores() -> None:
    """Two intents at ±e1, out-of-scope questions at ±e2: every hyperplane leaves one side of
    the out-of-scope questions with the intents (the binary oos class is near chance), while
    a softmax with one more class gives each intent its own boundary."""
    rng = np.random.default_rng(0)
    e1, e2 = np.eye(8)[0], np.eye(8)[1]
    inscope = np.vstack([_around(e1, 100, rng), _around(-e1, 100, rng)])
    y = np.repeat([0, 1], 100)
    oos = np.vstack([_around(e2, 100, rng), _around(-e2, 100, rng)])
    test_in = _signals(np.vstack([_around(e1, 50, rng), _around(-e1, 50, rng)]))
    test_oos = _signals(np.vstack([_around(e2, 50, rng), _around(-e2, 50, rng)]))

    binary = OosClass.fit(inscope, oos)
    extra = OosIntent.fit(inscope, y, 2, oos)
    assert auroc(binary.score(test_in), binary.score(test_oos)) < 0.75
    assert auroc(extra.score(test_in), extra.score(test_oos)) > 0.99

    again = restore(extra.name, extra.settings(), extra.arrays())
    np.testing.assert_array_equal(again.score(test_oos), extra.score(test_oos))
    names = {d.name for d in fit_detectors(_signals(inscope), y, 2, oos_train=oos)}
    assert {"oos_class", "oos_intent"} <= names
    assert "oos_intent" not in {d.name for d in fit_detectors(_signals(inscope), y, 2)}


def test_the_held_out_group_choice_sees_new_kinds_and_the_either_detector_restores() -> None:
    """Out-of-scope examples of three kinds (±e2, e3): judged on the kinds each refit never
    saw, a detector that only learned the shown kinds is not chosen over one that also flags
    what is far from every training question; the chosen threshold is in score units."""
    rng = np.random.default_rng(0)
    e = np.eye(8)
    inscope = np.vstack([_around(e[0], 100, rng), _around(-e[0], 100, rng)])
    y = np.repeat([0, 1], 100)
    kinds = [e[1], -e[1], e[2]]
    oos = _signals(np.vstack([_around(k, 40, rng) for k in kinds]))
    groups = np.repeat([0, 1, 2], 40)
    val = _signals(np.vstack([_around(e[0], 50, rng), _around(-e[0], 50, rng)]))
    correct = np.ones(100, bool)

    chosen, point, table = choose_held_out_groups(
        _signals(inscope), y, 2, val, correct, oos, 0.9, groups=groups
    )
    names = [c.detector for c in table]
    assert "either(oos_intent, knn(k=1))" in names
    assert chosen.name not in LEARNED
    assert np.mean(chosen.score(val) >= point.threshold) == pytest.approx(point.inscope_flagged)

    fitted = fit_detectors(_signals(inscope), y, 2, oos_train=oos.vectors)
    both = Either.fit([next(d for d in fitted if d.name == n) for n in ("oos_intent", "knn")], val)
    again = restore(both.name, both.settings(), both.arrays())
    assert label(again) == label(both) == "either(oos_intent, knn(k=1))"
    np.testing.assert_array_equal(again.score(oos), both.score(oos))
