"""The DP noise multiplier is chosen so that Flower's own RDP accountant reports the target
epsilon after the planned rounds; a non-mean strategy is refused."""

from __future__ import annotations

import pytest

from frugalml.errors import ConfigError

pytest.importorskip("flwr")


@pytest.mark.parametrize("epsilon", [8.0, 1.0])
def test_noise_multiplier_spends_the_target_epsilon_over_the_rounds(epsilon: float) -> None:
    from frugalml.federated.strategies import epsilon_after, noise_multiplier

    sigma = noise_multiplier(epsilon, 1e-5, rounds=6, clients=5)
    spent = epsilon_after(sigma, 1e-5, rounds=6, clients=5)
    assert spent <= epsilon < spent * 1.01  # the smallest noise within the budget, to 1%
    assert epsilon_after(sigma, 1e-5, rounds=12, clients=5) > epsilon  # more rounds: over


def test_dp_wraps_mean_strategies_and_refuses_the_median() -> None:
    from frugalml.federated.strategies import make_strategy, with_privacy

    fedavg = make_strategy("fedavg", clients=5, min_clients=5, weighted_by_key="unit-weight")
    wrapped = with_privacy(fedavg, epsilon=8, delta=1e-5, rounds=6, clients=5, clip=1.0)
    assert wrapped.noise_multiplier > 0 and fedavg.weighted_by_key == "unit-weight"
    median = make_strategy("fedmedian", clients=5, min_clients=5)
    with pytest.raises(ConfigError, match="mean-based"):
        with_privacy(median, epsilon=8, delta=1e-5, rounds=6, clients=5, clip=1.0)
