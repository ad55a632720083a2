"""NAB's own protocol: causal per-row anomaly scores in [0, 1], one threshold per profile.

The Numenta Anomaly Benchmark (Lavin & Ahmad 2015) ranks detectors by the score of their
per-row anomaly scores, each in [0, 1] and computed from the rows before it only. A row is a
detection when its score reaches a threshold; NAB chooses, for each cost profile, the one
threshold for the whole corpus that maximises the corpus score, so a detector's board entry
is its best corpus-wide operating point. This module reproduces that:

- :func:`optimise` sweeps every distinct score of the corpus as a threshold, exactly: a row's
  contribution to the score does not depend on the other rows, except that only the first
  detection inside a window counts. So each row (outside windows) and each change of a
  window's first detection is an event ``(score, change of the corpus score)``; sorted by
  score, their running sum is the corpus score at every threshold, in ``O(n log n)``.
- :func:`write_results` / :func:`read_results` use NAB's results layout
  (``DIR/<detector>/<category>/<detector>_<file>.csv`` with ``timestamp,value,anomaly_score,label``),
  so NAB's own tools read our outputs and we read theirs (``streamad bench --scores-from``).
- :func:`compare` sets a run beside other detectors' outputs per category and per file.

The per-file scoring rules are :func:`streamad.bench.metrics.nab_file_score`'s (probationary
period, scaled sigmoid, profiles); the tests check the sweep against it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..base import DataError
from ..io import read_table
from . import metrics as M

__all__ = ["PROFILES", "NabRun", "compare", "file_scores", "optimise", "read_results", "sweep",
           "write_results"]

PROFILES = tuple(M.NAB_PROFILES)
_MAX_TP = M._scaled_sigmoid(-1.0)  # a window's first row


@dataclass
class NabRun:
    """One file's per-row scores under NAB's protocol.

    ``name`` is ``<category>/<file>`` without ``.csv``; ``windows`` are inclusive row ranges;
    ``scores`` are in [0, 1]; ``timestamps`` are epoch seconds (UTC)."""

    name: str
    timestamps: np.ndarray
    values: np.ndarray
    scores: np.ndarray
    windows: list[tuple[int, int]]

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def category(self) -> str:
        return self.name.split("/", 1)[0]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """NAB's scaled sigmoid, 2 / (1 + e^{5x}) - 1, and -1 beyond x = 3 (as metrics._scaled_sigmoid)."""
    with np.errstate(over="ignore"):
        out = 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0
    return np.where(x > 3.0, -1.0, out)


def _events(run: NabRun, weights) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, deltas)``: how the file's raw score changes as the threshold falls past each
    score. Starts from the null detector's score (every window missed)."""
    tp_w, fp_w, fn_w = weights["tp_weight"], weights["fp_weight"], weights["fn_weight"]
    n, s = run.n, np.asarray(run.scores, dtype=np.float64)
    p = M._probation(n)
    wins = sorted((int(a), int(b)) for a, b in run.windows)
    idx = np.arange(n)
    inside = np.zeros(n, dtype=bool)
    keys, deltas = [], []
    for a, b in wins:
        inside[a:b + 1] = True
        rows = np.arange(max(a, p), b + 1)
        if rows.size == 0:
            continue
        order = rows[np.argsort(-s[rows], kind="stable")]
        first = np.minimum.accumulate(order)  # the window's first detection as the threshold falls
        width = b - a + 1
        reward = tp_w * _sigmoid(-(b - first + 1) / width) / _MAX_TP
        keys.append(s[order])
        deltas.append(np.diff(reward, prepend=-fn_w))
    fp_rows = idx[(idx >= p) & ~inside]
    if fp_rows.size:
        ends = np.array([b for _, b in wins], dtype=np.int64)
        widths = np.array([b - a + 1 for a, b in wins], dtype=np.float64)
        prev = np.searchsorted(ends, fp_rows, side="left") - 1
        cost = np.full(fp_rows.size, -1.0)
        after = prev >= 0
        if after.any():
            pv = prev[after]
            cost[after] = _sigmoid(np.abs(ends[pv] - fp_rows[after]) / (widths[pv] - 1.0))
        keys.append(s[fp_rows])
        deltas.append(cost * fp_w)
    if not keys:
        return np.empty(0), np.empty(0)
    return np.concatenate(keys), np.concatenate(deltas)


def sweep(runs: Sequence[NabRun], profile: str = "standard") -> tuple[np.ndarray, np.ndarray]:
    """``(thresholds, normalised scores)`` for every distinct score of the corpus as threshold
    (detections: rows scoring at least the threshold), highest threshold first; the first pair
    is the null detector (threshold above every score, normalised score 0)."""
    weights = M._profile(profile)
    n_windows = sum(len(r.windows) for r in runs)
    null, perfect = -weights["fn_weight"] * n_windows, weights["tp_weight"] * n_windows
    parts = [_events(r, weights) for r in runs]
    keys = np.concatenate([k for k, _ in parts]) if parts else np.empty(0)
    deltas = np.concatenate([d for _, d in parts]) if parts else np.empty(0)
    order = np.argsort(-keys, kind="stable")
    keys, raw = keys[order], null + np.cumsum(deltas[order])
    # a threshold admits every row scoring at least it: the score after the last tie
    last = np.flatnonzero(np.append(keys[1:] != keys[:-1], True)) if keys.size else np.empty(0, dtype=int)
    top = keys[0] + 1.0 if keys.size else 1.0
    thresholds = np.concatenate([[max(top, 1.0 + 1e-9)], keys[last]])
    raws = np.concatenate([[null], raw[last]])
    if perfect == null:
        return thresholds, np.full(len(raws), np.nan)
    return thresholds, 100.0 * (raws - null) / (perfect - null)


def optimise(runs: Sequence[NabRun], profiles: Iterable[str] = PROFILES) -> dict[str, dict[str, float]]:
    """For each profile, the corpus threshold that maximises NAB's normalised score (the
    highest such threshold when several tie), as NAB's optimiser chooses it."""
    out = {}
    for profile in profiles:
        thresholds, scores = sweep(runs, profile)
        best = int(np.nanargmax(scores))
        out[profile] = {"score": float(scores[best]), "threshold": float(thresholds[best])}
    return out


def file_scores(runs: Sequence[NabRun], thresholds: dict[str, float]) -> list[dict]:
    """Per file and profile: NAB's raw / null / perfect scores and tp / fp / fn at the
    corpus thresholds (``{profile: threshold}``)."""
    rows = []
    for r in runs:
        row = {"signal": r.name, "group": r.category, "n_points": r.n}
        for profile, t in thresholds.items():
            fs = M.nab_file_score(r.n, M.nab_detections(r.scores, t), r.windows, profile)
            row[profile] = vars(fs)
        rows.append(row)
    return rows


# -- NAB's results layout -------------------------------------------------------------------
def _path(root: Path, detector: str, name: str) -> Path:
    category, _, file = name.partition("/")
    return root / detector / category / f"{detector}_{file}.csv"


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(float(t), tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def write_results(root: str | Path, detector: str, runs: Iterable[NabRun]) -> list[Path]:
    """Write each run as NAB writes a detector's results: ``timestamp,value,anomaly_score,label``
    (label 1 inside the file's windows)."""
    root = Path(root)
    written = []
    for r in runs:
        path = _path(root, detector, r.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        labels = M.point_labels(r.n, r.windows)
        values = np.asarray(r.values, dtype=np.float64).reshape(r.n, -1)[:, 0]
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["timestamp", "value", "anomaly_score", "label"])
            for t, v, s, y in zip(r.timestamps, values, r.scores, labels, strict=True):
                w.writerow([_stamp(t), f"{v:.10g}", repr(float(s)), int(y)])
        written.append(path)
    return written


def read_results(root: str | Path, detector: str, signals) -> list[NabRun]:
    """Read a detector's NAB-format results for ``signals`` (NAB :class:`~streamad.bench.datasets.Signal`
    objects, which give the windows and the row count). Any problem is a one-line DataError
    naming the file: missing, wrong columns, a row count that differs from the data file, a
    score that is not a number in [0, 1]."""
    root = Path(root)
    if not (root / detector).is_dir():
        raise DataError(f"{root / detector}: no results directory for detector {detector!r} "
                        f"(expected {root}/{detector}/<category>/{detector}_<file>.csv)")
    runs = []
    for sig in signals:
        path = _path(root, detector, sig.name)
        if not path.is_file():
            raise DataError(f"{path}: missing results file for {sig.name}")
        t = read_table(path)
        if "anomaly_score" not in t.header or "timestamp" not in t.header:
            raise DataError(f"{path}: needs the columns timestamp and anomaly_score, got {','.join(t.header)}")
        scores = t.numbers(t.header.index("anomaly_score"))
        if len(bad := np.flatnonzero((scores < 0.0) | (scores > 1.0))):
            raise DataError(f"{path}:{t.lines[bad[0]]}: anomaly_score {scores[bad[0]]:g} is outside [0, 1]")
        values = t.numbers(t.header.index("value")) if "value" in t.header else np.full(len(t), math.nan)
        if len(scores) != sig.n:
            raise DataError(f"{path}: {len(scores)} rows, but the data file of {sig.name} has {sig.n}")
        runs.append(NabRun(sig.name, np.asarray(sig.timestamps, dtype=np.float64), np.asarray(values),
                           np.asarray(scores), list(sig.anomalies)))
    return runs


# -- comparison with other detectors' outputs ---------------------------------------------------
def compare(runs: dict[str, Sequence[NabRun]], profile: str = "standard") -> dict:
    """Detectors side by side at their own optimised thresholds: per category and per file,
    windows found (tp), false detections (fp) and the NAB normalised score.

    ``runs`` maps a detector name to its runs over the same files."""
    out: dict = {"profile": profile, "detectors": {}, "categories": {}, "files": {}}
    for name, rs in runs.items():
        opt = optimise(rs, [profile])[profile]
        out["detectors"][name] = opt
        per = file_scores(rs, {profile: opt["threshold"]})
        by_cat: dict[str, list] = {}
        for row in per:
            fs = M.NabFileScore(**row[profile])
            by_cat.setdefault(row["group"], []).append(fs)
            out["files"].setdefault(row["signal"], {})[name] = {
                "tp": fs.tp, "fp": fs.fp, "fn": fs.fn, "windows": fs.tp + fs.fn,
                "score": M.nab_normalized([fs]) if fs.perfect != fs.null else None}
        for cat, fss in by_cat.items():
            out["categories"].setdefault(cat, {})[name] = {
                "tp": sum(f.tp for f in fss), "fp": sum(f.fp for f in fss), "fn": sum(f.fn for f in fss),
                "score": M.nab_normalized(fss)}
    return out


# -- the protocol, as `streamad bench --protocol nab` runs it -----------------------------------
def unit_scores(det, raw: np.ndarray, likelihood: bool = False) -> np.ndarray:
    """A detector's causal raw scores as NAB's [0, 1] anomaly scores: through the anomaly
    likelihood (:class:`~streamad.thresholds.AnomalyLikelihood`, its surprise mapped by
    :func:`~streamad.thresholds._likelihood.unit`), or through the detector's own fixed map
    (``unit_score``). The scores a detector gave before it had a model (``warmup_scores_``) are
    0 and never reach the likelihood."""
    from ..thresholds import AnomalyLikelihood
    from ..thresholds._likelihood import unit

    raw = np.where(np.isfinite(raw), raw, 0.0)
    warm = min(len(raw), int(det.warmup_scores_))
    out = np.zeros(len(raw))
    if likelihood:
        al = AnomalyLikelihood()
        out[warm:] = unit(np.array([al.surprise(s) for s in raw[warm:].tolist()]))
    else:
        out[warm:] = np.clip(np.asarray(det.unit_score(raw[warm:]), dtype=np.float64), 0.0, 1.0)
    return out


def score_signal(sig, det, likelihood: bool = False) -> dict:
    """Run ``det`` over one NAB signal under NAB's rules: each row scored before it is learned,
    one pass, no labels; returns the signal's row with its [0, 1] scores under ``_unit``
    (rows of the probationary period are 0: NAB never counts them)."""
    import time

    t0 = time.perf_counter()
    raw = np.asarray(det.process_many(np.asarray(sig.values, dtype=np.float64), learn=True), dtype=np.float64)
    scores = unit_scores(det, raw, likelihood)
    return unit_row(sig, scores, time.perf_counter() - t0, int(det.warmup_scores_))


def unit_row(sig, scores: np.ndarray, detect_s: float, warmup: int) -> dict:
    """One signal's row with its [0, 1] ``scores`` under ``_unit``, for :func:`finish`; the
    rows of the probationary period are set to 0 in place (NAB never counts them)."""
    scores[:M._probation(sig.n)] = 0.0
    return {"signal": sig.name, "group": sig.group, "n_points": sig.n, "n_anomalies": len(sig.anomalies),
            "fit_s": 0.0, "detect_s": round(detect_s, 4), "warmup": warmup, "_unit": scores}


def rows_from_results(root, detector: str, signals) -> list[dict]:
    """Rows as :func:`score_signal` gives them, from NAB-format result files (``--scores-from``)."""
    return [{"signal": r.name, "group": r.category, "n_points": r.n, "n_anomalies": len(r.windows),
             "fit_s": 0.0, "detect_s": 0.0, "warmup": 0, "_unit": r.scores}
            for r in read_results(root, detector, signals)]


def finish(rows: list[dict], signals, detector: str, results_dir=None) -> dict:
    """Choose the corpus thresholds and complete every row in place: NAB's per-file scores at
    them (``nab``, ``nab_score``), Orion's contextual tp / fp / fn of the standard threshold's
    detections (after the probationary period, consecutive detections as one interval), AUC-PR
    and VUS-PR of the scores. Returns the corpus figures per profile, overall and per category,
    for ``aggregates[...]["nab_protocol"]``; writes NAB-format result files to ``results_dir``."""
    by_name = {s.name: s for s in signals}
    ok = [r for r in rows if "_unit" in r]
    runs = [NabRun(r["signal"], np.asarray(by_name[r["signal"]].timestamps, dtype=np.float64),
                   np.asarray(by_name[r["signal"]].values), r.pop("_unit"), list(by_name[r["signal"]].anomalies))
            for r in ok]
    if not runs:
        return {}
    opt = optimise(runs)
    thresholds = {p: v["threshold"] for p, v in opt.items()}
    per_cat: dict[str, dict[str, list]] = {}
    for r, run, fs in zip(ok, runs, file_scores(runs, thresholds), strict=True):
        r["nab"] = {p: fs[p] for p in PROFILES}
        r["nab_score"] = M.nab_normalized([M.NabFileScore(**fs["standard"])])
        p = M._probation(run.n)
        det = M.nab_detections(run.scores, thresholds["standard"])
        det[:p] = False
        intervals = M.label_intervals(det)
        tp, fp, fn = M.contextual_confusion(run.windows, intervals)
        labels = M.point_labels(run.n, run.windows)
        r.update({"tp": tp, "fp": fp, "fn": fn, **M.contextual_scores(tp, fp, fn),
                  "auc_pr": M.auc_pr(labels[p:], run.scores[p:]), "vus_pr": M.vus_pr(labels[p:], run.scores[p:]),
                  "detected": [list(iv) for iv in intervals]})
        for prof in PROFILES:
            per_cat.setdefault(run.category, {}).setdefault(prof, []).append(M.NabFileScore(**fs[prof]))
    out: dict = {"overall": opt}
    for cat, profs in per_cat.items():
        out[cat] = {prof: {"score": M.nab_normalized(fss), "threshold": thresholds[prof]}
                    for prof, fss in profs.items()}
    if results_dir:
        write_results(results_dir, detector, runs)
    return out
