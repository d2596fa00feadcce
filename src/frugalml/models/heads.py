"""The one linear classification head shared by the cheap rungs.

Predictions are computed from the saved arrays with numpy, before and after a save, so a
bundle round trip reproduces them bit for bit; scikit-learn only does the fitting.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
from safetensors.numpy import load_file, save_file
from threadpoolctl import ThreadpoolController, threadpool_limits

from frugalml.forecast import require_memory

if TYPE_CHECKING:  # only TF-IDF features are sparse; a dense head never imports scipy
    from scipy import sparse

Features: TypeAlias = "np.ndarray | sparse.spmatrix | sparse.sparray"
# lbfgs keeps 10 (step, gradient change) pairs of float64 vectors the size of the weights, and
# a few more copies: measured 171-181 bytes a weight for 100-300 classes x 5k-15k features.
LBFGS_BYTES_PER_WEIGHT = 184


@dataclass
class LinearHead:
    """Multinomial logistic regression as plain arrays: logits = X @ coef.T + intercept."""

    coef: np.ndarray  # (n_classes, n_features), float32
    intercept: np.ndarray  # (n_classes,), float32

    @classmethod
    def fit(
        cls,
        X: Features,
        y: np.ndarray,
        n_classes: int,
        *,
        C: float = 10.0,
        class_weight: str | None = "balanced",
        max_iter: int = 300,
    ) -> LinearHead:
        """L2-regularized logistic regression (lbfgs); one thread, since a second one only spins.

        Refuses (OutOfMemoryError) before fitting a head larger than the memory available.
        """
        from sklearn.linear_model import LogisticRegression

        n_present = len(np.unique(y))
        require_memory(
            cls.fit_bytes(X.shape[0], X.shape[1], n_present),
            f"the logistic-regression head ({n_present} classes × {X.shape[1]:,} features)",
        )
        model = LogisticRegression(C=C, max_iter=max_iter, class_weight=class_weight)
        with threadpool_limits(1), warnings.catch_warnings():
            # a few examples per class is what this toolkit is for, not a regression problem
            warnings.filterwarnings("ignore", "The number of unique classes is greater than 50%")
            model.fit(X, y)
        coef = np.zeros((n_classes, model.coef_.shape[1]), dtype=np.float32)
        intercept = np.zeros(n_classes, dtype=np.float32)
        if len(model.classes_) == 2 and model.coef_.shape[0] == 1:  # binary: logits (0, z)
            coef[model.classes_[1]] = model.coef_[0]
            intercept[model.classes_[1]] = model.intercept_[0]
        else:
            coef[model.classes_] = model.coef_
            intercept[model.classes_] = model.intercept_
            missing = np.setdiff1d(np.arange(n_classes), model.classes_)
            intercept[missing] = -1e4  # a class unseen in training is never predicted
        return cls(coef, intercept)

    @staticmethod
    def fit_bytes(n_samples: int, n_features: int, n_classes: int) -> int:
        """Peak memory of `fit`: lbfgs over the weights, plus per-example class scores."""
        rows = n_classes if n_classes > 2 else 1  # a binary head has one row of weights
        return rows * (n_features + 1) * LBFGS_BYTES_PER_WEIGHT + n_samples * n_classes * 24

    @classmethod
    def fit_select(
        cls,
        X: Features,
        y: np.ndarray,
        X_val: Features,
        y_val: np.ndarray,
        n_classes: int,
        *,
        Cs: tuple[float, ...],
        class_weight: str | None = None,
    ) -> LinearHead:
        """Fit one head per C and keep the best on validation macro-F1 (ties: smaller C)."""
        from frugalml.metrics import macro_f1

        best: tuple[float, LinearHead] | None = None
        for C in sorted(Cs):
            head = cls.fit(X, y, n_classes, C=C, class_weight=class_weight)
            score = macro_f1(y_val, head.logits(X_val).argmax(1), n_classes)
            if best is None or score > best[0]:
                best = (score, head)
        assert best is not None, "Cs must not be empty"
        return best[1]

    @classmethod
    def from_linear(cls, layer: Any) -> LinearHead:
        """The arrays of a trained `torch.nn.Linear` (duck-typed: this module needs no torch)."""
        return cls(
            layer.weight.detach().float().cpu().numpy(),
            layer.bias.detach().float().cpu().numpy(),
        )

    def logits(self, X: Features) -> np.ndarray:
        with _one_blas_thread():
            out = np.asarray(X @ self._weights, dtype=np.float32)
        return np.asarray(out + self.intercept)

    def save(self, path: Path) -> None:
        save_file({"coef": self.coef, "intercept": self.intercept}, str(path))

    @cached_property
    def _weights(self) -> np.ndarray:
        """coef.T laid out contiguously: a sparse matrix times the transposed view is ~25x
        slower at a 110k-column TF-IDF vocabulary. Heads are never changed after fitting."""
        return np.ascontiguousarray(self.coef.T)

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        arrays = load_file(str(path))
        return cls(arrays["coef"], arrays["intercept"])


_blas: ThreadpoolController | None = None


def _one_blas_thread() -> Any:
    """A tiny matmul needs no threads, and idle OpenBLAS threads spin and slow torch down 40%.

    Measured: the frozen probe's batch-32 throughput went from ~150 to ~250 texts/s.
    """
    global _blas
    if _blas is None:
        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))
