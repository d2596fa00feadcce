"""Export a model's encoder to ONNX, fuse it for ONNX Runtime, quantize it to int8.

The graph is exported with the eager attention implementation: ONNX Runtime's transformer
optimizer recognises eager attention and fuses each layer into one `Attention` node (with
SDPA it fuses only LayerNorm and Gelu, and the model stays slow). The fusions are counted
and reported, because an unfused model is a silent 2-3x slowdown. Exporting imports torch;
quantizing an exported graph and serving it (`onnx_encoder.OnnxEncoder`) do not.
Predictors reach this module through their `export_onnx` capability.
"""

from __future__ import annotations

import collections
import copy
import logging
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frugalml.errors import ConfigError, require_extra
from frugalml.models.onnx_encoder import MODEL_FILE, TOKENIZER_FILE, write_settings

if TYPE_CHECKING:
    from frugalml.models.encoder import Encoder

OPSET = 17
PRECISIONS = ("fp32", "int8")
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


def export_encoder(encoder: Encoder, folder: Path, precision: str) -> dict[str, Any]:
    """Write `encoder` as a folder `OnnxEncoder` serves (graph, tokenizer, settings), fused,
    at `precision` (int8: the fused fp32 graph, quantized); return the fusions."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"ONNX precision must be one of {', '.join(PRECISIONS)}; got {precision!r}"
        )
    if precision == "int8":
        fp32 = folder.with_name(folder.name + "-fp32")
        details = export_encoder(encoder, fp32, "fp32")
        quantize_encoder(fp32, folder, {"pad_id": encoder.pad_id, "dim": encoder.dim})
        shutil.rmtree(fp32)
        return details
    folder.mkdir(parents=True)
    raw = folder.with_name(folder.name + "-raw.onnx")
    export_onnx(encoder, raw)
    fusions = optimize(raw, folder / MODEL_FILE, encoder.model.config)
    raw.unlink()
    encoder.tokenizer.backend_tokenizer.save(str(folder / TOKENIZER_FILE))
    write_settings(folder, {"pad_id": encoder.pad_id, "dim": encoder.dim, "precision": "fp32"})
    return {"fusions": fusions.to_dict()}


def quantize_encoder(source: Path, folder: Path, settings: dict[str, Any]) -> None:
    """An exported encoder folder's int8 copy: its graph quantized, its tokenizer as it is."""
    folder.mkdir(parents=True)
    quantize_int8(source / MODEL_FILE, folder / MODEL_FILE)
    shutil.copyfile(source / TOKENIZER_FILE, folder / TOKENIZER_FILE)
    write_settings(folder, {**settings, "precision": "int8"})


def _eager_copy(model: Any) -> Any:
    """A float32 CPU copy in eval mode using the eager attention implementation."""
    clone: Any = copy.deepcopy(model).float().cpu().eval()
    if hasattr(clone, "set_attn_implementation"):
        clone.set_attn_implementation("eager")
    else:  # older transformers
        clone.config._attn_implementation = "eager"
    return clone


def export_onnx(encoder: Encoder, path: Path) -> Path:
    """The encoder and its pooling as one ONNX graph with dynamic batch and sequence axes.

    Heads (and hybrid's n-gram features) stay in numpy: they are small, and every encoder
    rung then exports through this one path.
    """
    import torch

    from frugalml.models.classifier_module import MeanPooled

    _require_onnx()
    module = MeanPooled(_eager_copy(encoder.model), normalize=encoder.normalize).eval()
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
