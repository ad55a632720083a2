"""Contextual anomaly detection: has this value followed this recent past before?

In the spirit of CAD OSE, the contextual anomaly detector on NAB's scoreboard (Smirnov and
Vendrov's open-source edition, described in NAB's documentation): the stream is turned into
symbols, and a record is anomalous when its symbol was never seen after the symbols that precede
it. We write it from that description, in our own form:

- **Symbols.** Each feature's values are cut into ``bins`` equal bins over the range of its first
  ``learn`` values (widened by ``margin`` on each side), plus one symbol below and one above.
  When more than half of the last ``learn`` symbols fall outside the bins the stream has moved
  for good: the bins are rebuilt over those values and the contexts forgotten.
- **Contexts.** For each order ``k = 1 .. order`` the context is the last ``k`` symbols; for each
  context the detector remembers which symbols have followed it (a bit mask per context, at most
  ``max_contexts`` contexts per order, the oldest forgotten first).
- **Score.** The longest order ``k*`` whose context has been followed by the new symbol before
  measures how familiar the record is: ``score = 1 - k* / (order + 1)`` counting order 0 (the
  symbol alone) as a match of length one. A symbol never seen scores 1; one seen, but never
  after its last symbol, ``1 - 1 / (order + 1)``; a fully familiar continuation 0. With several
  features the score is the largest.

The first ``learn`` records only set the bins; they score 0 and count in ``warmup_scores_``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..base import BaseDetector, ConfigError

__all__ = ["Contextual"]


class _Symbols:
    """One feature: its bins, recent symbols and context memory (plain Python for speed)."""

    __slots__ = ("det", "n", "lo", "hi", "edge", "step", "hist", "tables", "recent", "outside")

    def __init__(self, det: Contextual) -> None:
        self.det = det
        self.n = 0
        self.lo = self.hi = 0.0
        self.edge = self.step = math.nan     # bins: [edge + i * step, edge + (i + 1) * step)
        self.hist: deque[int] = deque(maxlen=det.order)   # the last ``order`` symbols
        self.tables: list[dict[int, int]] = [{} for _ in range(det.order + 1)]  # context code -> mask
        self.recent: deque[float] = deque(maxlen=det.learn)  # values, to rebuild the bins
        self.outside = deque(maxlen=det.learn)                # 1 where the symbol was out of range

    def _bins(self, lo: float, hi: float) -> None:
        width = hi - lo
        width = width if width > 0 else 1e-3 * (abs(lo) + 1e-3)
        self.edge = lo - self.det.margin * width
        self.step = width * (1 + 2 * self.det.margin) / self.det.bins

    def symbol(self, x: float) -> int:
        b = self.det.bins
        i = math.floor((x - self.edge) / self.step)
        return 0 if i < 0 else (b + 1 if i >= b else i + 1)

    def score(self, x: float) -> float:
        if self.n < self.det.learn:
            return 0.0
        s = self.symbol(x)
        base = self.det.bins + 3  # digits run 1 .. bins + 2
        bit = 1 << s
        matched = 1 if self.tables[0].get(0, 0) & bit else 0
        if matched:
            code = 0
            for k, prev in enumerate(reversed(self.hist), start=1):
                code = code * base + prev + 1  # +1: no context symbol is 0, so orders do not collide
                if self.tables[k].get(code, 0) & bit:
                    matched = k + 1
                else:
                    break
        return 1.0 - matched / (self.det.order + 1)

    def learn(self, x: float) -> None:
        det = self.det
        if self.n < det.learn:
            self.lo, self.hi = (x, x) if self.n == 0 else (min(self.lo, x), max(self.hi, x))
            self.n += 1
            self.recent.append(x)
            if self.n == det.learn:
                self._bins(self.lo, self.hi)
            return
        s = self.symbol(x)
        base = det.bins + 3
        bit = 1 << s
        self._remember(0, 0, bit)
        code = 0
        for k, prev in enumerate(reversed(self.hist), start=1):
            code = code * base + prev + 1
            self._remember(k, code, bit)
        self.hist.append(s)
        self.recent.append(x)
        self.outside.append(1 if s == 0 or s == det.bins + 1 else 0)
        self.n += 1
        if len(self.outside) == det.learn and 2 * sum(self.outside) > det.learn:
            # the stream has left the bins for good: new bins over the recent values
            self._bins(min(self.recent), max(self.recent))
            self.tables = [{} for _ in range(det.order + 1)]
            self.hist.clear()
            self.outside.clear()

    def _remember(self, k: int, code: int, bit: int) -> None:
        table = self.tables[k]
        mask = table.pop(code, 0)  # re-inserted last: the dict's order is least recently used first
        table[code] = mask | bit
        if len(table) > self.det.max_contexts:
            del table[next(iter(table))]

    def get_state(self) -> dict[str, Any]:
        codes = [np.fromiter(t.keys(), dtype=np.int64, count=len(t)) for t in self.tables]
        masks = [np.fromiter(t.values(), dtype=np.int64, count=len(t)) for t in self.tables]
        return {"n": self.n, "lo": self.lo, "hi": self.hi, "edge": self.edge, "step": self.step,
                "hist": np.array(self.hist, dtype=np.int64), "codes": codes, "masks": masks,
                "recent": np.array(self.recent, dtype=np.float64), "outside": np.array(self.outside, dtype=np.int64)}

    def set_state(self, st: Mapping[str, Any]) -> None:
        det = self.det
        self.n, self.lo, self.hi = int(st["n"]), float(st["lo"]), float(st["hi"])
        self.edge, self.step = float(st["edge"]), float(st["step"])
        self.hist = deque((int(v) for v in st["hist"]), maxlen=det.order)
        if len(st["codes"]) != det.order + 1:
            raise ValueError(f"{len(st['codes'])} context tables, expected {det.order + 1}")
        self.tables = [dict(zip(np.asarray(c, dtype=np.int64).tolist(), np.asarray(m, dtype=np.int64).tolist(),
                                strict=True)) for c, m in zip(st["codes"], st["masks"], strict=True)]
        self.recent = deque(np.asarray(st["recent"], dtype=np.float64).tolist(), maxlen=det.learn)
        self.outside = deque(np.asarray(st["outside"], dtype=np.int64).tolist(), maxlen=det.learn)


class Contextual(BaseDetector):
    """Score a record by how new its value is after the values just before it (CAD-style).

    Parameters
    ----------
    bins
        Equal bins over the learned range (plus one below and one above); at most 60.
    order
        Longest context, in records.
    learn
        Records that set the bins (and score 0); also the horizon of the out-of-range check that
        rebuilds them.
    margin
        Widening of the learned range on each side, as a fraction of its width.
    max_contexts
        Contexts remembered per order; the least recently seen is forgotten first.

    >>> import numpy as np
    >>> det = Contextual()
    >>> x = np.tile([0.0, 1.0, 2.0, 3.0, 2.0, 1.0], 200)    # a regular zig-zag ...
    >>> x[1000] = 0.0                                      # ... that skips a beat
    >>> s = det.process_many(x[:, None])
    >>> float(s[1000]) > 0.5, float(s[700:1000].max())
    (True, 0.0)
    """

    name = "contextual"
    #: Alarm on a symbol never seen after its last symbol or never seen at all.
    default_threshold = ("fixed", {"value": 0.75})

    def __init__(self, bins: int = 12, order: int = 5, learn: int = 300, margin: float = 0.1,
                 max_contexts: int = 20000):
        for pname, v, lo, hi in (("bins", bins, 1, 60), ("order", order, 1, 12), ("learn", learn, 2, 10**7),
                                 ("max_contexts", max_contexts, 16, 10**8)):
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(f"contextual {pname} must be an integer in [{lo}, {hi}], got {v!r}")
        if (bins + 3) ** order >= 2 ** 62:  # context codes are stored as int64
            raise ConfigError(f"contextual bins={bins} with order={order} is too many contexts to number")
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 10:
            raise ConfigError(f"contextual margin must be a number in [0, 10), got {margin!r}")
        self.bins, self.order, self.learn, self.margin, self.max_contexts = bins, order, learn, margin, max_contexts

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"learn": 30}

    def _on_features(self, d: int) -> None:
        self._feats = [_Symbols(self) for _ in range(d)]

    def _score(self, v: np.ndarray) -> float:
        return max(f.score(x) for f, x in zip(self._feats, v.tolist(), strict=True))

    def _learn(self, v: np.ndarray) -> None:
        for f, x in zip(self._feats, v.tolist(), strict=True):
            f.learn(x)
        self.warmup_scores_ = min(self._feats[0].n, self.learn)

    def unit_score(self, scores: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)

    def _get_state(self) -> dict[str, Any]:
        if self.features_ is None:
            return {}
        return {"features": [f.get_state() for f in self._feats]}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        if self.features_ is None:
            return
        feats = state["features"]
        if len(feats) != len(self._feats):
            raise ValueError(f"state has {len(feats)} features, detector has {len(self._feats)}")
        for f, st in zip(self._feats, feats, strict=True):
            f.set_state(st)
        self.warmup_scores_ = min(self._feats[0].n, self.learn)
