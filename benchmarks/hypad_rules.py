"""HypAD's scoring rules compared on NAB without retraining: train once, score many ways.

    python benchmarks/hypad_rules.py dump ../shared/data/nab /tmp/hypad_outputs --seeds 0,1,2
    python benchmarks/hypad_rules.py score /tmp/hypad_outputs

``dump`` trains one HypAD per signal and seed (default parameters, or ``--params``), as
``hypad_nab.py`` does (Orion's aggregation, ``HypAD.fit`` on the whole series, one torch
thread, two signals at a time), and
saves the model's per-window outputs: critic values, hyperbolic error and certainty, and the
reconstructed windows. ``score`` maps them to points with the package's scoring functions
(``streamad.detectors._hypad_scores``), thresholds with Orion's ``find_anomalies`` and prints
the overlapping-segment F1 per category (mean and spread over seeds) for each rule. ``hypad``
and ``tadgan`` are the detector's own rules (``series_scores``, as ``HypAD.score_series``):
they reproduce ``hypad_nab.py``'s ``hypad`` and ``hypad-tadgan`` rows exactly.
``euclidean-window`` and ``point`` tell apart what the hyperbolic error loses by its geometry
from what it loses by giving one value per window: the first is the window's Euclidean
residual, mapped to points as the hyperbolic error is; the second is Orion's point error.
With ``--params '{"regression_weight": 0.5}'`` the model also predicts each window's ends
(AER's heads), and the ``aer`` rules score the prediction error too; ``aer-orion-combs`` uses
the combination Orion's AER pipelines choose per category.
``dump --detector aer`` saves the ``aer`` detector's outputs; the ``aer+...`` rules add
Orion's AER scoring details to the packaged rule's session-18 form (``aer-unmasked``) one at
a time, and ``aer-orion-scoring`` all of them. The ``...@mean-window`` rules are controls:
the same rule with every reconstruction replaced by the series' mean window (and the ends'
predictions by their means), i.e. no network. ``score --rules`` scores only the rules named.
Results: ``benchmarks/results/hypad_nab_seeds.md`` (sessions 14 and 16 to 21; sessions 16 to
18 with ``--params '{"critic_iterations": 5}'`` too, and ``score --json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CATEGORIES = ["artificialWithAnomaly", "realAWSCloudwatch", "realAdExchange", "realKnownCause", "realTraffic",
              "realTweets"]
SHORT = dict(zip(CATEGORIES, ["Art", "AWS", "AdEx", "KC", "Traffic", "Tweets"], strict=True))


def _dump_one(job) -> tuple[str, float]:
    import hypad_nab as H
    import torch

    from streamad.detectors import make

    path, truth, seed, out, params, detector = job
    torch.set_num_threads(1)
    dst = Path(out) / f"{path.parent.name}__{path.stem}__{seed}.npz"
    if dst.exists():
        return dst.name, 0.0
    index, values = H.aggregate(*H.load_signal(path), H.ORION_SETUP[path.parent.name][0])
    X = values[:, None]
    t0 = time.perf_counter()
    det = make(detector, threads=1, **{**params, "seed": seed}).fit(X)
    fit_s = time.perf_counter() - t0
    pad = max(0, int(det.window) - len(X))
    Xp = np.concatenate([np.repeat(X[:1], pad, axis=0), X]) if pad else X
    o = det._forward(det._windows(Xp), full=True)
    np.savez_compressed(dst, index=index, scaled=det._scale(Xp), pad=pad, comb=H.ORION_SETUP[path.parent.name][1],
                        truth=np.array(truth, float).reshape(-1, 2), **{k: v.astype(np.float32) for k, v in o.items()})
    return dst.name, fit_s


def dump(data: Path, out: Path, seeds: list[int], workers: int, params: dict | None = None,
         categories: list[str] | None = None, detector: str = "hypad") -> None:
    import multiprocessing as mp

    import hypad_nab as H

    out.mkdir(parents=True, exist_ok=True)
    labels = json.loads((data / "labels" / "combined_windows.json").read_text())
    jobs = [(f, [(H._epoch(a), H._epoch(b)) for a, b in labels.get(f"{cat}/{f.name}", [])], seed, str(out),
             params or {}, detector)
            for cat in categories or CATEGORIES for f in sorted((data / "data" / cat).glob("*.csv")) for seed in seeds]
    with mp.get_context("spawn").Pool(workers) as pool:
        for i, (name, fit_s) in enumerate(pool.imap_unordered(_dump_one, jobs), 1):
            print(f"{i}/{len(jobs)} {name} fit {fit_s:.1f} s", file=sys.stderr)


def _parts(s: dict) -> dict:
    from streamad.detectors import _hypad_scores as sc

    if "_parts" not in s:
        w = s["x_hat"].shape[1]
        ends = "first" in s  # regression_weight > 0: inner points reconstructed, ends predicted
        y, x_hat = sc.inner_points(s["scaled"], s["x_hat"], ends)
        wi = x_hat.shape[1]

        def points(v):
            return sc.to_points(v, ends)

        smooth = sc.smoothing_window(len(s["scaled"]))
        s["_parts"] = {"smooth": smooth, "critic": sc.critic_scores(s["critic"], w, smooth),
                       "dtw": points(sc.reconstruction_errors(y, x_hat, "dtw", smooth=smooth)),
                       "point": points(sc.reconstruction_errors(y, x_hat, "point", smooth=smooth)),
                       "euclidean": points(sc.windows_mean(_window_residuals(y, x_hat), wi))}
        if "rec" in s:  # HypAD's model: hyperbolic error and certainty
            s["_parts"]["hyp"] = points(sc.windows_mean(s["rec"], wi))
            s["_parts"]["certainty"] = points(sc.windows_mean(s["certainty"], wi))
        if ends:
            s["_parts"]["reg"] = sc.rolling_mean(sc.regression_errors(s["first"], s["last"], w), smooth)
    return s["_parts"]


def _window_residuals(scaled: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    """Per window, the Euclidean norm of input minus reconstruction over all its points."""
    wins = np.lib.stride_tricks.sliding_window_view(scaled, x_hat.shape[1], axis=0).transpose(0, 2, 1)
    return np.sqrt(((wins - x_hat) ** 2).sum(axis=(1, 2)))


# Orion's AER pipelines choose the combination per NAB category (orion/pipelines/verified/aer);
# "reg" scores by the prediction error alone
AER_COMB = {"artificialWithAnomaly": "reg", "realAWSCloudwatch": "sum", "realAdExchange": "sum",
            "realKnownCause": "mult", "realTraffic": "reg", "realTweets": "mult"}


def _ewma(x: np.ndarray, span: int) -> np.ndarray:
    """Exponentially weighted mean with ``alpha = 2 / (span + 1)``, weights renormalised over
    the points seen so far (pandas' ``ewm(span).mean()``, causal)."""
    from scipy.signal import lfilter

    beta = 1.0 - 2.0 / (span + 1.0)
    num = lfilter([1.0], [1.0, -beta], np.asarray(x, dtype=np.float64))
    den = (1.0 - beta ** np.arange(1, len(x) + 1)) / (1.0 - beta) if beta > 0 else np.ones(len(x))
    return num / den


def _aer_orion_errors(s: dict, p: dict, ewma: bool, mask: bool, floor0: bool) -> tuple[np.ndarray, np.ndarray]:
    """The reconstruction and prediction errors with Orion's AER scoring details, each
    switchable: ``ewma`` smooths each direction's prediction errors with a causal EWMA (span
    1% of the windows) before mapping them to points, instead of the centred mean after;
    ``mask`` sets the first 1% of windows' errors to their minimum (the forward errors of the
    masked windows count as missing); ``floor0`` min-max scales the reconstruction error from 0
    instead of from its minimum (Orion pads it with a zero at each end)."""
    from streamad.detectors import _hypad_scores as sc

    w, m = s["x_hat"].shape[1], len(s["first"])
    k = sc.start_mask(m) if mask else 0
    first, last = np.asarray(s["first"], float), np.asarray(s["last"], float)
    if ewma:
        span = max(1, int(0.01 * m))
        first, last = _ewma(first, span), _ewma(last, span)
    reg = sc.regression_errors(first, last, w, masked=k)
    if not ewma:
        reg = sc.rolling_mean(reg, p["smooth"])
    rec = p["dtw"].copy()  # the inner points' error, its edge values repeated (to_points)
    if k:  # as series_scores masks it: the first k inner points, and point 0 that repeats them
        rec[:1 + k] = rec[1:-1].min()
    if floor0:
        rec[0] = rec[-1] = 0.0
    return rec, reg


def mean_window_outputs(wins: np.ndarray, mean: np.ndarray) -> dict[str, np.ndarray]:
    """What a model that reconstructs every window (m, w, d) as ``mean`` (w, d) outputs: the
    reconstruction, and the errors of predicting each end, and the inner points, by theirs."""
    x = np.asarray(wins, dtype=np.float64)
    return {"x_hat": np.broadcast_to(mean, x.shape),
            "first": np.linalg.norm(x[:, 0] - mean[0], axis=1),
            "last": np.linalg.norm(x[:, -1] - mean[-1], axis=1),
            "inner": np.linalg.norm((x[:, 1:-1] - mean[1:-1]).reshape(len(x), -1), axis=1)}


def _mean_window(s: dict) -> dict:
    """The saved outputs with the network's reconstruction replaced by the series' mean window
    (each window position's mean over all windows), and the prediction heads' errors by those
    of predicting each end by its mean: what an autoencoder that ignores its input would give.
    The critic values are kept. A control: a rule that scores no better on these than on the
    network's outputs gains nothing from what the network learnt about each window."""
    if "_mean_window" not in s:
        w = s["x_hat"].shape[1]
        wins = np.lib.stride_tricks.sliding_window_view(s["scaled"], w, axis=0).transpose(0, 2, 1)
        mean = wins.mean(axis=0)
        o = mean_window_outputs(wins, mean)
        c = {k: v for k, v in s.items() if not k.startswith("_")}
        c["x_hat"] = o["x_hat"].astype(np.float32)
        if "first" in s:
            c["first"], c["last"] = o["first"], o["last"]
        s["_mean_window"] = c
    return s["_mean_window"]


def rules() -> dict:
    from streamad.detectors import _hypad_scores as sc

    zp = sc.zscore_positive

    def hyp(p):  # the hyperbolic error as HypAD's rule uses it
        return sc.rolling_mean(zp(p["hyp"]), p["smooth"])

    def packaged(rule):  # the detector's own rules: HypAD.score_series on the saved outputs
        return lambda s, p: sc.series_scores(s, s["scaled"], s["x_hat"].shape[1], rule(s), ends="first" in s)

    def heads(fn):  # rules that need the prediction heads (regression_weight > 0)
        return lambda s, p: fn(s, p) if "reg" in p else None

    def hyperbolic(fn):  # rules that need HypAD's hyperbolic error and certainty
        return lambda s, p: fn(s, p) if "hyp" in p else None

    def aer_orion(s, p):
        comb = AER_COMB[str(s["cat"])]
        return p["reg"] if comb == "reg" else sc.combine_minmax(p["dtw"], p["reg"], comb)

    def aer_details(ewma=False, mask=False, floor0=False, orion_combs=False):
        def fn(s, p):
            rec, reg = _aer_orion_errors(s, p, ewma, mask, floor0)
            comb = AER_COMB[str(s["cat"])] if orion_combs else str(s["comb"])
            return reg if comb == "reg" else sc.combine_minmax(rec, reg, comb)
        return fn

    return {
        "hypad": hyperbolic(packaged(lambda s: "uncertainty")),
        "tadgan": packaged(lambda s: str(s["comb"])),
        "dtw": lambda s, p: zp(p["dtw"]),
        "hyperbolic": hyperbolic(lambda s, p: hyp(p)),
        # the hyperbolic error's Euclidean twin: one error per window, mapped to points alike
        "euclidean-window": lambda s, p: sc.rolling_mean(zp(p["euclidean"]), p["smooth"]),
        "point": lambda s, p: zp(p["point"]),
        "dtw*hyperbolic": hyperbolic(lambda s, p: zp(p["dtw"]) * hyp(p)),
        "critic*dtw*hyperbolic": hyperbolic(lambda s, p: p["critic"] * zp(p["dtw"]) * hyp(p)),
        "critic": lambda s, p: p["critic"],
        "critic*dtw*certainty": hyperbolic(lambda s, p: p["critic"] * zp(p["dtw"]) * p["certainty"]),
        # with prediction heads: AER's rule as packaged (TadGAN's combination per category:
        # "mult" -> "aer", "sum" -> "aer-sum"), with Orion's AER combinations per category,
        # the prediction error alone, and AER's product times HypAD's certainty
        "aer": heads(packaged(lambda s: "aer" if str(s["comb"]) == "mult" else "aer-sum")),
        "aer-orion-combs": heads(aer_orion),
        "prediction": heads(lambda s, p: zp(p["reg"])),
        "aer*certainty": hyperbolic(heads(lambda s, p: sc.combine_minmax(p["dtw"], p["reg"]) * p["certainty"])),
        # Orion's AER scoring details, one at a time and together (TadGAN's combination per
        # category, as "aer"), and together with Orion's AER pipelines' "mult" everywhere but
        # where they choose otherwise (AER_COMB)
        "aer-unmasked": heads(aer_details()),  # the packaged rule before its start mask (session 18)
        "aer+ewma": heads(aer_details(ewma=True)),
        "aer+mask": heads(aer_details(mask=True)),
        "aer+floor0": heads(aer_details(floor0=True)),
        "aer-orion-scoring": heads(aer_details(ewma=True, mask=True, floor0=True)),
        "aer-orion-scoring-combs": heads(aer_details(ewma=True, mask=True, floor0=True, orion_combs=True)),
        # controls: the packaged rules with the reconstruction replaced by the mean window
        "tadgan@mean-window": lambda s, p: packaged(lambda c: str(c["comb"]))(_mean_window(s), p),
        "euclidean-window@mean-window": lambda s, p: sc.rolling_mean(
            zp(_parts(_mean_window(s))["euclidean"]), p["smooth"]),
        "aer@mean-window": heads(lambda s, p: packaged(
            lambda c: "aer" if str(c["comb"]) == "mult" else "aer-sum")(_mean_window(s), p)),
    }


def score(out: Path, only: list[str] | None = None) -> dict:
    from streamad.bench import metrics as M
    from streamad.thresholds import find_anomalies

    signals = []
    for f in sorted(out.glob("*.npz")):
        cat, name, seed = f.stem.split("__")
        signals.append({**{k: v for k, v in np.load(f).items()}, "cat": cat, "seed": int(seed)})
    table = {}
    for rule, fn in rules().items():
        if only and rule not in only:
            continue
        counts = defaultdict(lambda: np.zeros(3))
        for s in signals:
            pad = int(s["pad"])
            v = fn(s, _parts(s))
            if v is None:  # a rule for prediction heads, on outputs without them
                continue
            v = np.asarray(v, float)[pad:]
            found = find_anomalies(np.where(np.isfinite(v), v, 0.0), index=np.arange(len(v)))
            spans = [(float(s["index"][a]), float(s["index"][b])) for a, b, _ in found]
            counts[(s["cat"], s["seed"])] += M.contextual_confusion([tuple(t) for t in s["truth"]], spans)
        if not counts:
            continue
        table[rule] = {}
        for cat in CATEGORIES:
            f1 = [2 * tp / max(1, 2 * tp + fp + fn) for (c, _), (tp, fp, fn) in counts.items() if c == cat]
            if f1:
                table[rule][cat] = (float(np.mean(f1)), float(np.std(f1)))
        print(f"{rule:24s} " + " ".join(f"{SHORT[c]} {m:.3f}+-{sd:.3f}" for c, (m, sd) in table[rule].items()))
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump", help="train per signal and seed; save the model outputs")
    d.add_argument("data_dir", type=Path, help="NAB checkout: data/<category>/*.csv and labels/combined_windows.json")
    d.add_argument("out", type=Path)
    d.add_argument("--seeds", default="0,1,2")
    d.add_argument("--workers", type=int, default=2)
    d.add_argument("--detector", default="hypad", choices=["hypad", "tadgan", "aer"])
    d.add_argument("--params", default="{}", help="the detector's parameters as JSON, e.g. '{\"critic_iterations\": 5}'")
    d.add_argument("--categories", default=",".join(CATEGORIES))
    s = sub.add_parser("score", help="F1 per category of each rule on saved outputs")
    s.add_argument("out", type=Path)
    s.add_argument("--json", type=Path, help="also write the table (rule -> category -> [mean, std]) here")
    s.add_argument("--rules", help="score only these rules (comma-separated names)")
    args = ap.parse_args(argv)
    if args.cmd == "dump":
        if not (args.data_dir / "labels" / "combined_windows.json").exists():
            print(f"error: {args.data_dir}/labels/combined_windows.json not found", file=sys.stderr)
            return 2
        try:
            params = json.loads(args.params)
        except json.JSONDecodeError as e:
            print(f"error: --params is not JSON: {e}", file=sys.stderr)
            return 2
        if not isinstance(params, dict):
            print("error: --params must be a JSON object", file=sys.stderr)
            return 2
        cats = args.categories.split(",")
        unknown = sorted(set(cats) - set(CATEGORIES))
        if unknown:
            print(f"error: unknown categories {','.join(unknown)}", file=sys.stderr)
            return 2
        dump(args.data_dir, args.out, [int(v) for v in args.seeds.split(",")], args.workers, params, cats,
             args.detector)
    else:
        if not any(args.out.glob("*.npz")):
            print(f"error: no saved outputs (*.npz) in {args.out}", file=sys.stderr)
            return 2
        only = args.rules.split(",") if args.rules else None
        unknown = sorted(set(only or []) - set(rules()))
        if unknown:
            print(f"error: unknown rules {','.join(unknown)}; known: {','.join(rules())}", file=sys.stderr)
            return 2
        table = score(args.out, only)
        if args.json:
            args.json.write_text(json.dumps(table, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
