"""NAB's streaming protocol with the flags grouped into incidents by several gaps.

    python benchmarks/incident_gaps.py ../shared/data/nab --detectors gaussian,pca --gaps 1,10,30,100 \\
        --cache scores/ --workers 2 --out benchmarks/results/incident_gaps.json

Each (detector, signal) is scored once, exactly as ``streamad bench --dataset nab --protocol
streaming --detector D`` scores it (seed 0; the per-point scores and warm-up are cached in
``--cache`` in ``streaming_thresholds.py``'s format, so the two scripts share a cache). The
runner's ``streaming_intervals`` then thresholds the same scores with SPOT and groups the flags
with the service's incident state machine, once per gap (in records): gap 1 makes every run of
consecutive flagged points one interval, the rule of the streaming protocol before incidents.
The runner's ``evaluate``/``aggregate`` score them as a run does.

Prints, per detector and gap, overall F1, NAB score (standard), incidents, labelled windows
found, incidents per window found and false incidents per 10,000 records, and writes the
aggregates (``streamad bench``'s format) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _nab_cache import add_arguments, missing_labels, run_all  # noqa: E402
from streaming_thresholds import _cache_file, _run_one  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    ap.add_argument("--detectors", default="gaussian,pca", help="comma-separated detector names")
    ap.add_argument("--gaps", default="1,10,30,100", help="incident gaps in records, comma-separated")
    args = ap.parse_args(argv)
    if missing_labels(args.data_dir):
        return 2
    from streamad import detectors as registry
    from streamad.base import ConfigError
    from streamad.incidents import IncidentPolicy

    dets = [d.strip() for d in args.detectors.split(",") if d.strip()]
    unknown = [d for d in dets if d not in registry.REGISTRY]
    if unknown:
        print(f"error: unknown detectors {unknown}", file=sys.stderr)
        return 2
    try:
        gaps = [int(g) for g in args.gaps.split(",")]
        policies = {g: IncidentPolicy.parse(gap=g) for g in gaps}
    except (ValueError, ConfigError) as e:
        print(f"error: bad --gaps: {e}", file=sys.stderr)
        return 2

    from streamad.bench.datasets import load
    from streamad.bench.runner import (
        _clean,
        _machine,
        _versions,
        aggregate,
        evaluate,
        streaming_intervals,
    )

    sigs = load("nab", str(args.data_dir), args.signals)
    args.cache.mkdir(parents=True, exist_ok=True)
    todo = [(sig, d) for d in dets for sig in sigs if not _cache_file(args.cache, d, sig, 0).exists()]
    t0 = time.perf_counter()
    run_all(_run_one, [(sig, d, 0, str(_cache_file(args.cache, d, sig, 0))) for sig, d in todo], args.workers)

    results: dict[str, dict] = {}
    print("detector | gap | overall F1 | NAB | incidents | windows found | incidents per found | false per 10k")
    for det in dets:
        for gap, policy in policies.items():
            rows = []
            for sig in sigs:
                with np.load(_cache_file(args.cache, det, sig, 0)) as z:
                    scores, skip = z["scores"], int(z["warmup"])
                    intervals = streaming_intervals(scores, skip, ts=sig.timestamps, policy=policy)
                    row = evaluate(sig, scores, intervals, fit_s=float(z["fit_s"]), detect_s=float(z["detect_s"]),
                                   skip=skip)
                row.pop("_scores")
                rows.append(row)
            agg = aggregate(rows)
            results[f"{det}/gap{gap}"] = agg
            o = agg["overall"]
            print(f"{det} | {gap} | {o['f1']:.3f} | {o['nab_score']['standard']:.1f} | {o['incidents']} | "
                  f"{o['tp']:.0f} | {o['incidents_per_found']:.2f} | {o['false_per_10k']:.2f}", flush=True)
    doc = {"meta": {"dataset": "nab", "data_dir": str(args.data_dir), "detectors": dets, "gaps": gaps, "seed": 0,
                    "protocol": "streaming", "threshold": {"q": 1e-3, "level": 0.98},
                    "versions": _versions(), "machine": _machine(), "wall_s": round(time.perf_counter() - t0, 1)},
           "runs": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_clean(doc), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
