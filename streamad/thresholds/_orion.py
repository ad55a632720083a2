"""Orion's batch ``find_anomalies``: sliding windows, a threshold per window, padding,
pruning of weak sequences and merging of overlaps (Hundman et al. 2018 as used in Orion).

Errors are "higher = more anomalous". Behaviour follows Orion's
``orion/primitives/timeseries_anomalies.py`` (orion-ml 0.7.1): with a fixed threshold the
sequences and severities are Orion's to the last bit (``tests/test_thresholds.py`` checks 66
reference cases from Orion itself, and on 522 NAB score series from ``aer`` they were all
identical). Two differences: in the dynamic threshold search the best cost is actually tracked
(Orion keeps the last finite candidate), and merging sequences of zero length (padding 0)
averages their severities where Orion divides by a zero weight and fails.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import fmin

from ..base import ConfigError

__all__ = ["find_anomalies"]


def _fixed_threshold(errors: np.ndarray, k: float = 4.0) -> float:
    return float(errors.mean() + k * errors.std())


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (start, end) of each run of True."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), (np.flatnonzero(d == -1) - 1).tolist(), strict=True))


def _z_cost(z: float, errors: np.ndarray, mean: float, std: float) -> float:
    epsilon = mean + z * std
    below = errors[errors <= epsilon]
    delta_mean, delta_std = (mean - below.mean(), std - below.std()) if len(below) else (0.0, 0.0)
    above = errors > epsilon
    denominator = int(above.sum()) + len(_runs(above)) ** 2
    if denominator == 0 or mean == 0 or std == 0:
        return math.inf
    return -(delta_mean / mean + delta_std / std) / denominator


def _dynamic_threshold(errors: np.ndarray, z_range: tuple[int, int]) -> float:
    mean, std = float(errors.mean()), float(errors.std())
    best_z, best_cost = float(z_range[1]), math.inf
    for z0 in range(*z_range):
        with np.errstate(invalid="ignore"):  # fmin compares inf costs with each other
            z, cost = fmin(_z_cost, z0, args=(errors, mean, std), full_output=True, disp=False)[:2]
        if cost < best_cost:
            best_z, best_cost = float(z[0]), float(cost)
    return mean + best_z * std


def _window_sequences(window: np.ndarray, start: int, fixed: bool, z_range, padding: int,
                      min_percent: float) -> list[tuple[int, int, float]]:
    threshold = _fixed_threshold(window) if fixed else _dynamic_threshold(window, z_range)
    above = window > threshold
    padded = above.copy()
    for i in np.flatnonzero(above):
        padded[max(0, i - padding):i + padding + 1] = True
    seqs = _runs(padded)
    max_below = float(window[~padded].max()) if not padded.all() else 0.0
    # strongest first; the strongest normal error closes the list, so pruning compares the
    # weakest kept sequence with it too
    rows = sorted(((float(window[s:e + 1].max()), s, e) for s, e in seqs), reverse=True)
    peaks = [r[0] for r in rows] + [max_below]
    last = -1
    for i in range(len(rows)):
        if peaks[i] != 0 and (peaks[i] - peaks[i + 1]) / peaks[i] >= min_percent:
            last = i
    denominator = float(window.mean() + window.std())
    if denominator == 0:
        denominator = 1.0
    return [(s + start, e + start, (m - threshold) / denominator) for m, s, e in rows[:last + 1]]


def _merge(seqs: list[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    out: list[tuple[int, int, float]] = []
    scores: list[float] = []
    weights: list[float] = []
    for s, e, sev in sorted(seqs, key=lambda r: r[0]):
        if out and s <= out[-1][1] + 1:
            scores.append(sev)
            weights.append(e - s)
            avg = float(np.average(scores, weights=weights)) if sum(weights) > 0 else float(np.mean(scores))
            out[-1] = (out[-1][0], max(out[-1][1], e), avg)
        else:
            scores, weights = [sev], [e - s]
            out.append((s, e, sev))
    return out


def find_anomalies(errors, index: Sequence | np.ndarray | None = None, window_size_portion: float = 0.33,
                   window_step_size_portion: float = 0.1, fixed_threshold: bool = True,
                   inverse: bool = False, anomaly_padding: int = 50, min_percent: float = 0.1,
                   lower_threshold: bool = False, z_range: tuple[int, int] = (0, 10)) -> list[tuple]:
    """Find anomalous sequences in a series of errors, as Orion does.

    The errors are cut into windows of ``ceil(n * window_size_portion)`` points moved by
    ``ceil(window * window_step_size_portion)``. In each window, errors above the threshold
    (mean + 4 std with ``fixed_threshold``, else Orion's dynamic search over ``z_range``) are
    padded by ``anomaly_padding`` points on each side and joined into sequences; sequences whose
    peak is less than ``min_percent`` above the next weaker one (the weakest compared with the
    largest normal error) are pruned. ``inverse`` searches ``max - errors`` instead (dips
    only), ``lower_threshold`` also the window mirrored around its mean (dips as well as peaks). Overlapping or adjacent sequences
    of all windows are merged (severity = length-weighted mean).

    Returns ``[(index[start], index[end], severity), ...]``, ends inclusive, sorted by start;
    severity = (peak - threshold) / (mean + std) of the window.

    >>> e = np.zeros(200); e[100] = 10.0
    >>> [(s, t, round(v, 2)) for s, t, v in find_anomalies(e, anomaly_padding=5)]
    [(95, 105, 3.61)]
    """
    e = np.asarray(errors, dtype=np.float64).ravel()
    n = len(e)
    if n == 0:
        return []
    if not np.all(np.isfinite(e)):
        raise ConfigError("errors contain NaN or infinite values")
    if not 0 < window_size_portion <= 1 or not 0 < window_step_size_portion <= 1:
        raise ConfigError("window_size_portion and window_step_size_portion must be in (0, 1]")
    if not isinstance(anomaly_padding, int) or anomaly_padding < 0:
        raise ConfigError(f"anomaly_padding must be a non-negative integer, got {anomaly_padding!r}")
    if not 0 <= min_percent < 1:
        raise ConfigError(f"min_percent must be in [0, 1), got {min_percent!r}")
    idx = np.arange(n) if index is None else np.asarray(index)
    if len(idx) != n:
        raise ConfigError(f"index has {len(idx)} entries for {n} errors")
    if inverse:  # as Orion: the whole series turned upside down, so only dips are searched
        e = e.max() - e
    size = int(math.ceil(n * window_size_portion))
    step = int(math.ceil(size * window_step_size_portion))
    seqs: list[tuple[int, int, float]] = []
    start, end = 0, 0
    while end < n:
        end = start + size
        w = e[start:end]
        args = (start, fixed_threshold, z_range, anomaly_padding, min_percent)
        seqs += _window_sequences(w, *args)
        if lower_threshold:
            seqs += _window_sequences(2 * w.mean() - w, *args)
        start += step
    return [(idx[s].item() if hasattr(idx[s], "item") else idx[s],
             idx[t].item() if hasattr(idx[t], "item") else idx[t], float(v)) for s, t, v in _merge(seqs)]
