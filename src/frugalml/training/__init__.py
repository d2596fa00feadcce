"""The one torch training loop and the fine-tuning helpers built on it (DDP lands here)."""
