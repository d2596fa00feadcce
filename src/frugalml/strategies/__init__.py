"""The ladder's rungs. Importing this package registers every built-in strategy."""

# Importing registers them.
from frugalml.strategies import (  # noqa: F401
    frozen_probe,
    full,
    hybrid,
    lora,
    setfit,
    tfidf,
    top_layers,
)
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
