"""Shared fixtures: a tiny random BERT with a word-level tokenizer, built in code, and small data.

Nothing here touches the network; the tiny model trains and predicts in well under a second.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

# Tiny test models gain nothing from threads, and idle threads that spin make them crawl when
# the machine is busy. Set before torch loads; subprocesses started by tests inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from frugalml.data import DEMO_INTENTS, Dataset, read_table, stratified_split, to_dataset
from frugalml.data.split import Splits

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def demo_dataset() -> Dataset:
    return to_dataset(read_table(DEMO_INTENTS)).dataset


def build_tiny_backbone(folder: Path, words: list[str], seed: int = 0) -> Path:
    """A 2-layer, 16-wide BERT and a word-level tokenizer, saved like a hub folder."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + sorted(set(words)))}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    words = {w for text in demo_dataset().texts for w in re.findall(r"[a-z']+", text.lower())}
    return build_tiny_backbone(tmp_path_factory.mktemp("tiny-bert"), sorted(words))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own embedding cache, so no test sees another's."""
    monkeypatch.setenv("FRUGALML_CACHE", str(tmp_path / "cache"))
    # A signing key in the developer's shell would make unsigned test bundles unloadable.
    monkeypatch.delenv("FRUGALML_SIGNING_KEY", raising=False)


@pytest.fixture(scope="session")
def demo_splits() -> Splits:
    return stratified_split(demo_dataset(), seed=0)


@pytest.fixture(scope="session")
def tabular_splits() -> Splits:
    """Synthetic applicants (every column type, missing incomes, an ID, a job title)."""
    from frugalml.apps.credit.data import synthetic_applicants
    from frugalml.data.tabular import to_tabular

    data = to_tabular(synthetic_applicants(), target="status", positive="bad").dataset
    return stratified_split(data, seed=0)


@pytest.fixture
def small_csv(tmp_path: Path) -> Path:
    """A small labeled CSV drawn from the demo: 6 classes, 15 examples each."""
    data = demo_dataset()
    rows, per_class = [], dict.fromkeys(range(6), 0)
    for text, y in zip(data.texts, data.y, strict=True):
        if y in per_class and per_class[y] < 15:
            per_class[y] += 1
            rows.append((text, data.labels[y]))
    path = tmp_path / "small.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "label"), *rows])
    return path


def labels_in_a_process_without(bundle: Path, texts: list[str], refused: tuple[str, ...]) -> Any:
    """Load `bundle` and predict `texts` in a fresh Python whose imports of `refused` fail;
    the predicted label indices, or the failed process (for its stderr)."""
    script = f"""
import importlib.abc, json, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {refused!r}:
            raise ImportError(f"{{name}} must not be imported here")

sys.meta_path.insert(0, Refuse())
import frugalml
bundle = frugalml.load({str(bundle)!r})
proba = bundle.predict_proba(json.loads(sys.argv[1]))
assert not set({refused!r}) & set(sys.modules)
print(json.dumps(proba.argmax(1).tolist()))
"""
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(texts)], capture_output=True, text=True
    )
    return json.loads(done.stdout) if done.returncode == 0 else done


def reseal(folder: Path, **fields: Any) -> None:
    """List every file of a bundle with its sha256 (and size), set `fields`, and write the
    manifest with frugalml's own writer: a bundle crafted elsewhere, consistent in itself,
    whatever it holds. (Files are read through links: what a naive packer would do.)"""
    from frugalml.bundle import MANIFEST, write_manifest
    from frugalml.types import parse_manifest

    raw = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    paths = {
        p.relative_to(folder).as_posix(): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p != folder / MANIFEST
    }
    raw["files"] = {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in paths.items()}
    if "sizes" in raw:
        raw["sizes"] = {name: p.stat().st_size for name, p in paths.items()}
    raw.update(fields)
    write_manifest(folder, parse_manifest(raw))
