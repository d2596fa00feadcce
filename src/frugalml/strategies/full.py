"""Full fine-tuning: every encoder weight trains. The dearest rung, and the usual ceiling."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from frugalml.config import Budget
from frugalml.costs import CostMeter
from frugalml.data.dataset import Dataset
from frugalml.forecast import Forecast
from frugalml.models.backbones import DEFAULT_BACKBONE
from frugalml.models.encoder_head import EncoderHeadPredictor
from frugalml.strategies.base import StrategyConfig, register_strategy
from frugalml.training.loop import TrainConfig

if TYPE_CHECKING:
    from frugalml.training.finetune import FineTune


class FullConfig(StrategyConfig):
    kind: Literal["full"] = Field("full", description="The registry name.")
    backbone: str = Field(DEFAULT_BACKBONE, description="Packaged name, hf://ORG/NAME or folder.")
    max_length: int = Field(64, ge=8, description="Tokens per text; longer texts are truncated.")
    class_weighted: bool = Field(False, description="Weight the loss by inverse class frequency.")
    freeze_embeddings: bool = Field(
        True,
        description="Keep the token-embedding table fixed: about half of MiniLM's weights, "
        "whose gradients and optimizer updates cost CPU and rarely help a classifier.",
    )
    head_dropout: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Dropout before the head (0 makes training deterministic "
        "across batch splits: what the data-parallel equivalence test needs).",
    )
    train: TrainConfig = Field(
        TrainConfig(epochs=3, lr=1e-4, head_lr=2e-3),
        description="The training loop's settings (epochs, learning rates, batch size, ...).",
    )


@register_strategy(
    "full",
    config=FullConfig,
    predictor=EncoderHeadPredictor,
    cost_rank=6,
    extra="transformers",
    needs=("torch", "transformers"),
)
class FullStrategy:
    """Fine-tune every encoder weight with a mean-pooled linear head."""

    def __init__(self, config: FullConfig) -> None:
        self.config = config

    def fit(
        self,
        train: Dataset,
        val: Dataset,
        *,
        budget: Budget,
        meter: CostMeter,
        workdir: Path | None = None,
    ) -> EncoderHeadPredictor:
        job = self.fine_tuning(train, val)
        return job.finish(job.train(budget=budget, meter=meter, workdir=workdir))

    def fine_tuning(self, train: Dataset, val: Dataset) -> FineTune:
        """The job `fit` runs, built but not trained (see `LoraStrategy.fine_tuning`)."""
        from frugalml.training.finetune import build_fine_tune

        return build_fine_tune(self.config, train, val, adapt=self._adapt)

    def _adapt(self, encoder: Any) -> Any:
        if self.config.freeze_embeddings:
            encoder.get_input_embeddings().requires_grad_(False)
        return encoder

    def forecast(self, train: Dataset, val: Dataset) -> Forecast:
        from frugalml.training.finetune import forecast_fine_tune

        return forecast_fine_tune(self.config, train, val, adapt=self._adapt)
