"""The head over frozen embeddings solved exactly, federated (`--solver lbfgs`).

The centralised `frozen_probe` fits an L2-regularised logistic regression, a convex problem
whose loss and gradient are sums over rows. So the parties need not average heads they
trained apart (FedAvg's drift on non-IID data): each round the server sends the current
weights, every party returns the loss and gradient summed over its own rows, and the server
takes an L-BFGS step on the total, reaching the centralised optimum in tens of small rounds.
C is then chosen as `frozen_probe` chooses it, by macro-F1 on validation, here the parties'
own validation splits (summed confusion matrices; the server needs no data), and the head
refitted at that C on all their rows, as scikit-learn's `LogisticRegressionCV` refits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from frugalml.errors import FrugalError

# what a party computes, and on which of its rows: "train" (its local train split), "val"
# (the split it holds out for choosing C) or "all" (both, for the final refit)
Query = Callable[[str, str, np.ndarray], list[tuple[float, np.ndarray, int]]]


class DroppedError(FrugalError, RuntimeError):
    """A party did not answer a round; the solve restarts without it."""

    def __init__(self, answered: Sequence[int]) -> None:
        super().__init__("a party did not answer an exact-solve round")
        self.answered = list(answered)


def loss_grad(x: np.ndarray, y: np.ndarray, theta: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Softmax cross-entropy summed over the rows, and its gradient, at `theta` (the
    coefficients (k, d) then the intercepts (k,), flat): all a party sends for a step."""
    w, b = unpack(theta, k, x.shape[1])
    z = x @ w.T + b
    z -= z.max(1, keepdims=True)
    lse = np.log(np.exp(z).sum(1))
    loss = float((lse - z[np.arange(len(y)), y]).sum())
    p = np.exp(z - lse[:, None])
    p[np.arange(len(y)), y] -= 1.0
    return loss, np.concatenate([(p.T @ x).ravel(), p.sum(0)])


def confusion(x: np.ndarray, y: np.ndarray, theta: np.ndarray, k: int) -> np.ndarray:
    """Counts of (true, predicted) on the rows: summed over parties, any metric follows."""
    w, b = unpack(theta, k, x.shape[1])
    out = np.zeros((k, k), dtype=np.float64)
    np.add.at(out, (y, (x @ w.T + b).argmax(1)), 1.0)
    return out


def unpack(theta: np.ndarray, k: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    return theta[: k * d].reshape(k, d), theta[k * d :]


def macro_f1_of(counts: np.ndarray) -> float:
    """Macro-F1 from a confusion matrix, over the classes present in truth or prediction."""
    tp = np.diag(counts)
    support, predicted = counts.sum(1), counts.sum(0)
    present = (support + predicted) > 0
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros_like(tp), where=present)
    return float(f1[present].mean()) if present.any() else 0.0


@dataclass
class Solved:
    """The head the solve picked, with what it took."""

    theta: np.ndarray
    C: float
    val_macro_f1: dict[float, float]
    rounds: int
    iterations: dict[str, int]


def solve(
    query: Query,
    k: int,
    d: int,
    Cs: Sequence[float],
    *,
    max_iter: int = 300,
    tol: float = 1e-4,
    refit: bool = True,
) -> Solved:
    """Minimise mean cross-entropy + ||W||^2 / (2 C n) (scikit-learn's lbfgs objective) over
    the parties' rows for each C (each from zero), keep the C with the best
    summed-validation macro-F1 (ties: the smaller), then refit at it on all rows."""
    rounds, scores, heads, iterations = 0, {}, {}, {}
    for C in sorted(Cs):
        # from zero, as scikit-learn starts: warm-started, a C close to the last one stops
        # at once within the tolerance and is never really tried
        theta, used = _minimise(query, "train", np.zeros(k * d + k), k, d, C, max_iter, tol)
        rounds += used + 1  # the evaluation round
        iterations[f"C={C:g}"] = used
        scores[C] = macro_f1_of(np.sum([r[1] for r in query("confusion", "val", theta)], axis=0))
        heads[C] = theta
    best = max(sorted(scores), key=lambda c: (scores[c], -c))
    theta = heads[best]
    if refit:
        theta, used = _minimise(query, "all", theta, k, d, best, max_iter, tol)
        rounds += used
        iterations["refit"] = used
    return Solved(theta, best, scores, rounds, iterations)


def _minimise(
    query: Query,
    rows: str,
    theta: np.ndarray,
    k: int,
    d: int,
    C: float,
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, int]:
    """scipy's L-BFGS, one federated round per function evaluation."""
    calls = 0

    def fun(t: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal calls
        calls += 1
        replies = query("loss-grad", rows, t)
        n = sum(r[2] for r in replies)
        if n == 0:
            raise FrugalError("the parties hold no rows to fit the head on")
        loss, grad = sum(r[0] for r in replies), np.sum([r[1] for r in replies], axis=0)
        w = t.copy()
        w[k * d :] = 0.0  # the intercepts are not penalised
        return loss / n + w @ w / (2 * C * n), grad / n + w / (C * n)

    found = minimize(
        fun,
        theta,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps},
    )
    return np.asarray(found.x), calls
