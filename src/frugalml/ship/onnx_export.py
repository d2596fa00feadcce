"""Export a model's encoder to ONNX, fuse it for ONNX Runtime, quantize it to int8.

The graph is exported with the eager attention implementation: ONNX Runtime's transformer
optimizer recognises eager attention and fuses each layer into one `Attention` node (with
SDPA it fuses only LayerNorm and Gelu, and the model stays slow). The fusions are counted
and reported, because an unfused model is a silent 2-3x slowdown. Importing this module
imports torch; serving an exported bundle does not (see `onnx_predictor`).
"""

from __future__ import annotations

import collections
import copy
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from frugalml.errors import require_extra
from frugalml.models.encoder import Encoder, mean_pool

OPSET = 17
log = logging.getLogger("frugalml")


@dataclass(frozen=True)
class Fusions:
    """Fused operators ONNX Runtime's optimizer produced, and whether every layer fused."""

    layers: int
    attention: int
    skip_layer_norm: int
    other: dict[str, int]

    @property
    def complete(self) -> bool:
        return self.attention == self.layers and self.skip_layer_norm == 2 * self.layers

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete}


class _Pooled(nn.Module):
    """input_ids, attention_mask → the pooled (and, if the encoder does, normalized) vector."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.model = _eager_copy(encoder.model)
        self.normalize = encoder.normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask)
        pooled = mean_pool(hidden.last_hidden_state, attention_mask)
        if self.normalize:
            pooled = nn.functional.normalize(pooled, dim=-1)
        return pooled  # type: ignore[no-any-return]


def _eager_copy(model: nn.Module) -> nn.Module:
    """A float32 CPU copy in eval mode using the eager attention implementation."""
    clone: Any = copy.deepcopy(model).float().cpu().eval()
    if hasattr(clone, "set_attn_implementation"):
        clone.set_attn_implementation("eager")
    else:  # older transformers
        clone.config._attn_implementation = "eager"
    return clone  # type: ignore[no-any-return]


def export_onnx(encoder: Encoder, path: Path) -> Path:
    """The encoder and its pooling as one ONNX graph with dynamic batch and sequence axes.

    Heads (and hybrid's n-gram features) stay in numpy: they are small, and every encoder
    rung then exports through this one path.
    """
    _require_onnx()
    module = _Pooled(encoder).eval()
    ids = torch.full((2, 8), encoder.pad_id + 1, dtype=torch.long)
    mask = torch.ones_like(ids)
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.inference_mode():
        # The TorchScript-based exporter is the one ORT's fusion patterns are written for;
        # torch marks it deprecated in favour of dynamo export, which does not fuse (yet).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "embedding": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def optimize(source: Path, target: Path, config: Any) -> Fusions:
    """ONNX Runtime's transformer optimizer for BERT-style graphs; returns what it fused."""
    from onnxruntime.transformers.optimizer import optimize_model

    with _quiet_onnxruntime():
        model = optimize_model(
            str(source),
            model_type="bert",
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
        )
        model.save_model_to_file(str(target))
    counts = collections.Counter(node.op_type for node in model.model.graph.node)
    fused = ("EmbedLayerNormalization", "BiasGelu", "FastGelu", "Gelu", "LayerNormalization")
    return Fusions(
        layers=int(config.num_hidden_layers),
        attention=counts["Attention"],
        skip_layer_norm=counts["SkipLayerNormalization"],
        other={name: counts[name] for name in fused if counts[name]},
    )


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 quantization (weights int8 once, activations per batch): no calibration."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_onnxruntime():
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            # Shape inference cannot type the outputs of fused contrib ops (Attention, ...).
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
    return target


def _require_onnx() -> None:
    require_extra("ONNX export", "compress", "onnx", "onnxruntime")


@contextmanager
def _quiet_onnxruntime() -> Iterator[None]:
    """ORT's optimizer and quantizer log at INFO/WARNING about every pattern they try."""
    loggers = [logging.getLogger(), logging.getLogger("onnxruntime")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
