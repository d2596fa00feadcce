"""The ladder's rungs, one module each. The registry imports a built-in rung's module when
the rung is first asked for (`get_strategy`, `strategy_names`, `registered`), not before."""

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
