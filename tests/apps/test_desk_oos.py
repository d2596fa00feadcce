"""The desk's out-of-scope detectors on vectors whose geometry is known."""

from __future__ import annotations

import numpy as np

from frugalml.apps.desk.oos import OosClass, OosIntent, Signals, auroc, fit_detectors, restore


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
