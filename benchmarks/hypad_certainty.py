"""Does HypAD's certainty carry information? Its spread within each NAB signal.

    python benchmarks/hypad_certainty.py /work/shared/data/nab \\
        --categories realAdExchange,realAWSCloudwatch --out benchmarks/results/hypad_certainty.json

HypAD multiplies its anomaly score by the certainty u = ||h(x_hat)||, the norm of the
reconstructed window's embedding on the Poincare ball. That can only change which points are
anomalous if u varies between the windows of a signal. Per signal (Orion's aggregation, as in
``hypad_nab.py``) this trains HypAD with the given params, then reports over all windows of the
signal: u's minimum, mean and maximum, its coefficient of variation (std / mean), and, for
comparison, the coefficient of variation of the hyperbolic reconstruction distance (which does
separate windows).
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


def signal_stats(job) -> dict:
    path, params = job
    import hypad_nab as H
    import torch

    from streamad.detectors import make

    torch.set_num_threads(1)
    index, values = H.aggregate(*H.load_signal(path), H.ORION_SETUP.get(path.parent.name, (600, "mult"))[0])
    X = values[:, None]
    t0 = time.perf_counter()
    det = make("hypad", threads=1, **params)
    det.learn_many(X)
    det.state_dict()  # trains
    row = {"category": path.parent.name, "signal": path.stem, "n_aggregated": len(X),
           "fit_s": round(time.perf_counter() - t0, 1)}
    if det._nets is None:  # shorter than the warm-up: no model
        return {**row, "trained": False}
    o = det._forward(det._windows(det._mat(X)))
    u, rec = o["certainty"], o["rec"]
    return {**row, "trained": True, "u_min": float(u.min()), "u_mean": float(u.mean()), "u_max": float(u.max()),
            "u_cv": float(u.std() / u.mean()), "rec_cv": float(rec.std() / rec.mean())}


def markdown(rows: list[dict], params: dict) -> str:
    ok = [r for r in rows if r["trained"]]
    cv = np.array([r["u_cv"] for r in ok])
    lines = ["# HypAD's certainty within each signal\n",
             f"Params: `{json.dumps(params)}`. u = ||h(x_hat)|| over all windows of a signal; cv = std / mean.\n",
             f"{len(ok)} signals with a model: u's cv median {np.median(cv):.1e}, 90th percentile "
             f"{np.quantile(cv, .9):.1e}, max {cv.max():.1e}; u's mean between {min(r['u_mean'] for r in ok):.4f} and "
             f"{max(r['u_mean'] for r in ok):.4f} (the ball's radius is 1). The reconstruction distance's cv: median "
             f"{np.median([r['rec_cv'] for r in ok]):.2f}.\n",
             "| category | signal | u min | u mean | u max | u cv | rec cv |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in ok:
        lines.append(f"| {r['category']} | {r['signal']} | {r['u_min']:.4f} | {r['u_mean']:.4f} | {r['u_max']:.4f} | "
                     f"{r['u_cv']:.1e} | {r['rec_cv']:.2f} |")
    for r in rows:
        if not r["trained"]:
            lines.append(f"| {r['category']} | {r['signal']} | (too short to train: {r['n_aggregated']} points) | | | | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path, help="NAB checkout: data/<category>/*.csv")
    ap.add_argument("--categories", default="realAdExchange,realAWSCloudwatch")
    ap.add_argument("--params", default="{}", help="JSON params for HypAD")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hypad_certainty.json")
    args = ap.parse_args(argv)
    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as e:
        print(f"error: --params is not JSON: {e}", file=sys.stderr)
        return 2
    files = [f for c in args.categories.split(",") for f in sorted((args.data_dir / "data" / c).glob("*.csv"))]
    if not files:
        print(f"error: no NAB signals under {args.data_dir / 'data'} for {args.categories}", file=sys.stderr)
        return 2
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(args.workers) as pool:
        rows = []
        for r in pool.imap(signal_stats, [(f, params) for f in files]):
            rows.append(r)
            print(f"{r['category']}/{r['signal']}: " + (f"u cv {r['u_cv']:.1e} rec cv {r['rec_cv']:.2f}"
                                                       if r["trained"] else "no model"), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "hypad_certainty", "params": params, "rows": rows}, indent=2) + "\n")
    md = markdown(rows, params)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
