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
        resolve_backbone("hf://some-org/some-model-that-is-not-cached")
    assert "offline? use 'minilm'" in str(info.value)


@pytest.fixture
def hub_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record hub downloads instead of making them (offline too, should one slip by)."""
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls: list[str] = []

    def snapshot_download(model_id: str, **kwargs: object) -> str:
        calls.append(model_id)
        raise ConnectionError("offline in tests")

    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    return calls


@pytest.mark.parametrize("name", ["minlm", "some-org/some-model", "mini-lm"])
def test_an_unknown_name_is_an_error_not_a_download(
    name: str, hub_calls: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        resolve_backbone(name)
    assert info.value.summary == (
        f"backbone '{name}' is neither a packaged backbone (minilm) nor an existing folder"
    )
    assert f"for a Hugging Face hub model pass hf://{name}" in info.value.problems
    assert hub_calls == []


def test_a_typo_of_a_packaged_name_is_suggested(hub_calls: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_backbone("minlm")
    assert "did you mean 'minilm'?" in info.value.problems
    assert hub_calls == []


def test_the_hub_is_asked_only_with_the_prefix(hub_calls: list[str]) -> None:
    with pytest.raises(ConfigError, match="hub could not provide it"):
        resolve_backbone("hf://acme/encoder")
    assert hub_calls == ["acme/encoder"]


def test_a_prefixed_alias_of_the_packaged_model_downloads_nothing(hub_calls: list[str]) -> None:
    assert resolve_backbone("hf://sentence-transformers/all-MiniLM-L6-v2") == resolve_backbone(
        "minilm"
    )
    assert hub_calls == []
