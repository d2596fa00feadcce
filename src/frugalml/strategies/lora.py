"""LoRA: low-rank adapters on a frozen encoder, plus a trainable head (Hugging Face PEFT)."""

from __future__ import annotations

import warnings
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


class LoraConfig(StrategyConfig):
    kind: Literal["lora"] = Field("lora", description="The registry name.")
    backbone: str = Field(DEFAULT_BACKBONE, description="Packaged name, hf://ORG/NAME or folder.")
    max_length: int = Field(64, ge=8, description="Tokens per text; longer texts are truncated.")
    r: int = Field(8, ge=1, description="Rank of the update matrices.")
    alpha: int = Field(16, ge=1, description="Scaling numerator: updates are scaled by alpha/r.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the adapters' inputs.")
    target_modules: tuple[str, ...] = Field(
        ("query", "value"), description="Names of the encoder's linear layers that get adapters."
    )
    class_weighted: bool = Field(False, description="Weight the loss by inverse class frequency.")
    train: TrainConfig = Field(
        TrainConfig(epochs=3, lr=1e-3, head_lr=2e-3),
        description="The training loop's settings (epochs, learning rates, batch size, ...).",
    )


@register_strategy(
    "lora",
    config=LoraConfig,
    predictor=EncoderHeadPredictor,
    cost_rank=5,
    extra="peft",
    needs=("torch", "transformers", "peft"),
)
class LoraStrategy:
    """Low-rank adapters on a frozen encoder: much of full fine-tuning's quality, fewer weights."""

    def __init__(self, config: LoraConfig) -> None:
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
        """The job `fit` runs, built but not trained: a federated client trains it round after
        round, exchanging `trainable_state(job.model)` (adapters and head, never merged),
        and `finish` merges the adapters once at the end."""
        from frugalml.training.finetune import build_fine_tune

        return build_fine_tune(self.config, train, val, adapt=self._add_adapters, export=_merge)

    def forecast(self, train: Dataset, val: Dataset) -> Forecast:
        from frugalml.training.finetune import forecast_fine_tune

        return forecast_fine_tune(self.config, train, val, adapt=self._add_adapters)

    def _add_adapters(self, encoder: Any) -> Any:
        import peft

        c = self.config
        adapters = peft.LoraConfig(
            r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=list(c.target_modules)
        )
        with warnings.catch_warnings():
            # peft still calls a transformers API deprecated for v6; nothing a user can act on
            warnings.filterwarnings(
                "ignore",
                message="`is_gradient_checkpointing` is deprecated",
                category=FutureWarning,
            )
            return peft.get_peft_model(encoder, adapters)


def _merge(encoder: Any) -> Any:
    """Fold the adapters into the base weights: the bundle serves at the base model's speed."""
    return encoder.merge_and_unload()
