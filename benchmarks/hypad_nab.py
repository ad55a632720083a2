"""HypAD and TadGAN on NAB with Orion's protocol, against the Gaussian window baseline.

    nice -n 10 python benchmarks/hypad_nab.py /work/shared/data/nab \\
        --categories realKnownCause,artificialWithAnomaly --out benchmarks/results/hypad_nab.json

Orion's protocol: each signal is fitted and detected on as a whole; the per-point scores go
through Orion's ``find_anomalies`` (windows of 33% of the series, step 10% of that, mean + 4
std, padding 50, pruning 0.1) and the detected intervals are compared with NAB's labelled
windows by the overlapping-segment rule (a labelled window is found if any detected interval
overlaps it; a detected interval overlapping none is a false positive). F1 is micro-averaged
per category (tp/fp/fn summed over its signals), as Orion's leaderboard does.

One HypAD model per signal is scored four ways (the ablation): ``hypad`` (critic *
hyperbolic error * certainty), ``hypad-nocert`` (without certainty), ``hypad-tadgan``
(TadGAN's critic * DTW error on the HypAD model); ``tadgan`` is a separately trained TadGAN
(squared-error loss). ``gaussian`` is the streamad baseline (fit on the signal, then scored).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ANCHORS = {  # Orion leaderboard 0.7.1, overlapping-segment F1
    "tadgan": {"artificialWithAnomaly": .500, "realAdExchange": .692, "realAWSCloudwatch": .710,
               "realTraffic": .487, "realTweets": .588},
    "aer": {"artificialWithAnomaly": .750, "realAdExchange": .733, "realAWSCloudwatch": .702,
            "realTraffic": .611, "realTweets": .606},
}


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace(" ", "T")).replace(tzinfo=UTC).timestamp()


def load_signal(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = path.read_text().strip().splitlines()[1:]
    index = np.array([_epoch(r.split(",")[0]) for r in rows])
    values = np.array([float(r.split(",")[1]) for r in rows])
    return index, values


def overlap_counts(truth: list[tuple[float, float]], found: list[tuple[float, float]]) -> tuple[int, int, int]:
    """tp, fp, fn under the overlapping-segment rule (closed intervals)."""
    def hit(a, b):
        return a[0] <= b[1] and b[0] <= a[1]

    tp = sum(any(hit(t, f) for f in found) for t in truth)
    fp = sum(not any(hit(f, t) for t in truth) for f in found)
    return tp, fp, len(truth) - tp


def _metrics_counts():
    """streamad.bench.metrics' overlapping-segment counts if it is there, else our own."""
    try:
        from streamad.bench import metrics
    except ImportError:
        return overlap_counts, "local"
    for name in ("overlapping_segment", "contextual_overlap", "overlap_counts", "contextual_counts"):
        fn = getattr(metrics, name, None)
        if callable(fn):
            def counts(truth, found, fn=fn):
                r = fn(truth, found)
                if isinstance(r, dict):
                    return r["tp"], r["fp"], r["fn"]
                if hasattr(r, "tp"):
                    return r.tp, r.fp, r.fn
                return tuple(r)[:3]
            return counts, f"streamad.bench.metrics.{name}"
    return overlap_counts, "local"


def _local_find_anomalies(errors, index, window_size_portion=0.33, window_step_size_portion=0.1,
                          anomaly_padding=50, min_percent=0.1):
    """Stand-in for streamad.thresholds.find_anomalies (Orion's rule, fixed threshold) until
    the thresholds package provides it: per sliding window, points above mean + 4 std, padded,
    pruned when the next largest sequence maximum is within ``min_percent``, then merged."""
    errors = np.asarray(errors, dtype=float)
    n = len(errors)
    size = int(np.ceil(n * window_size_portion))
    step = max(1, int(np.ceil(size * window_step_size_portion)))
    found = []
    start = 0
    while True:
        w = errors[start:start + size]
        thr = w.mean() + 4 * w.std()
        above = np.zeros(len(w), bool)
        for i in np.flatnonzero(w > thr):
            above[max(0, i - anomaly_padding):i + anomaly_padding + 1] = True
        edges = np.diff(np.concatenate([[0], above.astype(int), [0]]))
        seqs = list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))
        if seqs:
            below = w[~above].max() if (~above).any() else 0.0
            peaks = sorted([(w[a:b + 1].max(), a, b) for a, b in seqs], reverse=True)
            maxima = [p[0] for p in peaks] + [below]
            keep = 0
            for j in range(len(peaks)):
                if maxima[j] > 0 and (maxima[j] - maxima[j + 1]) / maxima[j] >= min_percent:
                    keep = j + 1
            denom = w.mean() + w.std()
            found += [(a + start, b + start, (m - thr) / denom) for m, a, b in peaks[:keep]]
        if start + size >= n:
            break
        start += step
    found.sort()
    merged = []
    for a, b, sc in found:
        if merged and a <= merged[-1][1] + 1:
            pa, pb, ps, pw = merged[-1]
            wgt = max(b - a, 1)
            merged[-1] = (pa, max(pb, b), (ps * pw + sc * wgt) / (pw + wgt), pw + wgt)
        else:
            merged.append((a, b, sc, max(b - a, 1)))
    return [(index[int(a)], index[int(b)], sc) for a, b, sc, _ in merged]


def _find_anomalies():
    try:
        from streamad.thresholds import find_anomalies
    except ImportError:
        return _local_find_anomalies, "benchmarks/hypad_nab.py stand-in"
    return find_anomalies, "streamad.thresholds.find_anomalies"


def _f1(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": round(p, 3), "recall": round(r, 3),
            "f1": round(2 * p * r / (p + r), 3) if p + r else 0.0}


def run_signal(path: Path, truth, detectors: list[str], params: dict, threads: int,
               find_anomalies, counts) -> list[dict]:
    import torch

    from streamad.detectors import make

    torch.set_num_threads(threads)
    index, values = load_signal(path)
    X = values[:, None]
    rows, scored = [], {}

    def timed(name, fit, score):
        t0 = time.perf_counter()
        det = fit()
        t1 = time.perf_counter()
        scored[name] = (score(det), t1 - t0, time.perf_counter() - t1)
        return det

    if any(d.startswith("hypad") for d in detectors):
        def fit_hypad():
            det = make("hypad", threads=threads, **params)
            det.learn_many(X)
            det.state_dict()  # trains (lazily) here, so fit_s is the training time
            return det

        det = timed("hypad", fit_hypad, lambda d: d.score_series(X))
        for variant, kw in (("hypad-nocert", {"scoring": "hyperbolic"}),
                            ("hypad-tadgan", {"scoring": "mult", "rec_error": "dtw"})):
            if variant in detectors:
                for k, v in kw.items():  # same trained model, another scoring rule
                    setattr(det, k, v)
                t0 = time.perf_counter()
                scored[variant] = (det.score_series(X), 0.0, time.perf_counter() - t0)
    if "tadgan" in detectors:
        def fit_tadgan():
            det = make("tadgan", threads=threads, **params)
            det.learn_many(X)
            det.state_dict()
            return det

        timed("tadgan", fit_tadgan, lambda d: d.score_series(X))
    if "gaussian" in detectors:
        def fit_gauss():
            det = make("gaussian", window=100)
            det.learn_many(X)
            return det

        timed("gaussian", fit_gauss, lambda d: d.process_many(X, learn=False))

    for name in detectors:
        if name not in scored:
            continue
        scores, fit_s, detect_s = scored[name]
        found = [(float(s), float(e)) for s, e, *_ in find_anomalies(scores, index=index)]
        tp, fp, fn = counts(truth, found)
        rows.append({"signal": path.stem, "category": path.parent.name, "detector": name,
                     "n_points": len(X), "tp": tp, "fp": fp, "fn": fn, "n_found": len(found),
                     "fit_s": round(fit_s, 2), "detect_s": round(detect_s, 2)})
    return rows


def summarise(rows: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for r in rows:
        agg = out.setdefault(r["detector"], {}).setdefault(r["category"], {"tp": 0, "fp": 0, "fn": 0, "fit_s": [], "detect_s": []})
        for k in ("tp", "fp", "fn"):
            agg[k] += r[k]
        agg["fit_s"].append(r["fit_s"])
        agg["detect_s"].append(r["detect_s"])
    table = {}
    for det, cats in out.items():
        table[det] = {}
        for cat, a in cats.items():
            table[det][cat] = {**_f1(a["tp"], a["fp"], a["fn"]),
                               "median_fit_s": float(np.median(a["fit_s"])),
                               "median_detect_s": float(np.median(a["detect_s"])),
                               "signals": len(a["fit_s"])}
    return table


def markdown(table: dict, meta: dict) -> str:
    cats = sorted({c for d in table.values() for c in d})
    lines = ["# HypAD / TadGAN on NAB (Orion protocol)\n",
             f"Overlapping-segment F1 micro-averaged per category; tp/fp/fn in brackets. "
             f"Params: `{json.dumps(meta['params'])}`, threads {meta['threads']}, metric: {meta['metric']}, "
             f"thresholds: {meta['thresholding']}.\n",
             "| detector | " + " | ".join(cats) + " | median fit s | median detect s |",
             "|---|" + "---|" * (len(cats) + 2)]
    for det, row in table.items():
        cells = [f"{row[c]['f1']:.3f} ({row[c]['tp']}/{row[c]['fp']}/{row[c]['fn']})" if c in row else "" for c in cats]
        fit = np.median([v["median_fit_s"] for v in row.values()])
        det_s = np.median([v["median_detect_s"] for v in row.values()])
        lines.append(f"| {det} | " + " | ".join(cells) + f" | {fit:.1f} | {det_s:.1f} |")
    for name, anchor in ANCHORS.items():
        lines.append(f"| {name} (Orion, published) | " + " | ".join(f"{anchor[c]:.3f}" if c in anchor else "" for c in cats) + " | | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path, help="NAB checkout: data/<category>/*.csv and labels/combined_windows.json")
    ap.add_argument("--categories", default="realKnownCause,artificialWithAnomaly")
    ap.add_argument("--detectors", default="hypad,hypad-nocert,hypad-tadgan,tadgan,gaussian")
    ap.add_argument("--params", default="{}", help="JSON params for hypad and tadgan")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="at most this many signals per category")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hypad_nab.json")
    args = ap.parse_args(argv)
    import torch

    labels_path = args.data_dir / "labels" / "combined_windows.json"
    if not labels_path.exists():
        print(f"error: {labels_path} not found (NAB: https://github.com/numenta/NAB)", file=sys.stderr)
        return 2
    labels = json.loads(labels_path.read_text())
    detectors = args.detectors.split(",")
    params = json.loads(args.params)
    rows: list[dict] = []
    counts, metric = _metrics_counts()  # resolved once: one run, one rule
    find_anomalies, thresholding = _find_anomalies()
    meta = {"benchmark": "hypad_nab", "protocol": "orion (fit and detect on the whole signal)",
            "params": params, "threads": args.threads, "metric": metric,
            "thresholding": thresholding,
            "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine()}

    def write():
        table = summarise(rows)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**meta, "rows": rows, "table": table}, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(markdown(table, meta))

    for cat in args.categories.split(","):
        files = sorted((args.data_dir / "data" / cat).glob("*.csv"))
        if args.limit:
            files = files[:args.limit]
        for f in files:
            key = f"{cat}/{f.name}"
            truth = [(_epoch(a), _epoch(b)) for a, b in labels.get(key, [])]
            t0 = time.perf_counter()
            try:
                new = run_signal(f, truth, detectors, params, args.threads, find_anomalies, counts)
            except Exception as e:  # recorded, the run goes on
                new = [{"signal": f.stem, "category": cat, "detector": "error", "error": repr(e),
                        "n_points": 0, "tp": 0, "fp": 0, "fn": 0, "fit_s": 0, "detect_s": 0}]
            rows.extend(new)
            summary = " ".join(f"{r['detector']}={r['tp']}/{r['fp']}/{r['fn']}" for r in new)
            print(f"{key}: {summary} ({time.perf_counter() - t0:.0f}s)", flush=True)
            write()
    print(markdown(summarise(rows), meta))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
