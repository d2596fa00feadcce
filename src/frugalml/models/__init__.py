"""What a model is made of: backbones, the encoder, heads, n-gram features and ONNX runtimes.

Nothing here trains or chooses; training/, strategies/ and the ladder build on these parts.
`embed_texts` is the public way for applications to embed texts with a frozen backbone;
`text_encoder` and `load_encoder` give one they keep in a bundle (to embed new texts later).
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from frugalml.models.encoder import embed_texts, load_encoder, text_encoder
else:
    from frugalml._lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        dict.fromkeys(("embed_texts", "load_encoder", "text_encoder"), "frugalml.models.encoder"),
    )

__all__ = ["embed_texts", "load_encoder", "text_encoder"]
