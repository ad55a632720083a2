"""Record-breaking experts: a streaming detector that needs no threshold tuning per stream.

Each feature of the stream is watched by four small experts, and a fifth on request, each
with one statistic:

``range``  the value itself, against the range ``[lo, hi]`` of every value seen so far;
``level``  the median of the last ``level_short`` values, against the median of the
           ``level_window`` values before them, in units of their interquartile range
           (a robust z-score: level shifts and sustained excursions inside the range);
``shape``  the last ``shape_window`` values (averaged down to ``shape_points``), against the
           nearest of the windows seen before (a memory of ``shape_memory`` rows, every
           ``shape_stride``-th window), in the stream's own units: a pattern not seen before
           (a record in the units of its statistic: were both in units of the range seen so
           far, one wide excursion would shrink every later statistic against an older record).
``season`` the same window against the windows one period earlier (give or take two rows), when
           the stream has a clear period: a familiar pattern at the wrong time of the cycle. The
           period is the lag of the highest autocorrelation of the last ``season_span`` rows past
           its first zero crossing, re-estimated every 256 rows, used only while that
           autocorrelation is at least 0.8 (streams that are not clearly periodic have none).
``stuck``  (``stuck=True``) the number of identical values in a row, against the longest such run
           that has ended: a run alarms when it reaches twice that length (and at
           least ``STUCK_MIN`` values), and again at each doubling. A sensor that stops updating
           repeats its last reading; in a stream whose values vary, two repeats in a row are that.

An expert is alarmed by a *record*: a statistic larger than the largest it has produced so far
(the shape expert's record decays with half-life ``shape_halflife`` rows, as patterns change
slowly; the range, level and season records do not decay). Its score is the relative excess
over that record, ``e / (1 + e)``; a value beyond the range by more than ``tolerance`` of it
scores at least 0.5. The detector's score is the largest over experts and features, in [0, 1).

Why records: a statistic's record is broken about ``ln n`` times in ``n`` exchangeable values, so
on normal data alarms thin out as the stream ages, on every stream alike, whatever its scale,
noise or seasonality; an anomaly is what beats everything seen before by a margin. The same
corpus-wide threshold on the score then means the same thing on every stream, which is what a
service with one default threshold, and NAB's one threshold per profile, need.

Refractory period: a row scores 0 unless it beats every score of the ``refractory`` rows before
it. Whatever the threshold, such a row would only repeat an alarm raised at most ``refractory``
rows earlier (a statistic that keeps rising breaks its record on many consecutive rows), so it
adds nothing to the incident but one more false alarm per row outside it. The rule needs no
threshold, so it holds at every operating point at once.

The design is ours. It was shaped on NAB (``docs/nab-records-search.md`` records the search and
what each part adds) and keeps the experts of the streaming detectors on NAB's scoreboard that we could
describe in a line: the "spatial" range check that Numenta's HTM detector adds to its temporal
model, and a nearest-neighbour distance of recent windows as in KNN-CAD and ARTime.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..base import BaseDetector, ConfigError

__all__ = ["RecordExperts"]

EXPERTS = ("range", "level", "shape", "season", "stuck")
STUCK_MIN = 3           # identical values in a row before the stuck expert may alarm
SEASON_EVERY = 256      # rows between two estimates of the period
SEASON_MIN_ACF = 0.8    # autocorrelation at the period below which a stream has no period
SEASON_SHIFT = 2        # rows by which a window may be out of phase with the period before
SEASON_MIN_LAG = 16     # shortest period looked for (rows)


def _period(hist: np.ndarray) -> int:
    """The stream's period in rows (0 for none): the lag, past the autocorrelation's first zero
    crossing (the stream's own smoothness) and below a third of the history (three cycles at
    least), with the highest autocorrelation, if that is at least SEASON_MIN_ACF and the lag is
    not the last one searched (the peak may lie beyond)."""
    n = len(hist)
    top = n // 3
    if top <= SEASON_MIN_LAG + 2:
        return 0
    x = hist - hist.mean()
    spec = np.fft.rfft(x, 2 * n)
    ac = np.fft.irfft(spec * np.conj(spec))[:top + 1]
    if not ac[0] > 0:
        return 0
    neg = np.flatnonzero(ac < 0)
    if not len(neg):
        return 0
    first = max(SEASON_MIN_LAG, int(neg[0]))
    if first >= top:
        return 0
    best = first + int(np.argmax(ac[first:]))
    return best if best < top and ac[best] >= SEASON_MIN_ACF * ac[0] else 0


def _median(srt: list[float]) -> float:
    """Median of a sorted list (the mean of the middle two for an even count, as numpy's)."""
    k = len(srt)
    return srt[k // 2] if k % 2 else 0.5 * (srt[k // 2 - 1] + srt[k // 2])


def _mad(srt: list[float], med: float) -> float:
    """Median absolute deviation from ``med`` of a sorted list (the lower of the middle two for
    an even count), exactly, in O(log n): the
    deviations are two sorted runs (above and below ``med``), and the median of their union is
    found by binary search instead of by sorting them."""
    k = len(srt)
    m = bisect.bisect_left(srt, med)  # srt[:m] < med <= srt[m:]
    return _kth_deviation(srt, m, med, (k - 1) // 2)  # the lower median for an even count: one search


def _kth_deviation(srt: list[float], m: int, med: float, j: int) -> float:
    """The ``j``-th smallest ``|srt[i] - med|`` (0-based): ``i`` of them from the run above ``med``
    (``srt[m + i] - med``, ascending), ``j + 1 - i`` from the run below (``med - srt[m - 1 - t]``)."""
    na, nb = len(srt) - m, m
    lo, hi = max(0, j + 1 - nb), min(j + 1, na)
    two = 2.0 * med
    while True:
        i = (lo + hi) >> 1
        t = j - i  # the last one taken from below is its t-th
        if i < na and t >= 0 and two > srt[m + i] + srt[m - 1 - t]:  # below's t-th > above's i-th
            lo = i + 1
        elif i > 0 and t + 1 < nb and srt[m + i - 1] + srt[m - 2 - t] > two:  # above's (i-1)-th > below's (t+1)-th
            hi = i - 1
        else:
            above = srt[m + i - 1] - med if i > 0 else -math.inf
            below = med - srt[m - 1 - t] if t >= 0 else -math.inf
            return above if above > below else below


class _Feature:
    """The experts of one feature, on plain floats (the per-record cost is Python's)."""

    __slots__ = ("det", "n", "lo", "hi", "recent", "sorted", "rec_level", "pool", "buf", "used", "rec_shape",
                 "hist", "period", "rec_season", "last", "run", "rec_run")

    def __init__(self, det: RecordExperts) -> None:
        self.det = det
        self.n = 0                      # values learned
        self.lo = self.hi = 0.0         # range of every value learned
        self.recent: deque[float] = deque()   # the last level_window + level_short values
        # the level_window values before the last level_short - 1, sorted: the window that the
        # next value's short median (of it and the level_short - 1 before it) is compared with
        self.sorted: list[float] = []
        self.rec_level = 0.0            # record of the level statistic
        self.pool: deque[float] = deque()     # last shape_window // shape_points values
        # the stream averaged over shape_window // shape_points rows, one value per row (a
        # window's pooled points are every f-th of these); kept in a flat buffer that is
        # compacted when full, so past windows are strided views, never copies
        self.buf = np.zeros(det._keep + det._slack)
        self.used = 0
        self.rec_shape = 0.0            # record (decaying) of the shape statistic
        self.hist = np.zeros(det.season_span)  # the last season_span values, row r at r % season_span
        self.period = 0                 # rows (0: no clear period)
        self.rec_season = 0.0           # record of the season statistic
        self.run = 0                    # identical values in a row, ending at the last learned
        self.rec_run = 1                # the longest such run that has ended (1: none longer)
        # (n, x, stats) of the last value scored: score_one then learn_one of the same record
        # (the service's per-record path) computes its statistics once
        self.last: tuple | None = None

    # -- statistics of a new value x, from the state before it ----------------------------
    def stats(self, x: float) -> tuple:
        """``(range excess, level, shape, pooled value, season, run)`` of a new value ``x``."""
        det = self.det
        if self.n == 0:
            return 0.0, 0.0, 0.0, None, 0.0, 1
        span = self.hi - self.lo
        # range: how far outside [lo, hi], in units of its width, beyond the tolerance
        out = max(x - self.hi, self.lo - x)
        e_range = max(out / span - det.tolerance, 0.0) if span > 0 else 0.0
        # level: robust z of the short median against the window before it (median absolute
        # deviation, scaled to a standard deviation; floored for flat windows)
        level = 0.0
        srt = self.sorted
        if len(srt) >= 20:
            recent = self.recent
            tail = [recent[-i] for i in range(1, det.level_short)]
            tail.append(x)
            tail.sort()
            med = _median(srt)
            mad = 1.4826 * _mad(srt, med)
            scale = max(mad, 1e-3 * max(abs(med), 1e-9), 1e-12)
            level = abs(_median(tail) - med) / scale
        # shape: distance of the newest pooled window to the nearest stored one
        shape = 0.0
        f = det._pool
        mean = (sum(self.pool) - (self.pool[0] if len(self.pool) == f else 0.0) + x) / f
        w, m, stride = det.shape_window, det.shape_points, det.shape_stride
        # windows in memory: ending w, w + stride, w + 2 stride, ... rows before the newest
        # (never overlapping it, and in the same phase modulo stride, so a period that is a
        # multiple of stride finds its own windows)
        k = min((self.used - (m - 1) * f - w + stride) // stride, det.shape_memory // stride)
        newest = None
        if k > 0 and self.n >= w:
            newest = np.empty(m)
            newest[-1] = mean
            newest[:-1] = self.buf[self.used - (m - 1) * f:self.used - f + 1:f]
            last = self.used - w  # buffer index of the latest window's end that may be compared
            first = last - (k - 1) * stride - (m - 1) * f
            # a view of the k past windows, one per column (numpy reduces a short first axis
            # across long rows three times faster than the other way round)
            past = np.ndarray((m, k), np.float64, self.buf, first * 8, (f * 8, stride * 8))
            shape = float(np.abs(past - newest[:, None]).max(axis=0).min())
        # season: distance to the windows ending one period (give or take SEASON_SHIFT rows)
        # before the newest, those that do not overlap it and lie in the buffer
        season = 0.0
        p = self.period
        if p and newest is not None:
            late = min(SEASON_SHIFT, p - w)   # the newest window's end is buffer index used
            early = min(SEASON_SHIFT, self.used - p - (m - 1) * f)
            if late + early >= 0:
                first = self.used - p - early - (m - 1) * f  # first point of the earliest window
                past = np.ndarray((m, late + early + 1), np.float64, self.buf, first * 8, (f * 8, 8))
                season = float(np.abs(past - newest[:, None]).max(axis=0).min())
        run = self.run + 1 if x == self.recent[-1] else 1
        return e_range, level, shape, mean, season, run

    def excess(self, stats: tuple) -> tuple[float, float, float, float, float]:
        """The experts' relative excesses over their records (0 when no record is broken)."""
        e_range, level, shape, _, season, run = stats
        if self.n < self.det.warmup:  # records are still forming
            return 0.0, 0.0, 0.0, 0.0, 0.0
        e_level = level / self.rec_level - 1.0 if self.rec_level > 0 and level > self.rec_level else 0.0
        e_shape = shape / self.rec_shape - 1.0 if self.rec_shape > 0 and shape > self.rec_shape else 0.0
        e_season = season / self.rec_season - 1.0 if self.rec_season > 0 and season > self.rec_season else 0.0
        # stuck: when the run of identical values reaches twice the longest run completed before
        # it (and at least STUCK_MIN values), and again each time it doubles: a few rows per run,
        # each above the last (so the refractory period never hides them all)
        e_stuck = 0.0
        if self.det.stuck:
            base = self.stuck_base()
            if run >= base and run % base == 0 and (run // base) & (run // base - 1) == 0:
                e_stuck = run / self.rec_run - 1.0
        return e_range, e_level, e_shape, e_season, e_stuck

    def stuck_base(self) -> int:
        """The run of identical values at which the stuck expert alarms first."""
        return max(STUCK_MIN, 2 * self.rec_run)

    def learn(self, x: float, stats: tuple) -> None:
        det = self.det
        _, level, shape, mean, season, run = stats
        if self.n == 0:
            self.lo = self.hi = x
        else:
            self.lo, self.hi = min(self.lo, x), max(self.hi, x)
        if self.n >= det.warmup // 2:  # the first rows' statistics are transients, not records
            self.rec_level = max(self.rec_level, level)
            self.rec_shape = max(self.rec_shape * det._decay, shape)
            self.rec_season = max(self.rec_season, season)
        if run == 1:  # a run of identical values ended (or none began): the longest is the record
            self.rec_run = max(self.rec_run, self.run)
        self.run = run
        # level window: the value that leaves the next short median's reach joins it
        recent, short = self.recent, det.level_short
        recent.append(x)
        if len(recent) >= short:
            bisect.insort(self.sorted, recent[-short])
            if len(self.sorted) > det.level_window:
                del self.sorted[bisect.bisect_left(self.sorted, recent[-short - det.level_window])]
            if len(recent) > short + det.level_window:
                recent.popleft()
        # shape memory: the pooled stream, compacted to its last _keep values when full
        if mean is None:
            mean = x
        if self.used == len(self.buf):
            keep = det._keep
            self.buf[:keep] = self.buf[self.used - keep:self.used]
            self.used = keep
        self.buf[self.used] = mean
        self.used += 1
        self.pool.append(x)
        if len(self.pool) > det._pool:
            self.pool.popleft()
        self.n += 1
        span = det.season_span
        if span:
            self.hist[(self.n - 1) % span] = x
            if self.n % SEASON_EVERY == 0 and self.n >= 2 * SEASON_EVERY:
                self.period = _period(self._history())

    def _history(self) -> np.ndarray:
        """The last ``season_span`` values (fewer at first), oldest first."""
        span, n = self.det.season_span, self.n
        if n < span or not span:
            return self.hist[:n].copy()
        k = n % span
        return np.concatenate((self.hist[k:], self.hist[:k]))

    # -- state -----------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        keep = min(self.used, self.det._keep)
        return {"n": self.n, "lo": self.lo, "hi": self.hi, "recent": np.array(self.recent, dtype=np.float64),
                "rec_level": self.rec_level, "pool": np.array(self.pool, dtype=np.float64),
                "pooled": self.buf[self.used - keep:self.used].copy(), "rec_shape": self.rec_shape,
                "hist": self._history(), "period": self.period, "rec_season": self.rec_season,
                "run": self.run, "rec_run": self.rec_run}

    def set_state(self, st: Mapping[str, Any]) -> None:
        det = self.det
        self.n, self.lo, self.hi = int(st["n"]), float(st["lo"]), float(st["hi"])
        self.recent = deque(np.asarray(st["recent"], dtype=np.float64).tolist())
        vals = list(self.recent)
        self.sorted = sorted(vals[max(len(vals) - det.level_short - det.level_window + 1, 0):
                                  max(len(vals) - det.level_short + 1, 0)])
        self.rec_level = float(st["rec_level"])
        self.pool = deque(np.asarray(st["pool"], dtype=np.float64).tolist())
        pooled = np.asarray(st["pooled"], dtype=np.float64).ravel()
        if len(pooled) > det._keep:
            raise ValueError(f"{len(pooled)} pooled values, at most {det._keep} expected")
        self.buf = np.zeros(det._keep + det._slack)
        self.buf[:len(pooled)] = pooled
        self.used = len(pooled)
        self.rec_shape = float(st["rec_shape"])
        hist = np.asarray(st["hist"], dtype=np.float64).ravel()
        if len(hist) != min(self.n, det.season_span):
            raise ValueError(f"{len(hist)} values of history, {min(self.n, det.season_span)} expected")
        self.hist = np.zeros(det.season_span)
        if len(hist):
            self.hist[np.arange(self.n - len(hist), self.n) % det.season_span] = hist
        self.period, self.rec_season = int(st["period"]), float(st["rec_season"])
        self.run, self.rec_run = int(st.get("run", 1 if self.n else 0)), int(st.get("rec_run", 1))


class RecordExperts(BaseDetector):
    """Record-breaking experts per feature (range, level, shape, season; stuck on request); score in [0, 1).

    See the module's docstring for what each expert watches. ``explain(x)`` names the feature and
    expert behind a score.

    Parameters
    ----------
    tolerance
        How far outside the range seen so far, as a fraction of its width, a value must lie
        to alarm the range expert.
    level_window, level_short
        The level expert compares the median of the last ``level_short`` values with the
        median and interquartile range of the ``level_window`` values before them.
    shape_window, shape_points
        The shape expert's window (rows), averaged down to ``shape_points`` points
        (``shape_window`` must be a multiple of it).
    shape_memory, shape_stride
        Rows of past windows the shape expert remembers, and which of them it keeps (every
        ``shape_stride``-th): the memory holds ``shape_memory // shape_stride`` windows.
    shape_halflife
        Rows after which the shape expert's record has decayed to half.
    season_span
        Rows of history from which the season expert estimates the stream's period (0: no
        season expert); periods up to a third of it are found.
    warmup
        Rows learned before any expert may alarm.
    refractory
        Rows after a score during which a score that does not beat it is 0 (0: none).
    stuck
        Whether the stuck expert watches for runs of identical values (a dead sensor). Off by
        default: on NAB it flags data outages that NAB does not label (docs/nab.md).

    >>> import numpy as np
    >>> det = RecordExperts()
    >>> t = np.arange(3000)
    >>> x = np.sin(2 * np.pi * t / 96) + 0.05 * np.random.default_rng(0).normal(size=t.size)
    >>> x[2500:2510] += 3.0                             # a burst far outside the range
    >>> s = det.process_many(x[:, None])
    >>> int(np.argmax(s)) in range(2500, 2510), float(s[:2500].max()) < float(s.max())
    (True, True)
    """

    name = "records"
    #: Scores mean the same on every stream: one fixed value. 0.07 is the corpus threshold that
    #: NAB's optimiser chooses for the standard profile (docs/nab.md).
    default_threshold = ("fixed", {"value": 0.07})

    def __init__(self, tolerance: float = 0.05, level_window: int = 500, level_short: int = 6,
                 shape_window: int = 32, shape_points: int = 8, shape_memory: int = 2000, shape_stride: int = 4,
                 shape_halflife: float = 2000.0, season_span: int = 2048, warmup: int = 150,
                 refractory: int = 50, stuck: bool = False):
        for pname, v, lo in (("level_window", level_window, 20), ("level_short", level_short, 1),
                             ("shape_window", shape_window, 2), ("shape_points", shape_points, 1),
                             ("shape_memory", shape_memory, 1), ("shape_stride", shape_stride, 1),
                             ("season_span", season_span, 0), ("warmup", warmup, 0),
                             ("refractory", refractory, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"records {pname} must be an integer >= {lo}, got {v!r}")
        if shape_window % shape_points:
            raise ConfigError(f"records shape_window ({shape_window}) must be a multiple of shape_points "
                              f"({shape_points})")
        if shape_memory < shape_stride:
            raise ConfigError(f"records shape_memory ({shape_memory}) must be at least shape_stride ({shape_stride})")
        for pname, v in (("tolerance", tolerance), ("shape_halflife", shape_halflife)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
                raise ConfigError(f"records {pname} must be a positive number, got {v!r}")
        self.tolerance, self.level_window, self.level_short = tolerance, level_window, level_short
        self.shape_window, self.shape_points = shape_window, shape_points
        self.shape_memory, self.shape_stride, self.shape_halflife = shape_memory, shape_stride, shape_halflife
        if not isinstance(stuck, bool):
            raise ConfigError(f"records stuck must be true or false, got {stuck!r}")
        self.season_span, self.warmup, self.refractory, self.stuck = season_span, warmup, refractory, stuck
        self._decay = 0.5 ** (1.0 / shape_halflife)
        self._pool = shape_window // shape_points
        self._keep = shape_memory + 2 * shape_window + shape_stride
        self._slack = max(256, self._keep // 4)  # rows between two compactions of the pooled stream

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"level_window": 40, "shape_window": 16, "shape_memory": 200, "warmup": 20}

    def _on_features(self, d: int) -> None:
        self._feats = [_Feature(self) for _ in range(d)]
        # (row, score) of the rows of the refractory period that a later row could fail to beat:
        # decreasing in score, so the first is the largest (a monotone queue)
        self._recent: deque[tuple[int, float]] = deque()

    def _refract(self, score: float) -> float:
        """``score`` unless a row of the refractory period scored at least as much (then 0)."""
        recent = self._recent
        return 0.0 if recent and score <= recent[0][1] else score

    def _remember(self, row: int, score: float) -> None:
        """Enter the (unrefracted) score of ``row``, just learned, into the refractory period."""
        if not self.refractory:
            return
        recent = self._recent
        if score > 0.0:
            while recent and recent[-1][1] <= score:
                recent.pop()
            recent.append((row, score))
        while recent and recent[0][0] <= row - self.refractory:  # out of the next row's period
            recent.popleft()

    @staticmethod
    def _combine(ex: tuple[float, float, float, float, float]) -> float:
        e_range, e_level, e_shape, e_season, e_stuck = ex
        s = max(e_level, e_shape, e_season, e_stuck)
        score = s / (1.0 + s)
        if e_range > 0:  # beyond the range: at least 0.5, rising with the excess
            score = max(score, 0.5 + 0.5 * e_range / (e_range + 0.05))
        return score

    def _score(self, v: np.ndarray) -> float:
        best = 0.0
        for f, x in zip(self._feats, v.tolist(), strict=True):
            st = f.stats(x)
            f.last = (f.n, x, st)
            best = max(best, self._combine(f.excess(st)))
        return self._refract(best)

    def _learn(self, v: np.ndarray) -> None:
        best = 0.0
        row = self._feats[0].n
        for f, x in zip(self._feats, v.tolist(), strict=True):
            last = f.last
            st = last[2] if last is not None and last[0] == f.n and last[1] == x else f.stats(x)
            best = max(best, self._combine(f.excess(st)))
            f.learn(x, st)
        self._remember(row, best)
        self._count_warmup()

    def _count_warmup(self) -> None:
        # min, not "n while n <= warmup": one process_many call may take the count past warmup
        self.warmup_scores_ = min(self._feats[0].n, self.warmup)

    def process_many(self, X: np.ndarray, learn: bool = True) -> np.ndarray:
        X = self._mat(X)
        if not learn:
            return super().process_many(X, learn=False)
        out = np.empty(len(X))
        feats = self._feats
        for i, row in enumerate(X.tolist()):
            best = 0.0
            n = feats[0].n
            for f, x in zip(feats, row, strict=True):
                st = f.stats(x)
                best = max(best, self._combine(f.excess(st)))
                f.learn(x, st)
            out[i] = self._refract(best)
            self._remember(n, best)
        if len(X):
            self._count_warmup()
        return out

    def unit_score(self, scores: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)

    def explain(self, x: Mapping[str, float]) -> list[tuple[str, float]]:
        """The feature/expert pairs that score ``x``, largest first: ``[("cpu:level", 0.71), ...]``."""
        v = self._vec(x)
        out = []
        for name, f, val in zip(self.features_, self._feats, v.tolist(), strict=True):
            for expert, e in zip(EXPERTS, f.excess(f.stats(val)), strict=True):
                if e > 0:
                    one = [0.0] * len(EXPERTS)
                    one[EXPERTS.index(expert)] = e
                    out.append((f"{name}:{expert}", round(self._combine(tuple(one)), 4)))
        return sorted(out, key=lambda t: -t[1])[:3]

    def _get_state(self) -> dict[str, Any]:
        if self.features_ is None:
            return {}
        recent = self._recent
        return {"features": [f.get_state() for f in self._feats], "warmup_scores": self.warmup_scores_,
                "recent_rows": np.array([r for r, _ in recent], dtype=np.int64),
                "recent_scores": np.array([s for _, s in recent], dtype=np.float64)}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        if self.features_ is None:
            return
        feats = state["features"]
        if len(feats) != len(self._feats):
            raise ValueError(f"state has {len(feats)} features, detector has {len(self._feats)}")
        for f, st in zip(self._feats, feats, strict=True):
            f.set_state(st)
        self.warmup_scores_ = int(state.get("warmup_scores", 0))
        rows = np.asarray(state.get("recent_rows", ()), dtype=np.int64).tolist()
        scores = np.asarray(state.get("recent_scores", ()), dtype=np.float64).tolist()
        if len(rows) != len(scores):
            raise ValueError(f"{len(rows)} refractory rows but {len(scores)} scores")
        self._recent = deque(zip(rows, scores, strict=True))
