"""Benchmark metrics: Orion's contextual scores, the NAB score, and threshold-free AUC / VUS.

Three families, each checked against reference outputs (``tests/test_bench_metrics.py``):

**Contextual (Orion).** Anomalies are intervals ``(start, end)``, both ends included, in
index or timestamp units. As in Orion 0.7.1 each interval's end is extended by one unit
before comparing, and two intervals overlap when they share more than a point.

- *overlapping segment* (``weighted=False``, Orion's benchmark rule): a true interval hit
  by any detected interval is a TP, one hit by none is an FN, a detected interval hitting no
  true interval is an FP; there is no TN.
- *weighted segment* (``weighted=True``): the range ``[start, end]`` is cut at every interval
  edge; each piece counts with its length as TP / FP / FN / TN.

Dataset scores are micro-averaged (:func:`micro_average`): tp / fp / fn summed over signals,
then precision / recall / F1, as Orion's leaderboard does.

**NAB score** (Lavin & Ahmad 2015, numenta/NAB, MIT). Per file: rows in the probationary
period (the first ``min(floor(0.15 n), 750)`` rows) are ignored; the first detection inside
a window earns ``tp_weight * sigma(position) / sigma(-1)``, where position runs from -1 at
the window's start to ~0 at its end and ``sigma(x) = 2 / (1 + exp(5x)) - 1``; later
detections in the same window count nothing; a window without detection costs
``fn_weight``; a detection outside windows costs ``fp_weight`` times ``sigma`` of its
distance past the preceding window (relative to that window's width), or the full
``fp_weight`` before the first window. The corpus score is normalised so that the null
detector (no detections) scores 0 and the perfect one (each window found at its first row)
scores 100: ``100 (raw - null) / (perfect - null)``.

**Threshold-free.** :func:`auc_roc`, :func:`auc_pr` (average precision, the step-wise area
under the precision-recall curve), and the volume under the surface :func:`vus_roc` /
:func:`vus_pr` of Paparrizos et al. (VLDB 2022): range-AUC (labels softened by a buffer of
``l`` points around each true interval, recall weighted by the fraction of intervals hit)
averaged over buffer lengths ``l = 0 .. max_window``. Higher is better everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "NAB_PROFILES",
    "NabFileScore",
    "auc_pr",
    "auc_roc",
    "contextual_confusion",
    "contextual_scores",
    "label_intervals",
    "micro_average",
    "nab_detections",
    "nab_file_score",
    "nab_normalized",
    "nab_windows_to_index",
    "point_labels",
    "range_auc",
    "vus_pr",
    "vus_roc",
]

Interval = tuple[float, float]


# -- contextual (Orion) ---------------------------------------------------------------------
def _overlaps(a: Interval, b: Interval) -> bool:
    # Strict: intervals that only touch at an end point do not overlap.
    return (a[0] - b[1]) * (a[1] - b[0]) < 0


def _padded(intervals: Iterable[Sequence[float]]) -> list[Interval]:
    return [(s, e + 1) for s, e in intervals]


def contextual_confusion(expected: Iterable[Sequence[float]], observed: Iterable[Sequence[float]], *,
                         start: float | None = None, end: float | None = None,
                         weighted: bool = False) -> tuple[float, float, float]:
    """``(tp, fp, fn)`` of detected intervals against true ones, by Orion's contextual rules.

    ``start`` / ``end`` (the signal's first and last index or timestamp) matter only for the
    weighted variant, where they bound the true-negative pieces.

    >>> contextual_confusion([(10, 20), (50, 60)], [(15, 16), (30, 31)])
    (1, 1, 1)
    >>> contextual_confusion([(10, 19)], [(15, 24)], start=0, end=99, weighted=True)
    (5, 5, 5)
    """
    exp, obs = _padded(expected), _padded(observed)
    if not weighted:
        hit_obs: set[int] = set()
        tp = fn = 0
        for e in exp:
            found = False
            for j, o in enumerate(obs):
                if _overlaps(e, o):
                    found = True
                    hit_obs.add(j)
            tp += found
            fn += not found
        return tp, len(obs) - len(hit_obs), fn
    edges = {x for iv in exp + obs for x in iv}
    if start is not None:
        edges.add(start)
    if end is not None:
        edges.add(end)
    edges_sorted = sorted(edges)
    tp = fp = fn = 0
    for a, b in zip(edges_sorted[:-1], edges_sorted[1:], strict=True):
        piece = (a, b)
        in_exp = any(_overlaps(piece, e) for e in exp)
        in_obs = any(_overlaps(piece, o) for o in obs)
        if in_exp and in_obs:
            tp += b - a
        elif in_obs:
            fp += b - a
        elif in_exp:
            fn += b - a
    return tp, fp, fn


def contextual_scores(tp: float, fp: float, fn: float) -> dict[str, float]:
    """Precision, recall and F1; a ratio with a zero denominator is 0 (not NaN), so a signal
    without detections scores precision 0 rather than poisoning an average.

    >>> {k: round(v, 3) for k, v in contextual_scores(3, 1, 2).items()}
    {'precision': 0.75, 'recall': 0.6, 'f1': 0.667}
    """
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def micro_average(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Sum tp / fp / fn over signals, then score: Orion's dataset-level F1.

    >>> round(micro_average([{"tp": 1, "fp": 0, "fn": 1}, {"tp": 1, "fp": 2, "fn": 0}])["f1"], 4)
    0.5714
    """
    tp = fp = fn = 0.0
    for r in rows:
        tp, fp, fn = tp + r["tp"], fp + r["fp"], fn + r["fn"]
    return {"tp": tp, "fp": fp, "fn": fn, **contextual_scores(tp, fp, fn)}


# -- point labels <-> intervals -------------------------------------------------------------
def point_labels(n: int, intervals: Iterable[Sequence[int]]) -> np.ndarray:
    """Boolean array of length ``n``, True inside the inclusive index ``intervals``.

    >>> point_labels(6, [(1, 2), (4, 4)]).astype(int).tolist()
    [0, 1, 1, 0, 1, 0]
    """
    out = np.zeros(int(n), dtype=bool)
    for s, e in intervals:
        out[max(0, int(s)): max(0, int(e) + 1)] = True
    return out


def label_intervals(labels: Sequence[bool] | np.ndarray) -> list[tuple[int, int]]:
    """Inclusive ``(start, end)`` index runs of truthy labels.

    >>> label_intervals([0, 1, 1, 0, 1])
    [(1, 2), (4, 4)]
    """
    x = np.asarray(labels, dtype=bool).astype(np.int8)
    if x.size == 0:
        return []
    d = np.diff(np.concatenate([[0], x, [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


# -- NAB ---------------------------------------------------------------------------------
#: NAB's application profiles (config/profiles.json of numenta/NAB, MIT licence).
NAB_PROFILES: dict[str, dict[str, float]] = {
    "standard": {"tp_weight": 1.0, "fp_weight": 0.11, "fn_weight": 1.0, "tn_weight": 1.0},
    "reward_low_FP_rate": {"tp_weight": 1.0, "fp_weight": 0.22, "fn_weight": 1.0, "tn_weight": 1.0},
    "reward_low_FN_rate": {"tp_weight": 1.0, "fp_weight": 0.11, "fn_weight": 2.0, "tn_weight": 1.0},
}
_PROBATION_FRACTION = 0.15


def _probation(n: int) -> int:
    """The rows NAB never scores at the start of a file of ``n`` rows: 15%, at most 750."""
    return int(min(math.floor(_PROBATION_FRACTION * n), _PROBATION_FRACTION * 5000))


def _scaled_sigmoid(x: float) -> float:
    if x > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


@dataclass(frozen=True)
class NabFileScore:
    """One file's NAB result: ``raw`` score and the null / perfect detectors' scores."""

    raw: float
    null: float
    perfect: float
    tp: int
    fp: int
    fn: int


def _profile(profile: str | Mapping[str, float]) -> Mapping[str, float]:
    if isinstance(profile, str):
        try:
            return NAB_PROFILES[profile]
        except KeyError:
            from streamad.base import ConfigError
            raise ConfigError(f"unknown NAB profile {profile!r}; choose one of {sorted(NAB_PROFILES)}") from None
    return profile


def nab_windows_to_index(timestamps: Sequence, windows: Iterable[Sequence]) -> list[tuple[int, int]]:
    """Map NAB windows given as timestamps to inclusive row-index ranges (first row at or
    after the start, last row at or before the end); windows with no rows are dropped."""
    ts = np.asarray(timestamps)
    out = []
    for s, e in windows:
        i = int(np.searchsorted(ts, s, side="left"))
        j = int(np.searchsorted(ts, e, side="right")) - 1
        if i <= j:
            out.append((i, j))
    return out


def nab_detections(scores: Sequence[float] | np.ndarray, threshold: float) -> np.ndarray:
    """NAB's detection rule: a row is a detection when its score is at least ``threshold``."""
    return np.asarray(scores, dtype=float) >= threshold


def nab_file_score(n_or_index: int | Sequence, detections: Sequence[bool] | np.ndarray,
                   windows: Iterable[Sequence[int]], profile: str | Mapping[str, float] = "standard"
                   ) -> NabFileScore:
    """Score one file's boolean ``detections`` against its NAB ``windows`` (inclusive row
    index ranges, sorted, not overlapping). ``n_or_index`` is the row count (or any sequence
    of that length, e.g. the timestamps).

    >>> det = [False] * 1000
    >>> det[500] = True                        # first row of the only window
    >>> nab_file_score(1000, det, [(500, 599)]).raw
    1.0
    >>> nab_file_score(1000, [False] * 1000, [(500, 599)]).raw
    -1.0
    """
    n = n_or_index if isinstance(n_or_index, int) else len(n_or_index)
    det = np.asarray(detections, dtype=bool)
    if det.shape != (n,):
        raise ValueError(f"detections must have {n} rows, got shape {det.shape}")
    w = _profile(profile)
    tp_w, fp_w, fn_w = w["tp_weight"], w["fp_weight"], w["fn_weight"]
    wins = sorted((int(s), int(e)) for s, e in windows)
    probation = _probation(n)
    max_tp = _scaled_sigmoid(-1.0)
    raw = 0.0
    tp = fp = fn = 0
    hits = np.flatnonzero(det)
    hits = hits[hits >= probation]
    # Detections inside windows: the first one per window counts.
    k = 0
    in_window = np.zeros(hits.size, dtype=bool)
    for s, e in wins:
        width = e - s + 1
        inside = (hits >= s) & (hits <= e)
        in_window |= inside
        if inside.any():
            first = int(hits[inside][0])
            raw += tp_w * _scaled_sigmoid(-(e - first + 1) / width) / max_tp
            tp += 1
        else:
            raw -= fn_w
            fn += 1
        k += 1
    # Detections outside windows: scored by distance past the preceding window.
    ends = np.array([e for _, e in wins]) if wins else np.array([], dtype=int)
    widths = np.array([e - s + 1 for s, e in wins]) if wins else np.array([], dtype=int)
    for i in hits[~in_window]:
        prev = int(np.searchsorted(ends, i, side="left")) - 1
        if prev < 0:
            unweighted = -1.0
        else:
            unweighted = _scaled_sigmoid(abs(int(ends[prev]) - int(i)) / float(widths[prev] - 1))
        raw += unweighted * fp_w
        fp += 1
    return NabFileScore(raw=raw, null=-fn_w * len(wins), perfect=tp_w * len(wins), tp=tp, fp=fp, fn=fn)


def nab_normalized(file_scores: Iterable[NabFileScore]) -> float:
    """The NAB score of a corpus: 0 for the null detector, 100 for a perfect one."""
    raw = null = perfect = 0.0
    for f in file_scores:
        raw, null, perfect = raw + f.raw, null + f.null, perfect + f.perfect
    if perfect == null:
        return float("nan")
    return 100.0 * (raw - null) / (perfect - null)


# -- threshold-free ----------------------------------------------------------------------
def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.size}")
    s = np.where(np.isfinite(s), s, np.nanmax(np.where(np.isfinite(s), s, -np.inf)) if np.isfinite(s).any()
                 else 0.0)
    return y, s


def auc_roc(labels, scores) -> float:
    """Area under the ROC curve (ties count half); NaN when only one class is present.

    >>> auc_roc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]), auc_roc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1])
    (1.0, 0.0)
    """
    y, s = _check(labels, scores)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_pr(labels, scores) -> float:
    """Average precision: the step-wise area under the precision-recall curve (as
    scikit-learn's ``average_precision_score``); NaN without positives.

    >>> auc_pr([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    1.0
    """
    y, s = _check(labels, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # One point per distinct score (ties are detected together).
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[last]
    fps = (last + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / n_pos
    prev_recall = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - prev_recall) * precision))


def _soften(labels: np.ndarray, window: int) -> np.ndarray:
    """Labels with a buffer of ``window // 2`` points either side of each true interval,
    weighted ``sqrt(1 - distance / window)`` (VUS's soft label extension)."""
    out = labels.astype(float)
    if window <= 0:
        return out
    n = out.size
    half = window // 2
    for s, e in label_intervals(labels):
        right = np.arange(e + 1, min(e + 1 + half, n))
        out[right] += np.sqrt(1 - (right - e) / window)
        left = np.arange(max(s - half, 0), s)
        out[left] += np.sqrt(1 - (s - left) / window)
    return np.minimum(out, 1.0)


def range_auc(labels, scores, window: int = 0, n_thresholds: int = 250) -> tuple[float, float]:
    """Range-AUC-ROC and range-AUC-PR for one buffer length ``window`` (Paparrizos et al.
    2022): soft labels around each true interval, recall = overlap recall x fraction of
    intervals hit, over ``n_thresholds`` score quantiles."""
    y, s = _check(labels, scores)
    if not y.any() or y.all():
        return float("nan"), float("nan")
    soft = _soften(y, window)
    runs = label_intervals(soft > 0)
    p_orig = float(y.sum())
    p_new = (p_orig + soft.sum()) / 2
    n_new = y.size - p_new
    starts = np.array([a for a, _ in runs])
    ends = np.array([b for _, b in runs]) + 1
    s_desc = -np.sort(-s)
    tpr, fpr, prec = [0.0], [0.0], [1.0]
    for i in np.linspace(0, s.size - 1, n_thresholds).astype(int):
        pred = s >= s_desc[i]
        overlap = soft * pred
        tp = overlap.sum()
        recall = min(tp / p_new, 1.0)
        csum = np.r_[0.0, np.cumsum(overlap)]
        existence = np.count_nonzero(csum[ends] - csum[starts] > 0) / len(runs)
        n_pred = pred.sum()
        tpr.append(recall * existence)
        fpr.append((n_pred - tp) / n_new)
        prec.append(tp / n_pred if n_pred else 1.0)
    tpr.append(1.0)
    fpr.append(1.0)
    tpr_a, fpr_a, prec_a = np.array(tpr), np.array(fpr), np.array(prec)
    roc = float(np.sum((fpr_a[1:] - fpr_a[:-1]) * (tpr_a[1:] + tpr_a[:-1]) / 2))
    pr = float(np.dot(tpr_a[1:-1] - tpr_a[:-2], prec_a[1:]))
    return roc, pr


def _vus(labels, scores, max_window: int, steps: int) -> tuple[float, float]:
    windows = sorted({int(round(x)) for x in np.linspace(0, max_window, steps + 1)})
    vals = np.array([range_auc(labels, scores, w) for w in windows])
    if np.isnan(vals).all():
        return float("nan"), float("nan")
    return float(np.nanmean(vals[:, 0])), float(np.nanmean(vals[:, 1]))


def vus_roc(labels, scores, max_window: int = 100, steps: int = 10) -> float:
    """Volume under the range-ROC surface over buffer lengths 0..``max_window`` (``steps``
    + 1 evenly spaced lengths). ``max_window`` is typically about one period of the series;
    100 (TSB-AD's common choice for its sliding window) by default."""
    return _vus(labels, scores, max_window, steps)[0]


def vus_pr(labels, scores, max_window: int = 100, steps: int = 10) -> float:
    """Volume under the range-PR surface (TSB-AD's recommended accuracy measure); see
    :func:`vus_roc`.

    A score that rises smoothly around the true interval scores near 1; a binary score
    that covers only the labelled points loses on the longer buffers:

    >>> y = point_labels(1000, [(500, 520)])
    >>> bump = np.exp(-((np.arange(1000) - 510) / 30.0) ** 2)
    >>> round(vus_pr(y, bump), 2), round(vus_pr(y, y.astype(float)), 2)
    (0.99, 0.59)
    """
    return _vus(labels, scores, max_window, steps)[1]
