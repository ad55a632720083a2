"""`aer` on NAB over many seeds, alone and as seed ensembles (`streamad bench`'s protocol).

    python benchmarks/aer_seed_ensemble.py ../shared/data/nab --seeds 0-8 \
        --ensembles 0,1,2/3,4,5/6,7,8 --cache scores/ --workers 2 --out r.json

Each (signal, seed) is run exactly as ``streamad bench --dataset nab --detector aer --seed S``
runs it (``streamad.bench.runner.run_signal``: Orion's protocol, NAB's series as they are) and
its per-point scores are kept in ``--cache`` (one ``.npz`` per signal and seed; a rerun
reuses them, so an interrupted run resumes). Then every seed is scored alone, and every
ensemble: its members' scores z-scored over the series, averaged, and thresholded and
evaluated by the package's own code (Orion's ``find_anomalies``, overlapping-segment F1,
VUS-PR, NAB score). An ensemble's fit time is the sum of its members'.

It prints F1 per category for each seed, the seeds' mean and spread, and each ensemble, and
writes the aggregates (``streamad bench``'s format) to ``--out``.
Results: ``benchmarks/results/hypad_nab_seeds.md`` (session 23).
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

DETECTOR = "aer"


def _cache_file(cache: Path, sig, seed: int) -> Path:
    return cache / f"{sig.name.replace('/', '__')}__seed{seed}.npz"


def _fit_one(sig, seed: int, params: dict, path: str) -> str:
    from streamad.bench.runner import run_signal

    row = run_signal(sig, DETECTOR, params, "orion", seed)
    tmp = path + ".tmp.npz"
    np.savez(tmp, scores=row["_scores"], fit_s=row["fit_s"], detect_s=row["detect_s"])
    os.replace(tmp, path)
    return path


def zscore(s: np.ndarray) -> np.ndarray:
    sd = s.std()
    return (s - s.mean()) / sd if sd > 0 else s - s.mean()


def _summary(doc_groups: dict) -> dict[str, float]:
    return {g: v["f1"] for g, v in doc_groups.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    ap.add_argument("--seeds", default="0-8", help="seeds to run, e.g. 0-8 or 0,1,2 (default: 0-8)")
    ap.add_argument("--ensembles", default="0,1,2/3,4,5/6,7,8",
                    help="seed ensembles, '/'-separated lists of seeds (default: 0,1,2/3,4,5/6,7,8)")
    ap.add_argument("--params", default="{}", help="aer parameters as a JSON object")
    args = ap.parse_args(argv)
    if missing_labels(args.data_dir):
        return 2
    try:
        seeds = _seeds(args.seeds)
        ensembles = [_seeds(e) for e in args.ensembles.split("/") if e]
        params = json.loads(args.params)
    except (ValueError, json.JSONDecodeError) as e:
        print(f"error: bad --seeds, --ensembles or --params: {e}", file=sys.stderr)
        return 2
    missing = sorted({s for e in ensembles for s in e} - set(seeds))
    if missing:
        print(f"error: ensemble seeds {missing} are not in --seeds", file=sys.stderr)
        return 2

    from streamad.bench.datasets import load
    from streamad.bench.runner import _machine, _versions, aggregate, evaluate, orion_intervals

    sigs = load("nab", str(args.data_dir), args.signals)
    args.cache.mkdir(parents=True, exist_ok=True)
    todo = [(sig, seed) for seed in seeds for sig in sigs if not _cache_file(args.cache, sig, seed).exists()]
    t0 = time.perf_counter()
    run_all(_fit_one, [(sig, seed, params, str(_cache_file(args.cache, sig, seed))) for sig, seed in todo],
            args.workers, "fits")

    def load_seed(sig, seed):
        with np.load(_cache_file(args.cache, sig, seed)) as z:
            return z["scores"], float(z["fit_s"]), float(z["detect_s"])

    def rows_for(members: list[int]) -> list[dict]:
        rows = []
        for sig in sigs:
            parts = [load_seed(sig, s) for s in members]
            scores = parts[0][0] if len(parts) == 1 else np.mean([zscore(p[0]) for p in parts], axis=0)
            row = evaluate(sig, scores, orion_intervals(scores), fit_s=sum(p[1] for p in parts),
                           detect_s=sum(p[2] for p in parts))
            row.pop("_scores")
            rows.append(row)
        return rows

    singles = {str(s): aggregate(rows_for([s])) for s in seeds}
    ens = {",".join(map(str, e)): aggregate(rows_for(e)) for e in ensembles}
    groups = [g for g in next(iter(singles.values()))["groups"] if g != "artificialNoAnomaly"]

    def line(label, agg):
        f1 = _summary(agg["groups"])
        ov = agg["overall"]
        fp = sum(v["fp"] for v in agg["groups"].values())
        return (f"{label} | " + " | ".join(f"{f1[g]:.3f}" for g in groups)
                + f" | {ov['f1']:.3f} | {ov['nab_score']['standard']:.1f} | {fp:.0f} | {ov['fit_s']:.1f}")

    print("run | " + " | ".join(groups) + " | overall F1 | NAB | false intervals | median fit s")
    for s, agg in singles.items():
        print(line(f"seed {s}", agg))
    for label, pool_ in (("seeds", singles), ("ensembles", ens)):
        if len(pool_) > 1:
            f1s = {g: [a["groups"][g]["f1"] for a in pool_.values()] for g in groups}
            ov = [a["overall"]["f1"] for a in pool_.values()]
            print(f"{label}, mean +- std | " + " | ".join(f"{np.mean(v):.3f} +- {np.std(v):.3f}" for v in f1s.values())
                  + f" | {np.mean(ov):.3f} +- {np.std(ov):.3f} | | |")
    for e, agg in ens.items():
        print(line(f"ensemble {e}", agg))
    doc = {"meta": {"dataset": "nab", "data_dir": str(args.data_dir), "detector": DETECTOR, "params": params,
                    "protocol": "orion", "seeds": seeds, "ensembles": ensembles,
                    "ensemble_rule": "members' scores z-scored over the series, averaged",
                    "versions": _versions(), "machine": _machine(),
                    "wall_s": round(time.perf_counter() - t0, 1)},
           "seeds": singles, "ensembles": ens}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
