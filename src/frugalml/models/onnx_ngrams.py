"""TF-IDF n-gram features served by ONNX Runtime: no scikit-learn.

`OnnxNgramFeatures` stands in for `strategies.tfidf.NgramFeatures`: `transform(texts)` gives
the same float32 CSR matrix, columns in the same order. As with a transformer's tokenizer,
splitting text stays outside the graph: Python (`re`, `unicodedata`) reproduces scikit-learn's
analyzers exactly and maps each word or character to an integer id. The graph does the
arithmetic: one `TfIdfVectorizer` op per vectorizer counts the n-grams, then sublinear tf, idf
and the row norm. A bundle holds `ngrams.onnx` and `ngrams.json`, no pickles. Serving needs
onnxruntime, numpy and scipy (which the linear head already imports); exporting needs `onnx`.
"""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from frugalml.errors import BundleError, ConfigError, require_extra

MODEL_FILE = "ngrams.onnx"
SETTINGS_FILE = "ngrams.json"  # per vectorizer: how to split text, and the token ids
FORMAT_VERSION = 1
OPSET = 17  # ScatterElements reduces with "add" from 16; ONNX Runtime ≥ 1.13 runs 17
IR_VERSION = 8  # the IR of opset 17, so older ONNX Runtimes read the file too
OUTPUTS = ("rows", "columns", "values")  # the nonzero features, block after block
UNK = 0  # unknown tokens, word breaks and padding: in no pooled n-gram, so they end any match
DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
ANALYZERS = ("word", "char", "char_wb")
NORMS = ("l2", "l1", None)
ACCENTS = ("ascii", "unicode", None)
# scikit-learn's `_VectorizerMixin._white_spaces`: runs of whitespace become one space.
_WHITE_SPACES = re.compile(r"\s\s+")
_WORDS = re.compile(DEFAULT_TOKEN_PATTERN)
# The settings that describe what the graph computes (the manifest's `vectorizers` spec).
_SPEC_KEYS = ("analyzer", "ngram_range", "lowercase", "sublinear_tf", "norm", "smooth_idf")


@dataclass
class Analyzer:
    """Text → token ids for one vectorizer, split exactly as scikit-learn's analyzer splits it."""

    kind: str  # "word" (scikit-learn's default token pattern), "char" or "char_wb"
    lowercase: bool
    strip_accents: str | None
    tokens: tuple[str, ...]  # token i has id i + 1; id 0 is UNK
    _ids: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._ids = {token: i + 1 for i, token in enumerate(self.tokens)}

    def ids(self, text: str) -> list[int]:
        lookup = self._ids.get
        doc = _preprocess(text, self.lowercase, self.strip_accents)
        if self.kind == "word":
            return [lookup(t, UNK) for t in _WORDS.findall(doc)]
        doc = _WHITE_SPACES.sub(" ", doc)
        if self.kind == "char":
            return [lookup(c, UNK) for c in doc]
        space, out = lookup(" ", UNK), []
        for word in doc.split():  # char_wb: each word padded with spaces, then a break
            out.append(space)
            out.extend(lookup(c, UNK) for c in word)
            out.extend((space, UNK))
        return out


def _preprocess(text: str, lowercase: bool, strip_accents: str | None) -> str:
    """scikit-learn's `_preprocess`: lowercase first, then accents."""
    if lowercase:
        text = text.lower()
    if strip_accents == "unicode":
        if text.isascii():
            return text
        normalized = unicodedata.normalize("NFKD", text)
        return "".join(c for c in normalized if not unicodedata.combining(c))
    if strip_accents == "ascii":
        return unicodedata.normalize("NFKD", text).encode("ASCII", "ignore").decode("ASCII")
    return text


class OnnxNgramFeatures:
    """The exported n-grams: `transform(texts)` → a (len(texts), n_features) float32 CSR matrix."""

    def __init__(self, folder: Path, *, batch_size: int = 64) -> None:
        require_extra("Serving exported n-grams", "onnx", "onnxruntime")
        import onnxruntime as ort

        self.folder = folder
        # Texts per graph run: the op's counts are a dense batch-by-vocabulary matrix.
        self.batch_size = batch_size
        self.settings = read_settings(folder)
        self.analyzers = [_analyzer(v) for v in self.settings["vectorizers"]]
        self.n_features = sum(int(v["n_features"]) for v in self.settings["vectorizers"])
        options = ort.SessionOptions()
        # Scans of the counts matrix are memory-bound: a second thread only contends (2 busy
        # cores, Banking77-sized vocabulary: 4.7k texts/s on one thread, 1.9k on two).
        options.intra_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # ORT raises its own classes for unreadable or invalid graphs
            raise BundleError(f"{folder / MODEL_FILE} is not a valid ONNX model ({err})") from None
        self._check_graph()

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        rows, columns = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        values = [np.zeros(0, np.float32)]
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            feeds = {
                f"ids_{i}": _padded([analyzer.ids(t) for t in batch])
                for i, analyzer in enumerate(self.analyzers)
            }
            r, c, v = self.session.run(OUTPUTS, feeds)
            rows.append(r + start)
            columns.append(c)
            values.append(v)
        return self._csr(np.concatenate(rows), np.concatenate(columns), values, len(texts))

    def _csr(
        self, rows: np.ndarray, columns: np.ndarray, values: list[np.ndarray], n: int
    ) -> sparse.csr_matrix:
        """Blocks come one after the other; a stable sort by row keeps columns ascending."""
        if rows.size and not (_within(rows, n) and _within(columns, self.n_features)):
            raise BundleError(f"{self.folder / MODEL_FILE} wrote entries outside its matrix")
        order = np.argsort(rows, kind="stable")
        index = np.int32 if max(len(rows), self.n_features) < 2**31 else np.int64  # as sklearn
        indptr = np.zeros(n + 1, dtype=index)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        data = np.concatenate(values)[order]
        matrix = (data, columns[order].astype(index), indptr)
        return sparse.csr_matrix(matrix, shape=(n, self.n_features))

    def save(self, folder: Path) -> list[dict[str, Any]]:
        """Copy the graph and its settings; return the manifest's description of them."""
        folder.mkdir(parents=True, exist_ok=True)
        for name in (MODEL_FILE, SETTINGS_FILE):
            shutil.copyfile(self.folder / name, folder / name)
        return self.spec()

    def export_onnx(self, folder: Path) -> list[dict[str, Any]]:
        """Already ONNX: copied as it is."""
        return self.save(folder)

    def spec(self) -> list[dict[str, Any]]:
        """The manifest's description of the vectorizers."""
        return [{k: v[k] for k in _SPEC_KEYS} for v in self.settings["vectorizers"]]

    def _check_graph(self) -> None:
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        wanted = [f"ids_{i}" for i in range(len(self.analyzers))]
        if inputs != wanted or outputs != list(OUTPUTS):
            raise BundleError(
                f"{self.folder / MODEL_FILE} does not match {SETTINGS_FILE}: expected inputs "
                f"{wanted} and outputs {list(OUTPUTS)}; got {inputs} and {outputs}"
            )


def _within(indices: np.ndarray, size: int) -> bool:
    return bool(indices.min() >= 0 and indices.max() < size)


def _padded(rows: list[list[int]]) -> np.ndarray:
    """(N, longest) int64, padded with UNK; at least one column, as ONNX Runtime requires."""
    ids = np.full((len(rows), max([1, *map(len, rows)])), UNK, dtype=np.int64)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = row
    return ids


def is_onnx_ngrams_folder(folder: Path) -> bool:
    return (folder / MODEL_FILE).exists()


# ---------------------------------------------------------------- export (needs `onnx`)


def export_ngrams(vectorizers: Sequence[Any], folder: Path) -> OnnxNgramFeatures:
    """Write fitted scikit-learn `TfidfVectorizer`s as `ngrams.onnx` + `ngrams.json`.

    Settings this module does not reproduce exactly are refused, all of them at once.
    """
    require_extra("Exporting n-grams to ONNX", "compress", "onnx", "onnxruntime")
    problems = [p for i, v in enumerate(vectorizers) for p in _unsupported(i, v.get_params())]
    if problems:
        raise ConfigError("these n-gram settings cannot be exported to ONNX:", problems)
    settings, blocks = [], []
    for i, vectorizer in enumerate(vectorizers):
        params = vectorizer.get_params()
        pool = _pool(i, params, vectorizer.vocabulary_)
        blocks.append((pool, np.asarray(vectorizer.idf_, dtype=np.float32), params))
        settings.append(_settings(params, pool.tokens, len(vectorizer.vocabulary_)))
    folder.mkdir(parents=True, exist_ok=True)
    import onnx

    onnx.save(_graph(blocks), str(folder / MODEL_FILE))
    text = json.dumps({"version": FORMAT_VERSION, "vectorizers": settings}, ensure_ascii=False)
    (folder / SETTINGS_FILE).write_text(text + "\n", encoding="utf-8")
    return OnnxNgramFeatures(folder)


def _unsupported(i: int, params: dict[str, Any]) -> Iterable[str]:
    """Every setting of vectorizer `i` whose effect the Python side or the graph would miss."""
    where = f"vectorizer {i}"
    exact = {
        "input": "content",
        "preprocessor": None,
        "tokenizer": None,
        "stop_words": None,
        "binary": False,
        "use_idf": True,
    }
    for key, allowed in exact.items():
        if params.get(key) != allowed:
            yield f"{where}: {key}={params.get(key)!r} is not reproduced (only {allowed!r})"
    analyzer, (min_n, _) = params["analyzer"], params["ngram_range"]
    if analyzer not in ANALYZERS:
        yield f"{where}: analyzer={analyzer!r} is not reproduced (only {', '.join(ANALYZERS)})"
    if analyzer == "word" and params.get("token_pattern") != DEFAULT_TOKEN_PATTERN:
        yield (
            f"{where}: token_pattern={params.get('token_pattern')!r} is not reproduced (only "
            f"scikit-learn's default {DEFAULT_TOKEN_PATTERN!r}: other tokens may hold spaces)"
        )
    if analyzer == "char_wb" and min_n > 3:
        yield (
            f"{where}: char_wb with ngram_range starting at {min_n} is not reproduced: "
            "scikit-learn then counts a word shorter than that once, as a shorter gram; "
            "start the range at 3 or below"
        )
    if params.get("strip_accents") not in ACCENTS:
        yield f"{where}: strip_accents={params.get('strip_accents')!r} is not reproduced"
    if params.get("norm") not in NORMS:
        yield f"{where}: norm={params.get('norm')!r} is not reproduced (only l2, l1 or None)"


@dataclass
class _Pool:
    """The n-grams of one vocabulary as token ids, grouped by length as `TfIdfVectorizer` wants."""

    tokens: tuple[str, ...]
    ids: list[int]  # the n-grams' token ids, concatenated
    columns: list[int]  # scikit-learn's column of each n-gram
    starts: list[int]  # where the 1-grams, 2-grams, ... begin in `ids`
    min_n: int
    max_n: int


def _pool(i: int, params: dict[str, Any], vocabulary: dict[str, int]) -> _Pool:
    min_n, max_n = params["ngram_range"]
    split: Callable[[str], list[str]] = (
        (lambda gram: gram.split(" ")) if params["analyzer"] == "word" else list
    )
    grams = {gram: split(gram) for gram in vocabulary}
    bad = [g for g, units in grams.items() if not min_n <= len(units) <= max_n or "" in units]
    if bad:
        raise ConfigError(
            f"vectorizer {i}: {len(bad)} vocabulary entries are not {min_n}- to {max_n}-grams "
            f"of its analyzer (first: {bad[0]!r}); was the vocabulary set by hand?"
        )
    tokens = tuple(sorted({unit for units in grams.values() for unit in units}))
    token_id = {token: k + 1 for k, token in enumerate(tokens)}
    ids: list[int] = []
    columns: list[int] = []
    starts: list[int] = []
    in_column_order = sorted(grams.items(), key=lambda item: vocabulary[item[0]])
    for n in range(1, max_n + 1):
        starts.append(len(ids))
        for gram, units in in_column_order:
            if len(units) == n:
                ids.extend(token_id[u] for u in units)
                columns.append(vocabulary[gram])
    return _Pool(tokens, ids, columns, starts, min_n, max_n)


def _settings(params: dict[str, Any], tokens: tuple[str, ...], n_features: int) -> dict[str, Any]:
    return {
        "analyzer": params["analyzer"],
        "ngram_range": list(params["ngram_range"]),
        "lowercase": bool(params["lowercase"]),
        "strip_accents": params["strip_accents"],
        "token_pattern": DEFAULT_TOKEN_PATTERN if params["analyzer"] == "word" else None,
        "sublinear_tf": bool(params["sublinear_tf"]),
        "norm": params["norm"],
        "smooth_idf": bool(params["smooth_idf"]),
        "n_features": n_features,
        "tokens": list(tokens),
    }


def _graph(blocks: list[tuple[_Pool, np.ndarray, dict[str, Any]]]) -> Any:
    """Per block: ids (N, L) int64 → n-gram counts (N, V), dense as the op defines them → the
    nonzero (row, column, count) → sublinear tf → times idf → over the row norm; then the
    blocks' entries one after the other, columns shifted into scikit-learn's hstack order.

    Weighting only the nonzero counts, and returning them sparse, keeps the graph as fast as
    scikit-learn's transform: the dense version spent 3x longer in Log/Where over all V columns.
    """
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    init = [
        numpy_helper.from_array(np.array(0, np.int64), "first"),
        numpy_helper.from_array(np.array(1, np.int64), "second"),
        numpy_helper.from_array(np.ones(1, np.float32), "one"),
    ]
    inputs: list[Any] = []
    parts: dict[str, list[str]] = {name: [] for name in OUTPUTS}

    def node(op: str, args: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, args, [out], name=out, **attrs))
        return out

    offset = 0
    for i, (pool, idf, params) in enumerate(blocks):
        inputs.append(helper.make_tensor_value_info(f"ids_{i}", TensorProto.INT64, ["n", f"l{i}"]))
        counts = node(
            "TfIdfVectorizer",
            [f"ids_{i}"],
            f"counts_{i}",
            mode="TF",
            min_gram_length=pool.min_n,
            max_gram_length=pool.max_n,
            max_skip_count=0,
            ngram_counts=pool.starts,
            ngram_indexes=pool.columns,
            pool_int64s=pool.ids,
        )
        hits = node("Transpose", [node("NonZero", [counts], f"nonzero_{i}")], f"hits_{i}")
        rows = node("Gather", [hits, "first"], f"rows_{i}", axis=1)
        columns = node("Gather", [hits, "second"], f"local_columns_{i}", axis=1)
        x = node("GatherND", [counts, hits], f"tf_{i}")
        if params["sublinear_tf"]:  # every count here is ≥ 1
            x = node("Add", [node("Log", [x], f"log_tf_{i}"), "one"], f"sublinear_tf_{i}")
        init.append(numpy_helper.from_array(idf, f"idf_{i}"))
        x = node("Mul", [x, node("Gather", [f"idf_{i}", columns], f"idf_of_{i}")], f"tfidf_{i}")
        if params["norm"] is not None:  # rows without n-grams have no entries: nothing to guard
            x = _divide_by_row_norm(node, x, rows, counts, params["norm"], i)
        init.append(numpy_helper.from_array(np.array([offset], np.int64), f"offset_{i}"))
        parts["columns"].append(node("Add", [columns, f"offset_{i}"], f"columns_{i}"))
        parts["rows"].append(rows)
        parts["values"].append(x)
        offset += len(pool.columns)
    for name, pieces in parts.items():
        nodes.append(helper.make_node("Concat", pieces, [name], name=name, axis=0))
    types = {"rows": TensorProto.INT64, "columns": TensorProto.INT64, "values": TensorProto.FLOAT}
    results = [helper.make_tensor_value_info(n, types[n], ["nnz"]) for n in OUTPUTS]
    graph = helper.make_graph(nodes, "ngrams", inputs, results, init)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    model.producer_name = "frugalml"
    return model


def _divide_by_row_norm(
    node: Callable[..., str], x: str, rows: str, counts: str, norm: str, i: int
) -> str:
    """Sum each row's squares (l2) or absolute values (l1) by scattering into zeros(N)."""
    from onnx import TensorProto, helper

    zeros = node(
        "ConstantOfShape",
        [node("Shape", [counts], f"n_rows_{i}", start=0, end=1)],
        f"row_zeros_{i}",
        value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
    )
    size = node("Mul", [x, x], f"squares_{i}") if norm == "l2" else node("Abs", [x], f"abs_{i}")
    total = node("ScatterElements", [zeros, rows, size], f"row_sums_{i}", axis=0, reduction="add")
    if norm == "l2":
        total = node("Sqrt", [total], f"row_norms_{i}")
    return node("Div", [x, node("Gather", [total, rows], f"norm_of_{i}")], f"normalized_{i}")


# ---------------------------------------------------------------- loading someone's settings


def read_settings(folder: Path) -> dict[str, Any]:
    """`ngrams.json`, checked field by field: a bundle from someone else may be malformed."""
    path = folder / SETTINGS_FILE
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{path} is missing or damaged ({err})") from None
    if not isinstance(settings, dict) or settings.get("version") != FORMAT_VERSION:
        raise BundleError(
            f'{path} must be a JSON object with "version": {FORMAT_VERSION}; the bundle is '
            "damaged or from a newer frugalml"
        )
    vectorizers = settings.get("vectorizers")
    if not isinstance(vectorizers, list) or not vectorizers:
        raise BundleError(f"{path}: 'vectorizers' must be a non-empty list")
    problems = [p for i, v in enumerate(vectorizers) for p in _bad_settings(i, v)]
    if problems:
        raise BundleError(f"{path} is damaged, {len(problems)} problem(s):", problems)
    return settings


def _bad_settings(i: int, v: Any) -> list[str]:
    where = f"vectorizers[{i}]"
    if not isinstance(v, dict):
        return [f"{where} must be an object; got {type(v).__name__}"]
    problems = []
    analyzer = v.get("analyzer")
    checks: dict[str, tuple[bool, str]] = {
        "analyzer": (analyzer in ANALYZERS, f"one of {', '.join(ANALYZERS)}"),
        "lowercase": (isinstance(v.get("lowercase"), bool), "true or false"),
        "sublinear_tf": (isinstance(v.get("sublinear_tf"), bool), "true or false"),
        "smooth_idf": (isinstance(v.get("smooth_idf"), bool), "true or false"),
        "strip_accents": (v.get("strip_accents") in ACCENTS, "'ascii', 'unicode' or null"),
        "norm": (v.get("norm") in NORMS, "'l2', 'l1' or null"),
        "n_features": (_is_int(v.get("n_features"), 1), "an integer ≥ 1"),
        "ngram_range": (_is_range(v.get("ngram_range"), analyzer), _RANGE_RULE),
        "token_pattern": (
            v.get("token_pattern") == (DEFAULT_TOKEN_PATTERN if analyzer == "word" else None),
            f"{DEFAULT_TOKEN_PATTERN!r} for words, null for characters",
        ),
        "tokens": (_are_tokens(v.get("tokens"), analyzer), _TOKENS_RULE),
    }
    for key, (ok, allowed) in checks.items():
        if not ok:
            problems.append(f"{where}.{key} must be {allowed}; got {_short(v.get(key))}")
    return problems


_RANGE_RULE = "[min_n, max_n] with 1 ≤ min_n ≤ max_n ≤ 32 (min_n ≤ 3 for char_wb)"
_TOKENS_RULE = "a list of distinct strings (single characters for char analyzers)"


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_range(value: Any, analyzer: Any) -> bool:
    if not (isinstance(value, list) and len(value) == 2 and all(_is_int(n, 1) for n in value)):
        return False
    min_n, max_n = value
    return bool(min_n <= max_n <= 32 and (analyzer != "char_wb" or min_n <= 3))


def _are_tokens(value: Any, analyzer: Any) -> bool:
    if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
        return False
    one_char = analyzer != "word"
    return len(set(value)) == len(value) and (not one_char or all(len(t) == 1 for t in value))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _analyzer(v: dict[str, Any]) -> Analyzer:
    return Analyzer(v["analyzer"], v["lowercase"], v["strip_accents"], tuple(v["tokens"]))
