"""The torch side of `EncoderHeadPredictor`: encoder → mean pooling (→ L2 normalization) →
dropout → linear head, as one `nn.Module`.

Fine-tuning, top-layer training and distillation train this module; its `head` becomes the
bundle's `LinearHead`, and ONNX export traces its pooling part (`MeanPooled`), so what is
trained is exactly what is served. Importing this module imports torch.
"""

from __future__ import annotations

import torch
from torch import nn

from frugalml.models.encoder import mean_pool
from frugalml.models.heads import LinearHead


class MeanPooled(nn.Module):
    """An encoder's sentence vector: its last hidden states mean-pooled over real tokens,
    L2-normalized when `normalize` (as a frozen probe's encoder gives them).

    `encoder(inputs, attention_mask=...)` must return an object with `last_hidden_state`: a
    Hugging Face model (inputs are token ids), or `layer_cache.TopLayers` (cached states).
    """

    def __init__(self, encoder: nn.Module, *, normalize: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.normalize = normalize

    def embed(self, inputs: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(inputs, attention_mask=attention_mask).last_hidden_state
        pooled = mean_pool(hidden, attention_mask)
        if self.normalize:
            pooled = nn.functional.normalize(pooled, dim=-1)
        return pooled  # type: ignore[no-any-return]

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.embed(inputs, attention_mask)


class EncoderClassifier(MeanPooled):
    """A `MeanPooled` encoder with dropout and a linear head: `forward` gives logits, `embed`
    still the sentence vector. Parameters are named `encoder.*` and `head.*` (the loop trains
    `head` at the head's learning rate; federated rounds exchange these names).

    Mean pooling is how MiniLM-style encoders were trained; a [CLS] head underfits them.
    """

    def __init__(
        self,
        encoder: nn.Module,
        hidden: int,
        n_classes: int,
        *,
        normalize: bool = False,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(encoder, normalize=normalize)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_classes)

    @classmethod
    def from_head(
        cls, encoder: nn.Module, head: LinearHead, *, normalize: bool, dropout: float = 0.1
    ) -> EncoderClassifier:
        """Start from a fitted `LinearHead` (a teacher's), e.g. to distill it."""
        n_classes, hidden = head.coef.shape
        model = cls(encoder, hidden, n_classes, normalize=normalize, dropout=dropout)
        with torch.no_grad():
            model.head.weight.copy_(torch.as_tensor(head.coef))
            model.head.bias.copy_(torch.as_tensor(head.intercept))
        return model

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(inputs, attention_mask)))  # type: ignore[no-any-return]
