"""Cost of ownership on hand-built options, candidates and compression steps: volumes parse,
the cheapest line at each volume, break-even volumes as a hand calculation gives them (in the
report too), and the ladder's choice. Nothing here is timed, so every crossing is known."""

from __future__ import annotations

from typing import Any

import pytest

from frugalml.api import ownership_report
from frugalml.costs import Prices
from frugalml.errors import ConfigError
from frugalml.ladder.ownership import Option, break_evens, cheapest, parse_volume, serving_cost
from frugalml.ladder.report import ownership_markdown
from frugalml.ladder.run import LadderResult, choose
from frugalml.metrics import Speed
from frugalml.ship.compress import Step, cheapest_step
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


# -- the report's cost of ownership, from hand-made cost cards and speeds ----------------
# Prices: $0.36/h for 2 vCPUs, $0.00005 a CPU-second, so 1 CPU-ms per text is $5e-8 each.
PRICES = Prices(usd_per_hour=0.36, vcpus=2)


def step(name: str, cpu_ms: float, usd: float, accepted: bool = True) -> dict[str, Any]:
    """A compression step as the report records it: its own cost card and measured speed."""
    speed = Speed(1.0, 2.0, throughput_per_s=100.0, throughput_batch=32, cpu_ms_per_text=cpu_ms)
    cost = None if name == "source" else {"usd": usd, "cpu_s": usd * 1000}
    val = candidate("x", 0.0, 0.0, 0.9, 1.0).val
    return Step(name, val, 1.0, speed.to_dict(), accepted, "", {}, cost).to_dict()


def owned(steps: list[dict[str, Any]], shipped: str, volume: float) -> dict[str, Any]:
    """The report's ownership section for a run that chose frozen_probe (trained for $0.01)
    over a cheaper tfidf that missed the bar, then compressed it."""
    weak = candidate("tfidf", usd=0.0001, cpu_s=1, f1=0.70, per_s=5000)
    probe = candidate("frozen_probe", usd=0.01, cpu_s=10, f1=0.90, per_s=50)
    ladder = LadderResult([weak, probe], probe, "", volume=volume, prices=PRICES, target=0.85)
    return ownership_report(ladder, {"steps": steps, "shipped": shipped})


def test_the_reports_break_evens_from_cost_cards_are_the_hand_calculated_volumes() -> None:
    steps = [
        step("source", cpu_ms=20, usd=0),  # $1e-6 a prediction
        step("onnx", cpu_ms=10, usd=0.002),  # built for 0.01 + 0.002; $5e-7 a prediction
        step("int8", cpu_ms=6, usd=0.001),  # quantized from onnx: 0.013; $3e-7
        step("distilled", cpu_ms=1, usd=0.053),  # needs no onnx/int8: 0.063; $5e-8
    ]
    ownership = owned(steps, "int8", 2.5e6)
    options = {o["name"]: o for o in ownership["options"]}
    fixed = {name: o["fixed_usd"] for name, o in options.items() if " · " in name}
    assert fixed == pytest.approx(
        {
            "frozen_probe · onnx": 0.012,
            "frozen_probe · int8": 0.013,
            "frozen_probe · distilled": 0.063,
        }
    )
    assert not options["tfidf"]["eligible"] and not options["frozen_probe"]["eligible"]
    # by hand: onnx → int8 at 0.001 / 2e-7; int8 → distilled at 0.05 / 2.5e-7
    found = [(b["start"], b["to"], b["volume"]) for b in ownership["break_evens"]]
    assert found == [
        ("frozen_probe · onnx", "frozen_probe · int8", pytest.approx(5e3)),
        ("frozen_probe · int8", "frozen_probe · distilled", pytest.approx(2e5)),
    ]
    cheapest_at = dict(zip(ownership["volumes"], ownership["cheapest"], strict=True))
    assert cheapest_at[0.0] == "frozen_probe · onnx"
    assert cheapest_at[1e4] == cheapest_at[1e5] == "frozen_probe · int8"
    assert cheapest_at[1e6] == cheapest_at[2.5e6] == "frozen_probe · distilled"
    markdown = "\n".join(ownership_markdown(ownership))
    assert "- above 5k predictions, frozen_probe · int8: it pays back its 1 CPU-s" in markdown
    assert (
        "- above 200k predictions, frozen_probe · distilled: it pays back its 50 CPU-s" in markdown
    )


def test_a_rejected_step_is_no_choice_and_the_crossing_skips_it() -> None:
    steps = [
        step("source", cpu_ms=20, usd=0),
        step("onnx", cpu_ms=10, usd=0.002),
        step("int8", cpu_ms=6, usd=0.001, accepted=False),  # lost too many points
        step("distilled", cpu_ms=1, usd=0.053),
    ]
    ownership = owned(steps, "onnx", 0.0)
    assert "frozen_probe · int8" not in {o["name"] for o in ownership["options"]}
    # by hand: onnx → distilled at (0.063 - 0.012) / (5e-7 - 5e-8)
    (crossing,) = ownership["break_evens"]
    assert (crossing["start"], crossing["to"]) == (
        "frozen_probe · onnx",
        "frozen_probe · distilled",
    )
    assert crossing["volume"] == pytest.approx(0.051 / 4.5e-7)
    assert cheapest_step([Step.from_dict(s) for s in steps], 1e5, PRICES).name == "onnx"
    assert cheapest_step([Step.from_dict(s) for s in steps], 1.2e5, PRICES).name == "distilled"


def test_no_break_even_when_one_format_is_cheapest_to_build_and_to_serve() -> None:
    steps = [
        step("source", cpu_ms=20, usd=0),
        step("onnx", cpu_ms=10, usd=0.002),
        step("int8", cpu_ms=12, usd=0.001),  # dearer to build on top of onnx and slower
    ]
    ownership = owned(steps, "onnx", 1e6)
    assert ownership["break_evens"] == []
    assert set(ownership["cheapest"]) == {"frozen_probe · onnx"}
    markdown = "\n".join(ownership_markdown(ownership))
    assert "- none: frozen_probe · onnx is the cheapest at every volume" in markdown
