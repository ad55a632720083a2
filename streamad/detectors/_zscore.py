"""Rolling z-score of the newest point."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..base import BaseDetector, ConfigError
from ..windows import RingBuffer

__all__ = ["ZScore"]


class ZScore(BaseDetector):
    """How many rolling standard deviations the newest point lies from the rolling mean.

    The mean and standard deviation are those of the previous ``window`` points (the point
    being scored is not part of them, so a spike cannot hide itself). With several features
    the score is the largest absolute z-score among them.

    Parameters
    ----------
    window
        Number of past points in the rolling statistics.
    min_std
        Floor of the standard deviation relative to ``1 + |mean|``, so a flat signal that moves
        gives a large but finite score.

    >>> det = ZScore(window=5)
    >>> for v in [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]:
    ...     det.learn_one({"x": v})
    >>> round(det.score_one({"x": 1.5}), 3), det.score_one({"x": 10.0}) > 10
    (0.183, True)
    """

    name = "zscore"

    def __init__(self, window: int = 100, min_std: float = 1e-6):
        if int(window) < 2:
            raise ConfigError(f"zscore window must be at least 2, got {window}")
        self.window = window
        self.min_std = min_std

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"window": 20}

    def _on_features(self, d: int) -> None:
        self._buf = RingBuffer(int(self.window), d)
        self._sum = np.zeros(d)
        self._sumsq = np.zeros(d)
        self._shift: np.ndarray | None = None
        self._pushes = 0

    def _learn(self, v: np.ndarray) -> None:
        if self._shift is None:
            self._shift = v.copy()  # sums of values near zero do not lose precision
        x = v - self._shift
        old = self._buf.push(x)
        self._sum += x
        self._sumsq += x * x
        if old is not None:
            self._sum -= old
            self._sumsq -= old * old
        self._pushes += 1
        if self._pushes % int(self.window) == 0:  # wipe accumulated rounding error
            w = self._buf.values()
            self._sum = w.sum(axis=0)
            self._sumsq = (w * w).sum(axis=0)

    def _score(self, v: np.ndarray) -> float:
        n = self._buf.size
        if n < 2:
            return 0.0
        if len(v) == 1:  # the common univariate case, in plain floats: 3x faster
            mean = float(self._sum[0]) / n
            var = max((float(self._sumsq[0]) - n * mean * mean) / (n - 1), 0.0)
            sm = mean + float(self._shift[0])
            std = max(math.sqrt(var), self.min_std * (1.0 + abs(sm)))
            return abs(float(v[0]) - sm) / std
        mean = self._sum / n
        var = np.maximum((self._sumsq - n * mean * mean) / (n - 1), 0.0)
        shifted_mean = mean + self._shift
        std = np.maximum(np.sqrt(var), self.min_std * (1.0 + np.abs(shifted_mean)))
        return float(np.max(np.abs(v - shifted_mean) / std))

    def process_many(self, X: np.ndarray, learn: bool = True) -> np.ndarray:
        X = self._mat(X)
        if not learn or len(X) == 0:
            return super().process_many(X, learn=learn)
        if self._shift is None:
            self._shift = X[0].copy()
        w = int(self.window)
        out = np.empty(len(X))
        for lo in range(0, len(X), 8192):  # bounded blocks keep the running sums exact enough
            out[lo:lo + 8192] = self._process_block(X[lo:lo + 8192] - self._shift, w)
        return out

    #: Keys with at most this many rows in a batch take the cross-key step in
    #: :meth:`process_keys`; longer runs use the per-key cumulative sums.
    keys_step_max = 8

    @classmethod
    def process_keys(cls, jobs: list[tuple[ZScore, np.ndarray]]) -> list[np.ndarray]:
        """``process_many`` for many keys at once (the service's batches hold about one record
        per key): univariate keys with a full window take one vectorised step per row position
        across keys. Same results as ``process_many`` up to rounding."""
        jobs = [(det, det._mat(X)) for det, X in jobs]
        out: list[np.ndarray | None] = [None] * len(jobs)
        fast = []
        for i, (det, X) in enumerate(jobs):
            if len(X) > cls.keys_step_max:
                out[i] = det.process_many(X)
            elif len(X) and det._buf.dim == 1 and det._buf.full:
                fast.append(i)
            else:  # a few rows while the window fills (or several features): record by record
                out[i] = BaseDetector.process_many(det, X)
        if fast:
            for i, scores in zip(fast, _univariate_steps([jobs[i] for i in fast]), strict=True):
                out[i] = scores
        return out  # type: ignore[return-value]

    def _process_block(self, xs: np.ndarray, w: int) -> np.ndarray:
        past = self._buf.values()
        b, n = len(past), len(xs)
        series = np.concatenate([past, xs])
        zero = np.zeros((1, series.shape[1]))
        cs = np.concatenate([zero, np.cumsum(series, axis=0)])
        cs2 = np.concatenate([zero, np.cumsum(series * series, axis=0)])
        pos = np.arange(b, b + n)
        cnt = np.minimum(pos, w)
        lo = pos - cnt
        k = cnt[:, None].astype(np.float64)
        s1 = cs[pos] - cs[lo]
        s2 = cs2[pos] - cs2[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = s1 / k
            var = np.maximum((s2 - k * mean * mean) / (k - 1), 0.0)
        shifted_mean = mean + self._shift
        std = np.maximum(np.sqrt(var), self.min_std * (1.0 + np.abs(shifted_mean)))
        z = np.max(np.abs(xs - mean) / std, axis=1)
        z[cnt < 2] = 0.0
        self._buf.extend(xs[-w:])  # only the new rows: the past ones are in the buffer already
        tail = self._buf.values()
        self._sum = tail.sum(axis=0)
        self._sumsq = (tail * tail).sum(axis=0)
        self._pushes += n
        return z

    def _get_state(self) -> dict[str, Any]:
        if self.features_ is None:
            return {}
        return {"window": self._buf.values().copy(), "shift": self._shift,
                "sum": self._sum.copy(), "sumsq": self._sumsq.copy(), "pushes": self._pushes}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        if self.features_ is None:
            return
        self._buf = RingBuffer(int(self.window), len(self.features_))
        for row in np.asarray(state["window"], dtype=np.float64).reshape(-1, len(self.features_)):
            self._buf.push(row)
        shift = state["shift"]
        self._shift = None if shift is None else np.asarray(shift, dtype=np.float64)
        self._sum = np.asarray(state["sum"], dtype=np.float64).copy()
        self._sumsq = np.asarray(state["sumsq"], dtype=np.float64).copy()
        self._pushes = int(state["pushes"])


def _univariate_steps(jobs: list[tuple[ZScore, np.ndarray]]) -> list[np.ndarray]:
    """Score-then-learn the rows of univariate z-score detectors with full windows, one row
    position at a time across all of them (see ``process_keys``)."""
    out = [np.empty(len(X)) for _, X in jobs]
    for s in range(max(len(X) for _, X in jobs)):
        act = [j for j, (_, X) in enumerate(jobs) if len(X) > s]
        st = np.empty((len(act), 7))  # x, shift, sum, sumsq, oldest, n, min_std
        for r, j in enumerate(act):
            det, X = jobs[j]
            b = det._buf
            st[r] = (X[s, 0], det._shift[0], det._sum[0], det._sumsq[0], b.values()[0, 0], b.size,
                     det.min_std)
        x, shift, s1, s2, old, n, min_std = st.T
        mean = s1 / n
        var = np.maximum((s2 - n * mean * mean) / (n - 1), 0.0)
        sm = mean + shift
        std = np.maximum(np.sqrt(var), min_std * (1.0 + np.abs(sm)))
        z = np.abs(x - sm) / std
        xs = x - shift
        s1 = s1 + xs - old
        s2 = s2 + xs * xs - old * old
        for r, j in enumerate(act):
            det = jobs[j][0]
            out[j][s] = z[r]
            v = xs[r]
            b = det._buf
            b.replace_oldest(v)
            det._sum[0] = s1[r]
            det._sumsq[0] = s2[r]
            det._pushes += 1
            if det._pushes % b.capacity == 0:  # wipe accumulated rounding error, as _learn does
                vals = b.values()
                det._sum = vals.sum(axis=0)
                det._sumsq = (vals * vals).sum(axis=0)
    return out
