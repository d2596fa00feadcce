"""The ladder's rungs. Importing this package registers every built-in strategy."""

from frugalml.strategies import frozen_probe, full, lora, setfit, tfidf  # noqa: F401 - registers them
from frugalml.strategies.base import (
    Predictor,
    Registered,
    Strategy,
    StrategyConfig,
    get_strategy,
    register_strategy,
    registered,
    strategy_names,
)

__all__ = [
    "Predictor",
    "Registered",
    "Strategy",
    "StrategyConfig",
    "get_strategy",
    "register_strategy",
    "registered",
    "strategy_names",
]
