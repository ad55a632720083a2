"""Detectors under NAB's own protocol, with and without the anomaly likelihood, beside NAB's leaders.

Usage: .venv/bin/python benchmarks/nab_protocol.py NAB_DIR [--peers NAB_RESULTS_DIR]
       [--detectors records,contextual,gaussian,pca,hypad,aer] [--workers 2] [--seed 0]

Each detector runs once per NAB file, causally (each row scored, then learned); its raw scores
are mapped to [0, 1] both by its own map and through the anomaly likelihood, and each mapping
is scored as `streamad bench --protocol nab [--likelihood]` scores it (the same functions: one
corpus threshold per profile). Writes benchmarks/results/nab_protocol/summary.json (per run: the
corpus scores and thresholds, per category and per file) and report.md (`streamad bench report`
over the runs' result documents; with --peers, the runs without the likelihood are compared
file by file with the peers' outputs, e.g. NAB's own results of CAD OSE and ARTime). Runs whose
summary is already there are kept unless named in --detectors.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from streamad.bench import nab
from streamad.bench.datasets import load
from streamad.bench.report import write_report
from streamad.bench.runner import _clean, _machine, _versions, aggregate

DETECTORS = ["records", "contextual", "gaussian", "pca", "hypad", "aer"]


def _raw(job):
    sig, detector, seed = job
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from streamad import detectors
    from streamad.bench.runner import _signature

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    np.random.seed(seed)
    kw = {"seed": seed} if "seed" in _signature(detectors, detector) else {}
    det = detectors.make(detector, **kw)
    t0 = time.perf_counter()
    raw = det.process_many(np.asarray(sig.values, dtype=np.float64), learn=True)
    dt = time.perf_counter() - t0
    return sig.name, {lk: nab.unit_scores(det, raw, lk) for lk in (False, True)}, dt, int(det.warmup_scores_)


def run_detector(sigs, nab_dir, detector: str, workers: int, seed: int) -> list[dict]:
    t0 = time.perf_counter()
    jobs = [(s, detector, seed) for s in sigs]
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            out = pool.map(_raw, jobs, chunksize=1)
    else:
        out = [_raw(j) for j in jobs]
    wall = time.perf_counter() - t0
    docs = []
    by = {s.name: s for s in sigs}
    for lk in (False, True):
        rows = [nab.unit_row(by[name], units[lk], dt, warm) for name, units, dt, warm in out]
        extra = nab.finish(rows, sigs, detector)
        for r in rows:
            r.pop("detected", None)
        agg = aggregate(rows, nab_protocol=extra)
        docs.append(_clean({"meta": {"dataset": "nab", "data_dir": str(nab_dir), "detector": detector, "params": {},
                                     "protocol": "nab", "signals": None, "seed": seed, "likelihood": lk,
                                     "workers": workers, "versions": _versions(), "machine": _machine(),
                                     "wall_s": round(wall, 1)},
                            "signals": rows, "aggregates": agg}))
    return docs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("nab_dir")
    ap.add_argument("--peers", default=None, help="NAB results layout of other detectors (e.g. NAB's results/)")
    ap.add_argument("--detectors", default=",".join(DETECTORS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "nab_protocol")
    ap.add_argument("--runs-dir", type=Path, default=Path(tempfile.gettempdir()) / "streamad_nab_protocol",
                    help="where the runs' full result documents are kept (default: a temporary directory)")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    docs_dir = a.runs_dir  # the runs' full result documents, kept between invocations for the report
    docs_dir.mkdir(parents=True, exist_ok=True)
    sigs = load("nab", a.nab_dir)
    for det in a.detectors.split(","):
        for doc in run_detector(sigs, a.nab_dir, det, a.workers, a.seed):
            suffix = "_likelihood" if doc["meta"]["likelihood"] else ""
            (docs_dir / f"{det}{suffix}.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")
            np_ = doc["aggregates"]["overall"]["nab_protocol"]
            print(f"{det + suffix:22s} standard {np_['standard']['score']:5.1f}  low FP "
                  f"{np_['reward_low_FP_rate']['score']:5.1f}  low FN {np_['reward_low_FN_rate']['score']:5.1f}  "
                  f"({doc['meta']['wall_s']} s)", flush=True)
    docs = {p.stem: json.loads(p.read_text()) for p in sorted(docs_dir.glob("*.json"))}
    summary = {name: {"detector": d["meta"]["detector"], "likelihood": d["meta"]["likelihood"], "seed": d["meta"]["seed"],
                      "versions": d["meta"]["versions"], "machine": d["meta"]["machine"], "wall_s": d["meta"]["wall_s"],
                      "overall": d["aggregates"]["overall"]["nab_protocol"],
                      "categories": {g: v["nab_protocol"] for g, v in d["aggregates"]["groups"].items()},
                      "files": {r["signal"]: {k: r["nab"]["standard"][k] for k in ("tp", "fp", "fn")}
                                for r in d["signals"]}}
               for name, d in docs.items()}
    (a.out / "summary.json").write_text(json.dumps(summary, separators=(",", ":")) + "\n")
    plain = [str(docs_dir / f"{n}.json") for n, d in docs.items() if not d["meta"]["likelihood"]]
    with_lk = [str(docs_dir / f"{n}.json") for n, d in docs.items() if d["meta"]["likelihood"]]
    path = write_report(plain + with_lk, str(a.out), plots=0)
    if a.peers:  # the per-file comparison for the runs without the likelihood only: the report's size
        from streamad.bench.report import _load, _peers_sections

        path.write_text(path.read_text() + _peers_sections([_load(Path(f)) for f in plain], Path(a.peers)))
    print(f"wrote {path} and {a.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
