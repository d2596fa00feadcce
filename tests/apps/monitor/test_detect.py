"""Detectors: thresholds from a target false-alarm rate hold it; a shift is found; shares are
corrected for the classifier's errors."""

from __future__ import annotations

import numpy as np
import pytest

from frugalml.apps.monitor.detect import (
    BernoulliCusum,
    BernoulliEwma,
    DetectorSettings,
    TopicDetectors,
    VolumeSurge,
    arl0_for,
    cusum_steps,
    cusum_threshold_estimated,
    ewma_limit_estimated,
    lattice_run_length,
    negative_share,
    rates_from_confusion,
    screened,
)


def _alarms(detector: BernoulliCusum | BernoulliEwma, stream: np.ndarray) -> int:
    return sum(detector.update(int(x)) for x in stream)


@pytest.mark.parametrize(
    "make",
    [
        lambda: BernoulliCusum.tuned(0.2, 1.5, 20.0),
        lambda: BernoulliEwma.tuned(0.2, 0.05, 20.0),
    ],
)
def test_the_measured_false_alarm_rate_is_the_target(make: object) -> None:
    stream = np.random.default_rng(0).random(400_000) < 0.2
    per_10k = _alarms(make(), stream) / len(stream) * 10_000  # type: ignore[operator]
    assert 20.0 / 1.5 <= per_10k <= 20.0 * 1.5


def test_the_cusum_run_length_is_exact_where_the_cell_chain_was_off() -> None:
    """At p0 = 0.1 the old cell-based chain gave 0.39 false alarms for a target of 1."""
    cusum = BernoulliCusum.tuned(0.1, 1.5, 50.0)  # in-control run length 200
    unit, up, down = cusum_steps(cusum.p0, cusum.p1)
    levels = round(cusum.h / unit)  # the threshold on the lattice: the least that reaches 200
    assert (
        lattice_run_length(up, down, levels, 0.1)
        >= 200
        > lattice_run_length(up, down, levels - 1, 0.1)
    )
    rng = np.random.default_rng(4)
    lengths = []
    for _ in range(1500):
        steps = 1
        while not cusum.update(int(rng.random() < 0.1)):
            steps += 1
        lengths.append(steps)
    assert np.mean(lengths) == pytest.approx(lattice_run_length(up, down, levels, 0.1), rel=0.1)


def test_cusum_finds_a_doubled_share_within_a_few_hundred_texts() -> None:
    rng = np.random.default_rng(1)
    delays = []
    for _ in range(50):
        cusum = BernoulliCusum.tuned(0.2, 1.5, 1.0)
        shifted = rng.random(5000) < 0.4
        delays.append(next(i for i, x in enumerate(shifted) if cusum.update(int(x))))
    assert 20 < np.median(delays) < 150


def test_detector_state_round_trips_through_json() -> None:
    settings = DetectorSettings(warmup=10)
    detectors = TopicDetectors(settings)
    for i in range(30):
        detectors.update(i % 4 == 0)
    again = TopicDetectors.from_dict(settings, detectors.to_dict())
    assert again.to_dict() == detectors.to_dict()
    # armed on 3/10, re-estimated at 12, 16, 20 and 24 texts (10 · 1.25^j): 6/24 at the last
    assert again.cusum is not None and again.cusum.p0 == pytest.approx(0.25)


def test_volume_surge_fires_on_a_surge_and_not_on_steady_traffic() -> None:
    surge = VolumeSurge(rate_per_10k=1.0, min_volume=20)
    rng = np.random.default_rng(2)
    assert not any(surge.update(int(n))[0] for n in rng.poisson(50, 200))
    assert surge.update(150)[0]
    assert not surge.update(0)[0]  # the surge did not raise the baseline


def test_the_corrected_share_is_closer_to_the_truth_than_the_raw_one() -> None:
    tpr, fpr = 0.8, 0.05
    rng = np.random.default_rng(3)
    truth = rng.random(5000) < 0.3
    predicted = np.where(truth, rng.random(5000) < tpr, rng.random(5000) < fpr)
    share = negative_share(int(predicted.sum()), 5000, tpr, fpr)
    assert share.corrected is not None and share.corrected_low is not None
    assert abs(share.corrected - truth.mean()) < abs(share.observed - truth.mean())
    assert share.corrected_low <= truth.mean() <= share.corrected_high  # type: ignore[operator]


def test_rates_come_from_a_confusion_matrix_with_rows_true() -> None:
    assert rates_from_confusion([[8, 2, 0], [1, 40, 9], [0, 5, 35]], 0) == (0.8, 1 / 90)


def _fed(settings: DetectorSettings, stream: np.ndarray) -> TopicDetectors:
    detectors = TopicDetectors(settings)
    for x in stream:
        detectors.update(bool(x))
    return detectors


def test_the_base_rate_is_re_estimated_as_a_topic_grows_and_the_plug_in_keeps_its_warm_up() -> None:
    rng = np.random.default_rng(5)
    warm_up = np.arange(100) < 10  # a warm-up that underestimates: 10% for a true 20%
    stream = np.concatenate([warm_up, rng.random(8000) < 0.2])
    warm = 0.1
    updating = _fed(DetectorSettings(warmup=100), stream)
    plug_in = _fed(DetectorSettings(warmup=100, estimation="plug-in"), stream)
    assert plug_in.cusum is not None and plug_in.cusum.p0 == pytest.approx(warm, abs=1e-3)
    assert updating.cusum is not None and abs(updating.cusum.p0 - 0.2) < 0.015
    # the first stretches, well above a 10% warm-up, are screened out; most texts count
    assert 0.8 * updating.seen < updating.estimate[1] < updating.seen


def test_a_shift_in_progress_does_not_become_the_base_rate() -> None:
    rng = np.random.default_rng(6)
    stream = np.concatenate([rng.random(3000) < 0.15, rng.random(4000) < 0.30])
    detectors = _fed(DetectorSettings(warmup=200), stream)
    assert detectors.cusum is not None and detectors.cusum.p0 < 0.17
    assert screened([30, 200], [30, 200], 30 + 35, 300) == [30, 200]  # 35% vs 15%: left out
    assert screened([30, 200], [30, 200], 30 + 16, 300) == [46, 300]  # 16% vs 15%: joins


@pytest.mark.parametrize("alpha", [None, 0.1])
def test_bootstrap_thresholds_are_above_the_plug_in_ones_and_reproduce(alpha: float | None) -> None:
    """Gandy & Kvaløy's bootstrap of a 200-text estimate (29 negatives), enumerated exactly:
    no seed, the same threshold every time; the guarantee (alpha) asks for more than the mean."""
    arl0 = arl0_for(20.0)
    plug_in = BernoulliCusum.tuned(29 / 200, 1.5, 20.0)
    h = cusum_threshold_estimated(29, 200, 1.5, arl0, alpha)
    cusum_threshold_estimated.cache_clear()
    assert cusum_threshold_estimated(29, 200, 1.5, arl0, alpha) == h
    assert h > plug_in.h
    if alpha is not None:
        assert h > cusum_threshold_estimated(29, 200, 1.5, arl0, None)
    limit = ewma_limit_estimated(29, 200, 0.03, arl0, alpha)
    assert limit > BernoulliEwma.tuned(29 / 200, 0.03, 20.0).limit
    armed_ = TopicDetectors(
        DetectorSettings(rate_per_10k=20.0, estimation="bootstrap", alpha=alpha)
    )
    for x in [1] * 29 + [0] * 171:
        armed_.update(bool(x))
    assert armed_.cusum is not None and armed_.cusum.h == pytest.approx(h)


def test_an_unknown_estimation_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="updating"):
        _fed(DetectorSettings(warmup=10, estimation="bayes"), np.zeros(10))
