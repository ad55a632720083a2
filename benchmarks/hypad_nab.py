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
``hypad-ens3`` / ``hypad-tadgan-ens3``: three HypAD models per signal (seeds s, s+1, s+2),
each rule's scores standardised per model and averaged (a seed ensemble; fit time is the sum).
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


# Orion's verified TadGAN pipelines per NAB category: aggregation interval (seconds) and how
# the critic and reconstruction scores are combined. realKnownCause has no verified pipeline;
# it gets the 10-minute aggregation of the other 5-minute categories.
ORION_SETUP = {"artificialWithAnomaly": (600, "mult"), "realAWSCloudwatch": (600, "mult"),
               "realAdExchange": (3600, "sum"), "realTraffic": (600, "sum"),
               "realTweets": (600, "sum"), "realKnownCause": (600, "mult")}


def aggregate(index: np.ndarray, values: np.ndarray, interval: int) -> tuple[np.ndarray, np.ndarray]:
    """Orion's time_segments_aggregate + impute: the mean of each ``interval``-second bucket
    from the first timestamp on; empty buckets get the series mean."""
    start = index[0]
    bucket = ((index - start) // interval).astype(int)
    nb = int(bucket[-1]) + 1
    sums = np.bincount(bucket, weights=values, minlength=nb)
    cnt = np.bincount(bucket, minlength=nb)
    agg = np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)
    agg = np.where(np.isnan(agg), np.nanmean(agg), agg)
    return start + interval * np.arange(nb, dtype=float), agg

def _f1(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": round(p, 3), "recall": round(r, 3),
            "f1": round(2 * p * r / (p + r), 3) if p + r else 0.0}


def run_signal(path: Path, truth, detectors: list[str], params: dict, threads: int) -> list[dict]:
    import torch

    from streamad.bench import metrics as M
    from streamad.detectors import make
    from streamad.thresholds import find_anomalies

    torch.set_num_threads(threads)
    raw_index, raw_values = load_signal(path)
    interval, comb = ORION_SETUP.get(path.parent.name, (600, "mult"))
    index, values = aggregate(raw_index, raw_values, interval)
    X = values[:, None]
    rows, scored = [], {}

    def timed(name, fit, score):
        t0 = time.perf_counter()
        det = fit()
        t1 = time.perf_counter()
        scored[name] = (score(det), t1 - t0, time.perf_counter() - t1)
        return det

    def fit_deep(kind, **kw):
        # fit trains now, on the whole series, even one shorter than the streaming warm-up
        return make(kind, threads=threads, **{**params, **kw}).fit(X)

    if any(d.startswith("hypad") for d in detectors):
        det = timed("hypad", lambda: fit_deep("hypad"), lambda d: d.score_series(X))
        for variant, kw in (("hypad-nocert", {"scoring": "hyperbolic"}),
                            ("hypad-tadgan", {"scoring": comb, "rec_error": "dtw"})):
            if variant in detectors:
                for k, v in kw.items():  # same trained model, another scoring rule
                    setattr(det, k, v)
                t0 = time.perf_counter()
                scored[variant] = (det.score_series(X), 0.0, time.perf_counter() - t0)
    if any(d.endswith("-ens3") for d in detectors):
        # three models (seeds s, s+1, s+2; the first is the one above when it was trained):
        # each rule's scores standardised per model, then averaged
        base = int(params.get("seed", 0))
        members, fit_total = [], 0.0
        for k in range(3):
            if k == 0 and "hypad" in scored:
                member, fit_s = det, scored["hypad"][1]
            else:
                t0 = time.perf_counter()
                member = fit_deep("hypad", seed=base + k)
                fit_s = time.perf_counter() - t0
            fit_total += fit_s
            rules = {}
            for rule, kw in (("hypad-ens3", {"scoring": "uncertainty", "rec_error": "dtw"}),
                             ("hypad-tadgan-ens3", {"scoring": comb, "rec_error": "dtw"})):
                for key, v in kw.items():
                    setattr(member, key, v)
                rules[rule] = member.score_series(X)
            members.append(rules)
        for rule in ("hypad-ens3", "hypad-tadgan-ens3"):
            z = []
            for rules in members:
                v = np.where(np.isfinite(rules[rule]), rules[rule], 0.0)
                sd = float(v.std())
                z.append((v - v.mean()) / sd if sd > 0 else v - v.mean())
            scored[rule] = (np.mean(z, axis=0), fit_total, 0.0)
    if "tadgan" in detectors:
        timed("tadgan", lambda: fit_deep("tadgan", scoring=comb, rec_error="dtw"),
              lambda d: d.score_series(X))
    if "aer" in detectors:  # TadGAN's combination per category: "mult" -> AER's product, "sum" -> its mean
        timed("aer", lambda: fit_deep("aer", scoring="aer" if comb == "mult" else "aer-sum", rec_error="dtw"),
              lambda d: d.score_series(X))
    if "gaussian" in detectors:
        def fit_gauss():
            det = make("gaussian", window=100)
            det.learn_many(X)
            return det

        timed("gaussian", fit_gauss, lambda d: d.process_many(X, learn=False))

    labels = M.point_labels(len(X), M.nab_windows_to_index(index, truth))
    windows_idx = M.nab_windows_to_index(index, truth)
    for name in detectors:
        if name not in scored:
            continue
        scores, fit_s, detect_s = scored[name]
        scores = np.where(np.isfinite(scores), scores, 0.0)
        found = find_anomalies(scores, index=np.arange(len(X)))
        spans = [(float(index[s]), float(index[e])) for s, e, _ in found]
        tp, fp, fn = M.contextual_confusion(truth, spans)
        starts = np.zeros(len(X), dtype=bool)
        starts[[s for s, _, _ in found]] = True
        nab = M.nab_file_score(len(X), starts, windows_idx, "standard")
        rows.append({"signal": path.stem, "category": path.parent.name, "detector": name,
                     "n_points": len(raw_values), "n_aggregated": len(X), "interval_s": interval,
                     "tp": tp, "fp": fp, "fn": fn, "n_found": len(found),
                     # VUS-PR is undefined on a signal with no labelled window
                     "vus_pr": round(float(M.vus_pr(labels, scores)), 4) if labels.any() else None,
                     "nab": vars(nab),
                     "fit_s": round(fit_s, 2), "detect_s": round(detect_s, 2)})
    return rows


def summarise(rows: list[dict]) -> dict:
    """Per detector and category: F1 of the tp/fp/fn summed over signals (and seeds), and
    with several seeds, each seed's F1 and their mean and standard deviation."""
    out: dict[str, dict] = {}
    per_seed: dict[tuple, list[int]] = {}
    for r in rows:
        counts = per_seed.setdefault((r["detector"], r["category"], r.get("seed", 0)), [0, 0, 0])
        for i, k in enumerate(("tp", "fp", "fn")):
            counts[i] += r[k]
        agg = out.setdefault(r["detector"], {}).setdefault(r["category"], {"tp": 0, "fp": 0, "fn": 0, "fit_s": [], "detect_s": []})
        for k in ("tp", "fp", "fn"):
            agg[k] += r[k]
        agg["fit_s"].append(r["fit_s"])
        agg["detect_s"].append(r["detect_s"])
        if r.get("vus_pr") is not None and np.isfinite(r["vus_pr"]):
            agg.setdefault("vus_pr", []).append(r["vus_pr"])
        if "nab" in r:
            agg.setdefault("nab", []).append(r["nab"])
    table = {}
    for det, cats in out.items():
        table[det] = {}
        for cat, a in cats.items():
            table[det][cat] = {**_f1(a["tp"], a["fp"], a["fn"]),
                               "median_fit_s": float(np.median(a["fit_s"])),
                               "median_detect_s": float(np.median(a["detect_s"])),
                               "vus_pr": round(float(np.mean(a["vus_pr"])), 3) if a.get("vus_pr") else None,
                               "nab_score": _nab_score(a.get("nab", [])),
                               "signals": len(a["fit_s"])}
            seeds = sorted(s for d, c, s in per_seed if (d, c) == (det, cat))
            if len(seeds) > 1:
                f1s = [_f1(*per_seed[(det, cat, s)])["f1"] for s in seeds]
                table[det][cat].update(seeds=seeds, f1_seeds=f1s, f1_mean=round(float(np.mean(f1s)), 3),
                                       f1_std=round(float(np.std(f1s)), 3))
    return table


def _nab_score(files: list[dict]) -> float | None:
    if not files:
        return None
    from streamad.bench import metrics as M
    return round(float(M.nab_normalized([M.NabFileScore(**f) for f in files])), 1)


def markdown(table: dict, meta: dict) -> str:
    cats = sorted({c for d in table.values() for c in d})
    lines = ["# HypAD / TadGAN on NAB (Orion protocol)\n",
             f"Overlapping-segment F1 micro-averaged per category; tp/fp/fn in brackets. "
             f"Params: `{json.dumps(meta['params'])}`, threads {meta['threads']}, metric: {meta['metric']}, "
             f"thresholds: {meta['thresholding']}.\n",
             "| detector | " + " | ".join(cats) + " | median fit s | median detect s |",
             "|---|" + "---|" * (len(cats) + 2)]
    seeded = any("f1_seeds" in v for row in table.values() for v in row.values())
    if seeded:
        lines.insert(2, "Several seeds: each cell is the mean +- standard deviation of the seeds' F1 (each "
                        "seed's F1 in the JSON), then tp/fp/fn summed over the seeds.\n")

    def cell(v):
        f1 = f"{v['f1_mean']:.3f} +- {v['f1_std']:.3f}" if "f1_seeds" in v else f"{v['f1']:.3f}"
        return f"{f1} ({v['tp']}/{v['fp']}/{v['fn']})"

    for det, row in table.items():
        cells = [cell(row[c]) if c in row else "" for c in cats]
        fit = np.median([v["median_fit_s"] for v in row.values()])
        det_s = np.median([v["median_detect_s"] for v in row.values()])
        lines.append(f"| {det} | " + " | ".join(cells) + f" | {fit:.1f} | {det_s:.1f} |")
    for name, anchor in ANCHORS.items():
        lines.append(f"| {name} (Orion, published) | " + " | ".join(f"{anchor[c]:.3f}" if c in anchor else "" for c in cats) + " | | |")
    lines += ["", "VUS-PR (mean over signals with a labelled window) / NAB score (standard profile, one detection per "
              "interval at its first point, on the aggregated series), per category:", "",
              "| detector | " + " | ".join(cats) + " |", "|---|" + "---|" * len(cats)]
    for det, row in table.items():
        cells = [f"{row[c]['vus_pr'] if row[c]['vus_pr'] is not None else '-'} / {row[c]['nab_score']}"
                 if c in row else "" for c in cats]
        lines.append(f"| {det} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _job(job) -> tuple[str, list[dict], float]:
    f, truth, detectors, params, threads = job
    t0 = time.perf_counter()
    try:
        new = run_signal(f, truth, detectors, params, threads)
    except Exception as e:  # recorded, the run goes on
        new = [{"signal": f.stem, "category": f.parent.name, "detector": "error", "error": repr(e),
                "n_points": 0, "tp": 0, "fp": 0, "fn": 0, "fit_s": 0, "detect_s": 0}]
    for r in new:
        r["seed"] = params.get("seed", 0)
    return f"{f.parent.name}/{f.name} seed {params.get('seed', 0)}", new, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path, help="NAB checkout: data/<category>/*.csv and labels/combined_windows.json")
    ap.add_argument("--categories", default="realKnownCause,artificialWithAnomaly")
    ap.add_argument("--detectors", default="hypad,hypad-nocert,hypad-tadgan,tadgan,gaussian")
    ap.add_argument("--params", default="{}", help="JSON params for hypad and tadgan")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per signal")
    ap.add_argument("--workers", type=int, default=1, help="signals in parallel processes")
    ap.add_argument("--limit", type=int, default=0, help="at most this many signals per category")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hypad_nab.json")
    ap.add_argument("--resume", action="store_true", help="keep the signals already in --out, run the rest")
    ap.add_argument("--seeds", default=None,
                    help="comma-separated seeds: every signal is run with each (default: the params' seed, or 0)")
    args = ap.parse_args(argv)
    import torch

    labels_path = args.data_dir / "labels" / "combined_windows.json"
    if not labels_path.exists():
        print(f"error: {labels_path} not found (NAB: https://github.com/numenta/NAB)", file=sys.stderr)
        return 2
    labels = json.loads(labels_path.read_text())
    detectors = args.detectors.split(",")
    params = json.loads(args.params)
    try:
        seeds = [int(params.get("seed", 0))] if args.seeds is None else [int(v) for v in args.seeds.split(",")]
    except ValueError:
        print(f"error: --seeds must be comma-separated integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    rows: list[dict] = []
    if args.resume and args.out.exists():
        rows = [r for r in json.loads(args.out.read_text())["rows"] if r["detector"] != "error"]
    done = {(r["category"], r["signal"], r.get("seed", 0)) for r in rows}
    metric = "streamad.bench.metrics.contextual_confusion (overlapping segment)"
    thresholding = "streamad.thresholds.find_anomalies (Orion defaults)"
    meta = {"benchmark": "hypad_nab", "protocol": "orion (fit and detect on the whole signal)",
            "params": params, "seeds": seeds, "threads": args.threads, "metric": metric,
            "thresholding": thresholding,
            "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine()}

    def write():
        table = summarise(rows)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**meta, "rows": rows, "table": table}, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(markdown(table, meta))

    jobs = []
    for cat in args.categories.split(","):
        files = sorted((args.data_dir / "data" / cat).glob("*.csv"))
        if args.limit:
            files = files[:args.limit]
        for seed in seeds:
            for f in files:
                if (cat, f.stem, seed) in done:
                    continue
                truth = [(_epoch(a), _epoch(b)) for a, b in labels.get(f"{cat}/{f.name}", [])]
                jobs.append((f, truth, detectors, {**params, "seed": seed}, args.threads))
    if args.workers > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(args.workers)
        results = pool.imap_unordered(_job, jobs)
    else:
        pool, results = None, map(_job, jobs)
    for key, new, secs in results:
        rows.extend(new)
        summary = " ".join(f"{r['detector']}={r['tp']}/{r['fp']}/{r['fn']}" for r in new)
        print(f"{key}: {summary} ({secs:.0f}s)", flush=True)
        write()
    if pool is not None:
        pool.close()
    print(markdown(summarise(rows), meta))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
