"""The real packaged MiniLM end to end (slow: run with `make test-all`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import frugalml
from frugalml.data import DEMO_INTENTS, out_of_scope_texts

pytestmark = pytest.mark.slow


def test_frozen_minilm_probe_learns_the_demo_and_round_trips(tmp_path: Path) -> None:
    result = frugalml.fit(DEMO_INTENTS, out=tmp_path / "run", strategies=["frozen_probe"])
    chosen = result.ladder.chosen
    assert chosen.test is not None and chosen.test.accuracy >= 0.9
    assert chosen.cost.flops and chosen.cost.flops > 1e10
    texts = out_of_scope_texts()[:20]
    reloaded = frugalml.load(result.run_dir / "bundle")
    np.testing.assert_array_equal(reloaded.predict_proba(texts), result.bundle.predict_proba(texts))
