"""The one embedding function: order-preserving bucketing, a disk cache keyed by text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from frugalml.costs import CostMeter
from frugalml.models.encoder import EmbeddingCache, Encoder

TEXTS = [
    "my card never arrived",
    "cancel",
    "why was my top up declined at the shop today",
    "transfer pending",
    "I lost my card yesterday evening at the station",
    "hi",
]


@pytest.fixture(scope="module")
def encoder(tiny_backbone: Path) -> Encoder:
    return Encoder(tiny_backbone, batch_size=2)


def test_bucketed_batches_keep_input_order_and_match_one_by_one(encoder: Encoder) -> None:
    together = encoder.encode(TEXTS)
    alone = np.concatenate([encoder.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(together[0], together[1])


def test_flops_are_reported_to_the_meter(encoder: Encoder) -> None:
    with CostMeter() as meter:
        encoder.encode(TEXTS, meter)
    assert meter.card.flops is not None and meter.card.flops > 2 * encoder.n_params * len(TEXTS)


def test_cache_reuses_vectors_across_instances_and_computes_only_new_texts(
    encoder: Encoder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = encoder.fingerprint()
    first = EmbeddingCache(tmp_path, key).encode(encoder, TEXTS[:4])
    computed: list[str] = []
    real = encoder.encode
    monkeypatch.setattr(
        encoder, "encode", lambda texts, meter=None: (computed.extend(texts), real(texts, meter))[1]
    )
    again = EmbeddingCache(tmp_path, key).encode(encoder, TEXTS)  # fresh instance: reads disk
    assert computed == TEXTS[4:]
    np.testing.assert_array_equal(again[:4], first)
    assert len(list((tmp_path / "embeddings" / key).glob("*.safetensors"))) == 2


def test_fingerprint_changes_with_settings(tiny_backbone: Path, encoder: Encoder) -> None:
    assert Encoder(tiny_backbone, max_length=16).fingerprint() != encoder.fingerprint()
    assert Encoder(tiny_backbone).fingerprint() == encoder.fingerprint()


def test_truncation_respects_max_length(tiny_backbone: Path) -> None:
    short = Encoder(tiny_backbone, max_length=8)
    ids = short.tokenize(["card " * 50])
    assert len(ids[0]) == 8


def test_max_length_is_capped_at_what_the_backbone_reads(tiny_backbone: Path) -> None:
    # The tiny BERT has 64 positions: a 128-token setting once crashed on long texts only.
    encoder = Encoder(tiny_backbone, max_length=128)
    assert encoder.max_length == 64
    assert len(encoder.tokenize(["card " * 500])[0]) == 64
    assert encoder.encode(["card " * 500, "hi"]).shape == (2, encoder.dim)


def test_tight_batches_cut_where_padding_costs_more_than_a_call() -> None:
    from frugalml.models.encoder import tight_batches

    lengths = [5, 60, 6, 5, 58, 7]
    batches = tight_batches(lengths, max_rows=32, call_tokens=16)
    # two calls: the short texts (3 x 7 + 16) and the long ones (2 x 60 + 16), not one call
    # padding all six to 60 (360 + 16)
    assert [sorted(b.tolist()) for b in batches] == [[0, 2, 3, 5], [1, 4]]
    # every text exactly once, each batch no wider than max_rows
    assert sorted(np.concatenate(batches).tolist()) == list(range(6))
    assert all(len(b) <= 2 for b in tight_batches(lengths, max_rows=2, call_tokens=16))
    # a call dearer than any padding: one batch; a free call: one batch per distinct length
    assert len(tight_batches(lengths, max_rows=32, call_tokens=10**6)) == 1
    assert len(tight_batches(lengths, max_rows=32, call_tokens=0)) == 5
    assert tight_batches([], max_rows=32, call_tokens=16) == []


def test_tight_batches_never_compute_more_than_fixed_batches() -> None:
    from frugalml.models.encoder import sorted_padded_tokens, tight_batches

    rng = np.random.default_rng(0)
    for _ in range(20):
        lengths = rng.integers(3, 80, size=int(rng.integers(1, 70))).tolist()
        tight = tight_batches(lengths, max_rows=32, call_tokens=16)
        cost = sum(16 + len(b) * max(lengths[i] for i in b) for b in tight)
        fixed = sorted_padded_tokens(lengths, 32) + 16 * -(-len(lengths) // 32)
        assert cost <= fixed
