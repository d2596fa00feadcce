"""Shipping a chosen model small and fast: ONNX export, int8, distillation, each accuracy-gated."""
