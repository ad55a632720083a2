"""Memory and throughput of per-key detectors as the number of keys and the window grow.

    python benchmarks/scale.py            # keys 1k/10k/100k, windows 10..1000
    python benchmarks/scale.py --quick    # a smaller grid for a smoke run

Each grid point runs in a fresh subprocess: it builds one detector per key, fills every
window (``learn_many`` with window + 50 records per key), then measures

- memory per key: growth of the process's resident memory divided by the number of keys
  (what the service actually pays, Python object overhead included), and the size of one
  key's serialised state (what a checkpoint pays);
- records/s of the per-record path (``score_one`` + ``learn_one``) over 100,000 records
  drawn from all keys at random, so a growing key count also shows cache effects.

Writes benchmarks/results/scale[_quick].json, .md and two PNG plots.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_bytes() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def point(detector: str, keys: int, window: int, records: int) -> dict:
    import gc

    import numpy as np

    from streamad import _state
    from streamad.detectors import make

    params = {"window": window} if detector != "hst" else {"window": 1, "params": {"window_size": window}}
    rng = np.random.default_rng(0)
    fill = rng.normal(size=(window + 50, 1))
    warm = make(detector, **params)  # imports and first-use allocations are not per-key costs
    warm.learn_many(fill)
    warm.state_dict()
    gc.collect()
    before = _rss_bytes()
    dets = {}
    for k in range(keys):
        d = make(detector, **params)
        d.learn_many(fill)
        dets[f"k{k}"] = d
    gc.collect()
    per_key = (_rss_bytes() - before) / keys
    state_bytes = len(_state.dumps(dets["k0"].state_dict()))
    names = [f"k{i}" for i in rng.integers(0, keys, size=records)]
    vals = rng.normal(size=records).tolist()
    t0 = time.perf_counter()
    for k, v in zip(names, vals, strict=True):
        d = dets[k]
        x = {"value": v}
        d.score_one(x)
        d.learn_one(x)
    secs = time.perf_counter() - t0
    return {"detector": detector, "keys": keys, "window": window, "bytes_per_key": per_key,
            "state_bytes": state_bytes, "records": records, "rps": records / secs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--point", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.point:
        d, k, w, r = args.point
        print(json.dumps(point(d, int(k), int(w), int(r))))
        return
    if args.quick:
        grid_keys, grid_windows, recs = [100, 1000], [10, 100], 20_000
    else:
        grid_keys, grid_windows, recs = [1_000, 10_000, 100_000], [10, 30, 100, 300, 1000], 100_000
    jobs = [("gaussian", k, 100) for k in grid_keys] + [("zscore", k, 100) for k in grid_keys]
    jobs += [(d, grid_keys[0], w) for d in ("gaussian", "zscore") for w in grid_windows]
    jobs += [("hst", grid_keys[0], 250)]
    rows, seen = [], set()
    for job in jobs:
        if job in seen:
            continue
        seen.add(job)
        cmd = [sys.executable, __file__, "--point", *map(str, job), str(recs)]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
        if out.returncode != 0:
            row = {"detector": job[0], "keys": job[1], "window": job[2], "error": out.stderr.strip()[-300:]}
        else:
            row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    res_dir = ROOT / "benchmarks" / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    stem = "scale_quick" if args.quick else "scale"
    (res_dir / f"{stem}.json").write_text(json.dumps({"benchmark": "scale", "rows": rows}, indent=2))
    lines = ["| detector | keys | window | memory per key (KB) | state per key (KB) | records/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['detector']} | {r['keys']} | {r['window']} | failed | | |")
        else:
            lines.append(f"| {r['detector']} | {r['keys']:,} | {r['window']} | {r['bytes_per_key'] / 1024:.1f} | "
                         f"{r['state_bytes'] / 1024:.1f} | {r['rps']:,.0f} |")
    (res_dir / f"{stem}.md").write_text("# Scale: memory and throughput per key\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    _plots(rows, res_dir, stem)


def _plots(rows, res_dir: Path, stem: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for det in ("gaussian", "zscore"):
        pts = sorted((r["window"], r["bytes_per_key"] / 1024) for r in ok
                     if r["detector"] == det and r["keys"] == min(x["keys"] for x in ok))
        if pts:
            ax[0].plot(*zip(*pts, strict=True), marker="o", label=det)
        pts = sorted((r["keys"], r["rps"]) for r in ok if r["detector"] == det and r["window"] == 100)
        if pts:
            ax[1].plot(*zip(*pts, strict=True), marker="o", label=det)
    ax[0].set(xscale="log", yscale="log", xlabel="window (points)", ylabel="memory per key (KB)",
              title="Memory per key vs window")
    ax[1].set(xscale="log", xlabel="keys", ylabel="records/s (per-record path)", title="Throughput vs keys (window 100)")
    for a in ax:
        a.grid(True, alpha=0.3)
        a.legend()
    fig.tight_layout()
    fig.savefig(res_dir / f"{stem}.png", dpi=110)


if __name__ == "__main__":
    main()
