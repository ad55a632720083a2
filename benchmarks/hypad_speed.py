"""Speed of HypAD / TadGAN on CPU: training, batched window scoring, streaming scoring.

    nice -n 10 python benchmarks/hypad_speed.py                 # default sizes, 2 threads
    python benchmarks/hypad_speed.py --points 4000 --threads 1 --quick

For a generated 1-feature series (a noisy two-tone seasonal signal, --points long) and the
default model sizes, it measures

- fit_s: training on every window of the series (what one NAB signal costs);
- windows_per_s: batched scoring of all windows of the series (the forward pass behind
  ``score_series`` and ``process_many(learn=False)``), target >= 5,000/s;
- score_series_s: the whole Orion-style series scoring (forward + KDE critic score + errors);
- score_one_us: one streaming ``score_one`` call (a single window), median over calls;
- the same in-process numbers for the Gaussian window detector as a baseline ratio.

Writes benchmarks/results/hypad_speed.json (or hypad_speed_quick.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _series(n: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(n)
    x = np.sin(2 * np.pi * t / 48) + 0.4 * np.sin(2 * np.pi * t / 7) + 0.1 * rng.normal(size=n)
    return x[:, None]


def measure(name: str, points: int, threads: int, quick: bool) -> dict:
    import numpy as np
    import torch

    from streamad.detectors import make

    torch.set_num_threads(threads)
    X = _series(points)
    params = {"threads": threads, "warmup": 200}
    if quick:
        params.update(epochs=2, pretrain_epochs=1, windows_per_epoch=256)
    det = make(name, **params)
    det.learn_many(X)
    t0 = time.perf_counter()
    det.state_dict()  # training is lazy: it runs when the model is first needed
    fit_s = time.perf_counter() - t0

    wins = det._windows(X)
    det._forward(wins[:256])  # warm the kernels
    reps, t0 = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - t0 < 2.0:
        det._forward(wins)
        reps += 1
    windows_per_s = reps * len(wins) / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    scores = det.score_series(X)
    score_series_s = time.perf_counter() - t0
    assert np.all(np.isfinite(scores))

    rows = [{"value": float(v)} for v in X[-200:, 0]]
    lat = []
    for r in rows:
        t1 = time.perf_counter()
        det.score_one(r)
        lat.append(time.perf_counter() - t1)
        det.observe_one(r)
    t0 = time.perf_counter()
    det.process_many(X, learn=False)
    stream_batch_rps = len(X) / (time.perf_counter() - t0)
    return {"detector": name, "points": points, "windows": int(len(wins)), "threads": threads,
            "params": det._params(), "fit_s": round(fit_s, 3),
            "windows_per_s": round(windows_per_s, 1), "score_series_s": round(score_series_s, 3),
            "score_one_us_median": round(1e6 * float(np.median(lat)), 1),
            "process_many_rows_per_s": round(stream_batch_rps, 1)}


def baseline(points: int) -> dict:
    from streamad.detectors import make

    X = _series(points)
    det = make("gaussian", window=100)
    t0 = time.perf_counter()
    det.learn_many(X)
    learn_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    det.process_many(X, learn=False)
    return {"detector": "gaussian", "window": 100, "learn_s": round(learn_s, 3),
            "process_many_rows_per_s": round(points / (time.perf_counter() - t0), 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--detectors", default="hypad,tadgan")
    ap.add_argument("--quick", action="store_true", help="tiny training budget (smoke run)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    import torch

    rows = [measure(n, args.points, args.threads, args.quick) for n in args.detectors.split(",")]
    base = baseline(args.points)
    for r in rows:
        r["rows_per_s_vs_gaussian"] = round(r["process_many_rows_per_s"] / base["process_many_rows_per_s"], 4)
        print(f"{r['detector']:7s} fit {r['fit_s']:6.1f}s  batched {r['windows_per_s']:9.0f} windows/s  "
              f"score_series {r['score_series_s']:5.2f}s  score_one {r['score_one_us_median']:7.0f} us  "
              f"({r['rows_per_s_vs_gaussian']:.3f}x gaussian rows/s)")
    print(f"gaussian process_many {base['process_many_rows_per_s']:.0f} rows/s")
    out = args.out or ROOT / "benchmarks" / "results" / ("hypad_speed_quick.json" if args.quick else "hypad_speed.json")
    meta = {"benchmark": "hypad_speed", "python": platform.python_version(), "torch": torch.__version__,
            "machine": platform.machine(), "cpus": __import__("os").cpu_count(),
            "target_windows_per_s": 5000}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**meta, "rows": rows, "baseline": base}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
