"""Orion-style scoring of a whole series from per-window model outputs (pure numpy).

A window model gives, for every window ``i`` of ``window`` points (step 1), a scalar such as a
critic value or a reconstruction distance, or a reconstructed window. Window ``i`` covers the
points ``i .. i + window - 1``; every helper here maps window values to the points they cover,
so a point's score comes from the windows that contain it (never shifted by ``window - 1``).

>>> import numpy as np
>>> windows_mean(np.array([1.0, 2.0, 3.0]), window=2)  # 4 points, 3 windows
array([1. , 1.5, 2.5, 3. ])
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "AER_RULES",
    "HYPERBOLIC_RULES",
    "combine",
    "combine_minmax",
    "critic_scores",
    "ewma",
    "covering_values",
    "inner_points",
    "orion_aer_errors",
    "reconstruction_errors",
    "regression_errors",
    "rolling_mean",
    "series_scores",
    "smoothing_window",
    "start_mask",
    "to_points",
    "windows_mean",
    "zscore_positive",
]

#: Rules that score whole windows by their hyperbolic error (HypAD's): one value per window.
HYPERBOLIC_RULES = ("uncertainty", "hyperbolic")
#: AER's rules: reconstruction and prediction errors, which need prediction heads.
AER_RULES = ("aer", "aer-sum")


def smoothing_window(n: int, portion: float = 0.01, cap: int = 200) -> int:
    """Orion's smoothing length: 1% of the series, at most ``cap`` points, at least 1."""
    return max(1, min(int(n * portion), cap))


def rolling_mean(x: np.ndarray, w: int) -> np.ndarray:
    """Centred moving average over ``w`` points; the edges average what they have.

    >>> rolling_mean(np.array([0.0, 0.0, 3.0, 0.0, 0.0]), 3)
    array([0., 1., 1., 1., 0.])
    """
    x = np.asarray(x, dtype=np.float64)
    if w <= 1 or len(x) == 0:
        return x.copy()
    cs = np.concatenate([[0.0], np.cumsum(x)])
    lo, hi = _centred_spans(len(x), w)
    return (cs[hi] - cs[lo]) / (hi - lo)


def _centred_spans(n: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Per point of n, the ``[lo, hi)`` bounds of pandas' centred ``w``-point window, cut at
    the series' ends (points ``t - w // 2 .. t - w // 2 + w - 1``)."""
    start = np.arange(n) - w // 2
    return np.clip(start, 0, n), np.clip(start + w, 0, n)


def windows_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Per point, the mean of the values of the windows covering it."""
    values = np.asarray(values, dtype=np.float64)
    m = len(values)
    n = m + window - 1
    cs = np.concatenate([[0.0], np.cumsum(values)])
    t = np.arange(n)
    lo = np.maximum(0, t - window + 1)
    hi = np.minimum(t, m - 1)
    return (cs[hi + 1] - cs[lo]) / (hi - lo + 1)


def covering_values(per_window: np.ndarray, window: int) -> np.ndarray:
    """(n_points, window) array: row t holds what each window covering t says about t, NaN elsewhere.

    ``per_window`` is either (m,) — one value per window, repeated over the points it covers —
    or (m, window) — a value per position of the window (a reconstructed window).
    """
    per_window = np.asarray(per_window, dtype=np.float64)
    m = per_window.shape[0]
    out = np.full((m + window - 1, window), np.nan)
    for k in range(window):
        out[k:k + m, k] = per_window if per_window.ndim == 1 else per_window[:, k]
    return out


def _kde_modes(rows: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Per row, the non-NaN value where a Gaussian KDE of the row's values peaks (Scott's rule)."""
    out = np.empty(len(rows))
    for s in range(0, len(rows), chunk):
        v = rows[s:s + chunk]
        ok = ~np.isnan(v)
        cnt = ok.sum(axis=1)
        vz = np.where(ok, v, 0.0)
        mean = vz.sum(axis=1) / cnt
        var = (np.where(ok, v - mean[:, None], 0.0) ** 2).sum(axis=1) / np.maximum(cnt - 1, 1)
        bw = np.sqrt(var) * cnt ** (-0.2)
        flat = bw <= 1e-12 * np.maximum(1.0, np.abs(mean))
        bw = np.where(flat, 1.0, bw)
        diff = (vz[:, :, None] - vz[:, None, :]) / bw[:, None, None]
        dens = (np.exp(-0.5 * diff * diff) * ok[:, None, :]).sum(axis=2)
        dens = np.where(ok, dens, -np.inf)
        mode = vz[np.arange(len(v)), np.argmax(dens, axis=1)]
        med = np.nanmedian(v, axis=1)
        out[s:s + chunk] = np.where(flat, med, mode)
    return out


def critic_scores(critic: np.ndarray, window: int, smooth: int | None = None) -> np.ndarray:
    """TadGAN's critic score per point: KDE mode of the covering windows' critic values,
    ``|c - mean of the interquartile values| / std + 1``, then smoothed."""
    modes = _kde_modes(covering_values(critic, window))
    lo, hi = np.quantile(modes, [0.25, 0.75])
    mid = modes[(modes >= lo) & (modes <= hi)]
    std = modes.std()
    z = np.abs(modes - mid.mean()) / (std if std > 0 else 1.0) + 1.0
    return rolling_mean(z, smooth if smooth is not None else smoothing_window(len(z)))


def _dtw_errors(y: np.ndarray, y_hat: np.ndarray, score_window: int) -> np.ndarray:
    """DTW distance between y and y_hat on a short centred stretch around every point.

    As Orion's TadGAN computes it (pyts' classic DTW): the path minimises the sum of squared
    differences, and the distance is that sum's square root. A lone spike weighs as much as
    its height; a shift held over the whole stretch weighs ``sqrt(stretch)`` times its height.

    >>> float(_dtw_errors(np.array([[0.0], [1.0], [1.0]]), np.array([[2.0], [0.0], [1.0]]), 2)[1])
    2.0
    """
    half = score_window // 2
    L = 2 * half + 1
    n = len(y)
    yp = np.pad(y, ((half, half), (0, 0)), mode="edge")
    hp = np.pad(y_hat, ((half, half), (0, 0)), mode="edge")
    a = np.lib.stride_tricks.sliding_window_view(yp, L, axis=0)  # (n, d, L)
    b = np.lib.stride_tricks.sliding_window_view(hp, L, axis=0)
    cost = ((a[:, :, :, None] - b[:, :, None, :]) ** 2).sum(axis=1)  # (n, L, L)
    acc = np.full((n, L + 1, L + 1), np.inf)
    acc[:, 0, 0] = 0.0
    for i in range(1, L + 1):
        for j in range(1, L + 1):
            best = np.minimum(np.minimum(acc[:, i - 1, j], acc[:, i, j - 1]), acc[:, i - 1, j - 1])
            acc[:, i, j] = cost[:, i - 1, j - 1] + best
    return np.sqrt(acc[:, L, L])


def reconstruction_errors(y: np.ndarray, windows_hat: np.ndarray, kind: str = "dtw",
                          score_window: int = 10, smooth: int | None = None) -> np.ndarray:
    """TadGAN's reconstruction error per point.

    ``y`` is the (n, d) series, ``windows_hat`` the (m, window, d) reconstructed windows. Each
    point's reconstruction is the median over the windows covering it; ``kind`` is "point"
    (distance between value and reconstruction), "area" (difference of the areas under both
    curves on ``score_window`` points) or "dtw" (dynamic time warping distance on
    ``score_window + 1`` points around the point). The result is smoothed.
    """
    y = np.asarray(y, dtype=np.float64)
    m, window, d = windows_hat.shape
    y_hat = np.stack([np.nanmedian(covering_values(windows_hat[:, :, j], window), axis=1)
                      for j in range(d)], axis=1)
    if kind == "point":
        err = np.linalg.norm(y - y_hat, axis=1)
    elif kind == "area":
        err = _area_errors(y, y_hat, score_window)
    elif kind == "dtw":
        err = _dtw_errors(y, y_hat, score_window)
    else:
        raise ValueError(f"unknown reconstruction error {kind!r}")
    return rolling_mean(err, smooth if smooth is not None else smoothing_window(len(err)))


def _area_errors(y: np.ndarray, y_hat: np.ndarray, score_window: int) -> np.ndarray:
    """Per point, |area under y - area under y_hat| on the ``score_window`` points around it
    (trapezoid rule, as Orion's TadGAN computes it; summed over features). The stretch is the
    one ``rolling_mean`` averages over (``_centred_spans``).

    >>> _area_errors(np.array([[0.0], [1.0], [1.0], [0.0]]), np.zeros((4, 1)), 2)
    array([0. , 0.5, 1. , 0.5])
    """
    diff = np.asarray(y, dtype=np.float64) - np.asarray(y_hat, dtype=np.float64)
    cs = np.concatenate([np.zeros((1, diff.shape[1])), np.cumsum(diff, axis=0)])
    lo, hi = _centred_spans(len(diff), score_window)
    # trapezoid rule = the plain sum minus half of each end point
    area = cs[hi] - cs[lo] - (diff[lo] + diff[hi - 1]) / 2.0
    return np.abs(area).sum(axis=1)


def zscore_positive(x: np.ndarray, mean: float | None = None, std: float | None = None) -> np.ndarray:
    """``max(0, (x - mean) / std) + 1``: how far above normal, 1 meaning normal."""
    x = np.asarray(x, dtype=np.float64)
    mean = float(x.mean()) if mean is None else mean
    std = float(x.std()) if std is None else std
    return np.clip((x - mean) / (std if std > 0 else 1.0), 0.0, None) + 1.0


def combine(critic: np.ndarray, rec: np.ndarray, how: str = "mult", lam: float = 0.5) -> np.ndarray:
    """TadGAN's combination of critic and reconstruction scores (both >= 1)."""
    if how == "mult":
        return critic * rec
    if how == "sum":
        return (1.0 - lam) * (critic - 1.0) + lam * (rec - 1.0)
    raise ValueError(f"unknown combination {how!r}")


def regression_errors(first: np.ndarray, last: np.ndarray, window: int, masked: int = 0) -> np.ndarray:
    """AER's prediction error per point: window ``i`` predicts its first point backwards
    (error ``first[i]``) and its last point forwards (``last[i]``); a point predicted both
    ways gets the mean of the two. Points no window predicts (series shorter than
    ``2 * window - 2``) get the mean error.

    The first ``masked`` windows are not trusted (AER's start mask): their backward errors
    become the smallest backward error, and their forward predictions are left out.

    >>> regression_errors(np.array([1.0, 2.0, 3.0]), np.array([5.0, 7.0, 9.0]), window=2)
    array([1. , 3.5, 5. , 9. ])
    >>> regression_errors(np.array([1.0, 2.0, 3.0]), np.array([5.0, 7.0, 9.0]), window=2, masked=2)
    array([1., 1., 3., 9.])
    """
    first, last = np.array(first, dtype=np.float64), np.asarray(last, dtype=np.float64)
    m = len(first)
    k = min(max(0, int(masked)), m)
    if k:
        first[:k] = first.min()
    total, cnt = np.zeros(m + window - 1), np.zeros(m + window - 1)
    total[:m] += first
    cnt[:m] += 1
    total[window - 1 + k:] += last[k:]
    cnt[window - 1 + k:] += 1
    return np.where(cnt > 0, total / np.maximum(cnt, 1), np.concatenate([first, last]).mean())


def start_mask(n_windows: int, portion: float = 0.01) -> int:
    """How many leading windows AER's rule masks: 1% of them (Orion's AER). Their errors are
    a start-up transient (the smoothing and the reconstruction see half a neighbourhood
    there), and unmasked they raise false alarms at the start of a series."""
    return int(portion * n_windows)


def inner_points(scaled: np.ndarray, x_hat: np.ndarray, ends: bool) -> tuple[np.ndarray, np.ndarray]:
    """The series and reconstructed windows a reconstruction error compares: all of them, or
    with prediction heads (``ends``) each window's inner points over the series' inner points
    (window i's inner points are points i + 1 .. i + window - 2). :func:`to_points` maps the
    result back to every point."""
    return (scaled[1:-1], x_hat[:, 1:-1]) if ends else (scaled, x_hat)


def to_points(v: np.ndarray, ends: bool) -> np.ndarray:
    """Values of the series' inner points (``ends``) to all points, repeating the edge ones."""
    return np.pad(v, 1, mode="edge") if ends else v


def series_scores(outputs, scaled: np.ndarray, window: int, scoring: str, rec_error: str = "dtw",
                  ends: bool = False) -> np.ndarray:
    """Per-point scores of a whole series from a window model's per-window ``outputs``.

    ``outputs`` maps "critic" (m,) and, by rule, "rec" and "certainty" (m,) or "x_hat"
    (m, window, d); ``scaled`` is the (n, d) series the windows were cut from. ``scoring``:
    "uncertainty" (critic * hyperbolic error * certainty), "hyperbolic" (without certainty),
    "mult" / "sum" (TadGAN's critic and ``rec_error`` reconstruction error). Critic values and
    errors are normalised over the series and smoothed (1% of its length).

    For "mult" / "sum" with the point and area errors this is Orion's TadGAN scoring to 1e-9
    (``tests/test_hypad.py`` checks it against Orion 0.7.1's own outputs) except the
    smoothing length: Orion takes 1% of the number of windows, without the 200-point cap, so on
    a NAB series it smooths over one point fewer. The DTW error is centred on its point;
    Orion's is shifted by half its stretch (5 points) and 0 at the series' ends.

    With ``ends`` (AER's prediction heads) each window's first and last points are predictions,
    not reconstructions: "rec", "certainty" and the reconstruction error cover the inner
    ``window - 2`` points. Two more rules need them, AER's: "aer" (the product of the
    reconstruction and prediction errors, each min-max scaled to [1, 2]) and "aer-sum" (their
    mean, each scaled to [0, 1]); the prediction error is :func:`regression_errors` of
    ``outputs["first"]`` and ``outputs["last"]``, smoothed. As in Orion's AER, both errors of
    the first 1% of windows are masked to their minimum (:func:`start_mask`)."""
    smooth = smoothing_window(len(scaled))
    inner = window - 2 if ends else window
    if scoring in HYPERBOLIC_RULES:
        score = critic_scores(outputs["critic"], window, smooth)
        score = score * to_points(rolling_mean(zscore_positive(windows_mean(outputs["rec"], inner)), smooth), ends)
        if scoring == "uncertainty":
            score = score * to_points(windows_mean(outputs["certainty"], inner), ends)
        return score
    aer = scoring in AER_RULES
    if aer and not ends:
        raise ValueError(f"rule {scoring!r} needs prediction heads (ends=True)")
    y, x_hat = inner_points(scaled, outputs["x_hat"], ends)
    err = reconstruction_errors(y, x_hat, rec_error, smooth=smooth)
    if aer:
        k = start_mask(len(x_hat))
        err[:k] = err.min()
        reg = rolling_mean(regression_errors(outputs["first"], outputs["last"], window, masked=k), smooth)
        return combine_minmax(to_points(err, ends), reg, "mult" if scoring == "aer" else "sum")
    return combine(critic_scores(outputs["critic"], window, smooth), zscore_positive(to_points(err, ends)),
                   scoring)


def _minmax(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    span = float(x.max() - x.min())
    return lo + (hi - lo) * (x - x.min()) / (span if span > 0 else 1.0)


def combine_minmax(rec: np.ndarray, reg: np.ndarray, how: str = "mult", lam: float = 0.5) -> np.ndarray:
    """AER's combination of reconstruction and prediction errors over a series: each min-max
    scaled, to [1, 2] and multiplied ("mult"), or to [0, 1] and weighted ``lam`` / ``1 - lam``.

    >>> combine_minmax(np.array([0.0, 1.0, 2.0]), np.array([5.0, 5.0, 7.0]))
    array([1. , 1.5, 4. ])
    """
    rec, reg = np.asarray(rec, dtype=np.float64), np.asarray(reg, dtype=np.float64)
    if how == "mult":
        return _minmax(rec, 1.0, 2.0) * _minmax(reg, 1.0, 2.0)
    if how == "sum":
        return lam * _minmax(rec, 0.0, 1.0) + (1.0 - lam) * _minmax(reg, 0.0, 1.0)
    raise ValueError(f"unknown combination {how!r}")


def ewma(x: np.ndarray, span: int) -> np.ndarray:
    """Causal exponentially weighted mean with ``alpha = 2 / (span + 1)``, the weights
    renormalised over the points seen so far (pandas' ``ewm(span).mean()``), as Orion's AER
    smooths its prediction errors.

    >>> ewma(np.array([1.0, 1.0, 4.0]), span=1)
    array([1., 1., 4.])
    >>> ewma(np.array([0.0, 3.0]), span=3)
    array([0., 2.])
    """
    from scipy.signal import lfilter

    beta = 1.0 - 2.0 / (span + 1.0)
    num = lfilter([1.0], [1.0, -beta], np.asarray(x, dtype=np.float64))
    den = (1.0 - beta ** np.arange(1, len(x) + 1)) / (1.0 - beta) if beta > 0 else np.ones(len(x))
    return num / den


def orion_aer_errors(point_errors: np.ndarray, first: np.ndarray, last: np.ndarray, window: int,
                     smooth: int, *, ewma_smoothing: bool = True, mask: bool = True,
                     floor0: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The reconstruction and prediction errors per point as Orion 0.7.1's AER scores them.

    The packaged ``"aer"`` rule (:func:`series_scores`) departs from Orion's on purpose (a
    centred moving average of the prediction errors, which on NAB raised fewer false
    intervals; no zero floor). This is Orion's scoring, kept as the reference the tests check
    against Orion's own outputs and that the research log's "Orion's AER scoring" figures
    were measured with (docs/log/hypad-nab.md). Each detail can be switched off:
    ``ewma_smoothing`` smooths each direction's prediction errors with a causal EWMA (span 1%
    of the windows) before mapping them to points, instead of the centred mean of ``smooth``
    points after; ``mask`` sets the first 1% of windows' errors to their minimum (the forward
    errors of the masked windows count as missing); ``floor0`` min-max scales the
    reconstruction error from 0 instead of from its minimum (Orion pads it with a zero at each
    end).

    ``point_errors`` is the inner points' reconstruction error mapped to every point
    (:func:`to_points`), ``first`` / ``last`` each window's backward and forward prediction
    errors, ``window`` the window length. Combine the result with :func:`combine_minmax`.
    """
    m = len(first)
    k = start_mask(m) if mask else 0
    first, last = np.asarray(first, dtype=np.float64), np.asarray(last, dtype=np.float64)
    if ewma_smoothing:
        span = max(1, int(0.01 * m))
        first, last = ewma(first, span), ewma(last, span)
    reg = regression_errors(first, last, window, masked=k)
    if not ewma_smoothing:
        reg = rolling_mean(reg, smooth)
    rec = np.array(point_errors, dtype=np.float64)
    if k:  # as series_scores masks it: the first k inner points, and point 0 that repeats them
        rec[:1 + k] = rec[1:-1].min()
    if floor0:
        rec[0] = rec[-1] = 0.0
    return rec, reg
