"""The monitor's detectors on Financial PhraseBank texts replayed as a stream.

Texts are the held-out 20% of PhraseBank 50%-agreement (the split of monitor_model.py), scored
once by the int8 sentiment bundle. A trial draws a topic's stream from them: each text is truly
negative with probability p (base 0.20, then a step to 0.35, 2x and 3x), and what the detectors
see is the model's prediction, errors included. 200 trials per setting:

- in control (p = 0.20 throughout): false alarms per 10,000 texts;
- after a step: the delay, in texts after the step, to the first alarm (detectors carry their
  state from a 1,000-text in-control prefix; an alarm in the prefix counts as a false alarm).

Detectors: the monitor's `TopicDetectors` (Bernoulli CUSUM and EWMA, thresholds from the target
rate; base rate known, or estimated from the first 200 texts and re-estimated as a topic's
texts grow, the default, or kept from the warm-up, "plug-in"), a
naive "negative share of the last hour above a fixed threshold" rule (threshold: the lowest
that keeps the target rate in control, at `--per-hour` texts an hour), and river's ADWIN with its
defaults as the peer. Also the bound: the CUSUM tuned to exactly the step has the least
worst-case mean delay of all detectors with its in-control run length (Moustakides 1986); its
delay from s = 0 is computed exactly on the lattice, for the model's observed shares and for
a perfect classifier, with the information per text (KL divergence of the predicted-negative
rates), Lorden's asymptotic bound and Siegmund's approximation. And the thresholds that the
warm-up's parametric bootstrap (Gandy & Kvaløy 2013) would need, against the plug-in ones.

    nice -n 10 python benchmarks/monitor_detect.py [--model RUN_OR_BUNDLE] [--trials 200]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from common import SHARED_DATA, write_result
from frugalml.apps.monitor.detect import DetectorSettings

BASE = 0.20
STEPS = {"0.35": 0.35, "2x": 0.40, "3x": 0.60}
PREFIX = 1000
CAP = 10_000  # texts after the step before a trial counts as undetected

Detector = Callable[[int], list[str]]  # the names of the detectors that signalled


def predictions(model: Path, cache: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(truly negative, predicted negative) for each held-out text, scored once and cached."""
    import frugalml
    from frugalml.apps.monitor.config import resolve_bundle
    from frugalml.apps.monitor.scoring import negative_index
    from frugalml.data import stratified_split

    bundle_dir = resolve_bundle(model)
    digest = json.loads((bundle_dir / "manifest.json").read_text()).get("digest")
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved["bundle"] == str(bundle_dir) and saved["model"].get("digest") == digest:
            return np.array(saved["truth"]), np.array(saved["predicted"]), saved["model"]
    path = SHARED_DATA / "financial_phrasebank" / "Sentences_50Agree.txt"
    data = frugalml.load_dataset(path, drop_invalid=True)
    held_out = stratified_split(data, val_frac=0.2, test_frac=0.0, seed=0).val
    bundle = frugalml.load(bundle_dir)
    neg = negative_index(bundle.labels)
    started = time.perf_counter()
    proba = np.asarray(bundle.predict_proba(list(held_out.texts)))
    seconds = time.perf_counter() - started
    truth = np.array([held_out.labels[i] for i in held_out.y]) == bundle.labels[neg]
    predicted = proba.argmax(1) == neg
    info = {
        "bundle": str(bundle_dir),
        "digest": digest,
        "strategy": bundle.manifest.strategy,
        "precision": bundle.manifest.predictor.get("precision"),
        "held_out_texts": len(truth),
        "accuracy": float(np.mean(proba.argmax(1) == np.asarray(held_out.y))),
        "scoring_s": seconds,
    }
    cache.write_text(
        json.dumps(
            {
                "bundle": str(bundle_dir),
                "truth": truth.tolist(),
                "predicted": predicted.tolist(),
                "model": info,
            }
        )
    )
    return truth, predicted, info


class Texts:
    """Draws predicted-negative flags of texts whose true negative share is p."""

    def __init__(self, truth: np.ndarray, predicted: np.ndarray) -> None:
        self.neg, self.other = predicted[truth].astype(int), predicted[~truth].astype(int)
        self.tpr, self.fpr = float(self.neg.mean()), float(self.other.mean())

    def stream(self, rng: np.random.Generator, p: float, n: int) -> np.ndarray:
        negative = rng.random(n) < p
        picks_neg = self.neg[rng.integers(0, len(self.neg), n)]
        picks_other = self.other[rng.integers(0, len(self.other), n)]
        return np.where(negative, picks_neg, picks_other)

    def observed(self, p: float) -> float:
        """The predicted-negative share when the true share is p."""
        return p * self.tpr + (1 - p) * self.fpr


# --- the detectors -------------------------------------------------------------------------


def monitor_detectors(settings: DetectorSettings) -> Detector:
    """The monitor's CUSUM and EWMA, through `TopicDetectors` as the pipeline runs them."""
    from frugalml.apps.monitor.detect import TopicDetectors

    detectors = TopicDetectors(settings)
    return lambda x: detectors.update(bool(x))


class Naive:
    """Alarm when the last `window` texts hold at least `k` negatives; then start afresh."""

    def __init__(self, window: int, k: int) -> None:
        self.window, self.k = window, k
        self.buffer = np.zeros(window, dtype=int)
        self.i = self.total = 0

    def __call__(self, x: int) -> list[str]:
        slot = self.i % self.window
        self.total += x - self.buffer[slot]
        self.buffer[slot] = x
        self.i += 1
        if self.i >= self.window and self.total >= self.k:
            self.buffer[:] = 0
            self.i = self.total = 0
            return ["naive"]
        return []


def naive_alarms(x: np.ndarray, window: int, k: int) -> int:
    """What `Naive(window, k)` signals on `x`, vectorised (for choosing k)."""
    c = np.concatenate(([0], np.cumsum(x)))
    sums = c[window:] - c[:-window]  # sums[j]: texts j .. j+window-1
    alarms, free = 0, 0  # `free`: the first window start allowed after the last alarm
    for j in np.flatnonzero(sums >= k):
        if j >= free:
            alarms, free = alarms + 1, j + window
    return alarms


def naive_threshold(texts: Texts, window: int, rate: float, rng: np.random.Generator) -> int:
    """The lowest count threshold whose in-control rate (2M texts) is at most `rate`."""
    x = texts.stream(rng, BASE, 2_000_000)
    for k in range(1, window + 1):
        if naive_alarms(x, window, k) / len(x) * 10_000 <= rate:
            return k
    return window


class Adwin:
    def __init__(self) -> None:
        from river.drift import ADWIN

        self.adwin = ADWIN()

    def __call__(self, x: int) -> list[str]:
        self.adwin.update(x)
        return ["adwin"] if self.adwin.drift_detected else []


# --- the same detectors over all trials at once ----------------------------------------------
# The monitor's detectors are per text in Python (~10 us a text); 200 trials of 20,000 texts
# run them as numpy over the trials instead, with the parameters of the real tuned objects and
# the same arithmetic, and `check` asserts that both give the same alarms on a few trials.

Alarms = dict[str, np.ndarray]  # detector name -> (trials, texts) bool: signalled at that text


def loop_alarms(
    make: Callable[[], Detector], names: list[str], X: np.ndarray, stop: int | None = None
) -> Alarms:
    """The real detector objects, text by text, trial by trial (a trial ends at its first
    alarm from text `stop` on, when given: all a delay needs)."""
    out = {name: np.zeros(X.shape, dtype=bool) for name in names}
    for trial, row in enumerate(X):
        detect = make()
        for t, x in enumerate(row.tolist()):
            fired = [name for name in detect(x) if name in out]
            for name in fired:
                out[name][trial, t] = True
            if fired and stop is not None and t >= stop:
                break
    return out


def monitor_alarms(settings: DetectorSettings, X: np.ndarray) -> Alarms:
    """`TopicDetectors`' CUSUM and EWMA, vectorised over trials: a warm-up per trial when the
    base rate is not given (detection starts after text `warmup`), and the re-estimates as
    the texts seen grow with `estimation="updating"`, as in `TopicDetectors`."""
    from frugalml.apps.monitor.detect import armed, reestimate_due, screened

    known = settings.base_rate is not None
    skip = 0 if known else settings.warmup
    counts = np.cumsum(X, 1)
    trials = range(len(X))
    estimates = [[int(counts[i, skip - 1]), skip] if skip else [0, 0] for i in trials]
    marks = [list(e) for e in estimates]

    def arm(seen: int, before: list[Any] | None) -> list[Any]:
        if before is not None:  # a re-estimate, screened as `TopicDetectors` does
            for i in trials:
                k = int(counts[i, seen - 1])
                estimates[i] = screened(estimates[i], marks[i], k, seen)
                marks[i] = [k, seen]
        return [
            armed(settings, e[0], e[1], before[i] if before else None)
            for i, e in enumerate(estimates)
        ]

    charts = arm(skip, None)
    n = np.zeros(len(X), dtype=np.int64)
    z = np.array([e.z for _, e in charts])
    out = {"cusum": np.zeros(X.shape, dtype=bool), "ewma": np.zeros(X.shape, dtype=bool)}
    for t in range(skip, X.shape[1]):
        if t == skip or reestimate_due(settings, t + 1):
            if t > skip:  # carry the statistics over, as `armed(..., before)` does
                for i, (c, e) in enumerate(charts):
                    c.s, e.z = float(n[i]) * c._unit, float(z[i])
                charts = arm(t + 1, charts)
            up, down, h = (np.array([getattr(c, a) for c, _ in charts]) for a in _LATTICE)
            n = np.array([round(c.s / c._unit) for c, _ in charts], dtype=np.int64)
            z0, limit = np.array([e.p0 for _, e in charts]), np.array([e.limit for _, e in charts])
            z, lam = np.array([e.z for _, e in charts]), settings.lam
        x = X[:, t]
        n = np.maximum(0, n + np.where(x == 1, up, down))
        z = np.maximum(z0, (1 - lam) * z + lam * x)
        out["cusum"][:, t], out["ewma"][:, t] = n >= h, z >= limit
        n[n >= h] = 0
        z = np.where(z >= limit, z0, z)
    return out


_LATTICE = ("_up", "_down", "_h")


def naive_matrix(window: int, k: int, X: np.ndarray) -> Alarms:
    out = np.zeros(X.shape, dtype=bool)
    for trial, x in enumerate(X):
        c = np.concatenate(([0], np.cumsum(x)))
        sums = c[window:] - c[:-window]
        free = 0
        for j in np.flatnonzero(sums >= k):
            if j >= free:
                out[trial, j + window - 1], free = True, j + window
    return {"naive": out}


def check(fast: Alarms, make: Callable[[], Detector], X: np.ndarray) -> None:
    slow = loop_alarms(make, list(fast), X)
    for name, alarms in fast.items():
        same = np.array_equal(alarms[: X.shape[0], : X.shape[1]], slow[name])  # causal: a prefix
        assert same, f"{name}: vectorised != real"


# --- trials --------------------------------------------------------------------------------


def false_alarms(alarms: Alarms, texts: int) -> dict[str, float]:
    return {name: a.sum() / texts * 10_000 for name, a in alarms.items()}


def delays(alarms: Alarms) -> dict[str, dict[str, Any]]:
    """Texts after the step (at PREFIX) to each detector's first alarm; CAP + 1 if none."""
    out = {}
    for name, a in alarms.items():
        after = a[:, PREFIX:]
        d = np.where(after.any(1), after.argmax(1) + 1, CAP + 1)
        out[name] = {
            "median": float(np.median(d)),
            "mean": float(d.mean()),
            "p90": float(np.percentile(d, 90)),
            "undetected": int((d > CAP).sum()),
            "prefix_false_alarms": int(a[:, :PREFIX].sum()),
        }
    return out


def optimal(q0: float, q1: float, rate: float) -> dict[str, float]:
    """The CUSUM tuned to exactly this step, on the monitor's lattice: its exact in-control
    run length, and its delay distribution from s = 0 (the worst case). Among all detectors
    with that in-control run length, none has a smaller worst-case mean delay (Moustakides
    1986), so `worst_case_mean_delay` bounds what any detector can promise."""
    from scipy.sparse import coo_matrix

    from frugalml.apps.monitor.detect import (
        arl0_for,
        cusum_steps,
        cusum_threshold,
        lattice_run_length,
    )

    q0, q1 = round(q0, 4), round(q1, 4)
    unit, up, down = cusum_steps(q0, q1)
    h = round(cusum_threshold(q0, q1, arl0_for(rate)) / unit)
    states = np.arange(h)
    rows, cols, probs = [], [], []
    for step, prob in ((up, q1), (down, 1 - q1)):
        nxt = np.maximum(0, states + step)
        inside = nxt < h
        rows += [states[inside]]
        cols += [nxt[inside]]
        probs += [np.full(int(inside.sum()), prob)]
    Q = coo_matrix((np.concatenate(probs), (np.concatenate(rows), np.concatenate(cols))), (h, h))
    Q = Q.tocsr()
    alive, t = np.eye(1, h).ravel(), 0  # P(no alarm yet, state) after t texts
    while alive.sum() > 0.5:
        alive, t = Q.T @ alive, t + 1
    return {
        "arl0": lattice_run_length(up, down, h, q0),
        "worst_case_mean_delay": lattice_run_length(up, down, h, q1),
        "worst_case_median_delay": t,
    }


def kl(a: float, b: float) -> float:
    """KL(Bernoulli(a) || Bernoulli(b)), nats per text."""
    return a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))


def information_bound(q0: float, q1: float, rate: float) -> dict[str, float]:
    """What the information per text allows: Lorden's (1971) asymptotic lower bound on the
    worst-case mean delay of any detector with in-control run length g, log(g) / I1, and
    Siegmund's (1985) approximation of the optimal CUSUM (threshold b on its log-likelihood
    ratio, no overshoot correction): ARL0 = (e^b - b - 1) / I0, delay = (e^-b + b - 1) / I1."""
    from scipy.optimize import brentq

    g = 10_000 / rate
    i1, i0 = kl(q1, q0), kl(q0, q1)
    b = brentq(lambda b: (np.exp(b) - b - 1) / i0 - g, 1e-6, 100)
    return {
        "kl_after_nats_per_text": float(i1),
        "kl_before_nats_per_text": float(i0),
        "arl0": g,
        "lorden_mean_delay_lower_bound": float(np.log(g) / i1),
        "siegmund_threshold_nats": float(b),
        "siegmund_mean_delay": float((np.exp(-b) + b - 1) / i1),
    }


def calibration(q0: float, rates: list[float]) -> dict[str, Any]:
    """The CUSUM and EWMA thresholds on a 200-text warm-up whose estimate is the expected one:
    plug-in against the parametric bootstrap (mean false-alarm rate on target, and the rate
    at most the target with probability 0.9, at 1 per 10,000: 0.1 takes minutes)."""
    from frugalml.apps.monitor.detect import (
        BernoulliCusum,
        BernoulliEwma,
        arl0_for,
        cusum_threshold_estimated,
        ewma_limit_estimated,
    )

    k, n, out = round(q0 * 200), 200, {}
    for rate in rates:
        arl0 = arl0_for(rate)
        out[str(rate)] = {
            "negatives": k,
            "warmup": n,
            "cusum_plug_in_nats": BernoulliCusum.tuned(k / n, 1.5, rate).h,
            "cusum_bootstrap_nats": cusum_threshold_estimated(k, n, 1.5, arl0),
            "ewma_plug_in_limit": BernoulliEwma.tuned(k / n, 0.03, rate).limit,
            "ewma_bootstrap_limit": ewma_limit_estimated(k, n, 0.03, arl0),
        }
        if rate >= 1:
            out[str(rate)]["cusum_bootstrap_alpha_0.1_nats"] = cusum_threshold_estimated(
                k, n, 1.5, arl0, 0.1
            )
        print(out[str(rate)], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=Path("/tmp/frugalml-monitor-model"))
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--per-hour", type=int, default=200, help="texts a topic gets an hour")
    parser.add_argument("--rates", default="1,0.1", help="target false alarms per 10,000")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("/tmp/frugalml-monitor-detect-predictions.json"),
        help="the held-out predictions, kept for the same bundle (path and digest)",
    )
    args = parser.parse_args()
    truth, predicted, info = predictions(args.model, args.cache)
    texts = Texts(truth, predicted)
    q0 = texts.observed(BASE)
    print(info, f"tpr {texts.tpr:.3f} fpr {texts.fpr:.3f} q0 {q0:.3f}")
    rates = [float(r) for r in args.rates.split(",")]
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()

    def measure(
        run: Callable[[np.ndarray, int | None], Alarms],
        make: Callable[[], Detector] | None,
        rate: float | None,
        skip: int = 0,
        **extra: Any,
    ) -> None:
        """`skip`: texts of warm-up per trial, not counted as monitored in the false-alarm rate."""
        n = int(min(50_000, max(5_000, 2_000 / (rate or 1.0)))) + skip
        t = time.perf_counter()
        rng = np.random.default_rng(1)
        in_control = texts.stream(rng, BASE, args.trials * n).reshape(args.trials, n)
        alarms = run(in_control, None)
        if make is not None:
            check(alarms, make, in_control[:3, :6000])
        monitored = args.trials * (n - skip)
        rates_found = false_alarms(alarms, monitored)
        delay = {}
        for i, (step, p) in enumerate(STEPS.items()):
            rng = np.random.default_rng(2 + i)
            X = np.hstack(
                [
                    texts.stream(rng, BASE, args.trials * PREFIX).reshape(args.trials, PREFIX),
                    texts.stream(rng, p, args.trials * CAP).reshape(args.trials, CAP),
                ]
            )
            delay[step] = delays(run(X, PREFIX))
        for name in alarms:
            row = {"detector": name, "target_per_10k": rate, **extra}
            row["false_alarms_per_10k"] = rates_found[name]
            row["in_control_texts"] = monitored
            row["delay"] = {step: d[name] for step, d in delay.items()}
            row["seconds_all_detectors"] = time.perf_counter() - t
            rows.append(row)
            print(json.dumps(row), flush=True)

    matched = round(texts.observed(0.35) / q0, 3)  # the observed share's rise on the 0.35 step
    for rate in rates:
        settings = [  # (settings, texts of warm-up, how the base rate is known)
            (dict(shift=1.5, base_rate=q0), "known"),
            (dict(shift=matched, base_rate=q0), "known"),
            (dict(shift=1.5, estimation="plug-in"), "first 200 texts, plug-in"),
            (dict(shift=1.5), "first 200 texts, updating (default)"),
            (dict(shift=matched), "first 200 texts, updating (default)"),
            (dict(shift=1.5, warmup=1000, estimation="plug-in"), "first 1000 texts, plug-in"),
        ]
        for options, how in settings:
            config = DetectorSettings(rate_per_10k=rate, **options)  # type: ignore[arg-type]
            names = ("cusum", "ewma") if config.shift == 1.5 else ("cusum",)  # EWMA: no shift
            measure(
                lambda X, _, c=config, k=names: {
                    name: a for name, a in monitor_alarms(c, X).items() if name in k
                },
                lambda c=config: monitor_detectors(c),
                rate,
                0 if config.base_rate is not None else config.warmup,
                base=how,
                shift=config.shift,
                estimation=config.estimation if config.base_rate is None else None,
            )
        k = naive_threshold(texts, args.per_hour, rate, np.random.default_rng(9))
        measure(
            lambda X, _, k=k: naive_matrix(args.per_hour, k, X),
            lambda k=k: Naive(args.per_hour, k),
            rate,
            window=args.per_hour,
            threshold=k / args.per_hour,
        )
    measure(lambda X, stop: loop_alarms(Adwin, ["adwin"], X, stop), None, None, peer="ADWIN()")
    bound = {
        step: {
            "observed_q0": q0,
            "observed_q1": texts.observed(p),
            **{
                f"optimal_cusum_at_{rate}_per_10k": optimal(q0, texts.observed(p), rate)
                for rate in rates
            },
            "perfect_classifier_at_0.1_per_10k": optimal(BASE, p, 0.1),
            **{
                f"information_at_{rate}_per_10k": information_bound(q0, texts.observed(p), rate)
                for rate in rates
            },
        }
        for step, p in STEPS.items()
    }
    result = {
        "data": "Sentences_50Agree.txt held-out 20% (stratified, seed 0), sampled per trial",
        "model": info,
        "tpr_negative": texts.tpr,
        "fpr_negative": texts.fpr,
        "base_true_share": BASE,
        "steps_true_share": STEPS,
        "trials": args.trials,
        "prefix_texts": PREFIX,
        "cap_texts": CAP,
        "per_hour": args.per_hour,
        "bound": bound,
        "calibration_200_texts": calibration(q0, rates),
        "rows": rows,
        "wall_s": time.perf_counter() - started,
    }
    write_result("monitor_detect", result)


if __name__ == "__main__":
    main()
