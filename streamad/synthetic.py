"""Synthetic telemetry with injected, labelled anomalies, for the demo, tests and benchmarks.

Two generators, both deterministic for a given ``seed``:

- :func:`generate`: a multi-key IoT/service telemetry set (a few correlated features per key
  with daily and weekly seasonality, trend and noise) with anomalies of six kinds injected
  into the second part of each series.
- :func:`node_fleet`: an HPC node fleet (dozens of physically coupled metrics per node,
  job-driven load) with labelled hardware and configuration faults.

Both return a :class:`SyntheticData`; :func:`iter_records` turns one into a time-ordered
stream of :class:`LabelledRecord` tuples ``(key, ts, values, label)`` for the service, the
demo and the replay producer.

>>> data = generate(n_keys=2, n_points=500, seed=1)
>>> data.keys, data.features, data.values["device-00"].shape
(['device-00', 'device-01'], ['cpu', 'memory', 'latency'], (500, 3))
>>> first = next(iter_records(data))
>>> first.key, sorted(first.values), first.label
('device-00', ['cpu', 'latency', 'memory'], False)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .base import ConfigError

__all__ = [
    "ANOMALY_KINDS",
    "FAULT_KINDS",
    "Anomaly",
    "LabelledRecord",
    "SyntheticData",
    "generate",
    "iter_records",
]

#: Anomaly kinds :func:`generate` can inject.
ANOMALY_KINDS = ("spike", "level_shift", "drift", "frequency_change", "flatline", "noise_burst")

#: Fault kinds :func:`node_fleet` can inject.
FAULT_KINDS = ("governor_powersave", "governor_performance", "fan_failure", "memory_leak",
               "thermal_throttling", "noisy_sensor", "dead_sensor")

DAY_S = 86_400
WEEK_S = 7 * DAY_S
#: 2026-01-01 00:00 UTC, a Thursday: the default first timestamp.
START_TS = 1_767_225_600.0

_FEATURE_NAMES = ("cpu", "memory", "latency", "requests", "errors", "temperature", "humidity",
                  "voltage")


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One injected anomaly: rows ``start`` (inclusive) to ``end`` (exclusive) of ``key``.

    ``features`` names the features it was injected into (the others are untouched).
    """

    key: str
    start: int
    end: int
    kind: str
    features: tuple[str, ...] = ()


@dataclass(frozen=True)
class SyntheticData:
    """A generated multi-key data set. Every key shares ``timestamps`` and ``features``.

    Attributes
    ----------
    keys
        Series keys (devices, nodes), in order.
    features
        Column names of every ``values[key]`` array.
    timestamps
        Seconds since the epoch, shape ``(n_points,)``.
    values
        ``key -> float array (n_points, n_features)``, anomalies included.
    labels
        ``key -> bool array (n_points,)``, True inside an injected anomaly.
    anomalies
        Every injected anomaly, sorted by key then start.
    clean
        ``key -> the values before injection`` (same shape), so a test can see exactly what
        an anomaly changed.
    params
        The generator's parameters (JSON values), for result files.
    """

    keys: list[str]
    features: list[str]
    timestamps: np.ndarray
    values: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    anomalies: list[Anomaly]
    clean: dict[str, np.ndarray]
    params: dict

    @property
    def n_points(self) -> int:
        return len(self.timestamps)

    def kinds(self, key: str) -> np.ndarray:
        """Per-row anomaly kind of ``key`` (``""`` for normal rows)."""
        out = np.full(self.n_points, "", dtype=object)
        for a in self.anomalies:
            if a.key == key:
                out[a.start:a.end] = a.kind
        return out


class LabelledRecord(NamedTuple):
    """One telemetry record of a generated stream and whether it is anomalous."""

    key: str
    ts: float
    values: dict[str, float]
    label: bool


def iter_records(data: SyntheticData, keys: Sequence[str] | None = None) -> Iterator[LabelledRecord]:
    """Yield the data set as a stream: time order, keys interleaved at each timestamp."""
    keys = list(data.keys if keys is None else keys)
    feats = data.features
    cols = [data.values[k] for k in keys]
    labs = [data.labels[k] for k in keys]
    for i, ts in enumerate(data.timestamps.tolist()):
        for key, X, y in zip(keys, cols, labs, strict=True):
            yield LabelledRecord(key, ts, dict(zip(feats, X[i].tolist(), strict=True)), bool(y[i]))


# -- generate ---------------------------------------------------------------------------
def _feature_names(n: int) -> list[str]:
    if n <= len(_FEATURE_NAMES):
        return list(_FEATURE_NAMES[:n])
    return [*_FEATURE_NAMES, *(f"metric_{j}" for j in range(len(_FEATURE_NAMES), n))]


def _place(rng: np.random.Generator, n_points: int, lengths: list[int], lo: int,
           gap: int) -> list[int] | None:
    """Random non-overlapping starts in [lo, n_points) for segments of ``lengths``."""
    free = n_points - lo - sum(lengths) - gap * len(lengths)
    if free < 0:
        return None
    # stars and bars: random slack before each segment, in a random order
    cuts = np.sort(rng.integers(0, free + 1, size=len(lengths)))
    starts, pos = [], lo
    prev = 0
    for c, ln in zip(cuts, lengths, strict=True):
        pos += int(c - prev) + gap
        prev = int(c)
        starts.append(pos)
        pos += ln
    return starts


def generate(n_keys: int = 4, n_points: int = 2000, n_features: int = 3, seed: int = 0,
             anomalies: Sequence[str] = ANOMALY_KINDS, anomaly_rate: float = 0.02,
             step_s: float = 300.0, start_ts: float = START_TS,
             clean_fraction: float = 0.3) -> SyntheticData:
    """A seeded multi-key telemetry set with labelled injected anomalies.

    Each key's features share a daily cycle (with a per-key phase), a weekday/weekend level,
    a slow trend and an AR(1) latent load, each with its own loadings, plus independent
    noise; so features are correlated, and keys differ in level, scale and phase.

    Anomalies are injected only after the first ``clean_fraction`` of each series (a
    detector can warm up on clean data), never overlap, and each goes into one feature:

    - ``spike``: 1-3 points, 6-9 standard deviations of the feature away;
    - ``level_shift``: a 2-3.5 sd step up or down for 30-80 points;
    - ``drift``: a ramp to 3-5 sd over 60-150 points, then back to normal;
    - ``frequency_change``: the daily cycle runs 6-10x faster for a day or so;
    - ``flatline``: the value is stuck at its last reading (a dead sensor) for 40-100 points;
    - ``noise_burst``: noise of 1-1.5 sd added for 30-80 points.

    Kinds are drawn round-robin from ``anomalies`` (from a seed-dependent offset), so every
    listed kind appears once there are as many anomalies as kinds. There are about
    ``anomaly_rate * n_points / 25`` anomalies per key, at least one.

    Parameters
    ----------
    step_s
        Seconds between samples (300: five-minute telemetry, so a day is 288 points).
    """
    bad = [k for k in anomalies if k not in ANOMALY_KINDS]
    if bad:
        raise ConfigError(f"unknown anomaly kind(s) {bad}; choose from {', '.join(ANOMALY_KINDS)}")
    if n_keys < 1 or n_features < 1 or n_points < 10:
        raise ConfigError(f"need n_keys >= 1, n_features >= 1, n_points >= 10; got "
                          f"{n_keys}, {n_features}, {n_points}")
    if not 0 <= anomaly_rate < 0.5:
        raise ConfigError(f"anomaly_rate must be in [0, 0.5), got {anomaly_rate}")
    rng = np.random.default_rng(seed)
    feats = _feature_names(n_features)
    keys = [f"device-{k:02d}" for k in range(n_keys)]
    t = start_ts + step_s * np.arange(n_points)
    day_phase = 2 * np.pi * (t % DAY_S) / DAY_S
    weekend = (((t // DAY_S) + 3) % 7 >= 5).astype(float)  # epoch day 0 was a Thursday
    ramp = np.arange(n_points) / n_points

    values, clean, labels, injected = {}, {}, {}, []
    kinds = list(anomalies)
    kind_pos = int(rng.integers(len(kinds))) if kinds else 0
    for key in keys:
        phase = rng.uniform(0, 2 * np.pi)
        daily_load = rng.uniform(0.5, 1.5, n_features)
        weekly_load = rng.uniform(-0.6, 0.6, n_features)
        trend_load = rng.uniform(-0.5, 0.5, n_features)
        latent_load = rng.uniform(0.2, 0.6, n_features)
        level = rng.uniform(2.0, 50.0, n_features)
        scale = rng.uniform(0.5, 5.0, n_features)
        noise_sd = rng.uniform(0.08, 0.2, n_features)
        latent = np.empty(n_points)
        latent[0] = 0.0
        eps = rng.normal(0, np.sqrt(1 - 0.95 ** 2), n_points)
        for i in range(1, n_points):
            latent[i] = 0.95 * latent[i - 1] + eps[i]
        cycle = np.sin(day_phase + phase)
        seasonal = cycle[:, None] * daily_load
        rest = (weekend[:, None] * weekly_load + ramp[:, None] * trend_load
                + latent[:, None] * latent_load + rng.normal(size=(n_points, n_features)) * noise_sd)
        X0 = level + scale * (seasonal + rest)
        X = X0.copy()
        sd = X0.std(axis=0)
        y = np.zeros(n_points, dtype=bool)

        n_anom = max(1, round(anomaly_rate * n_points / 25)) if kinds and anomaly_rate > 0 else 0
        todo = [kinds[(kind_pos + i) % len(kinds)] for i in range(n_anom)]
        kind_pos += n_anom
        lengths = [_length(rng, k, step_s) for k in todo]
        lo = int(np.ceil(clean_fraction * n_points))
        starts = _place(rng, n_points, lengths, lo, gap=10)
        if starts is None:
            raise ConfigError(f"{n_anom} anomalies do not fit in {n_points} points; lower "
                              "anomaly_rate or raise n_points")
        for kind, s, ln in zip(todo, starts, lengths, strict=True):
            j = int(rng.integers(n_features))
            e = s + ln
            seg = slice(s, e)
            sign = rng.choice((-1.0, 1.0))
            if kind == "spike":
                X[seg, j] += sign * rng.uniform(6, 9) * sd[j]
            elif kind == "level_shift":
                X[seg, j] += sign * rng.uniform(2, 3.5) * sd[j]
            elif kind == "drift":
                X[seg, j] += sign * rng.uniform(3, 5) * sd[j] * np.linspace(0, 1, ln + 1)[1:]
            elif kind == "frequency_change":
                fast = rng.uniform(6, 10)
                X[seg, j] += scale[j] * daily_load[j] * (np.sin(fast * day_phase[seg] + phase)
                                                         - cycle[seg])
            elif kind == "flatline":
                X[seg, j] = X[s - 1, j]
            elif kind == "noise_burst":
                X[seg, j] += rng.normal(0, rng.uniform(1, 1.5) * sd[j], ln)
            y[seg] = True
            injected.append(Anomaly(key, s, e, kind, (feats[j],)))
        values[key], clean[key], labels[key] = X, X0, y

    params = {"generator": "generate", "n_keys": n_keys, "n_points": n_points,
              "n_features": n_features, "seed": seed, "anomalies": list(anomalies),
              "anomaly_rate": anomaly_rate, "step_s": step_s, "start_ts": start_ts,
              "clean_fraction": clean_fraction}
    return SyntheticData(keys, feats, t, values, labels, injected, clean, params)


def _length(rng: np.random.Generator, kind: str, step_s: float) -> int:
    if kind == "spike":
        return int(rng.integers(1, 4))
    if kind == "drift":
        return int(rng.integers(60, 151))
    if kind == "flatline":
        return int(rng.integers(40, 101))
    if kind == "frequency_change":
        day = max(20, round(DAY_S / step_s))
        return int(rng.integers(day // 2, day + 1))
    return int(rng.integers(30, 81))
