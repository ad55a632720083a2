"""HPC node fleet: per-node vs shared autoencoders vs Gaussian vs PCA residual, and AE speed.

    nice -n 10 python benchmarks/hpc_sim.py           # the default fleet (16 nodes, 8 weeks)
    python benchmarks/hpc_sim.py --quick              # 4 nodes, 2 weeks, 30 epochs
    python benchmarks/hpc_sim.py --set epochs=50 --set seed=1

Runs :func:`streamad.bench.hpc.run_hpc_sim` (protocol in its docstring) and the speed
targets of the node autoencoder: training one model on 10,000 samples x 40 metrics
(``epochs`` passes, target under 20 s) and batched scoring (target 20,000 samples/s).
Writes benchmarks/results/hpc_sim[_quick].json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def speed(epochs: int) -> dict:
    import numpy as np

    from streamad.detectors import NodeAutoencoder
    from streamad.synthetic import node_fleet

    fleet = node_fleet(n_nodes=1, n_metrics=40, days=40, seed=9, faults=())
    X = fleet.values["node-00"][~fleet.idle["node-00"]]
    X = np.resize(X, (10_000, X.shape[1]))
    det = NodeAutoencoder(epochs=epochs)
    t = time.perf_counter()
    det.fit(X)
    fit_s = time.perf_counter() - t
    det.score_many(X[:1000])
    t = time.perf_counter()
    for _ in range(5):
        det.score_many(X)
    score_rate = 5 * len(X) / (time.perf_counter() - t)
    x = dict(zip(det.features_, X[0].tolist(), strict=True))
    t = time.perf_counter()
    for _ in range(2000):
        det.score_one(x)
    one_rate = 2000 / (time.perf_counter() - t)
    return {"train_samples": len(X), "metrics": X.shape[1], "epochs": epochs,
            "fit_s": round(fit_s, 2), "fit_target_s": 20.0,
            "score_many_per_s": round(score_rate), "score_many_target_per_s": 20_000,
            "score_one_per_s": round(one_rate)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small fleet for a smoke run")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a parameter of run_hpc_sim (JSON value)")
    ap.add_argument("--detectors", default="node-ae,node-ae-shared,gaussian,pca")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", help="result file stem (default hpc_sim or hpc_sim_quick)")
    args = ap.parse_args(argv)

    import torch

    from streamad.bench.hpc import run_hpc_sim, to_markdown

    torch.set_num_threads(1)
    params: dict = {"n_nodes": 4, "days": 14, "epochs": 30} if args.quick else {}
    for s in args.set:
        name, _, value = s.partition("=")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    t = time.perf_counter()
    result = run_hpc_sim(params, detectors=args.detectors.split(","))
    result["wall_s"] = round(time.perf_counter() - t, 1)
    result["speed"] = speed(int(result["params"]["epochs"]))
    stem = args.name or ("hpc_sim_quick" if args.quick else "hpc_sim")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    sp = result["speed"]
    md = to_markdown(result) + (
        f"\nSpeed (one node model, {sp['train_samples']} samples x {sp['metrics']} metrics, "
        f"{sp['epochs']} epochs, one thread): fit {sp['fit_s']} s (target < 20 s); "
        f"score_many {sp['score_many_per_s']:,} samples/s (target >= 20,000); "
        f"score_one {sp['score_one_per_s']:,} samples/s.\n\n"
        f"Command: `nice -n 10 python benchmarks/hpc_sim.py"
        f"{' --quick' if args.quick else ''}{f' --name {args.name}' if args.name else ''}"
        + "".join(f" --set {s}" for s in args.set) + f"` ({result['wall_s']} s).\n")
    (args.out / f"{stem}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
