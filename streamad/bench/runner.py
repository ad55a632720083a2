"""`streamad bench`: run a detector over a benchmark data set and score it.

Protocols
---------
``orion``   as Orion's benchmark: the detector learns the training part (NASA) or the whole
            signal (NAB, Yahoo, CSV), then scores the signal; detectors with a series-level
            path (``score_series``, e.g. HypAD / TadGAN) use it, online detectors score
            prequentially from the state they learned. Anomalous intervals come from Orion's
            ``find_anomalies`` on the score series. A detector that trains lazily (HypAD
            trains when first asked for scores) reports its training time in ``detect_s``.
``streaming`` no labels, no second pass: the detector learns and scores online from the first
            point; a warm-up prefix (twice the detector's window, at least 50 points, at most
            10% of the signal) is never flagged nor counted in the threshold-free metrics; SPOT
            thresholds the scores (as ``streamad detect``).

Per signal: tp / fp / fn (Orion's overlapping-segment rule), precision / recall / F1, AUC-PR,
VUS-PR, the NAB score when the data set has NAB windows (one detection per detected interval,
at its first point), fit_s / detect_s. Data sets are micro-averaged per group (NAB category,
Yahoo A1-A4, NASA spacecraft) and overall; a signal that fails or exceeds ``--time-limit`` is
recorded with its error and left out of the aggregates.

Other data sets are run by their own modules through :data:`EXTERNAL`
(``streamad bench --dataset hpc-sim|iot23|nsl-kdd``).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..base import ConfigError, StreamadError, parse_options, parse_params, warmup_length
from . import metrics as M
from .datasets import Signal, load

__all__ = ["EXTERNAL", "aggregate", "evaluate", "orion_intervals", "run", "run_signal"]

#: Data sets evaluated by their own modules: ``module:function(args)``.
EXTERNAL = {"hpc-sim": "streamad.bench.hpc:bench_main", "iot23": "streamad.bench.fed:bench_main",
            "nsl-kdd": "streamad.bench.fed:bench_main"}
PROTOCOLS = ("orion", "streaming", "nab")


def run_signal(sig: Signal, detector: str, params: dict[str, Any], protocol: str, seed: int = 0,
               likelihood: bool = False) -> dict[str, Any]:
    """Fit, score, threshold and evaluate one signal; returns its result row (with the scores
    and detected intervals under private keys for plots). Under the NAB protocol the row holds
    the per-row scores in [0, 1] (``_unit``); the corpus threshold is chosen over all rows
    afterwards (:func:`streamad.bench.nab.finish`)."""
    from .. import detectors

    try:
        import torch
        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    np.random.seed(seed)
    kwargs = dict(params)
    if "seed" in _signature(detectors, detector) and "seed" not in kwargs:
        kwargs["seed"] = seed
    det = detectors.make(detector, **kwargs)
    X = np.asarray(sig.values, dtype=np.float64)
    n = len(X)
    fit_s = 0.0
    skip = 0
    t0 = time.perf_counter()
    if protocol == "orion":
        train = sig.train if sig.train is not None else X
        # a whole-series detector trains now; an online one learns the training part as a
        # stream, then scores the signal prequentially
        (det.fit if det.whole_series else det.learn_many)(train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = np.asarray(det.score_series(X), dtype=np.float64)
        scores = np.where(np.isfinite(scores), scores, 0.0)
        intervals = orion_intervals(scores)
    elif protocol == "nab":
        from . import nab

        return nab.score_signal(sig, det, likelihood=likelihood)
    elif protocol == "streaming":
        scores = np.asarray(det.process_many(X, learn=True), dtype=np.float64)
        scores = np.where(np.isfinite(scores), scores, 0.0)
        skip = warmup_length(det, n)
        from ..thresholds import resolve

        intervals = streaming_intervals(scores, skip, ts=sig.timestamps, threshold=resolve("auto", {}, detector))
    else:
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    detect_s = time.perf_counter() - t0
    return evaluate(sig, scores, intervals, fit_s=fit_s, detect_s=detect_s, skip=skip)


def streaming_intervals(scores: np.ndarray, skip: int, *, ts: np.ndarray | None = None, policy=None,
                        threshold: tuple[str, dict[str, Any]] | None = None, **spot: Any) -> list[tuple[int, int]]:
    """The streaming protocol's anomalous intervals: the incidents ``streamad serve`` would
    publish. The detector's default threshold (``threshold``: registry name and parameters;
    default SPOT) flags the scores after the warm-up's ``skip``: SPOT (q 1e-3, level .98,
    ``spot`` for other parameters) calibrated on the first fifth of them (20 to 1,000 scores);
    the service's incident state machine groups the flags (``policy``, default: the
    service's ``[incidents]`` defaults; ``ts``, the timestamps, matter for a gap in time).
    Each interval runs from an incident's first flagged record to its last."""
    from .. import thresholds
    from ..incidents import track_series
    from ..service.config import ServiceConfig

    n = len(scores)
    name, params = threshold or ("spot", {})
    if name == "spot":
        kw = {"q": 1e-3, "level": 0.98, "init": max(10, min(1000, max(20, (n - skip) // 5))), **params, **spot}
        rule = thresholds.SPOT(**kw)
    else:
        rule = thresholds.make(name, **params)
    flags = np.zeros(n, dtype=bool)
    th = np.zeros(n)
    for i in range(skip, n):
        d = rule.update(scores[i])
        flags[i], th[i] = d.is_anomaly, d.threshold
    found = track_series(flags, scores, th, ts=ts, policy=policy or ServiceConfig().incident_policy)
    return [(i.start, i.end) for i in found]


def orion_intervals(scores: np.ndarray) -> list[tuple[int, int]]:
    """Orion's protocol's anomalous intervals (point indices) from a score series."""
    from .. import thresholds

    found = thresholds.find_anomalies(scores, index=np.arange(len(scores)))
    return [(int(s), int(e)) for s, e, _ in found]


def evaluate(sig: Signal, scores: np.ndarray, intervals: list[tuple[int, int]], *, fit_s: float = 0.0,
             detect_s: float = 0.0, skip: int = 0) -> dict[str, Any]:
    """One signal's result row from its scores and detected intervals (the points before
    ``skip`` are left out of the threshold-free metrics). As alerts: ``incidents`` (the
    detected intervals), ``tp`` of them the labelled anomalies they find and ``fp`` the
    incidents that overlap no labelled anomaly (false incidents)."""
    n = len(scores)
    tp, fp, fn = M.contextual_confusion(sig.anomalies, intervals)
    labels = M.point_labels(n, sig.anomalies)
    row: dict[str, Any] = {"signal": sig.name, "group": sig.group, "n_points": n, "n_anomalies": len(sig.anomalies),
                           "tp": tp, "fp": fp, "fn": fn, **M.contextual_scores(tp, fp, fn),
                           "incidents": len(intervals),
                           "auc_pr": M.auc_pr(labels[skip:], scores[skip:]),
                           "vus_pr": M.vus_pr(labels[skip:], scores[skip:]),
                           "fit_s": round(fit_s, 4), "detect_s": round(detect_s, 4), "warmup": skip,
                           "detected": [list(iv) for iv in intervals]}
    if sig.meta.get("nab"):
        starts = np.zeros(n, dtype=bool)
        starts[[s for s, _ in intervals]] = True
        row["nab"] = {p: vars(M.nab_file_score(n, starts, sig.anomalies, p)) for p in M.NAB_PROFILES}
        row["nab_score"] = M.nab_normalized([M.NabFileScore(**row["nab"]["standard"])])
    row["_scores"] = scores
    return row


def _signature(detectors, name: str) -> set[str]:
    """Constructor parameter names of a registered detector (empty if unknown)."""
    import inspect
    try:
        cls = detectors.detector_class(name)
    except ConfigError:
        return set()
    return set(inspect.signature(cls).parameters)


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating, np.integer)):
        return _clean(v.item())
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def aggregate(rows: list[dict[str, Any]], nab_protocol: dict[str, Any] | None = None) -> dict[str, Any]:
    """Micro-averaged scores per group and overall, NAB normalised scores, medians of time;
    with ``nab_protocol`` (the corpus figures of :func:`streamad.bench.nab.finish`, overall and
    per category) each under its key ``nab_protocol``."""
    ok = [r for r in rows if "error" not in r]

    def summary(part):
        out = M.micro_average(part)
        if all("incidents" in r for r in part):  # result files before incidents lack them
            out.update(alerts(part))
        for key in ("auc_pr", "vus_pr"):
            vals = [r[key] for r in part if r.get(key) is not None and not math.isnan(r[key])]
            out[key] = float(np.mean(vals)) if vals else None
        out["fit_s"] = float(np.median([r["fit_s"] for r in part]))
        out["detect_s"] = float(np.median([r["detect_s"] for r in part]))
        out["signals"] = len(part)
        if all("nab" in r for r in part):
            out["nab_score"] = {p: M.nab_normalized([M.NabFileScore(**r["nab"][p]) for r in part])
                                for p in M.NAB_PROFILES}
        return out

    def alerts(part):
        """An on-call view: incidents that found a labelled anomaly per anomaly found (1 at
        best), and incidents that found none per 10,000 records."""
        incidents = sum(r["incidents"] for r in part)
        found, false = sum(r["tp"] for r in part), sum(r["fp"] for r in part)
        n = sum(r["n_points"] for r in part)
        return {"incidents": incidents, "false_incidents": false,
                "incidents_per_found": (incidents - false) / found if found else None,
                "false_per_10k": 1e4 * false / n if n else None}

    groups = sorted({r["group"] for r in ok})
    out = {"groups": {g: summary([r for r in ok if r["group"] == g]) for g in groups},
           "overall": summary(ok) if ok else {}, "failed": len(rows) - len(ok)}
    for where, value in (nab_protocol or {}).items():
        (out["overall"] if where == "overall" else out["groups"].setdefault(where, {}))["nab_protocol"] = value
    return out


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("streamad", "numpy", "scipy", "torch", "river"):
        try:
            out[mod] = importlib.import_module(mod).__version__
        except Exception:  # noqa: BLE001 - versions are informative only
            pass
    return out


def _machine() -> dict[str, Any]:
    """Where the run ran. The same seed gives the same detections on one machine, but torch
    picks its CPU kernels (AVX2, AVX512, ...) by processor and the rounding differs between
    them: on NAB, `aer` with seed 0 finds different intervals on 3-4 of 58 signals on another
    processor or kernel set (docs/log/hypad-nab.md, 2026-11-25, bd38257)."""
    out: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            out["processor"] = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        out["processor"] = platform.processor() or None
    try:
        import torch

        out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - informative only: never fail a finished run over it
        pass
    return out


def _one(args: tuple) -> dict[str, Any]:
    sig, detector, params, protocol, seed, likelihood = args
    try:
        return run_signal(sig, detector, params, protocol, seed, likelihood)
    except StreamadError as e:
        return {"signal": sig.name, "group": sig.group, "n_points": sig.n, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - a failing signal is recorded, the run goes on
        return {"signal": sig.name, "group": sig.group, "n_points": sig.n,
                "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=5)}


def run(dataset: str, data_dir: str, detector: str, *, params: dict | None = None, signals: str | None = None,
        protocol: str = "orion", workers: int = 1, seed: int = 0, time_limit: float | None = None,
        progress: bool = True, nasa_mode: str = "univariate", likelihood: bool = False,
        results_dir: str | None = None, scores_from: str | None = None) -> dict[str, Any]:
    """Run and score every signal; returns the result document (see DESIGN.md).

    ``protocol="nab"`` (NAB data only): per-row scores in [0, 1], one threshold per profile for
    the corpus (:mod:`streamad.bench.nab`); ``likelihood`` maps raw scores through the anomaly
    likelihood; ``results_dir`` writes NAB-format result files; ``scores_from`` scores existing
    NAB-format results of ``detector`` instead of running it."""
    from .. import detectors

    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    if protocol != "nab" and (likelihood or results_dir or scores_from):
        raise ConfigError("--likelihood, --results-dir and --scores-from go with --protocol nab")
    if protocol == "nab" and dataset != "nab":
        raise ConfigError(f"--protocol nab needs NAB's labelled windows: use --dataset nab, not {dataset!r}")
    if scores_from is None:
        detectors.make(detector, **(params or {}))  # fail fast on a bad name or parameters
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    kw = {"mode": nasa_mode} if dataset == "nasa" else {}
    sigs = load(dataset, data_dir, signals, **kw)
    t0 = time.perf_counter()
    if scores_from is not None:
        from . import nab

        rows = nab.rows_from_results(scores_from, detector, sigs)
    else:
        jobs = [(s, detector, params or {}, protocol, seed, likelihood) for s in sigs]
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=f"{dataset}/{detector}", unit="signal", file=sys.stderr,
                   disable=not progress)
        rows: list[dict[str, Any]] = []
        if workers == 1 and time_limit is None:
            for job in jobs:
                rows.append(_one(job))
                bar.update()
        else:
            rows = _pooled(jobs, workers, time_limit, bar)
        bar.close()
    extra: dict[str, Any] = {}
    if protocol == "nab":
        from . import nab

        extra = nab.finish(rows, sigs, detector, results_dir=results_dir)
    for r in rows:
        r.pop("_scores", None)
    aggregates = aggregate(rows, nab_protocol=extra)
    return _clean({
        "meta": {"dataset": dataset, "data_dir": str(data_dir), "detector": detector, "params": params or {},
                 "protocol": protocol, "signals": signals, "seed": seed, "time_limit_s": time_limit,
                 "workers": workers, "nasa_mode": nasa_mode if dataset == "nasa" else None,
                 "likelihood": likelihood, "results_dir": results_dir, "scores_from": scores_from,
                 "versions": _versions(), "machine": _machine(),
                 "date": datetime.now(UTC).isoformat(timespec="seconds"),
                 "wall_s": round(time.perf_counter() - t0, 2)},
        "signals": rows,
        "aggregates": aggregates,
    })


def _child(job, queue, threads: int) -> None:
    # Workers share the machine's cores: with torch's default (one thread per core in every
    # worker) two HypAD workers on two cores ran 6x slower than with one thread each.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    queue.put(_one(job))


def _pooled(jobs, workers: int, time_limit: float | None, bar) -> list[dict[str, Any]]:
    """Each signal in its own process, ``workers`` at a time; one running longer than
    ``time_limit`` is killed and recorded as failed."""
    import multiprocessing as mp
    import queue as queue_mod

    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    rows: dict[int, dict[str, Any]] = {}
    running: dict[int, tuple[Any, Any, float]] = {}
    pending = list(range(len(jobs)))
    while pending or running:
        while pending and len(running) < workers:
            i = pending.pop(0)
            q = ctx.Queue()
            proc = ctx.Process(target=_child, args=(jobs[i], q, threads), daemon=True)
            proc.start()
            running[i] = (proc, q, time.monotonic())
        time.sleep(0.05)
        for i, (proc, q, started) in list(running.items()):
            try:
                rows[i] = q.get_nowait()
            except queue_mod.Empty:
                sig = jobs[i][0]
                if time_limit is not None and time.monotonic() - started > time_limit:
                    proc.kill()
                    rows[i] = {"signal": sig.name, "group": sig.group, "n_points": sig.n,
                               "error": f"time limit of {time_limit:g} s exceeded"}
                elif not proc.is_alive():
                    try:  # the result may still be in the queue's pipe
                        rows[i] = q.get(timeout=2)
                    except queue_mod.Empty:
                        rows[i] = {"signal": sig.name, "group": sig.group, "n_points": sig.n,
                                   "error": f"worker exited with code {proc.exitcode}"}
                else:
                    continue
            proc.join(5)
            del running[i]
            bar.update()
    return [rows[i] for i in range(len(jobs))]


# -- CLI --------------------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("--dataset", required=True,
                   help="nab | nasa | yahoo | csv | orion, or hpc-sim | iot23 | nsl-kdd (their own modules)")
    p.add_argument("--data-dir", help="directory of the data set (not needed for hpc-sim)")
    p.add_argument("--detector", default="records", help="detector name (default: records)")
    p.add_argument("--params", default=None, help="detector parameters as a JSON object")
    p.add_argument("--signals", default=None, help="only signals matching these comma-separated glob patterns")
    p.add_argument("--protocol", default="orion", choices=PROTOCOLS,
                   help="orion (default), streaming, or nab (NAB's scoreboard rules: per-row scores in [0, 1], "
                        "one threshold per profile for the corpus)")
    p.add_argument("--likelihood", action="store_true",
                   help="nab protocol: map raw scores through the anomaly likelihood instead of the detector's own "
                        "[0, 1] mapping")
    p.add_argument("--results-dir", default=None,
                   help="nab protocol: write NAB-format result files DIR/<detector>/<category>/<detector>_<file>.csv")
    p.add_argument("--scores-from", default=None, metavar="DIR",
                   help="nab protocol: score existing NAB-format result files of --detector in DIR instead of "
                        "running it")
    p.add_argument("--nasa-mode", default="univariate", choices=("univariate", "multivariate"),
                   help="NASA: the first column (Orion's benchmark) or all columns")
    p.add_argument("--workers", type=int, default=1, help="signals run in parallel processes (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--time-limit", type=float, default=None, help="seconds per signal; slower ones are recorded as failed")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="option for hpc-sim / iot23 / nsl-kdd runs (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="result JSON file")


def main(args) -> int:
    if args.dataset in EXTERNAL:
        mod, _, fn = EXTERNAL[args.dataset].partition(":")
        try:
            target = getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"--dataset {args.dataset} is not available in this build ({e})") from None
        args.option = parse_options(args.option, "--option")
        return target(args) or 0
    if not args.data_dir:
        raise ConfigError(f"--data-dir is required for --dataset {args.dataset}")
    params = parse_params(args.params, "--params")
    if args.time_limit is not None and args.time_limit <= 0:
        raise ConfigError(f"--time-limit must be positive, got {args.time_limit}")
    result = run(args.dataset, args.data_dir, args.detector, params=params, signals=args.signals,
                 protocol=args.protocol, workers=args.workers, seed=args.seed, time_limit=args.time_limit,
                 progress=not args.no_progress, nasa_mode=args.nasa_mode, likelihood=args.likelihood,
                 results_dir=args.results_dir, scores_from=args.scores_from)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    o = result["aggregates"]["overall"]
    failed = result["aggregates"]["failed"]
    line = (f"{len(result['signals'])} signals ({failed} failed): F1 {o.get('f1', 0):.3f} precision "
            f"{o.get('precision', 0):.3f} recall {o.get('recall', 0):.3f}")
    if "nab_protocol" in o:
        np_ = o["nab_protocol"]
        line = (f"{len(result['signals'])} signals ({failed} failed), NAB protocol: standard "
                f"{np_['standard']['score']:.1f}, reward low FP {np_['reward_low_FP_rate']['score']:.1f}, "
                f"reward low FN {np_['reward_low_FN_rate']['score']:.1f}")
    elif "nab_score" in o:
        line += f", NAB standard {o['nab_score']['standard']:.1f}"
    print(f"{line}; wrote {out}")
    return 0
