"""Peaks-over-threshold thresholds: SPOT and DSPOT (Siffer et al., KDD 2017).

Scores are "higher = more anomalous". Scores above an initial high quantile ``t`` (the
``level`` quantile of a calibration batch) are *peaks*; their excesses over ``t`` are fitted
with a generalised Pareto distribution (GPD), which gives the threshold ``z_q`` that a score
exceeds with probability ``q``. Scores above ``z_q`` are anomalies and, as in SPOT, are *not*
added to the peak set; other peaks are added and the GPD is refitted.

One addition to the paper (``empirical_floor``, on by default): the threshold is never below
the empirical ``1 - q`` quantile of the scores seen, since more than a fraction ``q`` of the
normal scores would then lie above it. A bounded fit (GPD shape < 0) puts ``z_q`` just below
its end point; when the largest scores repeat exactly (a periodic series, a saturating
score), the paper's SPOT flags each repeat, forever, as alarms never enter the peak set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..base import ConfigError, Decision, StateError

__all__ = ["DSPOT", "SPOT", "fit_gpd"]


def _profile_loglik(theta: np.ndarray, y: np.ndarray) -> np.ndarray:
    """GPD log-likelihood maximised over (gamma, sigma) for each theta = gamma / sigma; -inf
    where theta is not admissible (call inside ``np.errstate(divide="ignore", invalid="ignore")``)."""
    n = len(y)
    a = np.multiply.outer(theta, y)
    g = np.add.reduce(np.log1p(a, out=a), axis=1) / n  # .mean(axis=1), same bits
    ll = -n * (np.log(g / theta) + 1.0 + g)
    return np.where(ll < np.inf, ll, -np.inf)  # nan (log of a negative sigma) and inf: -inf


# np.linspace(0, 1, 33): the points of each refining grid, as fractions of its bracket
_LOCAL = np.linspace(0.0, 1.0, 33)


# Grimshaw's admissible thetas, in units of 1/max (negative: (-1/max, 0)) and 1/mean of the
# excesses; log-spaced towards both ends of the negative range (the grid used to stop at
# -0.29/max and missed slightly negative shapes: a test against scipy's fit caught it).
_THETA_NEG = np.concatenate([-(1.0 - np.geomspace(1e-6, 0.5, 30)), -np.geomspace(0.5, 1e-4, 30)[1:]])
_THETA_POS = np.geomspace(1e-4, 1e3, 60)


def fit_gpd(excesses: np.ndarray) -> tuple[float, float]:
    """Fit a GPD (location 0) to positive excesses; return ``(gamma, sigma)``.

    Maximum likelihood via Grimshaw's reduction to the single parameter ``theta = gamma/sigma``:
    a log-spaced grid over its admissible range, then two refining grids around its best point
    (three vectorised evaluations of the likelihood in all: SPOT refits on most new peaks, and
    for its usual peak sets of tens of excesses the cost is numpy's per-call overhead, not the
    arithmetic); the exponential case (``gamma = 0``) competes too. Never raises on degenerate
    input: too few or constant excesses fall back to the exponential fit (the method-of-moments
    answer).

    >>> rng = np.random.default_rng(0)
    >>> from scipy.stats import genpareto
    >>> g, s = fit_gpd(genpareto.rvs(0.2, scale=2.0, size=20000, random_state=rng))
    >>> abs(g - 0.2) < 0.05 and abs(s - 2.0) < 0.1
    True
    """
    y = np.asarray(excesses, dtype=np.float64)
    y = y[y > 0]
    n = len(y)
    if n == 0:
        return 0.0, 1e-12
    mean, ymax = float(np.add.reduce(y)) / n, float(np.maximum.reduce(y))
    best = (0.0, mean, -n * (math.log(mean) + 1.0))  # exponential
    if n < 3 or ymax - float(np.minimum.reduce(y)) <= 1e-12 * ymax:
        return best[0], best[1]
    grid = np.concatenate([_THETA_NEG / ymax, _THETA_POS / mean])  # ascending
    with np.errstate(divide="ignore", invalid="ignore"):
        ll = _profile_loglik(grid, y)
        i = int(ll.argmax())
        if ll[i] > best[2]:
            lo = grid[i - 1] if i > 0 else grid[i] - abs(grid[i])
            hi = grid[i + 1] if i + 1 < len(grid) else grid[i] * 2.0
            lo = max(lo, -(1.0 - 1e-9) / ymax)
            theta, value = float(grid[i]), float(ll[i])
            for _ in range(2):  # refining grids: each narrows the bracket 16x in one array op
                ts = _LOCAL * (hi - lo) + lo
                lls = _profile_loglik(ts, y)
                k = int(lls.argmax())
                if lls[k] >= value:
                    theta, value = float(ts[k]), float(lls[k])
                lo, hi = ts[max(k - 1, 0)], ts[min(k + 1, 32)]
            g = float(np.add.reduce(np.log1p(theta * y))) / n
            if theta != 0 and g != 0 and value > best[2]:
                best = (g, g / theta, value)
    return best[0], best[1]


_isfinite = math.isfinite


def _quantile(t: float, gamma: float, sigma: float, q: float, n: int, n_peaks: int) -> float:
    r = q * n / max(n_peaks, 1)
    if abs(gamma) < 1e-12:
        return t - sigma * math.log(r)
    return t + sigma / gamma * (r ** (-gamma) - 1.0)


class SPOT:
    """Streaming Peaks-Over-Threshold (SPOT) for stationary score streams.

    Parameters
    ----------
    q
        Risk: the probability that a normal score exceeds the threshold.
    level
        Quantile of the calibration batch used as the initial threshold ``t``; the scores
        above it are the peaks the GPD is fitted to.
    init
        Number of scores collected before calibrating automatically when no ``fit`` was
        called. During calibration ``update`` returns ``Decision(False, inf)``.
    empirical_floor
        Keep the threshold at or above the empirical ``1 - q`` quantile of the calibration
        batch and the normal scores since (with fewer than ``1 / q`` of them: their largest).
        On NAB's streaming protocol the paper's rule raised one false interval per day on
        anomaly-free periodic series (docs/log/hypad-nab.md, 2026-12-07, 6e53ff9).
        ``False``: the paper's threshold.
    max_peaks
        Keep only the newest ``max_peaks`` excesses (bounded memory for long streams);
        ``None`` keeps all, as in the paper.
    refit_growth
        Refit the GPD once the peak set has grown by this fraction since the last fit (at
        least one peak); in between, the threshold still follows every score through the
        counts ``n`` and ``n_peaks``. ``0`` refits on every peak, as in the paper. A fit costs
        O(peaks) (0.3 ms for 20 peaks, 8 ms for 5,000 here), so refitting on every peak made
        a calibrated SPOT cost ~24 us per score on average and more as peaks accumulate;
        with the default 1% the estimates lag by 1% of the peaks, well inside their
        sampling error (~1/sqrt(peaks)).

    Attributes ``threshold_`` (``z_q``, or the floor; ``inf`` while calibrating), ``floor_``,
    ``t_``, ``gamma_``, ``sigma_``, ``n_`` (scores seen since calibration started) end with ``_``.

    >>> rng = np.random.default_rng(1)
    >>> spot = SPOT(q=1e-3).fit(rng.exponential(size=5000))
    >>> spot.update(0.5).is_anomaly, spot.update(50.0).is_anomaly
    (False, True)
    """

    def __init__(self, q: float = 1e-3, level: float = 0.98, init: int = 1000,
                 max_peaks: int | None = 5000, refit_growth: float = 0.01, empirical_floor: bool = True):
        if not 0 < q < 1:
            raise ConfigError(f"q must be in (0, 1), got {q!r}")
        if not 0 < level < 1:
            raise ConfigError(f"level must be in (0, 1), got {level!r}")
        if not isinstance(init, int) or init < 10:
            raise ConfigError(f"init must be an integer >= 10, got {init!r}")
        if max_peaks is not None and (not isinstance(max_peaks, int) or max_peaks < 10):
            raise ConfigError(f"max_peaks must be None or an integer >= 10, got {max_peaks!r}")
        if isinstance(refit_growth, bool) or not isinstance(refit_growth, int | float) \
                or not 0 <= refit_growth <= 1:
            raise ConfigError(f"refit_growth must be a number in [0, 1], got {refit_growth!r}")
        if not isinstance(empirical_floor, bool):
            raise ConfigError(f"empirical_floor must be true or false, got {empirical_floor!r}")
        self.q, self.level, self.init, self.max_peaks = q, level, init, max_peaks
        self.refit_growth = refit_growth
        self.empirical_floor = empirical_floor
        self._reset()

    def _reset(self) -> None:
        self.calibration_: list[float] = []
        self.peaks_ = np.empty(0, dtype=np.float64)
        self.t_ = self.gamma_ = self.sigma_ = float("nan")
        self.threshold_ = math.inf
        self.floor_ = -math.inf
        self.n_ = 0
        self.n_peaks_ = 0
        self.since_fit_ = 0  # peaks added since the GPD was last fitted

    @property
    def calibrated(self) -> bool:
        return math.isfinite(self.t_)

    def fit(self, scores) -> SPOT:
        """Calibrate on an initial batch of (normal-ish) scores; replaces any previous state."""
        s = np.asarray(scores, dtype=np.float64).ravel()
        if len(s) < 10 or not np.all(np.isfinite(s)):
            raise ConfigError(f"fit needs at least 10 finite scores, got {len(s)}")
        self._calibrate(s)
        return self

    def _calibrate(self, s: np.ndarray) -> None:
        self._reset()
        self.t_ = float(np.quantile(s, self.level))
        self.peaks_ = s[s > self.t_] - self.t_
        self.n_ = len(s)
        self.n_peaks_ = len(self.peaks_)
        self._trim()
        self._refit()

    def _trim(self) -> None:
        if self.max_peaks is not None and len(self.peaks_) > self.max_peaks:
            self.peaks_ = self.peaks_[-self.max_peaks:]

    def _refit(self) -> None:
        self.since_fit_ = 0
        self.gamma_, self.sigma_ = fit_gpd(self.peaks_)
        self.floor_ = self._floor()
        self.threshold_ = max(self.floor_, _quantile(self.t_, self.gamma_, self.sigma_, self.q, self.n_,
                                                     self.n_peaks_) if self.n_peaks_ else self.t_)

    def _floor(self) -> float:
        """The empirical ``1 - q`` quantile of the scores seen: the (floor(q n) + 1)-th largest,
        read from the kept peaks (all scores above ``t``; when some were dropped, the same
        fraction of those kept). Updated with the GPD, so it lags as the fit does."""
        m = len(self.peaks_)
        if not self.empirical_floor or m == 0:
            return -math.inf
        k = int(self.q * self.n_ * m / max(self.n_peaks_, m))
        if k >= m:
            return self.t_
        return self.t_ + float(np.partition(self.peaks_, m - 1 - k)[m - 1 - k])

    def update(self, score: float) -> Decision:
        s = float(score)
        t = self.t_
        if not _isfinite(t):  # not calibrated yet
            self.calibration_.append(s)
            if len(self.calibration_) >= self.init:
                self._calibrate(np.asarray(self.calibration_, dtype=np.float64))
            return Decision(False, math.inf)
        if s > self.threshold_:
            return Decision(True, self.threshold_)
        n = self.n_ = self.n_ + 1
        if s > t:
            self.peaks_ = np.append(self.peaks_, s - t)
            self.n_peaks_ += 1
            self.since_fit_ += 1
            self._trim()
            if self.since_fit_ >= self.refit_growth * (len(self.peaks_) - self.since_fit_):
                self._refit()
                return Decision(False, self.threshold_)
        n_peaks = self.n_peaks_
        if n_peaks:  # _quantile(t, gamma, sigma, q, n, n_peaks), inlined: this runs for every score
            r = self.q * n / n_peaks
            gamma = self.gamma_
            if abs(gamma) < 1e-12:
                z = t - self.sigma_ * math.log(r)
            else:
                z = t + self.sigma_ / gamma * (r ** (-gamma) - 1.0)
            self.threshold_ = z if z > self.floor_ else self.floor_
        return Decision(False, self.threshold_)

    # -- state ---------------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {"q": self.q, "level": self.level, "init": self.init, "max_peaks": self.max_peaks,
                "refit_growth": self.refit_growth, "empirical_floor": self.empirical_floor}

    def state_dict(self) -> dict[str, Any]:
        cal = self.calibrated
        return {"class": type(self).__name__, "params": self._params(),
                "calibration": np.asarray(self.calibration_, dtype=np.float64),
                "peaks": self.peaks_.copy(), "n": self.n_, "n_peaks": self.n_peaks_, "since_fit": self.since_fit_,
                "t": self.t_ if cal else None, "gamma": self.gamma_ if cal else None,
                "sigma": self.sigma_ if cal else None, "threshold": self.threshold_ if cal else None,
                "floor": self.floor_ if cal else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        try:
            if state["class"] != type(self).__name__:
                raise StateError(f"state of {state['class']!r} cannot be loaded into {type(self).__name__}")
            self.__init__(**state["params"])
            self.calibration_ = [float(v) for v in np.asarray(state["calibration"], dtype=np.float64)]
            self.peaks_ = np.array(state["peaks"], dtype=np.float64)
            self.n_, self.n_peaks_ = int(state["n"]), int(state["n_peaks"])
            self.since_fit_ = int(state.get("since_fit", 0))  # absent in states of earlier versions
            if state["t"] is not None:
                self.t_, self.gamma_, self.sigma_ = float(state["t"]), float(state["gamma"]), float(state["sigma"])
                self.threshold_ = float(state["threshold"])
                # absent in states of earlier versions, whose SPOT had no floor
                self.floor_ = float(state["floor"]) if state.get("floor") is not None else -math.inf
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"bad {type(self).__name__} state: {e}") from e

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._params().items())})"


class DSPOT(SPOT):
    """SPOT with drift: thresholds ``score - local mean`` of the last ``depth`` normal scores.

    The reported threshold is in score units (``z_q`` plus the current local mean). The first
    ``depth`` scores only fill the local window, then ``init`` residuals calibrate the GPD;
    all of them return ``Decision(False, inf)``. Anomalous scores do not enter the window.

    >>> rng = np.random.default_rng(2)
    >>> d = DSPOT(depth=20, init=200)
    >>> decisions = [d.update(v) for v in np.linspace(0, 100, 2000) + rng.normal(size=2000)]
    >>> 95 < decisions[-1].threshold < 110
    True
    """

    def __init__(self, q: float = 1e-3, level: float = 0.98, init: int = 1000,
                 max_peaks: int | None = 5000, depth: int = 10, refit_growth: float = 0.01,
                 empirical_floor: bool = True):
        if not isinstance(depth, int) or depth < 1:
            raise ConfigError(f"depth must be an integer >= 1, got {depth!r}")
        self.depth = depth
        super().__init__(q=q, level=level, init=init, max_peaks=max_peaks, refit_growth=refit_growth,
                         empirical_floor=empirical_floor)
        self.window_: list[float] = []

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "depth": self.depth}

    def fit(self, scores) -> DSPOT:
        s = np.asarray(scores, dtype=np.float64).ravel()
        if len(s) < self.depth + 10:
            raise ConfigError(f"fit needs at least depth + 10 = {self.depth + 10} scores, got {len(s)}")
        mov = np.convolve(s, np.ones(self.depth) / self.depth, mode="valid")[:-1]
        if not np.all(np.isfinite(s)):
            raise ConfigError("fit needs finite scores")
        self._calibrate(s[self.depth:] - mov)
        self.window_ = [float(v) for v in s[-self.depth:]]
        return self

    def update(self, score: float) -> Decision:
        s = float(score)
        if len(self.window_) < self.depth:
            self.window_.append(s)
            return Decision(False, math.inf)
        mean = float(np.mean(self.window_))
        was_calibrated = self.calibrated
        d = super().update(s - mean)
        if not d.is_anomaly:
            self.window_.pop(0)
            self.window_.append(s)
        if not was_calibrated:
            return Decision(False, math.inf)
        return Decision(d.is_anomaly, d.threshold + mean)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "window": np.asarray(self.window_, dtype=np.float64)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        try:
            self.window_ = [float(v) for v in np.asarray(state["window"], dtype=np.float64)]
        except KeyError as e:
            raise StateError(f"bad DSPOT state: {e}") from e
