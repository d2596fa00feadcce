"""TF-IDF n-grams exported to ONNX: exact parity with scikit-learn on awkward text, refused
settings, damaged settings files, and bundles that load and predict without scikit-learn."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import sparse

import frugalml
from frugalml.data.split import Splits
from frugalml.errors import BundleError, ConfigError
from frugalml.models.onnx_ngrams import SETTINGS_FILE, OnnxNgramFeatures, export_ngrams
from frugalml.ship.compress import compress
from tests.conftest import labels_in_a_process_without, reseal

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

AWKWARD = [
    "",
    " ",
    "\t\n \r\n",
    "a",
    "I",
    "a b c d e",
    "x y",
    "Héllo   wörld!!\t\tnew\nline",
    "İstanbul ŞEHİR",  # lowercasing İ gives two code points
    "straße ﬁnance Æsir",  # NFKD splits the ligature; ascii stripping drops ß
    "日本語のテキスト 和 文",
    "emoji 😀 ok 👍🏽",
    "zzzqqq unknownword ✓ ∑",
    "Ünïcödé ÀÉÎ café",
    "1 2 3 45 678 9,000.50",
    "don't can't won't",
    "!!! ??? ... ---",
    "\u00a0nbsp\u2003em\u2028line sep",
    "a\tb c\nd",  # single whitespace characters survive the char analyzer
    "  leading and trailing  ",
    "card card card card card card card card",
]


def vectorizer(**params: Any) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(dtype=np.float32, **params)


# The project's two (word (1, 2) and char_wb (2, 5), min_df 2, sublinear), then variations.
SETTINGS = {
    "project": [
        {"ngram_range": (1, 2), "sublinear_tf": True},
        {"analyzer": "char_wb", "ngram_range": (2, 5), "sublinear_tf": True, "min_df": 2},
    ],
    "char_wb_from_1": [{"analyzer": "char_wb", "ngram_range": (1, 3)}],
    "char_wb_from_3": [{"analyzer": "char_wb", "ngram_range": (3, 3), "norm": "l1"}],
    "char": [{"analyzer": "char", "ngram_range": (1, 4), "sublinear_tf": True}],
    "word_cased_l1": [{"lowercase": False, "norm": "l1", "ngram_range": (2, 3)}],
    "unicode_accents": [
        {"strip_accents": "unicode", "sublinear_tf": True},
        {"analyzer": "char_wb", "strip_accents": "unicode", "ngram_range": (2, 3)},
    ],
    "ascii_accents_no_norm": [
        {"strip_accents": "ascii", "norm": None, "smooth_idf": False},
        {"analyzer": "char", "strip_accents": "ascii", "norm": None, "ngram_range": (2, 2)},
    ],
}


def fitted(demo_splits: Splits, settings: list[dict[str, Any]]) -> list[Any]:
    texts = list(demo_splits.train.texts) + AWKWARD[::2]  # some awkward characters are known
    return [vectorizer(**params).fit(texts) for params in settings]


def sklearn_features(vectorizers: list[Any], texts: list[str]) -> np.ndarray:
    return np.asarray(sparse.hstack([v.transform(texts) for v in vectorizers]).toarray())


@pytest.mark.parametrize("name", list(SETTINGS))
def test_features_match_scikit_learn_on_awkward_texts(
    name: str, demo_splits: Splits, tmp_path: Path
) -> None:
    vectorizers = fitted(demo_splits, SETTINGS[name])
    long_text = " ".join(demo_splits.val.texts) * 20  # ~100k characters in one text
    texts = [*AWKWARD, *demo_splits.val.texts[:30], long_text]
    exported = export_ngrams(vectorizers, tmp_path / "ngrams")
    expected = sklearn_features(vectorizers, texts)
    for features in (exported, OnnxNgramFeatures(tmp_path / "ngrams", batch_size=3)):
        got = features.transform(texts)
        assert isinstance(got, sparse.csr_matrix) and got.dtype == np.float32
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got.toarray() != 0, expected != 0)  # the same n-grams
        np.testing.assert_allclose(got.toarray(), expected, rtol=1e-5, atol=1e-6)
    assert exported.transform([]).shape == (0, expected.shape[1])


def test_settings_it_cannot_reproduce_are_refused_all_at_once(tmp_path: Path) -> None:
    texts = ["the card was lost", "my card never arrived", "lost the card again"]
    vectorizers = [
        vectorizer(stop_words="english").fit(texts),
        vectorizer(token_pattern=r"\S+", binary=True).fit(texts),
        vectorizer(analyzer="char_wb", ngram_range=(4, 5)).fit(texts),
    ]
    with pytest.raises(ConfigError) as raised:
        export_ngrams(vectorizers, tmp_path / "ngrams")
    message = str(raised.value)
    assert "vectorizer 0: stop_words='english' is not reproduced" in message
    assert "vectorizer 1: binary=True" in message
    assert "vectorizer 1: token_pattern='\\\\S+'" in message
    assert "vectorizer 2: char_wb with ngram_range starting at 4" in message
    assert not (tmp_path / "ngrams").exists()


# -- bundles ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tfidf_run(demo_splits: Splits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tfidf")
    run = frugalml.fit(demo_splits.train, out=root / "run", strategies=["tfidf"], ship="none")
    return run.run_dir


@pytest.fixture(scope="module")
def onnx_bundle(
    tfidf_run: Path, demo_splits: Splits, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "bundle"
    source = tfidf_run / "candidates" / "tfidf"
    compress(source, demo_splits.train, demo_splits.val, out, to="onnx")
    return out


def test_an_onnx_tfidf_bundle_round_trips_and_matches_scikit_learn(
    onnx_bundle: Path, tfidf_run: Path, demo_splits: Splits
) -> None:
    first, second = frugalml.load(onnx_bundle), frugalml.load(onnx_bundle)
    texts = [*demo_splits.test.texts, *AWKWARD]
    np.testing.assert_array_equal(first.predict_proba(texts), second.predict_proba(texts))
    source = frugalml.load(tfidf_run / "candidates" / "tfidf")
    np.testing.assert_allclose(
        first.predictor.logits(texts), source.predictor.logits(texts), atol=1e-5
    )
    spec = first.manifest.predictor
    assert (spec["format"], spec["precision"]) == ("onnx", "fp32")
    assert spec["parity"]["max_abs_logit_diff"] < 1e-4 and spec["parity"]["same_labels"] == 1.0
    assert spec["vectorizers"] == source.manifest.predictor["vectorizers"]
    assert type(first.predictor.ngrams).__name__ == "OnnxNgramFeatures"  # type: ignore[attr-defined]
    assert sorted(first.manifest.files) == [
        "model/head.safetensors",
        "model/ngrams.json",
        "model/ngrams.onnx",
    ]


def test_an_onnx_tfidf_bundle_predicts_without_torch_or_scikit_learn(
    onnx_bundle: Path, demo_splits: Splits
) -> None:
    texts = [*demo_splits.val.texts[:20], *AWKWARD]
    expected = frugalml.load(onnx_bundle).predict_proba(texts).argmax(1).tolist()
    refused = ("torch", "transformers", "sklearn")
    assert labels_in_a_process_without(onnx_bundle, texts, refused) == expected


def rewrite(bundle: Path, name: str, text: str) -> None:
    """Change a model file, its checksum and the manifest's seal, as a bundle crafted
    elsewhere would arrive."""
    (bundle / "model" / name).write_text(text, encoding="utf-8")
    reseal(bundle)


def damaged(settings: dict[str, Any]) -> dict[str, Any]:
    vectorizers = [dict(v) for v in settings["vectorizers"]]
    vectorizers[0].update(tokens="abc", token_pattern="(a+)+$", ngram_range=[3, 1])
    vectorizers[1].update(analyzer="lines", tokens=["ab", "ab"])
    return {**settings, "vectorizers": vectorizers}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda s: "{not json", r"ngrams\.json is missing or damaged"),
        (lambda s: json.dumps([1, 2]), r'must be a JSON object with "version": 1'),
        (lambda s: json.dumps({**s, "vectorizers": []}), "'vectorizers' must be a non-empty"),
        (lambda s: json.dumps({**s, "vectorizers": s["vectorizers"][:1]}), "does not match"),
        (
            lambda s: json.dumps(damaged(s)),
            r"(?s)5 problem\(s\):.*vectorizers\[0\]\.ngram_range must be.*got \[3, 1\]"
            r".*vectorizers\[0\]\.token_pattern.*vectorizers\[0\]\.tokens must be a list"
            r".*vectorizers\[1\]\.analyzer.*vectorizers\[1\]\.tokens",
        ),
    ],
    ids=["not-json", "not-an-object", "no-vectorizers", "graph-mismatch", "bad-fields"],
)
def test_a_damaged_settings_file_is_refused_with_a_clear_error(
    change: Any, says: str, onnx_bundle: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(onnx_bundle, bundle)
    settings = json.loads((bundle / "model" / SETTINGS_FILE).read_text(encoding="utf-8"))
    rewrite(bundle, SETTINGS_FILE, change(settings))
    with pytest.raises(BundleError, match=says):
        frugalml.load(bundle)
