"""The cost meter measures real work: time, CPU, memory peaks, FLOPs, energy and money."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from frugalml.costs import CostCard, CostMeter, Prices, transformer_flops


def busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_wall_and_cpu_seconds_follow_the_work() -> None:
    with CostMeter() as meter:
        busy(0.3)
        time.sleep(0.2)
    card = meter.card
    assert 0.45 <= card.wall_s < 2.0
    assert 0.25 <= card.cpu_s < card.wall_s


def test_peak_memory_sees_a_transient_allocation() -> None:
    with CostMeter() as small:
        pass
    with CostMeter() as big:
        block = np.ones(300 * 2**20 // 8)  # 300 MB, touched, then freed inside the block
        del block
    assert big.card.peak_rss_mb - small.card.peak_rss_mb > 250


def test_nested_meters_keep_the_outer_peak_and_flops() -> None:
    with CostMeter() as outer:
        block = np.ones(200 * 2**20 // 8)
        del block
        with CostMeter() as inner:
            inner.add_flops(1e9)
    assert outer.card.peak_rss_mb > inner.card.peak_rss_mb + 150
    assert outer.card.flops == inner.card.flops == 1e9


def test_energy_estimate_is_labelled_and_money_follows_the_price() -> None:
    prices = Prices(usd_per_hour=3.6, basis="test VM", watts_per_core=36.0)
    with CostMeter(prices) as meter:
        busy(0.2)
    card = meter.card
    assert card.usd == pytest.approx(card.wall_s / 1000)
    assert card.price_basis == "test VM"
    if card.energy_source.startswith("estimate"):
        assert card.energy_source == "estimate(36 W per busy core)"
        assert card.energy_kwh == pytest.approx(card.cpu_s * 36 / 3.6e6)
    else:  # a machine with readable RAPL counters measures instead
        assert card.energy_source == "rapl" and card.energy_kwh > 0


def test_prices_convert_between_seconds_dollars_and_energy() -> None:
    prices = Prices(usd_per_hour=3.6, watts_per_core=36.0, gpu_usd_per_hour=7.2, gpu_watts=100.0)
    assert prices.usd_for(1000) == pytest.approx(1.0)
    assert prices.usd_for(1000, device_s=500) == pytest.approx(2.0)
    assert prices.wall_s_for(1.0) == pytest.approx(1000)  # the inverse: a $ budget in seconds
    assert prices.kwh_for(100_000) == pytest.approx(1.0)  # 100,000 CPU-s at 36 W = 3.6 MJ
    assert prices.kwh_for(0, device_s=36_000) == pytest.approx(1.0)
    assert prices.cpu_s_for(1.0) == pytest.approx(100_000)
    assert prices.usd_per_cpu_s == pytest.approx(3.6 / 3600 / 2)  # 2 vCPUs by default
    assert Prices(vcpus=8).usd_per_cpu_s == pytest.approx(Prices().usd_per_cpu_s / 4)
    assert Prices.from_dict(prices.to_dict()) == prices
    assert Prices.from_dict(None) == Prices()  # a bundle that recorded no prices


def test_card_round_trips_through_a_dict_and_is_only_ready_after_exit() -> None:
    meter = CostMeter()
    with meter, pytest.raises(RuntimeError, match="once the `with CostMeter"):
        _ = meter.card
    assert CostCard.from_dict(meter.card.to_dict()) == meter.card
    assert "CPU-s" in meter.card.summary()


def test_transformer_flops_follow_the_2nt_and_6nt_rules() -> None:
    assert transformer_flops(1000, 10) == 20_000
    assert transformer_flops(1000, 10, training=True) == 60_000


def card(**changes: object) -> CostCard:
    base = CostCard(
        wall_s=10.0,
        cpu_s=18.0,
        peak_rss_mb=500.0,
        energy_kwh=0.001,
        energy_source="rapl",
        usd=0.01,
        price_basis="2 vCPU VM",
        flops=1e12,
    )
    return CostCard(**{**base.to_dict(), **changes})


def test_cards_of_parallel_processes_combine_into_one() -> None:
    one = card(extra={"peak_rss_is_process_lifetime": 1.0})
    two = card(wall_s=12.0, peak_rss_mb=700.0, device_s=12.0, peak_device_mb=900.0)
    combined = CostCard.combine([one, two])
    assert combined.wall_s == 12.0  # side by side: the longest
    assert combined.cpu_s == 36.0 and combined.peak_rss_mb == 1200.0  # each held its own
    assert combined.energy_kwh == pytest.approx(0.002) and combined.usd == pytest.approx(0.02)
    assert combined.flops == 2e12
    assert combined.device_s == 12.0 and combined.peak_device_mb == 900.0  # one GPU measured
    assert combined.energy_source == "rapl" and combined.price_basis == "2 vCPU VM"
    assert combined.extra == {"peak_rss_is_process_lifetime": 1.0}
    assert combined.processes == 2 and "2 processes" in combined.summary()
    assert CostCard.from_dict(combined.to_dict()) == combined


def test_combining_keeps_what_differs_and_counts_nested_processes() -> None:
    pair = CostCard.combine([card(), card(energy_source="estimate(10 W per busy core)")])
    mixed = CostCard.combine([pair, card(flops=None, price_basis="GPU VM")])
    assert mixed.processes == 3 and mixed.flops == 2e12  # the third counted none
    assert mixed.energy_source == "rapl; estimate(10 W per busy core)"
    assert mixed.price_basis == "2 vCPU VM; GPU VM"
    assert mixed.device_s is None and mixed.peak_device_mb is None  # no process measured one
    assert CostCard.from_dict({k: v for k, v in card().to_dict().items() if k != "processes"})
    with pytest.raises(ValueError, match="at least one card"):
        CostCard.combine([])


def _child_using(mb: int) -> None:
    code = f"x = b'x' * ({mb} * 1024 * 1024); print(len(x))"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_a_child_counts_in_the_block_it_ran_in_and_not_after() -> None:
    child_mb = 1500
    with CostMeter() as during:
        _child_using(child_mb)
    with CostMeter() as after:  # the kernel still reports that child as the largest one
        pass
    assert during.card.peak_rss_mb >= child_mb
    assert after.card.peak_rss_mb < child_mb
