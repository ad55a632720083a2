"""A base detector plus a model of each feature's spread: finds what changes how a series moves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..base import BaseDetector, ConfigError, StateError
from ..windows import RingBuffer

__all__ = ["Spread"]


class Spread(BaseDetector):
    """Scores each record with a base detector and with the spread of its recent values.

    Detectors of values (how far a record is from what the recent past predicts) miss the
    anomalies that change *how* a series moves while it stays in its usual range: a stuck
    sensor repeating its last reading (a flatline: too predictable, not too far), an
    oscillation that speeds up, noise that grows. All of them change the series' spread.
    This detector keeps, per feature, the log standard deviation of the last ``window``
    values, learns a Gaussian of that vector (:class:`~streamad.detectors.Gaussian` with
    ``window=1``: its Mahalanobis distance) and scores a record by the larger of the base
    detector's score and that distance. A flatline takes the spread to zero (its logarithm
    far below anything seen); a faster oscillation or a noise burst raises it.

    The maximum compares the two scores in one unit when the base detector's score is a
    Mahalanobis distance too (``gaussian``, the default). With a base whose scores live on
    another scale (``pca``'s squared residuals, ``hst``'s masses) the larger part decides
    more often; the spread part still finds flatlines, whose distance is in the hundreds.

    The first ``warmup`` records (default ``3 * window``: a full window of values for the
    spread, then two for its model and the base's first fits) score 0.0 and are counted in
    ``warmup_scores_``, so thresholds leave them out.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.sin(np.arange(700) / 20) + 0.1 * rng.normal(size=700)
    >>> x[600:660] = x[599]                      # the sensor gets stuck
    >>> det = Spread(window=16, base_params={"window": 8})
    >>> s = det.process_many(x[:, None])
    >>> float(s[:48].max()), bool(s[600:660].max() > 10 * np.percentile(s[100:600], 99))
    (0.0, True)
    """

    name = "spread"

    def __init__(self, base: str = "gaussian", base_params: dict[str, Any] | None = None, window: int = 32,
                 warmup: int | None = None):
        from . import make

        if base == self.name:
            raise ConfigError("spread: the base detector cannot be spread itself")
        if not isinstance(window, int) or window < 3:
            raise ConfigError(f"spread window must be an integer of at least 3, got {window!r}")
        if warmup is not None and (not isinstance(warmup, int) or warmup < window):
            raise ConfigError(f"spread warmup must be an integer of at least the window ({window}), got {warmup!r}")
        if base_params is not None and not isinstance(base_params, dict):
            raise ConfigError(f"spread base_params must be a table of parameters, got {base_params!r}")
        make(base, **(base_params or {}))  # a bad base or base parameter fails here, not per key
        self.base = base
        self.base_params = base_params
        self.window = window
        self.warmup = warmup

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"base_params": {"window": 8, "refit_every": 16}, "window": 8}

    @property
    def warmup_records(self) -> int:
        return 3 * self.window if self.warmup is None else self.warmup

    def _on_features(self, d: int) -> None:
        from . import make
        from ._gaussian import Gaussian

        self.base_ = make(self.base, **(self.base_params or {}))
        self.base_._set_features(list(self.features_))
        self.spread_ = Gaussian(window=1)
        self.spread_._set_features([f"spread({f})" for f in self.features_])
        self._recent = RingBuffer(self.window - 1, d)  # the values before the next record
        self.seen_ = 0

    # -- the spread of each feature -------------------------------------------------------
    @staticmethod
    def _log_spread(win: np.ndarray) -> np.ndarray:
        """log standard deviation of each column of ``win`` (..., window, d), floored at
        1e-6 of the values' size so that a stuck series gives a large, finite number."""
        sd = win.std(axis=-2)
        floor = 1e-6 * (1.0 + np.abs(win.mean(axis=-2)))
        return np.log(sd + floor)

    def _spreads(self, X: np.ndarray) -> np.ndarray:
        """The spread feature of each row of ``X`` as the next records, learned one after another."""
        hist = np.concatenate([self._recent.values(), X])
        w = self.window
        if len(hist) < w:
            return np.empty((0, X.shape[1]))
        wins = np.lib.stride_tricks.sliding_window_view(hist, w, axis=0)  # (k, d, w)
        return self._log_spread(np.swapaxes(wins, 1, 2))

    # -- scoring and learning ---------------------------------------------------------------
    def _score(self, v: np.ndarray) -> float:
        base_warm = self.base_.warmup_scores_
        base = self.base_._score(v) if self.seen_ >= self.warmup_records else 0.0
        if self.seen_ < self.warmup_records or self.base_.warmup_scores_ > base_warm:
            self.warmup_scores_ += 1  # no model yet: ours, or the base's (e.g. HypAD's warm-up)
            return 0.0
        spread = self.spread_._score(self._spreads(v[None, :])[0])
        return float(max(base, spread))

    def _learn(self, v: np.ndarray) -> None:
        self.base_._learn(v)
        if self._recent.size == self._recent.capacity:
            self.spread_._learn(self._spreads(v[None, :])[0])
        self._recent.push(v)
        self.seen_ += 1

    def learn_many(self, X: np.ndarray) -> None:
        self.process_many(X)

    def process_many(self, X: np.ndarray, learn: bool = True) -> np.ndarray:
        X = self._mat(X)
        if not learn:
            return super().process_many(X, learn=False)
        n = len(X)
        out = np.zeros(n)
        base_warm = self.base_.warmup_scores_
        base = self.base_.process_many(X)
        spread_feats = self._spreads(X)  # rows whose window is full: the last len(...) of X
        first = n - len(spread_feats)
        spread = np.zeros(n)
        spread[first:] = self.spread_.process_many(spread_feats) if len(spread_feats) else 0.0
        # no model yet, ours or the base's (whose warm-up scores are a prefix too)
        warm = min(n, max(self.warmup_records - self.seen_, self.base_.warmup_scores_ - base_warm, 0))
        out[warm:] = np.maximum(base[warm:], spread[warm:])
        self.warmup_scores_ += warm
        self._recent.extend(X[-self._recent.capacity:])
        self.seen_ += n
        return out

    def _observe(self, v: np.ndarray) -> None:
        self.base_._observe(v)
        self._recent.push(v)

    # -- state --------------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        if self.features_ is None:
            return {}
        return {"base": self.base_.state_dict(), "spread": self.spread_.state_dict(),
                "recent": self._recent.values().copy(), "seen": self.seen_}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        if self.features_ is None:
            return
        try:
            self.base_.load_state_dict(state["base"])
            self.spread_.load_state_dict(state["spread"])
        except StateError as e:
            raise StateError(f"spread: {e}") from None
        self._recent = RingBuffer(self.window - 1, len(self.features_))
        self._recent.extend(np.asarray(state["recent"], dtype=np.float64).reshape(-1, len(self.features_)))
        self.seen_ = int(state["seen"])
