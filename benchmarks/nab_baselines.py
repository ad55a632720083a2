"""Run the baseline detectors on all 58 NAB files with both protocols and write the report.

Usage: .venv/bin/python benchmarks/nab_baselines.py NAB_DIR  (e.g. ../shared/data/nab)

Baselines: every non-deep registered detector (hypad, tadgan and aer run through `streamad
bench` itself, node-ae and fedpca in their own evaluations: benchmarks/README.md). Writes
benchmarks/results/nab/nab_<detector>_<protocol>.json and benchmarks/results/nab/report.md
(with a few plots). Equivalent to running `streamad bench` once per detector and protocol and
`streamad bench report` over the results.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streamad.bench.report import write_report
from streamad.bench.runner import run

DETECTORS = ["zscore", "gaussian", "hst", "pca"]
PROTOCOLS = ["orion", "streaming"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("nab_dir")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "nab")
    ap.add_argument("--detectors", default=",".join(DETECTORS))
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    files = []
    for det in a.detectors.split(","):
        for protocol in PROTOCOLS:
            res = run("nab", a.nab_dir, det, protocol=protocol, progress=sys.stderr.isatty())
            path = a.out / f"nab_{det}_{protocol}.json"
            path.write_text(json.dumps(res, indent=1) + "\n")
            o = res["aggregates"]["overall"]
            print(f"{det:9s} {protocol:9s} F1 {o['f1']:.3f} P {o['precision']:.3f} R {o['recall']:.3f} "
                  f"VUS-PR {o['vus_pr']:.3f} NAB {o['nab_score']['standard']:.1f} wall {res['meta']['wall_s']} s",
                  flush=True)
            files.append(str(path))
    print(f"wrote {write_report(files, str(a.out), plots=1)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
