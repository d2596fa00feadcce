"""What a model is made of: backbones, the encoder, heads, n-gram features and ONNX runtimes.

Nothing here trains or chooses; training/, strategies/ and the ladder build on these parts.
"""
