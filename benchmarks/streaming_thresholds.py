"""NAB's streaming protocol under two SPOT thresholds: the paper's and SPOT's empirical floor.

    python benchmarks/streaming_thresholds.py ../shared/data/nab --detectors gaussian,zscore,pca,hst,aer,hypad \
        --seeds 0 --cache scores/ --workers 2 --out r.json

Each (detector, seed, signal) is run exactly as ``streamad bench --dataset nab --protocol
streaming --detector D --seed S`` runs it (``streamad.bench.runner.run_signal``) and its
per-point scores and warm-up are kept in ``--cache`` (one ``.npz`` each; a rerun reuses them,
so an interrupted run resumes). The same scores are then thresholded twice by the runner's
``streaming_intervals``: with ``SPOT(empirical_floor=False)`` (the paper's SPOT, the package's
before session 25) and with the package's default SPOT (the threshold never below the
empirical ``1 - q`` quantile of the scores seen), and evaluated by the runner's ``evaluate``.

Prints, per detector, seed and threshold, F1 per NAB category, overall F1, NAB score, false
intervals (all, and on the anomaly-free artificial series) and labelled windows found; writes
the aggregates (``streamad bench``'s format) to ``--out``.
Results: ``benchmarks/results/hypad_nab_seeds.md`` (session 25).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _nab_cache import add_arguments, missing_labels, run_all  # noqa: E402
from _nab_cache import seeds as _seeds  # noqa: E402

THRESHOLDS = {"paper": {"empirical_floor": False}, "floor": {}}


def _cache_file(cache: Path, detector: str, sig, seed: int) -> Path:
    return cache / f"{detector}__{sig.name.replace('/', '__')}__seed{seed}.npz"


def _run_one(sig, detector: str, seed: int, path: str) -> str:
    from streamad.bench.runner import run_signal

    row = run_signal(sig, detector, {}, "streaming", seed)
    tmp = path + ".tmp.npz"
    np.savez(tmp, scores=row["_scores"], warmup=row["warmup"], fit_s=row["fit_s"], detect_s=row["detect_s"])
    os.replace(tmp, path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    ap.add_argument("--detectors", default="gaussian,zscore,pca,hst,aer,hypad", help="comma-separated detector names")
    ap.add_argument("--seeds", default="0", help="seeds, e.g. 0-2 or 0,1 (default: 0)")
    args = ap.parse_args(argv)
    if missing_labels(args.data_dir):
        return 2
    try:
        seeds = _seeds(args.seeds)
    except ValueError as e:
        print(f"error: bad --seeds: {e}", file=sys.stderr)
        return 2
    from streamad import detectors as registry
    dets = [d.strip() for d in args.detectors.split(",") if d.strip()]
    unknown = [d for d in dets if d not in registry.REGISTRY]
    if unknown:
        print(f"error: unknown detectors {unknown}", file=sys.stderr)
        return 2

    from streamad.bench.datasets import load
    from streamad.bench.runner import _machine, _versions, aggregate, evaluate, streaming_intervals

    sigs = load("nab", str(args.data_dir), args.signals)
    args.cache.mkdir(parents=True, exist_ok=True)
    runs = [(d, s) for d in dets for s in seeds]
    todo = [(sig, d, s) for d, s in runs for sig in sigs if not _cache_file(args.cache, d, sig, s).exists()]
    t0 = time.perf_counter()
    run_all(_run_one, [(sig, d, s, str(_cache_file(args.cache, d, sig, s))) for sig, d, s in todo], args.workers)

    def rows_for(det: str, seed: int, spot: dict) -> list[dict]:
        rows = []
        for sig in sigs:
            with np.load(_cache_file(args.cache, det, sig, seed)) as z:
                scores, skip = z["scores"], int(z["warmup"])
                row = evaluate(sig, scores, streaming_intervals(scores, skip, **spot), fit_s=float(z["fit_s"]),
                               detect_s=float(z["detect_s"]), skip=skip)
            row.pop("_scores")
            rows.append(row)
        return rows

    results: dict[str, dict] = {}
    groups: list[str] = []
    print("detector | seed | threshold | " + "Art | AWS | AdEx | KnownCause | Traffic | Tweets"
          + " | overall F1 | NAB | false intervals | of them anomaly-free | windows found")
    for det, seed in runs:
        for name, spot in THRESHOLDS.items():
            agg = aggregate(rows_for(det, seed, spot))
            results[f"{det}/seed{seed}/{name}"] = agg
            g = agg["groups"]
            groups = [k for k in g if k != "artificialNoAnomaly"]
            ov = agg["overall"]
            fp = sum(v["fp"] for v in g.values())
            print(f"{det} | {seed} | {name} | " + " | ".join(f"{g[k]['f1']:.3f}" for k in groups)
                  + f" | {ov['f1']:.3f} | {ov['nab_score']['standard']:.1f} | {fp:.0f}"
                  + f" | {g.get('artificialNoAnomaly', {}).get('fp', 0):.0f} | {ov['tp']:.0f}", flush=True)
    doc = {"meta": {"dataset": "nab", "data_dir": str(args.data_dir), "detectors": dets, "seeds": seeds,
                    "protocol": "streaming", "thresholds": {k: {"q": 1e-3, "level": 0.98, **v} for k, v in THRESHOLDS.items()},
                    "versions": _versions(), "machine": _machine(), "wall_s": round(time.perf_counter() - t0, 1)},
           "runs": results}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
