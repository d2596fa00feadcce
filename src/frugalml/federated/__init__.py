"""Federated learning on Flower: parties train one model without sharing their data.

Flower runs the rounds (its Message API, strategies and DP wrappers); frugalml supplies the
model (a rung's trainable state), the data split for experiments, the cost accounting and
the final bundle. `simulate` is the entry point; `client_app.app` and `server_app` are the
Flower apps. Needs the 'federated' extra; importing this package imports nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from frugalml.federated.simulation import simulate

__all__ = ["simulate"]


def __getattr__(name: str) -> Any:
    if name == "simulate":
        from frugalml.federated.simulation import simulate

        return simulate
    raise AttributeError(name)
