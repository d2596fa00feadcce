"""The desk on Banking77: out-of-scope detection, the knowledge index, and risk-coverage.

1. Out of scope (per seed): a seeded 25% of the 77 intents is held out as unseen. Their
   train.csv questions are the desk's out-of-scope examples (half train the `oos_class`
   detector, half choose thresholds on validation, with 15% of the in-scope train questions);
   their test.csv questions are the out-of-scope test set, beside the in-scope test questions.
   The intent model is what the `frozen_probe` rung fits (packaged MiniLM, frozen; a
   logistic-regression head with C chosen on validation; temperature-scaled), so every detector
   reads the same model and the baseline, frozen probe + maximum softmax probability, is the
   `max_prob` detector measured in the same run. Per detector: test AUROC, FPR@95TPR, and OOS
   recall and in-scope accuracy lost at two thresholds picked on validation: the desk's (OOS
   recall goal 0.90) and a 3-point in-scope loss budget. The desk's choice is made on
   validation as `desk build` makes it, with and without out-of-scope examples (`oos_class`,
   `oos_intent`). A diagnostic beside it (`oos_novel`): examples from half the held-out
   intents, test out-of-scope questions from the other half (detectors that learn from
   examples are then judged on kinds of question they never saw).
2. Knowledge index: base = 90% of train.csv (each question with its intent as the answer),
   dense weight chosen on the other 10%, queries = test.csv; hit = an entry of the right intent.
   Recall@1/5 and MRR for BM25 alone, dense alone, equal-weight RRF and the chosen weight.
3. Risk-coverage (all 77 intents in scope): the confidence threshold picked on validation with
   --max-handoff 0.15 --min-auto-accuracy 0.97; test hand-off and accuracy of what is answered.
   For two intent models: the `frozen_probe` head above, and the `hybrid` rung's head (TF-IDF
   n-grams beside the same frozen vectors, C chosen on validation, temperature-scaled), which
   is what the ladder (so `desk build --target accuracy=0.915`) chooses on Banking77
   (results/ladder_vs_peers.json). `--only-risk-coverage` reruns this part alone.

The MiniLM sentence vectors of all 13,083 texts are computed once and cached (--cache).

    nice -n 10 python benchmarks/desk_oos.py                 # 3 seeds; results/desk_oos.json
    python benchmarks/desk_oos.py --seeds 0 --quick          # a 2,000-question sample

Each part is written to the JSON as soon as it is measured (knowledge, then per seed: OOS,
risk-coverage).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent))

from benchmarks.common import RESULTS, banking77, write_result

from frugalml.apps.desk import evaluate as ev
from frugalml.apps.desk import knowledge as kn
from frugalml.apps.desk.desk import signals_from
from frugalml.apps.desk.inputs import Entry
from frugalml.apps.desk.oos import (
    Signals,
    auroc,
    choose,
    fit_detectors,
    fpr_at_tpr,
    held_out_group_candidates,
    label,
    threshold_for_recall,
)
from frugalml.ladder.calibration import fit_temperature
from frugalml.models.heads import LinearHead

CS = (0.1, 1.0, 10.0, 100.0)  # the frozen_probe rung's default grid
HELD_OUT = 0.25
RECALL_GOAL = 0.90
LOSS_BUDGET = 0.03


def embeddings(cache: Path, texts: list[str]) -> np.ndarray:
    """MiniLM vectors of `texts` (train then test), computed once."""
    from safetensors.numpy import load_file

    if cache.exists():
        stored = load_file(str(cache))
        vectors = np.vstack([stored["train"], stored["test"]])
        if len(vectors) == len(texts):
            return vectors
    from frugalml.models.backbones import resolve_backbone
    from frugalml.models.encoder import Encoder

    encoder = Encoder(resolve_backbone("minilm"), normalize=True, device="cpu")
    start = time.perf_counter()
    vectors = encoder.encode(texts)
    print(f"embedded {len(texts)} texts in {time.perf_counter() - start:.0f} s", flush=True)
    return vectors


def probe(
    x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, k: int
) -> tuple[LinearHead, float]:
    """The frozen_probe rung's head: C chosen on validation, then temperature scaling."""
    head = LinearHead.fit_select(x, y, xv, yv, k, Cs=CS)
    return head, fit_temperature(head.logits(xv), yv)


def signals(head: LinearHead, temperature: float, x: np.ndarray) -> Signals:
    return signals_from(head.logits(x), x, temperature)


def split_val(
    n: int, rng: np.random.Generator, frac: float = 0.15
) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    cut = int(frac * n)
    return np.sort(order[cut:]), np.sort(order[:cut])


def oos_seed(
    seed: int,
    vec_tr: np.ndarray,
    y_tr: np.ndarray,
    vec_te: np.ndarray,
    y_te: np.ndarray,
    n_classes: int,
    *,
    novel: bool = False,
) -> dict[str, Any]:
    """One seed's detectors. `novel` (a diagnostic beside the protocol): the out-of-scope
    examples come from one half of the held-out intents and the test's out-of-scope questions
    from the other half, unlike any example the detectors or the threshold saw."""
    rng = np.random.default_rng(seed)
    unseen = np.sort(rng.choice(n_classes, size=round(HELD_OUT * n_classes), replace=False))
    seen = np.setdiff1d(np.arange(n_classes), unseen)
    remap = -np.ones(n_classes, int)
    remap[seen] = np.arange(len(seen))
    ins = np.nonzero(np.isin(y_tr, seen))[0]
    out = np.nonzero(np.isin(y_tr, unseen))[0]
    tr_i, va_i = split_val(len(ins), rng)
    tr, va = ins[tr_i], ins[va_i]
    out = rng.permutation(out)
    oos_train, oos_val = out[: len(out) // 2], out[len(out) // 2 :]
    te_out = np.nonzero(np.isin(y_te, unseen))[0]
    if novel:
        shown, novel_intents = unseen[: len(unseen) // 2], unseen[len(unseen) // 2 :]
        oos_train = oos_train[np.isin(y_tr[oos_train], shown)]
        oos_val = oos_val[np.isin(y_tr[oos_val], shown)]
        te_out = te_out[np.isin(y_te[te_out], novel_intents)]
    head, temperature = probe(vec_tr[tr], remap[y_tr[tr]], vec_tr[va], remap[y_tr[va]], len(seen))
    s_tr, s_va = signals(head, temperature, vec_tr[tr]), signals(head, temperature, vec_tr[va])
    s_oos_va = signals(head, temperature, vec_tr[oos_val])
    te_in = np.nonzero(np.isin(y_te, seen))[0]
    s_te, s_te_oos = (
        signals(head, temperature, vec_te[te_in]),
        signals(head, temperature, vec_te[te_out]),
    )
    correct_va = s_va.proba.argmax(1) == remap[y_tr[va]]
    correct_te = s_te.proba.argmax(1) == remap[y_te[te_in]]
    detectors = fit_detectors(s_tr, remap[y_tr[tr]], len(seen), oos_train=vec_tr[oos_train])
    rows = {}
    for d in detectors:
        rows[label(d)] = measure(d, s_va, s_oos_va, correct_va, s_te, s_te_oos, correct_te)
    chosen, _, _ = choose(detectors, s_va, s_oos_va, correct_va, RECALL_GOAL)
    without = [d for d in detectors if d.name not in {"oos_class", "oos_intent"}]
    chosen_no_examples, _, _ = choose(without, s_va, s_oos_va, correct_va, RECALL_GOAL)
    examples = np.r_[oos_train, oos_val]
    by_group = held_out_groups(
        seed,
        (s_tr, remap[y_tr[tr]], len(seen)),
        (s_va, correct_va),
        signals(head, temperature, vec_tr[examples]),
        (s_te, s_te_oos, correct_te),
    )
    return {
        "seed": seed,
        "unseen_intents": len(unseen),
        "n": {
            "train": len(tr),
            "val": len(va),
            "oos_train": len(oos_train),
            "oos_val": len(oos_val),
            "test_in": len(te_in),
            "test_oos": len(te_out),
        },
        "inscope_test_accuracy": float(correct_te.mean()),
        "detectors": rows,
        "chosen": label(chosen),
        "chosen_without_oos_class": label(chosen_no_examples),
        "held_out_groups": by_group,
        "tradeoff": {
            name: tradeoff(d, s_te, s_te_oos, correct_te)
            for d in detectors
            if (name := label(d)) in {"max_prob", label(chosen), label(chosen_no_examples)}
        },
    }


def held_out_groups(
    seed: int,
    fit_on: tuple[Signals, np.ndarray, int],
    val: tuple[Signals, np.ndarray],
    s_examples: Signals,
    test: tuple[Signals, Signals, np.ndarray],
) -> dict[str, Any]:
    """The desk's new choice: detectors fitted on all the out-of-scope examples (the old
    choice's oos_train and oos_val together), judged on k-means groups of them held out from
    the fitting (`oos.held_out_group_candidates`); each measured on the same test set."""
    s_va, correct_va = val
    s_te, s_te_oos, correct_te = test
    start = time.perf_counter()
    detectors, choices = held_out_group_candidates(
        *fit_on, s_va, correct_va, s_examples, RECALL_GOAL, seed=seed
    )
    best = min(range(len(choices)), key=lambda i: (choices[i].inscope_loss, -choices[i].auroc))
    rows = {}
    for d, c in zip(detectors, choices, strict=True):
        te_in, te_out = d.score(s_te), d.score(s_te_oos)
        budget = budget_threshold(d.score(s_va), correct_va, LOSS_BUDGET)
        rows[c.detector] = {
            "validation": c.to_dict(),
            "auroc": auroc(te_in, te_out),
            "fpr@95tpr": fpr_at_tpr(te_in, te_out),
            "at_recall_goal": at(c.threshold, te_in, te_out, correct_te),
            "at_loss_budget": at(budget, te_in, te_out, correct_te),
        }
    return {
        "chosen": choices[best].detector,
        "n_examples": len(s_examples.vectors),
        "seconds": time.perf_counter() - start,
        "detectors": rows,
    }


def measure(
    d: Any,
    s_va: Signals,
    s_oos_va: Signals,
    correct_va: np.ndarray,
    s_te: Signals,
    s_te_oos: Signals,
    correct_te: np.ndarray,
) -> dict[str, Any]:
    va_in, va_out = d.score(s_va), d.score(s_oos_va)
    te_in, te_out = d.score(s_te), d.score(s_te_oos)
    at_goal = threshold_for_recall(va_out, RECALL_GOAL)
    at_budget = budget_threshold(va_in, correct_va, LOSS_BUDGET)
    return {
        "val_auroc": auroc(va_in, va_out),
        "auroc": auroc(te_in, te_out),
        "fpr@95tpr": fpr_at_tpr(te_in, te_out),
        "at_recall_goal": at(at_goal, te_in, te_out, correct_te),
        "at_loss_budget": at(at_budget, te_in, te_out, correct_te),
    }


def budget_threshold(inscope: np.ndarray, correct: np.ndarray, budget: float) -> float:
    """The lowest threshold whose validation in-scope accuracy loss stays within `budget`."""
    order = np.sort(inscope[correct])[::-1]
    allowed = int(np.floor(budget * len(inscope)))
    return float(order[allowed]) + 1e-12 if allowed < len(order) else float(order[-1])


def at(t: float, te_in: np.ndarray, te_out: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    flagged = te_in >= t
    return {
        "threshold": t,
        "oos_recall": float(np.mean(te_out >= t)),
        "inscope_accuracy": float(np.mean(correct & ~flagged)),
        "inscope_accuracy_lost": float(np.mean(correct & flagged)),
        "inscope_flagged": float(np.mean(flagged)),
    }


def tradeoff(
    d: Any, s_te: Signals, s_te_oos: Signals, correct: np.ndarray
) -> list[dict[str, float]]:
    te_in, te_out = d.score(s_te), d.score(s_te_oos)
    return [
        {"oos_recall_goal": r, **at(threshold_for_recall(te_out, r), te_in, te_out, correct)}
        for r in np.round(np.arange(0.3, 1.0001, 0.05), 2).tolist()
    ]


def knowledge(
    vec_tr: np.ndarray,
    y_tr: np.ndarray,
    texts_tr: list[str],
    vec_te: np.ndarray,
    y_te: np.ndarray,
    texts_te: list[str],
    labels: tuple[str, ...],
) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    base_i, held_i = split_val(len(texts_tr), rng, frac=0.10)
    entries = [Entry(texts_tr[i], labels[y_tr[i]], intent=labels[y_tr[i]]) for i in base_i]
    start = time.perf_counter()
    index = kn.KnowledgeIndex(entries, vec_tr[base_i])
    built = time.perf_counter() - start
    base_y = y_tr[base_i]
    weight, by_weight = kn.choose_weight(
        index,
        [texts_tr[i] for i in held_i],
        vec_tr[held_i],
        y_tr[held_i][:, None] == base_y[None, :],
    )
    relevant = y_te[:, None] == base_y[None, :]
    sims = index.similarities(vec_te)
    lexical = index.bm25_scores(texts_te)
    rows = {
        name: kn.rank_metrics(kn.fuse(sims, lexical, w), relevant)
        for name, w in (("bm25", 0.0), ("dense", 1.0), ("rrf_equal", 0.5), ("hybrid", weight))
    }
    start = time.perf_counter()
    index.search(texts_te[:200], vec_te[:200], k=5)
    per_query_ms = (time.perf_counter() - start) / 200 * 1000
    return {
        "n_entries": len(entries),
        "n_queries": len(texts_te),
        "dense_weight": weight,
        "validation_by_weight": by_weight,
        "test": rows,
        "index_build_s": built,
        "search_ms_per_query": per_query_ms,
    }


def hybrid_proba(
    texts_tr: list[str],
    vec_tr: np.ndarray,
    y_tr: np.ndarray,
    texts_te: list[str],
    vec_te: np.ndarray,
    n_classes: int,
    tr: np.ndarray,
    va: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Validation and test probabilities of the `hybrid` rung's head (its default settings)
    over the cached vectors: [TF-IDF n-grams | vector] -> logistic regression, temperature-
    scaled."""
    from scipy import sparse

    from frugalml.models.heads import softmax
    from frugalml.strategies.hybrid import HybridConfig
    from frugalml.strategies.tfidf import NgramFeatures

    config = HybridConfig()
    ngrams, x_ngrams = NgramFeatures.fit([texts_tr[i] for i in tr], config.ngrams)

    def features(texts: list[str], vectors: np.ndarray) -> Any:
        dense = sparse.csr_matrix(vectors * config.embedding_weight)
        return sparse.hstack([ngrams.transform(texts), dense], format="csr")

    x = sparse.hstack([x_ngrams, sparse.csr_matrix(vec_tr[tr] * config.embedding_weight)])
    x_va = features([texts_tr[i] for i in va], vec_tr[va])
    head = LinearHead.fit_select(x.tocsr(), y_tr[tr], x_va, y_tr[va], n_classes, Cs=config.Cs)
    temperature = fit_temperature(head.logits(x_va), y_tr[va])
    x_te = features(texts_te, vec_te)
    return softmax(head.logits(x_va) / temperature), softmax(head.logits(x_te) / temperature)


def risk_coverage(
    vec_tr: np.ndarray,
    y_tr: np.ndarray,
    vec_te: np.ndarray,
    y_te: np.ndarray,
    n_classes: int,
    seed: int,
    texts: tuple[list[str], list[str]] | None = None,
) -> dict[str, Any]:
    """The operating point picked on validation and what it gives on test; with `texts`
    (train, test) for the `hybrid` head, else for the `frozen_probe` head."""
    rng = np.random.default_rng(seed)
    tr, va = split_val(len(y_tr), rng)
    if texts is None:
        head, temperature = probe(vec_tr[tr], y_tr[tr], vec_tr[va], y_tr[va], n_classes)
        p_va = signals(head, temperature, vec_tr[va]).proba
        p_te = signals(head, temperature, vec_te).proba
    else:
        p_va, p_te = hybrid_proba(texts[0], vec_tr, y_tr, texts[1], vec_te, n_classes, tr, va)
    curve = ev.risk_coverage(p_va.max(1), p_va.argmax(1) == y_tr[va])
    point = ev.pick_operating_point(curve, max_handoff=0.15, min_auto_accuracy=0.97, n=len(va))
    confidence, correct = p_te.max(1), p_te.argmax(1) == y_te
    answered = confidence >= point.threshold
    test_curve = ev.risk_coverage(confidence, correct)
    at15 = max((p for p in test_curve if p["handoff"] <= 0.15), key=lambda p: p["handoff"])
    return {
        "seed": seed,
        "model": "frozen_probe" if texts is None else "hybrid",
        "answer_everything_accuracy": float(correct.mean()),
        "validation_point": point.to_dict(),
        "test_handoff": float(1 - answered.mean()),
        "test_auto_accuracy": float(correct[answered].mean()),
        "test_best_at_15pct_handoff": at15["auto_accuracy"],
        "test_curve": ev.thin(test_curve, 40),
    }


def summary(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    names = list(seeds[0]["detectors"])

    def mean(f: Any) -> list[float]:
        values = [f(s) for s in seeds]
        return [round(float(np.mean(values)), 4), round(float(np.std(values)), 4)]

    table = {
        name: {
            "auroc": mean(lambda s, n=name: s["detectors"][n]["auroc"]),
            "fpr@95tpr": mean(lambda s, n=name: s["detectors"][n]["fpr@95tpr"]),
            "recall@goal0.90": mean(
                lambda s, n=name: s["detectors"][n]["at_recall_goal"]["oos_recall"]
            ),
            "acc_lost@goal0.90": mean(
                lambda s, n=name: s["detectors"][n]["at_recall_goal"]["inscope_accuracy_lost"]
            ),
            "recall@3pt_budget": mean(
                lambda s, n=name: s["detectors"][n]["at_loss_budget"]["oos_recall"]
            ),
            "acc_lost@3pt_budget": mean(
                lambda s, n=name: s["detectors"][n]["at_loss_budget"]["inscope_accuracy_lost"]
            ),
        }
        for name in names
    }
    return {
        "mean_std_over_seeds": table,
        "choice_old_vs_new": choice_table(seeds, mean),
        "chosen_by_held_out_groups": [s["held_out_groups"]["chosen"] for s in seeds],
        "chosen": [s["chosen"] for s in seeds],
        "chosen_without_oos_class": [s["chosen_without_oos_class"] for s in seeds],
    }


def choice_table(seeds: list[dict[str, Any]], mean: Any) -> dict[str, Any]:
    """Test figures of the detector each validation picked: the old choice (examples' kinds
    seen in validation) and the new (held-out groups), at the recall goal and 3-point budget."""

    def old(s: dict[str, Any]) -> dict[str, Any]:
        return dict(s["detectors"][s["chosen"]])

    def new(s: dict[str, Any]) -> dict[str, Any]:
        return dict(s["held_out_groups"]["detectors"][s["held_out_groups"]["chosen"]])

    table = {}
    for name, row in (("old", old), ("new", new)):
        table[name] = {
            "auroc": mean(lambda s, r=row: r(s)["auroc"]),
            "fpr@95tpr": mean(lambda s, r=row: r(s)["fpr@95tpr"]),
            "recall@goal0.90": mean(lambda s, r=row: r(s)["at_recall_goal"]["oos_recall"]),
            "acc_lost@goal0.90": mean(
                lambda s, r=row: r(s)["at_recall_goal"]["inscope_accuracy_lost"]
            ),
            "recall@3pt_budget": mean(lambda s, r=row: r(s)["at_loss_budget"]["oos_recall"]),
            "acc_lost@3pt_budget": mean(
                lambda s, r=row: r(s)["at_loss_budget"]["inscope_accuracy_lost"]
            ),
        }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--only-knowledge",
        action="store_true",
        help="measure the knowledge index alone and update that part of the JSON",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(__file__).parent / ".cache" / "banking77_minilm.safetensors",
    )
    parser.add_argument(
        "--only-risk-coverage",
        action="store_true",
        help="measure risk-coverage alone (both intent models) and update that part of the JSON",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a 2,000-question sample (results/desk_oos_quick)"
    )
    args = parser.parse_args()
    if args.only_risk_coverage:
        only_risk_coverage(args, [int(s) for s in args.seeds.split(",")])
        return
    splits = banking77()
    texts_tr, texts_te = list(splits.train.texts), list(splits.test.texts)
    vectors = embeddings(args.cache, texts_tr + texts_te)
    vec_tr, vec_te = vectors[: len(texts_tr)], vectors[len(texts_tr) :]
    y_tr, y_te = splits.train.y, splits.test.y
    if args.quick:
        keep = np.random.default_rng(0).permutation(len(y_tr))[:2000]
        vec_tr, y_tr, texts_tr = vec_tr[keep], y_tr[keep], [texts_tr[i] for i in keep]
    k = len(splits.train.labels)
    seeds = [int(s) for s in args.seeds.split(",")]
    result: dict[str, Any] = {"data": "banking77", "encoder": "packaged all-MiniLM-L6-v2 (frozen)"}
    name = "desk_oos_quick" if args.quick else "desk_oos"
    start = time.perf_counter()
    # cheapest first, written after each part: a slow machine still leaves the parts it did
    result["knowledge"] = knowledge(
        vec_tr, y_tr, texts_tr, vec_te, y_te, texts_te, splits.train.labels
    )
    print({k: v for k, v in result["knowledge"].items() if k != "validation_by_weight"}, flush=True)
    if args.only_knowledge:
        stored = json.loads((RESULTS / f"{name}.json").read_text())
        print(write_result(name, {**stored, "knowledge": result["knowledge"]}))
        return
    write_result(name, result)
    result["oos"], result["risk_coverage"] = [], []
    for seed in seeds:
        result["oos"].append(oos_seed(seed, vec_tr, y_tr, vec_te, y_te, k))
        result["oos_summary"] = summary(result["oos"])
        print(json_table(result["oos_summary"]), flush=True)
        write_result(name, result)
        result.setdefault("oos_novel", []).append(
            oos_seed(seed, vec_tr, y_tr, vec_te, y_te, k, novel=True)
        )
        result["oos_novel_summary"] = summary(result["oos_novel"])
        print("novel out-of-scope intents:\n" + json_table(result["oos_novel_summary"]), flush=True)
        write_result(name, result)
        for texts in (None, (texts_tr, texts_te)):
            rc = risk_coverage(vec_tr, y_tr, vec_te, y_te, k, seed, texts)
            result["risk_coverage"].append(rc)
            print({k: v for k, v in rc.items() if k != "test_curve"}, flush=True)
        result["wall_s"] = time.perf_counter() - start
        print(write_result(name, result), flush=True)


def only_risk_coverage(args: argparse.Namespace, seeds: list[int]) -> None:
    """Rerun part 3 alone (both intent models) and replace it in the stored JSON."""
    splits = banking77()
    texts_tr, texts_te = list(splits.train.texts), list(splits.test.texts)
    vectors = embeddings(args.cache, texts_tr + texts_te)
    vec_tr, vec_te = vectors[: len(texts_tr)], vectors[len(texts_tr) :]
    k = len(splits.train.labels)
    rows = []
    for seed in seeds:
        for texts in (None, (texts_tr, texts_te)):
            rc = risk_coverage(vec_tr, splits.train.y, vec_te, splits.test.y, k, seed, texts)
            rows.append(rc)
            print({k: v for k, v in rc.items() if k != "test_curve"}, flush=True)
    stored = json.loads((RESULTS / "desk_oos.json").read_text())
    print(write_result("desk_oos", {**stored, "risk_coverage": rows}))


def json_table(summary: dict[str, Any]) -> str:
    heads = ("AUROC", "FPR95", "rec@0.90", "lost@0.90", "rec@3pt", "lost@3pt")
    lines = [f"{'detector':16s} " + " ".join(h.rjust(14) for h in heads)]
    for name, row in summary["mean_std_over_seeds"].items():
        lines.append(
            f"{name:16s} " + " ".join(f"{m:.3f}±{s:.3f}".rjust(14) for m, s in row.values())
        )
    lines.append(
        f"chosen: {summary['chosen']}; without oos examples: {summary['chosen_without_oos_class']}"
    )
    lines.append(f"chosen on held-out groups: {summary['chosen_by_held_out_groups']}")
    for name, row in summary["choice_old_vs_new"].items():
        lines.append(
            f"{name + ' choice':16s} "
            + " ".join(f"{m:.3f}±{s:.3f}".rjust(14) for m, s in row.values())
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
