"""Backbones resolve offline; unsafe or missing folders and unreachable hub ids fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from frugalml.errors import ConfigError
from frugalml.models.backbones import resolve_backbone


def test_default_backbone_is_the_packaged_minilm() -> None:
    folder = resolve_backbone("minilm")
    assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
    assert resolve_backbone("sentence-transformers/all-MiniLM-L6-v2") == folder


def test_local_folder_is_used_as_is(tiny_backbone: Path) -> None:
    assert resolve_backbone(str(tiny_backbone)) == tiny_backbone


def test_pickle_only_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80")
    with pytest.raises(ConfigError, match=r"no model.safetensors \(weights found: pytorch_model"):
        resolve_backbone(str(tmp_path))


def test_missing_local_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_backbone(str(tmp_path / "nope"))


def test_unreachable_hub_id_says_how_to_work_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub client fails at once, without network
    with pytest.raises(ConfigError, match="hub could not provide it") as info:
        resolve_backbone("some-org/some-model-that-is-not-cached")
    assert "offline? use 'minilm'" in str(info.value)
