"""A control for `streamad bench --detector aer`: the same run with no network.

    python benchmarks/mean_window_control.py ../shared/data/nab --out r.json \
        --compare benchmarks/results/nab/nab_aer_orion*.json

Runs ``streamad bench --dataset nab`` (Orion's protocol, NAB's series as they are) with an
``AER`` whose reconstruction of every window is the mean of the series' windows and whose
prediction of each end is that end's mean: what an autoencoder that ignores its input would
output. Everything after the network (AER's rule, smoothing, start mask, Orion's
``find_anomalies``, the metrics) is the package's. The control trains nothing and has no seed.
It prints F1 per NAB category next to the ``aer`` runs given with ``--compare``; if the network
learnt something useful about individual windows, ``aer`` should score higher.

Results: ``benchmarks/results/hypad_nab_seeds.md`` (session 21).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

NAME = "aer-mean-window"


def _control_class():
    from hypad_rules import mean_window_outputs

    from streamad.detectors._hypad import AER

    class MeanWindowAER(AER):
        """AER with the network replaced by the training windows' mean."""

        def _train(self, wins: np.ndarray, rng: np.random.Generator) -> None:
            self._mean = wins.astype(np.float64).mean(axis=0)

        def _install(self, twin, n_at_start: int) -> None:
            super()._install(twin, n_at_start)
            self._mean = twin._mean

        def _forward(self, wins: np.ndarray, full: bool = False, chunk: int = 1024,
                     residual_only: bool = False) -> dict[str, np.ndarray]:
            out = {"critic": np.zeros(len(wins)), **mean_window_outputs(wins, self._mean)}
            if not full:
                del out["x_hat"]
            return out

    return MeanWindowAER


def _install() -> None:
    """Let ``streamad.detectors.make`` build the control under :data:`NAME` (this process only)."""
    from streamad import detectors

    make, cls = detectors.make, _control_class()

    def patched(name, **params):
        return cls(**params) if name == NAME else make(name, **params)

    detectors.make = patched


def _f1(doc: dict) -> dict[str, float]:
    return {g: v["f1"] for g, v in doc["aggregates"]["groups"].items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path, help="NAB checkout: data/<category>/*.csv and labels/combined_windows.json")
    ap.add_argument("--out", type=Path, required=True, help="result JSON (streamad bench's format)")
    ap.add_argument("--compare", nargs="*", type=Path, default=[],
                    help="streamad bench result files to print next to the control")
    args = ap.parse_args(argv)
    if not (args.data_dir / "labels" / "combined_windows.json").exists():
        print(f"error: {args.data_dir}/labels/combined_windows.json not found", file=sys.stderr)
        return 2
    for f in args.compare:
        if not f.is_file():
            print(f"error: --compare file {f} not found", file=sys.stderr)
            return 2
    _install()
    from streamad.bench.runner import run

    doc = run("nab", str(args.data_dir), NAME, workers=1, progress=False)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    rows = [(NAME, _f1(doc), doc["aggregates"]["overall"])]
    for f in args.compare:
        d = json.loads(f.read_text())
        rows.append((f.name, _f1(d), d["aggregates"]["overall"]))
    groups = sorted(g for g in rows[0][1] if g != "artificialNoAnomaly")
    print("run | " + " | ".join(groups) + " | overall F1 | NAB score")
    for label, f1, overall in rows:
        print(f"{label} | " + " | ".join(f"{f1.get(g, float('nan')):.3f}" for g in groups)
              + f" | {overall['f1']:.3f} | {overall['nab_score']['standard']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
