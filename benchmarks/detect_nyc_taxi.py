"""`streamad detect` on NAB's nyc_taxi: labelled windows hit and false intervals per detector.

Usage: .venv/bin/python benchmarks/detect_nyc_taxi.py NAB_DIR  (e.g. ../shared/data/nab)

For each available baseline detector (default parameters, nothing tuned on labels) and each
threshold rule of `streamad detect`, counts how many of the 5 labelled windows in
labels/combined_windows.json are hit by at least one detected interval, how many detected
intervals hit no window (false intervals), and the wall time of the whole detect run. With
spot and quantile the intervals are the incidents `streamad serve` would publish (the
service's default incident gap); orion's are its own.
Writes benchmarks/results/detect_nyc_taxi.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from streamad._detect import detect, read_csv

SIGNAL = "realKnownCause/nyc_taxi.csv"
DETECTORS = ["zscore", "gaussian", "hst"]
THRESHOLDS = ["spot", "quantile", "orion"]


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("nab_dir", type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = ap.parse_args(argv)
    windows = [(_epoch(s), _epoch(e)) for s, e in
               json.loads((a.nab_dir / "labels" / "combined_windows.json").read_text())[SIGNAL]]
    series = read_csv(a.nab_dir / "data" / SIGNAL)
    rows = []
    for det in DETECTORS:
        for th in THRESHOLDS:
            t0 = time.perf_counter()
            try:
                res = detect(series, det, {}, th)
            except Exception as e:  # a detector not built yet must not hide the others
                print(f"{det}/{th}: skipped ({e})", file=sys.stderr)
                continue
            wall = time.perf_counter() - t0
            iv = [(series.ts[s], series.ts[e]) for s, e, _ in res["intervals"]]
            hit = [any(s <= we and e >= ws for s, e in iv) for ws, we in windows]
            false = sum(not any(s <= we and e >= ws for ws, we in windows) for s, e in iv)
            rows.append({"detector": det, "threshold": th, "windows_hit": sum(hit), "windows": len(windows),
                         "intervals": len(iv), "false_intervals": false, "runtime_s": round(wall, 2)})
            print(f"{det:9s} {th:9s} windows hit {sum(hit)}/{len(windows)}  intervals {len(iv):3d}  "
                  f"false {false:3d}  {wall:.2f} s", flush=True)
    meta = {"dataset": "NAB", "signal": SIGNAL, "n_points": len(series.ts), "params": "detector defaults",
            "python": platform.python_version(), "machine": platform.machine(),
            "date": datetime.now(UTC).isoformat(timespec="seconds")}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "detect_nyc_taxi.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    md = ["# streamad detect on NAB nyc_taxi", "",
          f"{len(series.ts)} points, {len(windows)} labelled windows; detector defaults, no label tuning. "
          "Command: `.venv/bin/python benchmarks/detect_nyc_taxi.py ../shared/data/nab`. With spot and quantile "
          "the intervals are the incidents `streamad serve` would publish (gap 100 records); orion's are its own.",
          "",
          "| detector | threshold | windows hit | intervals | false intervals | runtime (s) |",
          "|---|---|---|---|---|---|"]
    md += [f"| {r['detector']} | {r['threshold']} | {r['windows_hit']}/{r['windows']} | {r['intervals']} | "
           f"{r['false_intervals']} | {r['runtime_s']} |" for r in rows]
    (a.out / "detect_nyc_taxi.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
