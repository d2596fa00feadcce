"""The gradient-boosted trees rung: LightGBM on the typed columns, monotone where told.

Categories enter as LightGBM categoricals (their level order saved with the model), text
columns as one TF-IDF score each, missing values as LightGBM's own missing branch. The model
is LightGBM's text format; reason codes are its exact TreeSHAP contributions, which sum to
the raw score.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from frugalml.apps.credit.features import (
    TextScore,
    fit_text_scores,
    load_schema,
    save_schema,
    text_features,
    top_reasons,
)
from frugalml.config import Budget
from frugalml.costs import CostMeter
from frugalml.data.dataset import Dataset
from frugalml.data.tabular import TabularSchema, rows_of
from frugalml.errors import ConfigError, MissingExtraError
from frugalml.strategies import StrategyConfig, register_strategy

if TYPE_CHECKING:
    import pandas as pd

MODEL_FILE = "lightgbm.txt"
ONNX_FILE = "lightgbm.onnx"
ONNX_OPSET = 15  # the newest onnxmltools 1.16 converts LightGBM at
CAL_FOLDS = 5
FEATURES_FILE = "features.json"


class LightgbmConfig(StrategyConfig):
    kind: Literal["lightgbm"] = Field("lightgbm", description="The registry name.")
    text: bool = Field(True, description="Add each text column as a TF-IDF score feature.")
    monotone: dict[str, Literal[-1, 0, 1]] = Field(
        default_factory=dict,
        description="Column → 1 (risk rises with it), -1 (falls) or 0; e.g. {'Income': -1}.",
    )
    learning_rate: float = Field(0.02, gt=0, le=1, description="Shrinkage per tree.")
    num_leaves: int = Field(8, ge=2, description="Leaves per tree: small trees, less overfit.")
    min_child_samples: int = Field(40, ge=1, description="Fewest applicants in a leaf.")
    max_rounds: int = Field(3000, ge=1, description="Most trees; early stopping picks fewer.")
    feature_fraction: float = Field(0.7, gt=0, le=1, description="Share of features per tree.")
    bagging_fraction: float = Field(0.8, gt=0, le=1, description="Share of rows per tree.")
    lambda_l2: float = Field(5.0, ge=0, description="L2 penalty on leaf values.")
    seed: int = Field(0, description="Seeds bagging, the cross-fitting folds and text folds.")
    calibration: Literal["platt", "temperature"] = Field(
        "platt",
        description="'platt': a logistic map fitted on 5-fold out-of-fold scores over all of "
        "train; 'temperature': the ladder's one scalar fitted on the validation split.",
    )


class LightgbmPredictor:
    """Typed columns → LightGBM booster → log-odds of the positive class. Exported, the trees
    run in ONNX Runtime; the booster's text stays beside them for TreeSHAP reason codes."""

    onnx_precisions: tuple[str, ...] = ("fp32",)  # trees: nothing to quantize

    def __init__(
        self,
        schema: TabularSchema,
        booster: Any,
        scorers: list[TextScore],
        labels: tuple[str, ...],
        temperature: float = 1.0,
        platt: tuple[float, float] = (1.0, 0.0),
        graph: bytes | None = None,
    ) -> None:
        self.schema, self.booster, self.scorers = schema, booster, scorers
        self.graph = graph  # the trees as ONNX, once exported; probabilities then come from it
        self.session = _onnx_session(graph) if graph is not None else None
        self.labels, self.temperature, self.platt = labels, temperature, platt
        self.names = model_columns(schema, text=bool(scorers))
        self.calibration = "" if platt == (1.0, 0.0) else f"platt on {CAL_FOLDS}-fold out-of-fold"

    def matrix(self, inputs: Sequence[Any]) -> np.ndarray:
        return encode(self.schema.frame(inputs), self.schema, self.names, self.scorers)

    def raw(self, inputs: Sequence[Any]) -> np.ndarray:
        if len(inputs) == 0:
            return np.zeros(0)
        X = self.matrix(inputs)
        if self.session is not None:
            scores = self.session.run(["probabilities"], {"features": X.astype(np.float32)})[0]
            return np.asarray(scores[:, 1], dtype=np.float64)
        return np.asarray(self.booster.predict(X, raw_score=True))

    def logits(self, inputs: Sequence[Any]) -> np.ndarray:
        """Calibrated log-odds: Platt's `a·raw + b` (reason codes stay on the raw score)."""
        a, b = self.platt
        calibrated = a * self.raw(inputs) + b
        return np.stack([np.zeros_like(calibrated), calibrated], axis=1)

    def predict_proba(self, inputs: Sequence[Any]) -> np.ndarray:
        from scipy.special import softmax

        return np.asarray(softmax(self.logits(inputs) / self.temperature, axis=1))

    def contributions(self, inputs: Sequence[Any]) -> np.ndarray:
        """TreeSHAP: per input, one column per feature and a last one for the expected value;
        each row sums to the raw score (log-odds)."""
        if len(inputs) == 0:
            return np.zeros((0, len(self.names) + 1))
        return np.asarray(self.booster.predict(self.matrix(inputs), pred_contrib=True))

    def explain(self, inputs: Sequence[Any], *, top: int = 3) -> list[list[dict[str, Any]]]:
        """Reason codes: the features whose TreeSHAP contribution pushes most towards default."""
        frame = self.schema.frame(inputs)
        shown = [[_shown(frame[n].iloc[i]) for n in self.names] for i in range(len(inputs))]
        return top_reasons(self.contributions(inputs)[:, :-1], self.names, shown, "log-odds", top)

    def save(self, folder: Path) -> dict[str, Any]:
        save_schema(folder, self.schema)
        self.booster.save_model(str(folder / MODEL_FILE))
        features = {"names": self.names, "text": [s.to_dict() for s in self.scorers]}
        (folder / FEATURES_FILE).write_text(json.dumps(features, ensure_ascii=False))
        spec: dict[str, Any] = {"temperature": self.temperature, "platt": list(self.platt)}
        if self.graph is not None:
            (folder / ONNX_FILE).write_bytes(self.graph)
            spec.update(format="onnx", precision="fp32")
        return spec

    @classmethod
    def load(cls, folder: Path, spec: dict[str, Any], labels: tuple[str, ...]) -> LightgbmPredictor:
        import lightgbm as lgb

        features = json.loads((folder / FEATURES_FILE).read_text())
        booster = lgb.Booster(model_file=str(folder / MODEL_FILE))
        scorers = [TextScore.from_dict(s) for s in features["text"]]
        a, b = spec.get("platt", (1.0, 0.0))
        graph = (folder / ONNX_FILE).read_bytes() if spec.get("format") == "onnx" else None
        return cls(load_schema(folder), booster, scorers, labels, float(spec["temperature"]),
                   (float(a), float(b)), graph)  # fmt: skip

    def export_onnx(self, folder: Path, *, precision: str = "fp32") -> dict[str, Any]:
        """Like `save`, plus the trees as an ONNX graph (onnxmltools) that scores raw
        log-odds: the classifier's logistic output is switched off, Platt is applied after."""
        if precision not in self.onnx_precisions:
            raise ConfigError(f"a LightGBM model exports at fp32 only; got {precision!r}")
        try:
            from onnxmltools import convert_lightgbm
            from onnxmltools.convert.common.data_types import FloatTensorType
        except ImportError:
            raise MissingExtraError("LightGBM's ONNX export", "credit") from None
        folder.mkdir(parents=True, exist_ok=True)
        graph = convert_lightgbm(self.booster, initial_types=[("features", FloatTensorType(
            [None, len(self.names)]))], zipmap=False, target_opset=ONNX_OPSET)  # fmt: skip
        for node in graph.graph.node:
            for attribute in node.attribute:
                if node.op_type == "TreeEnsembleClassifier" and attribute.name == "post_transform":
                    attribute.s = b"NONE"
        exported = LightgbmPredictor(
            self.schema,
            self.booster,
            self.scorers,
            self.labels,
            self.temperature,
            self.platt,
            graph.SerializeToString(),
        )
        return exported.save(folder)  # fmt: skip


def _onnx_session(graph: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # the converter declares the label output's shape as {1}
    options.intra_op_num_threads = 1
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def _shown(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return round(float(value), 4) if isinstance(value, float | np.floating) else value


def model_columns(schema: TabularSchema, *, text: bool) -> list[str]:
    return [c.name for c in schema.columns if c.type != "text" or text]


def encode(
    frame: pd.DataFrame,
    schema: TabularSchema,
    names: list[str],
    scorers: Sequence[TextScore],
    given: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """A float matrix: numbers as they are, categories as their index in the training levels
    (NaN for missing or unseen), text columns as scores."""
    types = {c.name: c for c in schema.columns}
    texts = text_features(frame, scorers, given)
    columns = []
    for name in names:
        column = types[name]
        if column.type == "text":
            columns.append(texts[name])
        elif column.type == "categorical":
            index = {level: float(i) for i, level in enumerate(column.levels)}
            columns.append(np.array([index.get(v, np.nan) if v is not None else np.nan
                                     for v in frame[name]], dtype=np.float64))  # fmt: skip
        else:
            columns.append(frame[name].to_numpy(dtype=np.float64))
    return np.column_stack(columns) if columns else np.zeros((len(frame), 0))


@register_strategy(
    "lightgbm",
    config=LightgbmConfig,
    predictor=LightgbmPredictor,
    cost_rank=1,
    extra="credit",
    needs=("lightgbm", "sklearn"),
    inputs=("tabular",),
)
class LightgbmStrategy:
    """Gradient-boosted trees (LightGBM), monotone where told: the strongest cheap tabular model."""

    def __init__(self, config: LightgbmConfig) -> None:
        self.config = config

    def fit(
        self,
        train: Dataset,
        val: Dataset,
        *,
        budget: Budget,
        meter: CostMeter,
        workdir: Path | None = None,
    ) -> LightgbmPredictor:
        """Trees are counted by early stopping in 5-fold cross-validation on `train`, whose
        out-of-fold scores also fit the Platt calibration (all of train, not the small
        validation split); the model is then refitted on all of `train` with that count."""
        import lightgbm as lgb

        c = self.config
        rows = rows_of(train)
        schema, frame = rows.schema, rows.frame
        scorers: list[TextScore] = []
        oof: dict[str, np.ndarray] = {}
        if c.text and schema.of_type("text"):
            scorers, oof = fit_text_scores(frame, schema, train.y, seed=c.seed)
        names = model_columns(schema, text=bool(scorers))
        X = encode(frame, schema, names, scorers, oof)
        params = self._params(schema, names)
        categorical = [i for i, n in enumerate(names) if n in {c.name for c in
                       schema.of_type("categorical")}]  # fmt: skip
        rounds, scores = self._cross_fit(X, train.y, params, categorical)
        full = lgb.Dataset(X, train.y, feature_name=names, categorical_feature=categorical,
                           free_raw_data=False)  # fmt: skip
        booster = lgb.train(params, full, num_boost_round=rounds)
        platt = fit_platt(scores, train.y) if c.calibration == "platt" else (1.0, 0.0)
        # the saved text is the model: predict from it, before saving as after loading
        reloaded = lgb.Booster(model_str=booster.model_to_string())
        return LightgbmPredictor(schema, reloaded, scorers, train.labels, platt=platt)

    def _params(self, schema: TabularSchema, names: list[str]) -> dict[str, Any]:
        c = self.config
        unknown = sorted(set(c.monotone) - set(names))
        if unknown:
            raise ConfigError(
                f"lightgbm.monotone names {', '.join(unknown)}, not a feature of this data",
                [f"features: {', '.join(names)}"],
            )
        return {
            "objective": "binary", "learning_rate": c.learning_rate, "num_leaves": c.num_leaves,
            "min_child_samples": c.min_child_samples, "feature_fraction": c.feature_fraction,
            "bagging_fraction": c.bagging_fraction, "bagging_freq": 1, "lambda_l2": c.lambda_l2,
            "seed": c.seed, "num_threads": 1, "deterministic": True, "verbose": -1,
            "monotone_constraints": [c.monotone.get(n, 0) for n in names],
            "monotone_constraints_method": "advanced",
        }  # fmt: skip

    def _cross_fit(
        self, X: np.ndarray, y: np.ndarray, params: dict[str, Any], categorical: list[int]
    ) -> tuple[int, np.ndarray]:
        """(trees for the full model, each row's out-of-fold raw score at the best count)."""
        import lightgbm as lgb
        from sklearn.model_selection import StratifiedKFold

        folds = list(StratifiedKFold(CAL_FOLDS, shuffle=True, random_state=self.config.seed)
                     .split(X, y))  # fmt: skip
        data = lgb.Dataset(X, y, categorical_feature=categorical, free_raw_data=False)
        cv = lgb.cv(
            params, data, num_boost_round=self.config.max_rounds, folds=folds,
            callbacks=[lgb.early_stopping(100, verbose=False)], return_cvbooster=True,
        )  # fmt: skip
        cvbooster = cv.pop("cvbooster")
        assert isinstance(cvbooster, lgb.CVBooster)
        best = cvbooster.best_iteration
        scores = np.zeros(len(y))
        for (_, held), booster in zip(folds, cvbooster.boosters, strict=True):
            scores[held] = booster.predict(X[held], raw_score=True, num_iteration=best)
        return max(1, int(best * 1.2)), scores  # all of train supports a few more trees


def fit_platt(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling: (a, b) of P(bad) = sigmoid(a·score + b), unpenalised maximum likelihood."""
    from sklearn.linear_model import LogisticRegression

    head = LogisticRegression(C=np.inf).fit(scores[:, None], y)
    return float(head.coef_[0, 0]), float(head.intercept_[0])
