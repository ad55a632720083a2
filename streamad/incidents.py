"""Incidents: one alert per anomaly, not one per flagged record.

A threshold flags records; an on-call engineer wants one message when something starts, a
few while it lasts and one when it is over (the model of Prometheus Alertmanager, PagerDuty
and Datadog monitors). :class:`IncidentTracker` is that state machine for one key:

- **open**: the first flagged record opens an incident (``incident_open``);
- **stay open**: while flagged records keep coming within ``gap`` of the last one;
- **update**: at most one ``incident_update`` per ``update_interval``, only when the peak
  score grew since the last message;
- **close**: the first record ``gap`` or more after the last flagged one closes it
  (``incident_close``: start, end, peak, flagged records, severity).

``gap`` and ``update_interval`` are a number of records or a duration of event time (the
records' own timestamps), :class:`Span`. The same tracker runs in ``streamad serve`` (one per
key, checkpointed with the key's detector and threshold), in ``streamad detect`` and in
``streamad bench --protocol streaming`` (:func:`track_series`), so the benchmark scores
exactly the intervals the service publishes. Pure computation, no I/O; the messages are
dicts with ``"schema": 1`` (``streamad/service/anomalies.schema.json``).

>>> policy = IncidentPolicy.parse(gap=3, update_interval=0)
>>> flags = [0, 1, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0]
>>> [(i.start, i.end, i.flagged) for i in track_series(flags, scores=flags, policy=policy)]
[(1, 4, 3), (9, 9, 1)]
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import ConfigError, StateError

__all__ = ["SCHEMA_VERSION", "Incident", "IncidentPolicy", "IncidentTracker", "Span", "add_top_features",
           "parse_span", "track_series"]

#: The ``"schema"`` of every message on the anomalies topic.
SCHEMA_VERSION = 1

_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0,
          "record": None, "records": None}
_SPAN = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\s*([a-z]*)\s*$")


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of a key's stream: ``records`` records, or ``seconds`` of event time."""

    value: float
    in_records: bool

    def reached(self, records: int, seconds: float) -> bool:
        """Whether ``records`` records / ``seconds`` seconds are at least this span."""
        return records >= self.value if self.in_records else seconds >= self.value

    def __str__(self) -> str:
        if self.in_records:
            return f"{int(self.value)} records"
        return f"{self.value:g}s"


def parse_span(value: Any, what: str, *, allow_zero: bool = False) -> Span:
    """A span from a config value: an integer number of records (``30``, ``"30 records"``)
    or a duration (``"90s"``, ``"10m"``, ``"2h"``, ``"1d"``). Anything else, a negative span,
    or zero where ``allow_zero`` is off, is a one-line :class:`ConfigError` naming ``what``.

    >>> parse_span(30, "gap"), parse_span("10m", "gap")
    (Span(value=30, in_records=True), Span(value=600.0, in_records=False))
    >>> parse_span("5 parsecs", "gap")
    Traceback (most recent call last):
    ...
    streamad.base.ConfigError: gap: unknown unit 'parsecs' in '5 parsecs'; use records, s, m, h or d
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{what}: expected a number of records or a duration such as \"10m\", got {value!r}")
    if isinstance(value, str):
        m = _SPAN.match(value.lower())
        if m is None:
            raise ConfigError(f"{what}: expected a number of records or a duration such as \"10m\", got {value!r}")
        number, unit = m.group(1), m.group(2) or "records"
        if unit not in _UNITS:
            raise ConfigError(f"{what}: unknown unit {m.group(2)!r} in {value!r}; use records, s, m, h or d")
        scale = _UNITS[unit]
        amount = float(number)
    else:
        scale, amount = None, float(value)
    if not math.isfinite(amount):
        raise ConfigError(f"{what}: must be finite, got {value!r}")
    if amount < 0 or amount == 0 and not allow_zero:
        raise ConfigError(f"{what}: must be {'0 or more' if allow_zero else 'more than 0'}, got {value!r}")
    if scale is None:
        if amount != int(amount):
            raise ConfigError(f"{what}: a number of records must be whole, got {value!r}")
        return Span(int(amount), True)
    return Span(amount * scale, False)


@dataclass(frozen=True, slots=True)
class IncidentPolicy:
    """When incidents close (``gap``) and how often they may report a growing peak
    (``update_interval``; 0: every time it grows)."""

    gap: Span = Span(100, True)
    update_interval: Span = Span(100, True)

    @classmethod
    def parse(cls, gap: Any = 100, update_interval: Any = 100, where: str = "incident") -> IncidentPolicy:
        """The policy of two config values (:func:`parse_span`); a bad one is a
        :class:`ConfigError` that names it as ``where`` + ``gap`` / ``update_interval``."""
        return cls(parse_span(gap, f"{where} gap"),
                   parse_span(update_interval, f"{where} update_interval", allow_zero=True))


def _num(x: float) -> float | None:
    """JSON has no NaN or infinity: a non-finite number is written as null."""
    return float(x) if math.isfinite(x) else None


def _severity(score: float, threshold: float) -> float:
    """How far ``score`` exceeds ``threshold``, relative to it (``streamad detect``'s severity)."""
    if not math.isfinite(score) or not math.isfinite(threshold):
        return math.inf if score == math.inf else 0.0
    return (score - threshold) / max(abs(threshold), 1e-12)


def add_top_features(msg: dict[str, Any], explain: Callable[[], list] | None) -> None:
    """Put the features' contributions (``explain()``, computed only now) into an anomaly
    message as ``top_features``, when there are any."""
    if explain is not None:
        top = explain()
        if top:
            msg["top_features"] = top


class IncidentTracker:
    """The incident state machine of one key.

    Feed it every record of the key while an incident is open, and every flagged record
    (:meth:`step`); between incidents an unflagged record changes nothing, so a caller may
    skip those (the service does). Each message it returns is a new dict with ``context``
    (e.g. ``detector``, ``topic``, ``partition``) merged in; ``id_prefix`` + the opening
    record's offset is the incident's id, the same in every message of the incident and
    again after a restart that scores the record again.

    >>> t = IncidentTracker("pump-1", IncidentPolicy.parse(gap=2, update_interval=0))
    >>> [m["type"] for m in t.step(True, 5.0, 3.0, 10.0, 100)]
    ['incident_open']
    >>> [m["type"] for m in t.step(True, 7.0, 3.0, 11.0, 101)]
    ['incident_update']
    >>> t.step(False, 1.0, 3.0, 12.0, 102)
    []
    >>> close, = t.step(False, 1.0, 3.0, 13.0, 103)
    >>> close["type"], close["start"], close["end"], close["peak_score"], close["flagged"], t.open
    ('incident_close', 10.0, 11.0, 7.0, 2, False)
    """

    __slots__ = ("key", "policy", "context", "id_prefix", "open", "id", "start_ts", "start_offset",
                 "end_ts", "end_offset", "peak", "peak_ts", "peak_offset", "peak_threshold", "severity",
                 "flagged", "quiet", "since_message", "message_ts", "reported_peak")

    def __init__(self, key: str, policy: IncidentPolicy, context: Mapping[str, Any] | None = None,
                 id_prefix: str = "") -> None:
        self.key, self.policy = key, policy
        self.context = dict(context or {})
        self.id_prefix = id_prefix
        self.open = False

    # -- the state machine ---------------------------------------------------------------
    def step(self, flagged: bool, score: float, threshold: float, ts: float, offset: int,
             explain: Callable[[], list] | None = None) -> list[dict[str, Any]]:
        """One record of the key: its score, the threshold's decision (``flagged``, the
        ``threshold`` it used), its timestamp and source offset. ``explain()`` (optional)
        returns the features' contributions, asked only for an open or an update."""
        out: list[dict[str, Any]] = []
        if self.open:
            self.since_message += 1
            since_flag = ts - self.end_ts
            gap = self.policy.gap
            if not flagged:
                self.quiet += 1
                if gap.reached(self.quiet, since_flag):
                    out.append(self._close(ts, offset))
                    return out
                self._maybe_update(ts, offset, explain, out)
                return out
            if gap.in_records or since_flag <= gap.value:
                self.quiet = 0
                self.end_ts, self.end_offset = ts, offset
                self.flagged += 1
                self._take(score, threshold, ts, offset)
                self._maybe_update(ts, offset, explain, out)
                return out
            out.append(self._close(ts, offset))  # flagged, but farther than the gap: a new incident
        if flagged:
            out.append(self._open(score, threshold, ts, offset, explain))
        return out

    def _open(self, score, threshold, ts, offset, explain) -> dict[str, Any]:
        self.open = True
        self.id = f"{self.id_prefix}{offset}"
        self.start_ts = self.end_ts = self.message_ts = ts
        self.start_offset = self.end_offset = offset
        self.peak = -math.inf
        self.severity = -math.inf
        self._take(score, threshold, ts, offset)
        self.reported_peak = self.peak
        self.flagged, self.quiet, self.since_message = 1, 0, 0
        msg = self._message("incident_open", ts, offset)
        msg["score"], msg["threshold"] = _num(score), _num(threshold)
        add_top_features(msg, explain)
        return msg

    def _take(self, score: float, threshold: float, ts: float, offset: int) -> None:
        if score > self.peak or self.peak == -math.inf:
            self.peak, self.peak_ts, self.peak_offset, self.peak_threshold = score, ts, offset, threshold
        sev = _severity(score, threshold)
        if sev > self.severity:
            self.severity = sev

    def _maybe_update(self, ts, offset, explain, out: list) -> None:
        if self.peak > self.reported_peak and self.policy.update_interval.reached(
                self.since_message, ts - self.message_ts):
            msg = self._message("incident_update", ts, offset)
            msg.update(self._summary())
            add_top_features(msg, explain)
            self.reported_peak, self.since_message, self.message_ts = self.peak, 0, ts
            out.append(msg)

    def _close(self, ts: float | None, offset: int | None) -> dict[str, Any]:
        msg = self._message("incident_close", ts, offset)
        msg.update(self._summary())
        msg["end"], msg["end_offset"] = self.end_ts, self.end_offset
        msg["severity"] = _num(self.severity)
        self.open = False
        return msg

    def close(self) -> dict[str, Any] | None:
        """Close an open incident now (the end of a finite series); None when none is open.
        The message's ``ts`` and ``offset`` (the record that closed it) are then null."""
        return self._close(None, None) if self.open else None

    def _summary(self) -> dict[str, Any]:
        return {"start": self.start_ts, "start_offset": self.start_offset, "peak_score": _num(self.peak),
                "peak_ts": self.peak_ts, "peak_offset": self.peak_offset,
                "threshold": _num(self.peak_threshold), "flagged": self.flagged}

    def _message(self, kind: str, ts: float | None, offset: int | None) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "type": kind, "id": self.id, "key": self.key, **self.context,
                "ts": ts, "offset": offset}

    # -- state ----------------------------------------------------------------------------
    _STATE = ("id", "start_ts", "start_offset", "end_ts", "end_offset", "peak", "peak_ts", "peak_offset",
              "peak_threshold", "severity", "flagged", "quiet", "since_message", "message_ts", "reported_peak")

    def state_dict(self) -> dict[str, Any]:
        """The open incident (JSON values; ``{"open": False}`` between incidents)."""
        if not self.open:
            return {"open": False}
        return {"open": True, **{name: getattr(self, name) for name in self._STATE}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or not isinstance(state.get("open"), bool):
            raise StateError(f"incident state of key {self.key!r} is malformed: {state!r}")
        self.open = state["open"]
        if self.open:
            try:
                for name in self._STATE:
                    setattr(self, name, state[name])
            except KeyError as e:
                raise StateError(f"incident state of key {self.key!r} has no {e.args[0]!r}") from None


@dataclass(frozen=True, slots=True)
class Incident:
    """One incident of a series (:func:`track_series`): rows ``start`` to ``end`` inclusive
    (first and last flagged record), its peak and how many records were flagged."""

    start: int
    end: int
    peak_score: float | None
    peak: int
    flagged: int
    severity: float | None
    updates: int


def track_series(flags: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray,
                 thresholds: Sequence[float] | np.ndarray | None = None,
                 ts: Sequence[float] | np.ndarray | None = None,
                 policy: IncidentPolicy | None = None) -> list[Incident]:
    """The incidents the service would publish for one key whose records had these threshold
    decisions (``flags``), ``scores``, ``thresholds`` (default 0) and timestamps (``ts``;
    default: the row numbers, which is all a gap in records needs). An incident still open
    at the end of the series ends at its last flagged record."""
    flags = np.asarray(flags, dtype=bool)
    n = len(flags)
    scores = np.asarray(scores, dtype=np.float64)
    th = np.zeros(n) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    times = np.arange(n, dtype=np.float64) if ts is None else np.asarray(ts, dtype=np.float64)
    tracker = IncidentTracker("series", policy or IncidentPolicy())
    found: list[Incident] = []
    updates = 0

    def take(msg):
        nonlocal updates
        if msg["type"] == "incident_update":
            updates += 1
        elif msg["type"] == "incident_close":
            found.append(Incident(msg["start_offset"], msg["end_offset"], msg["peak_score"], msg["peak_offset"],
                                  msg["flagged"], msg["severity"], updates))
            updates = 0

    step = tracker.step
    for i, flagged in enumerate(flags.tolist()):
        if flagged or tracker.open:
            for msg in step(flagged, float(scores[i]), float(th[i]), float(times[i]), i):
                take(msg)
    last = tracker.close()
    if last is not None:
        take(last)
    return found
