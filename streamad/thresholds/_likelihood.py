"""Anomaly likelihood: a label-free probability for any detector's score stream.

Ahmad, Lavin, Purdy & Agha, "Unsupervised real-time anomaly detection for streaming data"
(Neurocomputing 262, 2017), section 4.2: a raw anomaly score is noisy and its scale differs
from one stream to the next, so it is not thresholded directly. Instead the recent raw scores
are modelled as a normal distribution, fitted to a long window of the last ``window`` scores
(mean ``mu``, standard deviation ``sigma``); the short-term mean ``m`` of the last ``short``
scores is compared with it, and the likelihood is ``L = 1 - Q((m - mu) / sigma)``, ``Q`` the
normal tail. A record is anomalous when ``L >= 1 - epsilon``: the recent scores are higher than
the stream's own history makes plausible at probability ``epsilon``. The short-term mean turns
one stray high score into a small change and a run of them into a large one.

Kept from the paper: the window (``window=8000``), the short mean (``short=10``), ``epsilon``
(1e-5) and a learning period during which nothing is flagged (``learn``). Choices of ours, where
the paper is silent: ``sigma`` is at least ``1e-3 * (|mu| + 1e-3)`` so a constant score stream
(a flat sensor) does not divide by zero; the tail is computed directly (``erfc``), not as
``1 - L``, so probabilities far below 1e-16 keep their order.

:meth:`AnomalyLikelihood.surprise` gives ``-log10`` of the tail probability and
:func:`unit` maps it to [0, 1) for NAB's result files: the map is fixed and monotone, so the
probability threshold ``epsilon`` is the unit score ``unit(-log10(epsilon))`` (0.5 for 1e-5),
whatever the stream.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..base import ConfigError, Decision, StateError

__all__ = ["AnomalyLikelihood", "unit"]

_SQRT2 = math.sqrt(2.0)
_UNIT_HALF = 5.0  # surprise (-log10 tail probability) that maps to unit score 0.5


def unit(surprise: float | np.ndarray) -> float | np.ndarray:
    """Map a surprise (``-log10`` of a tail probability, >= 0) to [0, 1): ``s / (s + 5)``.

    >>> unit(5.0)
    0.5
    """
    s = np.maximum(surprise, 0.0)
    out = s / (s + _UNIT_HALF)
    return float(out) if np.ndim(out) == 0 else out


class AnomalyLikelihood:
    """Threshold a score stream by its anomaly likelihood (Ahmad et al. 2017).

    ``update(score)`` returns ``Decision(is_anomaly, threshold)``: anomalous when the tail
    probability of the short-term mean is at most ``epsilon``; ``threshold`` is the raw score
    level the short-term mean had to exceed (``mu + z_epsilon * sigma``), in the score's units.
    ``surprise`` is ``-log10`` of that tail probability for the last score (0 while learning).

    >>> import numpy as np
    >>> th = AnomalyLikelihood(window=500, short=5, learn=100)
    >>> rng = np.random.default_rng(0)
    >>> [th.update(float(s)).is_anomaly for s in rng.normal(1.0, 0.1, 400)].count(True)
    0
    >>> [th.update(5.0).is_anomaly for _ in range(3)]
    [True, True, True]
    """

    def __init__(self, epsilon: float = 1e-5, window: int = 8000, short: int = 10, learn: int = 300):
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 < epsilon < 0.5:
            raise ConfigError(f"epsilon must be a probability in (0, 0.5), got {epsilon!r}")
        for name, v in (("window", window), ("short", short), ("learn", learn)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        if short > window:
            raise ConfigError(f"short ({short}) must not exceed window ({window})")
        self.epsilon, self.window, self.short, self.learn = epsilon, window, short, learn
        # z with Q(z) = epsilon, for the threshold reported in raw units
        from scipy.special import erfcinv

        self._z = float(_SQRT2 * erfcinv(2.0 * epsilon))
        self._reset()

    def _reset(self) -> None:
        self._ring = np.zeros(self.window)
        self.n_ = 0              # scores seen
        self._sum = self._sq = 0.0
        self._short = 0.0         # sum of the last ``short`` scores
        self.surprise_ = 0.0

    # -- the stream ---------------------------------------------------------------------------
    def _push(self, s: float) -> None:
        w, n = self.window, self.n_
        ring = self._ring
        if n >= w:
            old = ring[n % w]
            self._sum -= old
            self._sq -= old * old
        if n >= self.short:
            self._short -= ring[(n - self.short) % w]
        ring[n % w] = s
        self._sum += s
        self._sq += s * s
        self._short += s
        self.n_ = n + 1
        if self.n_ % w == 0:  # refresh the running sums now and then: no drift from rounding
            self._sum, self._sq = float(ring.sum()), float(ring @ ring)
            k = min(self.short, self.n_)
            self._short = float(sum(ring[(self.n_ - 1 - i) % w] for i in range(k)))

    def _fit(self) -> tuple[float, float]:
        k = min(self.n_, self.window)
        mu = self._sum / k
        var = max(self._sq / k - mu * mu, 0.0)
        return mu, max(math.sqrt(var), 1e-3 * (abs(mu) + 1e-3))

    def update(self, score: float) -> Decision:
        s = float(score)
        if not math.isfinite(s):
            s = 0.0 if math.isnan(s) else math.copysign(1e300, s)
        # the distribution is that of the scores before this one: a high score must not
        # widen the yardstick it is measured with
        mu, sigma = self._fit() if self.n_ else (0.0, 1.0)
        self._push(s)
        if self.n_ <= self.learn:
            self.surprise_ = 0.0
            return Decision(False, math.inf)
        m = self._short / min(self.n_, self.short)
        z = (m - mu) / sigma
        tail = 0.5 * math.erfc(z / _SQRT2)
        self.surprise_ = -math.log10(tail) if tail > 0.0 else 330.0 + z * z / (2 * math.log(10))
        return Decision(bool(tail <= self.epsilon), mu + self._z * sigma)

    def surprise(self, score: float) -> float:
        """Update with ``score`` and return its surprise, ``-log10`` of the tail probability."""
        self.update(score)
        return self.surprise_

    def likelihood(self, score: float) -> float:
        """Update with ``score`` and return the paper's likelihood ``L = 1 - Q`` (0.5 while learning)."""
        self.update(score)
        return 1.0 - 10.0 ** -self.surprise_ if self.n_ > self.learn else 0.5

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        k = min(self.n_, self.window)
        start = self.n_ - k
        recent = self._ring[[(start + i) % self.window for i in range(k)]] if k else np.zeros(0)
        return {"class": "AnomalyLikelihood",
                "params": {"epsilon": self.epsilon, "window": self.window, "short": self.short,
                           "learn": self.learn},
                "n": self.n_, "recent": np.asarray(recent, dtype=np.float64), "surprise": self.surprise_,
                "sums": np.array([self._sum, self._sq, self._short])}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        try:
            if state["class"] != "AnomalyLikelihood":
                raise StateError(f"state of {state['class']!r} cannot be loaded into AnomalyLikelihood")
            self.__init__(**state["params"])
            recent = np.asarray(state["recent"], dtype=np.float64)
            n = int(state["n"])
            if len(recent) != min(n, self.window):
                raise ValueError(f"{len(recent)} recent scores for n={n}")
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"bad AnomalyLikelihood state: {e}") from e
        # replay the kept scores into the ring at their positions: sums, short mean and ring
        # are then those of the uninterrupted stream
        start = n - len(recent)
        self.n_ = start
        for s in recent:
            self._ring[self.n_ % self.window] = s
            self.n_ += 1
        if "sums" in state:  # the running sums as they were: the restored stream continues bit for bit
            self._sum, self._sq, self._short = (float(v) for v in np.asarray(state["sums"], dtype=np.float64))
        else:
            self._sum, self._sq = float(recent.sum()), float(recent @ recent)
            self._short = float(recent[-self.short:].sum())
        self.surprise_ = float(state.get("surprise", 0.0))

    def __repr__(self) -> str:
        return (f"AnomalyLikelihood(epsilon={self.epsilon!r}, window={self.window!r}, short={self.short!r}, "
                f"learn={self.learn!r})")
