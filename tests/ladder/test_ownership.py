"""Cost of ownership on hand-built options and candidates: volumes parse, the cheapest line
at each volume, break-even volumes as a hand calculation gives them, and the ladder's choice."""

from __future__ import annotations

import pytest

from frugalml.costs import Prices
from frugalml.errors import ConfigError
from frugalml.ladder.ownership import Option, break_evens, cheapest, parse_volume, serving_cost
from frugalml.ladder.run import choose
from frugalml.metrics import Speed
from tests.ladder.test_frontier_report import candidate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1e6", 1e6),
        ("2.4M", 2.4e6),
        ("500k/month", 5e5),
        ("1,000,000 / month", 1e6),
        ("0", 0.0),
        (250, 250.0),
    ],
)
def test_volumes_parse(text: str | int, expected: float) -> None:
    assert parse_volume(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["lots", "-5", "1e6/week", "inf", "M"])
def test_a_bad_volume_says_what_is_allowed(text: str) -> None:
    with pytest.raises(ConfigError, match="--volume must be"):
        parse_volume(text)


def line(name: str, fixed: float, per_prediction: float, cpu_s: float = 0.0) -> Option:
    return Option(name, fixed, cpu_s, per_prediction, 0.0)


def test_break_evens_follow_the_cheapest_line_from_zero_up() -> None:
    cheap = line("tfidf", 1.0, 1e-6, cpu_s=10)
    middle = line("int8", 3.0, 0.5e-6, cpu_s=40)
    never = line("onnx", 5.0, 0.6e-6)  # dearer to build and to serve than int8: never cheapest
    best = line("distilled", 10.0, 0.1e-6, cpu_s=200)
    found = break_evens([never, best, middle, cheap])
    # by hand: 1 + v * 1e-6 = 3 + v * 0.5e-6 at v = 2 / 0.5e-6; then 7 / 0.4e-6
    assert [(b.start, b.to) for b in found] == [("tfidf", "int8"), ("int8", "distilled")]
    assert found[0].volume == pytest.approx(4e6)
    assert found[1].volume == pytest.approx(17.5e6)
    assert found[1].extra_cpu_s == 160
    assert found[1].sentence().startswith("above 17.5M predictions, distilled: it pays back its")
    for volume, name in [(0, "tfidf"), (3.9e6, "tfidf"), (4.1e6, "int8"), (2e7, "distilled")]:
        assert cheapest([never, best, middle, cheap], volume).name == name


def test_no_break_even_when_the_cheapest_to_build_also_serves_cheapest() -> None:
    assert break_evens([line("tfidf", 1.0, 1e-7), line("probe", 2.0, 1e-6)]) == []


def test_serving_is_priced_at_measured_cpu_else_the_whole_machine() -> None:
    prices = Prices(usd_per_hour=0.36, vcpus=2)  # $0.00005 a CPU-second
    measured = Speed(1.0, 2.0, throughput_per_s=100.0, throughput_batch=32, cpu_ms_per_text=4.0)
    assert serving_cost(measured, prices) == pytest.approx((4e-3 * 5e-5, 4.0))
    older = Speed(1.0, 2.0, throughput_per_s=100.0, throughput_batch=32)  # before cpu was kept
    assert serving_cost(older, prices) == pytest.approx((0.02 * 5e-5, 20.0))


def test_with_a_volume_the_ladder_chooses_the_cheapest_to_own_among_those_meeting_the_bar() -> None:
    slow = candidate("frozen_probe", usd=0.001, cpu_s=10, f1=0.90, per_s=50)
    fast = candidate("setfit", usd=0.01, cpu_s=100, f1=0.91, per_s=500)
    weak = candidate("tfidf", usd=0.0001, cpu_s=1, f1=0.70, per_s=5000)  # misses the bar
    prices = Prices()
    both = [weak, slow, fast]
    assert choose(both, "macro_f1", 0.85)[0] is slow  # training cost alone
    assert choose(both, "macro_f1", 0.85, volume=0, prices=prices)[0] is slow
    # serving: 2 vCPU-s / 50 texts vs / 500 at $0.048 a vCPU-hour; break-even by hand
    per_slow, per_fast = 2 / 50 * 0.048 / 3600, 2 / 500 * 0.048 / 3600
    even = (0.01 - 0.001) / (per_slow - per_fast)
    assert choose(both, "macro_f1", 0.85, volume=0.9 * even, prices=prices)[0] is slow
    pick, reason = choose(both, "macro_f1", 0.85, volume=1.1 * even, prices=prices)
    assert pick is fast
    assert "cheapest candidate with validation macro_f1 ≥ 0.85 to own at" in reason
    # without a bar the volume does not trade quality for cost
    assert choose(both, "macro_f1", None, volume=1e12, prices=prices)[0] is fast
    assert choose([weak, slow], "macro_f1", None, volume=1e12, prices=prices)[0] is slow
