"""NAB's streaming protocol with the flags grouped into incidents by several gaps.

    python benchmarks/incident_gaps.py NAB_DIR --detectors gaussian,pca,spread --gaps 1,5,10,20,30,50,100,200 \
        --cache scores/ --workers 2 --out benchmarks/results/incident_gaps.json

Each (detector, signal) is scored once, exactly as ``streamad bench --dataset nab --protocol
streaming --detector D`` scores it (``streamad.bench.runner``, seed 0, ``--workers`` signals at a
time); its per-point scores and warm-up are kept in ``--cache`` (one ``.npz`` each; a rerun
reuses them). The runner's ``streaming_intervals`` then thresholds the same scores with SPOT
and groups the flags with the service's incident state machine, once per gap (in records):
gap 1 makes every run of consecutive flagged points one interval, the rule of the streaming
protocol before incidents. The runner's ``evaluate``/``aggregate`` score them as a run does.

Prints, per detector and gap, overall F1, NAB score (standard), incidents, labelled windows
found, incidents per window found and false incidents per 10,000 records, and writes the
aggregates (``streamad bench``'s format, per NAB category and overall) to ``--out``.
Results: ``benchmarks/results/incident_gaps.json``, discussed in ``docs/incidents.md``.
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


def _cache_file(cache: Path, detector: str, sig) -> Path:
    return cache / f"{detector}__{sig.name.replace('/', '__')}__seed0.npz"


def _score_missing(sigs, dets: list[str], cache: Path, workers: int) -> None:
    """Score every (detector, signal) that has no cache file yet."""
    from streamad.bench.runner import _pooled

    todo = [(sig, det) for det in dets for sig in sigs if not _cache_file(cache, det, sig).exists()]
    if not todo:
        return
    t0 = time.perf_counter()

    class Progress:
        done = 0

        def update(self) -> None:
            self.done += 1
            if self.done % 29 == 0 or self.done == len(todo):
                print(f"{self.done}/{len(todo)} signals scored, {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    jobs = [(sig, det, {}, "streaming", 0) for sig, det in todo]
    rows = _pooled(jobs, workers, None, Progress())
    for (sig, det), row in zip(todo, rows, strict=True):
        if "error" in row:
            raise SystemExit(f"error: {det} on {sig.name}: {row['error']}")
        np.savez(_cache_file(cache, det, sig), scores=row["_scores"], warmup=row["warmup"], fit_s=row["fit_s"],
                 detect_s=row["detect_s"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path, help="NAB checkout: data/<category>/*.csv and labels/combined_windows.json")
    ap.add_argument("--detectors", default="gaussian,pca,spread", help="comma-separated detector names")
    ap.add_argument("--gaps", default="1,5,10,20,30,50,100,200", help="incident gaps in records, comma-separated")
    ap.add_argument("--cache", type=Path, required=True, help="directory for the per-signal scores")
    ap.add_argument("--signals", default=None, help="only signals matching these comma-separated glob patterns")
    ap.add_argument("--workers", type=int, default=2, help="signals scored in parallel (default: 2)")
    ap.add_argument("--out", type=Path, required=True, help="result JSON")
    args = ap.parse_args(argv)
    from streamad import detectors as registry
    from streamad.base import ConfigError, StreamadError
    from streamad.bench.datasets import load
    from streamad.incidents import IncidentPolicy

    dets = [d.strip() for d in args.detectors.split(",") if d.strip()]
    unknown = [d for d in dets if d not in registry.REGISTRY]
    if unknown:
        print(f"error: unknown detectors {unknown}", file=sys.stderr)
        return 2
    try:
        sigs = load("nab", str(args.data_dir), args.signals)
    except StreamadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        gaps = [int(g) for g in args.gaps.split(",")]
        policies = {g: IncidentPolicy.parse(gap=g) for g in gaps}
    except (ValueError, ConfigError) as e:
        print(f"error: bad --gaps: {e}", file=sys.stderr)
        return 2

    from streamad.bench.runner import (
        _clean,
        _machine,
        _versions,
        aggregate,
        evaluate,
        streaming_intervals,
    )

    t0 = time.perf_counter()
    args.cache.mkdir(parents=True, exist_ok=True)
    _score_missing(sigs, dets, args.cache, max(1, args.workers))

    results: dict[str, dict] = {}
    print("detector | gap | overall F1 | NAB | incidents | windows found | incidents per found | false per 10k")
    for det in dets:
        for gap, policy in policies.items():
            rows = []
            for sig in sigs:
                with np.load(_cache_file(args.cache, det, sig)) as z:
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
