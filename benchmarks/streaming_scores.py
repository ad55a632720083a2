"""The deep detectors' streaming scores on NAB, and the parts they are made of.

    python benchmarks/streaming_scores.py ../shared/data/nab --detector hypad --workers 2 --out r.json

In a stream, ``hypad``, ``tadgan`` and ``aer`` score the newest point from the window that
ends at it, each part normalised against the training windows (there is no series yet to
normalise over). Since session 24 all three score the window's residual (``resid``); before,
each used its batch rule's parts. The parts:

- ``cs``: the critic's distance from its training windows' interquartile mean, in their
  standard deviations, plus 1 (TadGAN's critic score, per window);
- ``rec``: the Poincare distance between the mapped window and reconstruction (HypAD);
- ``u``: HypAD's certainty, the mapped reconstruction's norm;
- ``last``: the newest point's reconstruction (``aer``: forward prediction) error;
- ``resid``: the window's residual norm (``aer``: over its inner points), the window-level
  twin of ``last``.

Every part but ``u`` is z-scored against the training windows and floored at 1
(``zscore_positive``). This runs every NAB signal as ``streamad bench --protocol streaming``
does (prequential, trained once after the warm-up, SPOT on the scores after the warm-up; the
package's streaming rule, the first of each detector's rules, is checked to equal its row)
and scores the same model's outputs with each rule of ``RULES[detector]``. Everything after
the scores (SPOT, the metrics) is the runner's. Prints F1 per NAB category, overall F1, NAB
score and false intervals per rule. Results: ``benchmarks/results/hypad_nab_seeds.md`` (session 24;
they predate SPOT's empirical floor, session 25: the runner's SPOT is now the floored one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _nab_cache import init_worker, missing_labels  # noqa: E402

# rule name -> the parts multiplied ("+" in a name: their mean). The first is the package's
# streaming rule since session 24; the second was the package's before it.
RULES = {
    "hypad": ("resid", "cs*rec*u", "rec*u", "rec", "cs", "cs*resid", "resid*u"),
    "tadgan": ("resid", "cs*last", "last", "cs", "cs*resid"),
    "aer": ("resid", "resid*last", "last", "resid+last"),
}


def parts(det, X: np.ndarray) -> dict[str, np.ndarray]:
    """Every part of a trained detector's streaming score for the windows ending at
    t = window - 1 .. n - 1 of X, each normalised by the windows it was trained on, as the
    package normalises the residual (and, before session 24, normalised every part)."""
    from streamad.detectors import _hypad_scores as sc
    from streamad.detectors._hypad import _spread

    o = det._forward(det._windows(X), full=True)
    train = det._forward(det._windows(X[:det._n_fit]))  # the windows it was trained on

    def z(name: str) -> np.ndarray:
        t = train[name]
        return sc.zscore_positive(o[name], float(t.mean()), _spread(t))

    c = train["critic"]
    lo, hi = np.quantile(c, [0.25, 0.75])
    centre = float(c[(c >= lo) & (c <= hi)].mean())  # TadGAN's critic score: the interquartile mean
    got = {"cs": np.abs(o["critic"] - centre) / _spread(c) + 1.0,
           "last": z("last"), "resid": z("inner")}
    if "rec" in o:
        got["rec"], got["u"] = z("rec"), o["certainty"]
    return got


def rule_scores(p: dict[str, np.ndarray], rule: str) -> np.ndarray:
    if "+" in rule:
        names = rule.split("+")
        return sum(p[k] for k in names) / len(names)
    out = np.ones_like(p["cs"])
    for k in rule.split("*"):
        out = out * p[k]
    return out


def _one(sig, detector: str, seed: int) -> dict:
    import torch

    from streamad.bench.runner import _warmup, evaluate, streaming_intervals
    from streamad.detectors import make

    torch.manual_seed(seed)
    np.random.seed(seed)
    det = make(detector, seed=seed)
    X = np.asarray(sig.values, dtype=np.float64)
    n = len(X)
    packaged = det.process_many(X)  # the package's streaming scores, and it trains the model
    skip = min(n, max(_warmup(det, n), det.warmup_scores_))
    w = int(det.window)
    p = parts(det, X) if det.fitted_ else None
    rows = {}
    for k, rule in enumerate(RULES[detector]):
        s = np.zeros(n)
        if p is not None:
            s[w - 1:] = rule_scores(p, rule)
        if k == 0:  # the same model and rule as the package's streaming path
            assert np.allclose(s[skip:], packaged[skip:], rtol=1e-3, atol=1e-6), sig.name
        row = evaluate(sig, s, streaming_intervals(s, skip), skip=skip)
        row.pop("_scores")
        rows[rule] = row
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path, help="NAB checkout: data/<category>/*.csv and labels/combined_windows.json")
    ap.add_argument("--detector", choices=sorted(RULES), default="hypad")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--signals", default=None, help="only signals matching these comma-separated glob patterns")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if missing_labels(args.data_dir):
        return 2
    import multiprocessing

    from streamad.bench.datasets import load
    from streamad.bench.runner import _machine, _versions, aggregate

    sigs = load("nab", str(args.data_dir), args.signals)
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    rules = RULES[args.detector]
    with ProcessPoolExecutor(args.workers, initializer=init_worker, initargs=(threads,),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_one, sigs, [args.detector] * len(sigs), [args.seed] * len(sigs)))
    aggs = {rule: aggregate([r[rule] for r in results]) for rule in rules}
    groups = [g for g in aggs[rules[0]]["groups"] if g != "artificialNoAnomaly"]
    print("rule | " + " | ".join(groups) + " | overall F1 | NAB | found | false intervals")
    for rule, a in aggs.items():
        tp = sum(v["tp"] for v in a["groups"].values())
        fp = sum(v["fp"] for v in a["groups"].values())
        print(f"{rule} | " + " | ".join(f"{a['groups'][g]['f1']:.3f}" for g in groups)
              + f" | {a['overall']['f1']:.3f} | {a['overall']['nab_score']['standard']:.1f} | {tp:.0f} | {fp:.0f}")
    args.out.write_text(json.dumps({"meta": {"dataset": "nab", "data_dir": str(args.data_dir),
                                             "detector": args.detector, "protocol": "streaming",
                                             "seed": args.seed, "rules": list(rules), "packaged_rule": rules[0],
                                             "versions": _versions(), "machine": _machine()},
                                    "aggregates": aggs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
