"""What each of HypAD's CPU shortcuts costs in accuracy and buys in time, on NAB.

    python benchmarks/hypad_shortcuts.py /path/to/NAB --out-dir benchmarks/results/hypad_shortcuts

Runs ``benchmarks/hypad_nab.py`` (Orion's protocol and per-category pipelines) once per
variant: the defaults, then each shortcut undone on its own — Orion's layer sizes (encoder
BiLSTM 100, decoder BiLSTM 64 instead of 24/16), five critic steps per generator step (Orion's
setting) instead of one, and four times as many windows per epoch. A variant whose result file
exists is not run again. Writes ``summary.md`` / ``summary.json`` in ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {  # name -> (what it changes, HypAD parameters)
    "default": ("streamad's defaults", {}),
    "critic5": ("5 critic steps per generator step (Orion)", {"critic_iterations": 5}),
    "wpe8192": ("4x the windows per epoch (8,192)", {"windows_per_epoch": 8192}),
    "orion_sizes": ("Orion's LSTM sizes (encoder 100, decoder 64)", {"encoder_hidden": 100, "decoder_hidden": 64}),
}
DETECTORS = ("hypad", "hypad-tadgan")


def run(data_dir: Path, out_dir: Path, categories: str, workers: int) -> None:
    for name, (_, params) in VARIANTS.items():
        out = out_dir / f"{name}.json"
        if out.exists():
            continue
        cmd = [sys.executable, str(ROOT / "benchmarks" / "hypad_nab.py"), str(data_dir), "--categories", categories,
               "--detectors", ",".join(DETECTORS), "--threads", "1", "--workers", str(workers),
               "--params", json.dumps(params), "--out", str(out)]
        print(f"running {name}", file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def summary(out_dir: Path) -> tuple[dict, str]:
    rows, cats = {}, []
    for name, (what, params) in VARIANTS.items():
        path = out_dir / f"{name}.json"
        if not path.exists():
            continue
        doc = json.loads(path.read_text())
        table = doc["table"]
        cats = sorted(table["hypad"])
        fits = [r["fit_s"] for r in doc["rows"] if r["detector"] == "hypad"]
        rows[name] = {"what": what, "params": params, "median_fit_s": float(np.median(fits)),
                      "f1": {d: {c: table[d][c]["f1"] for c in cats} for d in DETECTORS},
                      "fp": {d: sum(table[d][c]["fp"] for c in cats) for d in DETECTORS},
                      "vus_pr": {c: table["hypad"][c]["vus_pr"] for c in cats}}
    lines = ["# HypAD's CPU shortcuts: accuracy cost and time", "",
             "NAB, Orion's protocol and per-category pipelines (`benchmarks/hypad_nab.py`), one model per "
             "signal, 2 workers x 1 torch thread. F1 is overlapping-segment, micro-averaged per category; "
             "`hypad` is HypAD's scoring rule, `tadgan` TadGAN's critic x DTW rule on the same model.", "",
             "| variant | median fit s | " + " | ".join(f"hypad {c}" for c in cats) + " | hypad false intervals | "
             + " | ".join(f"tadgan {c}" for c in cats) + " | hypad VUS-PR (mean) |",
             "|---|---:|" + "---:|" * (2 * len(cats) + 2)]
    for r in rows.values():
        vus = [v for v in r["vus_pr"].values() if v is not None]
        lines.append(f"| {r['what']} | {r['median_fit_s']:.1f} | "
                     + " | ".join(f"{r['f1']['hypad'][c]:.3f}" for c in cats)
                     + f" | {r['fp']['hypad']} | " + " | ".join(f"{r['f1']['hypad-tadgan'][c]:.3f}" for c in cats)
                     + f" | {sum(vus) / len(vus):.3f} |")
    return rows, "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path, help="NAB checkout: data/<category>/*.csv and labels/combined_windows.json")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results" / "hypad_shortcuts")
    ap.add_argument("--categories", default="artificialWithAnomaly,realAdExchange,realKnownCause")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--summary-only", action="store_true", help="only summarise the result files there")
    args = ap.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        run(args.data_dir, args.out_dir, args.categories, args.workers)
    rows, md = summary(args.out_dir)
    (args.out_dir / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out_dir / "summary.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
