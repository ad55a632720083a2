"""Simple streaming thresholds: a running quantile and a fixed value. Higher score = more anomalous."""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..base import ConfigError, Decision, StateError

__all__ = ["Fixed", "Quantile"]


class Quantile:
    """Flag scores above the ``q`` quantile of the ``window`` most recent scores.

    The quantile is exact (numpy's default linear interpolation) over a bounded buffer of
    recent scores kept sorted, so each update costs O(window) memory moves and no sort. The
    threshold a score is compared with is computed *before* the score joins the buffer. Until
    ``init`` scores were seen, ``update`` returns ``Decision(False, inf)``. Every score enters the
    buffer (anomalies too), so the quantile follows the recent distribution.

    >>> th = Quantile(q=0.9, window=100, init=10)
    >>> _ = th.fit(np.arange(100.0))
    >>> th.update(95.0).is_anomaly, round(th.threshold_, 2), th.update(5.0).is_anomaly
    (True, 90.1, False)
    """

    def __init__(self, q: float = 0.999, window: int = 10_000, init: int = 100):
        if not 0 < q < 1:
            raise ConfigError(f"q must be in (0, 1), got {q!r}")
        if not isinstance(window, int) or window < 1:
            raise ConfigError(f"window must be an integer >= 1, got {window!r}")
        if not isinstance(init, int) or not 1 <= init <= window:
            raise ConfigError(f"init must be an integer in [1, window], got {init!r}")
        self.q, self.window, self.init = q, window, init
        self.recent_: deque[float] = deque()
        self._sorted: list[float] = []

    @property
    def threshold_(self) -> float:
        n = len(self._sorted)
        if n < self.init:
            return math.inf
        pos = self.q * (n - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, n - 1)
        a, b = self._sorted[lo], self._sorted[hi]
        return a + (b - a) * (pos - lo)

    def _push(self, s: float) -> None:
        self.recent_.append(s)
        bisect.insort(self._sorted, s)
        if len(self.recent_) > self.window:
            old = self.recent_.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    def fit(self, scores) -> Quantile:
        """Fill the buffer with an initial batch of scores."""
        for s in np.asarray(scores, dtype=np.float64).ravel():
            self._push(float(s))
        return self

    def update(self, score: float) -> Decision:
        s = float(score)
        th = self.threshold_
        self._push(s)
        return Decision(bool(s > th), th)

    def state_dict(self) -> dict[str, Any]:
        return {"class": "Quantile", "params": {"q": self.q, "window": self.window, "init": self.init},
                "recent": np.asarray(self.recent_, dtype=np.float64)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        try:
            if state["class"] != "Quantile":
                raise StateError(f"state of {state['class']!r} cannot be loaded into Quantile")
            self.__init__(**state["params"])
            self.recent_ = deque(float(v) for v in np.asarray(state["recent"], dtype=np.float64))
            self._sorted = sorted(self.recent_)
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"bad Quantile state: {e}") from e

    def __repr__(self) -> str:
        return f"Quantile(q={self.q!r}, window={self.window!r}, init={self.init!r})"


class Fixed:
    """Flag scores strictly above a fixed ``value``.

    >>> Fixed(3.0).update(3.5)
    Decision(is_anomaly=True, threshold=3.0)
    """

    def __init__(self, value: float = 3.0):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ConfigError(f"value must be a number, got {value!r}")
        self.value = value

    def fit(self, scores) -> Fixed:
        return self

    def update(self, score: float) -> Decision:
        return Decision(bool(float(score) > self.value), float(self.value))

    def state_dict(self) -> dict[str, Any]:
        return {"class": "Fixed", "params": {"value": self.value}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        try:
            self.__init__(**state["params"])
        except (KeyError, TypeError) as e:
            raise StateError(f"bad Fixed state: {e}") from e

    def __repr__(self) -> str:
        return f"Fixed(value={self.value!r})"
