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
    "node_fleet",
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
    idle
        ``key -> bool array (n_points,)``, True where the node runs no job
        (:func:`node_fleet` only; None otherwise).
    """

    keys: list[str]
    features: list[str]
    timestamps: np.ndarray
    values: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    anomalies: list[Anomaly]
    clean: dict[str, np.ndarray]
    params: dict
    idle: dict[str, np.ndarray] | None = None

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


# -- node_fleet -------------------------------------------------------------------------
_F_MIN, _F_MAX = 1.0, 2.6  # GHz
_T_MAX = 88.0              # degC at which a package throttles
_MEM_GB = 128.0
_FAN_BASE, _FAN_TOP = 4000.0, 12000.0

#: How long each fault lasts, in hours (low, high).
_FAULT_HOURS = {"governor_powersave": (6, 24), "governor_performance": (6, 24),
                "fan_failure": (4, 16), "memory_leak": (8, 24), "thermal_throttling": (4, 12),
                "noisy_sensor": (4, 12), "dead_sensor": (4, 12)}

#: Metrics a noisy or dead sensor fault can hit (physical IPMI sensors, not OS counters).
_SENSORS = ("power_pkg0", "power_pkg1", "power_dram", "power_node", "temp_pkg0", "temp_pkg1",
            "temp_dimm", "temp_exhaust", "fan0", "fan1", "fan2", "fan3")


def _fleet_metrics(n_cores: int) -> list[str]:
    return [*(f"load_cpu{c}" for c in range(n_cores)), *(f"freq_cpu{c}" for c in range(n_cores)),
            "load_avg", "power_pkg0", "power_pkg1", "power_dram", "power_node",
            "temp_pkg0", "temp_pkg1", "temp_dimm", "temp_inlet", "temp_exhaust",
            "fan0", "fan1", "fan2", "fan3", "mem_used", "swap_used", "mem_bw",
            "net_rx", "net_tx", "io_bw"]


def _applications(rng: np.random.Generator, n_apps: int, n_cores: int) -> list[dict]:
    """The fleet's recurring workloads: production HPC time goes to a few applications."""
    apps = []
    for _ in range(n_apps):
        apps.append({
            "cores": max(1, round(n_cores * rng.choice((0.25, 0.5, 0.75, 1.0, 1.0)))),
            "hi": rng.uniform(0.85, 1.0), "comm": rng.uniform(0.3, 0.5),
            "io": rng.uniform(0.15, 0.3), "mem": rng.uniform(0.8, 2.5),
            "bw": rng.uniform(0.5, 4.0), "net": rng.uniform(300, 2000),
            "io_rate": rng.uniform(100, 1500),
            "phases": rng.dirichlet((6.0, 2.5, 1.5)),
            "hours": rng.uniform(2, 12),
        })
    return apps


def _jobs(rng: np.random.Generator, n: int, steps_per_h: float, n_cores: int, apps: list[dict]):
    """A node's schedule: per step, the load of each core, network, I/O and memory per core.

    Jobs of the fleet's applications alternate with idle gaps. A job runs on the first
    cores of the node (the scheduler packs them) and cycles through compute (high load),
    communication (lower load, network) and I/O phases; each run varies a little.
    """
    load = np.zeros((n, n_cores))
    net = np.zeros(n)
    io = np.zeros(n)
    bw_core = np.zeros(n)
    mem_core = np.zeros(n)
    busy = np.zeros(n, dtype=bool)
    i = int(rng.integers(0, int(4 * steps_per_h)))
    while i < n:
        app = apps[int(rng.integers(len(apps)))]
        jit = lambda: rng.uniform(0.93, 1.07)  # noqa: E731 - run-to-run variation
        dur = int(np.clip(app["hours"] * rng.lognormal(0, 0.4), 1, 36) * steps_per_h)
        end = min(n, i + dur)
        k = app["cores"]
        mem, bw = app["mem"] * jit(), app["bw"] * jit()
        j = i
        while j < end:
            pend = min(end, j + max(1, int(rng.uniform(0.5, 2.0) * steps_per_h)))
            phase = rng.choice(3, p=app["phases"])
            u = min(1.0, (app["hi"], app["comm"], app["io"])[phase] * jit())
            seg = slice(j, pend)
            load[seg, :k] = u
            net[seg] = app["net"] * jit() if phase == 1 else rng.uniform(5, 50)
            io[seg] = app["io_rate"] * jit() if phase == 2 else rng.uniform(1, 20)
            j = pend
        bw_core[i:end], mem_core[i:end], busy[i:end] = bw, mem, True
        i = end + int(rng.exponential(3.0) * steps_per_h) + 1
    return load, net, io, bw_core, mem_core, busy


def node_fleet(n_nodes: int = 16, n_metrics: int = 40, days: float = 14, step_s: float = 300.0,
               seed: int = 0, faults: Sequence[str] = FAULT_KINDS, faults_per_node: int = 2,
               healthy_days: float | None = None, n_apps: int = 8,
               start_ts: float = START_TS) -> SyntheticData:
    """A simulated HPC node fleet: per-node IPMI/OS metrics with labelled hardware faults.

    Each node runs jobs of ``n_apps`` recurring applications (each with its own core
    count, load phases, memory, bandwidth, network and I/O profile), separated by idle
    gaps. Physical couplings drive the metrics:
    per-core load sets the core frequency (an on-demand governor), load and frequency set
    package power, power and airflow set temperatures (with thermal lag), temperature
    drives the fan controller, memory bandwidth sets DRAM power; inlet air follows a
    daily cycle of the machine room. Nodes differ in idle power, thermal resistance, fan
    curve, inlet position and sensor offsets.

    Metrics (``20 + 2 * n_cores`` of them, ``n_cores = (n_metrics - 20) // 2``):
    ``load_cpu*`` (0-1), ``freq_cpu*`` (GHz), ``load_avg``, ``power_pkg0/1``,
    ``power_dram``, ``power_node`` (W), ``temp_pkg0/1``, ``temp_dimm``, ``temp_inlet``,
    ``temp_exhaust`` (degC), ``fan0-3`` (rpm), ``mem_used``, ``swap_used`` (GB), ``mem_bw``
    (GB/s), ``net_rx``, ``net_tx``, ``io_bw`` (MB/s).

    Faults (``faults_per_node`` per node, kinds round-robin over ``faults``, only after
    the first ``healthy_days``, default half of ``days``, which is a clean training period):

    - ``governor_powersave`` / ``governor_performance``: the frequency governor is stuck
      at the lowest / highest frequency whatever the load;
    - ``fan_failure``: one fan stops; temperatures rise under normal load, the others spin up;
    - ``memory_leak``: used memory grows by 2-5 GB/h, into swap when RAM is full;
    - ``thermal_throttling``: degraded cooling (heat sink) makes packages hit 88 degC and
      throttle their frequency;
    - ``noisy_sensor``: one IPMI sensor adds noise of 3-5x its normal spread;
    - ``dead_sensor``: one IPMI sensor reads 0.

    Returns a :class:`SyntheticData` with keys ``node-00``... and ``idle`` masks (no job
    running) in ``data.idle``; each fault's ``features`` names the metric(s) it acts on
    directly.

    >>> fleet = node_fleet(n_nodes=2, n_metrics=24, days=2, seed=1, faults_per_node=1)
    >>> fleet.keys, len(fleet.features), fleet.values["node-00"].shape
    (['node-00', 'node-01'], 24, (576, 24))
    """
    bad = [k for k in faults if k not in FAULT_KINDS]
    if bad:
        raise ConfigError(f"unknown fault kind(s) {bad}; choose from {', '.join(FAULT_KINDS)}")
    n_cores = (int(n_metrics) - 20) // 2
    if n_cores < 1 or n_nodes < 1 or days <= 0 or step_s <= 0:
        raise ConfigError(f"need n_metrics >= 22, n_nodes >= 1, days > 0, step_s > 0; got "
                          f"{n_metrics}, {n_nodes}, {days}, {step_s}")
    healthy = days / 2 if healthy_days is None else healthy_days
    rng = np.random.default_rng(seed)
    names = _fleet_metrics(n_cores)
    col = {m: j for j, m in enumerate(names)}
    steps_per_h = 3600.0 / step_s
    n = int(round(days * DAY_S / step_s))
    t = start_ts + step_s * np.arange(n)
    keys = [f"node-{k:02d}" for k in range(n_nodes)]
    room = 22.0 + 1.5 * np.sin(2 * np.pi * (t % DAY_S) / DAY_S - 2.0)
    alpha = 1.0 - np.exp(-step_s / 600.0)  # package thermal time constant ~10 min
    sock = (np.arange(n_cores) >= n_cores / 2).astype(int) if n_cores > 1 else np.zeros(1, int)

    kinds = list(faults)
    kind_pos = int(rng.integers(len(kinds))) if kinds else 0
    apps = _applications(rng, int(n_apps), n_cores)
    values, clean, labels, idle, injected = {}, {}, {}, {}, []
    for key in keys:
        load, net, io, bw_core, mem_core, busy = _jobs(rng, n, steps_per_h, n_cores, apps)
        # node-to-node variation: silicon (idle and dynamic power, top frequency), heat
        # sink contact, fan firmware, rack position (inlet air), sensor calibration
        p_idle = rng.normal(35, 4, 2)
        p_dyn = rng.normal(85, 8, 2)
        r_th = rng.normal(0.33, 0.04, 2)
        f_top = _F_MAX + rng.normal(0, 0.03)
        fan_gain = rng.normal(180, 30)
        inlet_off = rng.normal(0, 2.5)
        temp_off = rng.normal(0, 1.5, 2)
        tach = rng.normal(1.0, 0.03, 4)
        base_mem = rng.uniform(3, 6)

        # this node's faults
        todo = [kinds[(kind_pos + i) % len(kinds)] for i in range(faults_per_node)] if kinds else []
        kind_pos += len(todo)
        lengths = [int(rng.uniform(*_FAULT_HOURS[k]) * steps_per_h) for k in todo]
        lo = int(np.ceil(healthy * DAY_S / step_s))
        starts = _place(rng, n, lengths, lo, gap=int(2 * steps_per_h)) if todo else []
        if starts is None:
            raise ConfigError(f"{len(todo)} faults per node do not fit in {days - healthy} "
                              "days after the healthy period; lower faults_per_node or add days")
        plan = []
        for kind, s, ln in zip(todo, starts, lengths, strict=True):
            if kind == "fan_failure":
                feats = (f"fan{int(rng.integers(4))}",)
            elif kind in ("noisy_sensor", "dead_sensor"):
                feats = (str(rng.choice(_SENSORS)),)
            elif kind == "memory_leak":
                feats = ("mem_used", "swap_used")
            elif kind.startswith("governor"):
                feats = tuple(f"freq_cpu{c}" for c in range(n_cores))
            else:
                feats = ("temp_pkg0", "temp_pkg1", *(f"freq_cpu{c}" for c in range(n_cores)))
            plan.append(Anomaly(key, s, s + ln, kind, feats))
        active = {k: np.zeros(n, dtype=bool) for k in FAULT_KINDS}
        for a in plan:
            active[a.kind][a.start:a.end] = True

        # per-core load with jitter; idle cores tick over at a few percent
        load = np.where(load > 0, load + rng.normal(0, 0.03, load.shape),
                        0.02 + np.abs(rng.normal(0, 0.01, load.shape)))
        load = np.clip(load, 0.0, 1.0)
        freq = _F_MIN + (f_top - _F_MIN) * np.clip(load / 0.7, 0, 1)
        freq = np.where(active["governor_powersave"][:, None], _F_MIN, freq)
        freq = np.where(active["governor_performance"][:, None], f_top, freq)
        mem_bw = (load * bw_core[:, None]).sum(axis=1) * busy
        leak = np.zeros(n)
        for a in plan:
            if a.kind == "memory_leak":
                rate = rng.uniform(2, 5) / steps_per_h
                leak[a.start:a.end] = rate * np.arange(1, a.end - a.start + 1)
        used = base_mem + mem_core * (load > 0.1).sum(axis=1) * busy + leak
        swap = np.maximum(used - 0.97 * _MEM_GB, 0.0)
        used = np.minimum(used, 0.97 * _MEM_GB)
        inlet = room + inlet_off
        r_fault = np.where(active["thermal_throttling"], 1.9, 1.0)
        dead_fan = np.full(n, -1)
        for a in plan:
            if a.kind == "fan_failure":
                dead_fan[a.start:a.end] = int(a.features[0][3:])

        pkg_p = np.zeros((n, 2))
        temp = np.zeros((n, 2))
        fans = np.zeros((n, 4))
        T = inlet[0] + r_th * p_idle
        rpm = np.full(4, _FAN_BASE)
        throttle = np.ones(2)
        for i in range(n):
            hot = T > _T_MAX
            throttle = np.where(hot, np.maximum(throttle - 0.15, 0.4), np.minimum(throttle + 0.05, 1.0))
            f = np.minimum(freq[i], _F_MIN + (f_top - _F_MIN) * throttle[sock])
            freq[i] = f
            rel = f / f_top
            dyn = np.bincount(sock, weights=load[i] * rel ** 2.4, minlength=2)
            leakage = np.bincount(sock, weights=rel, minlength=2)
            per = max(1, n_cores // 2) if n_cores > 1 else 1
            P = p_idle + p_dyn * dyn / per + 8.0 * leakage / per
            target = T.max()
            want = np.clip(_FAN_BASE + fan_gain * max(0.0, target - 55.0), _FAN_BASE, _FAN_TOP)
            rpm = rpm + 0.7 * (want - rpm)
            if dead_fan[i] >= 0:
                rpm[dead_fan[i]] = 0.0
            airflow = max(rpm.sum() / (4 * _FAN_BASE), 0.2)
            T_target = inlet[i] + P * r_th * r_fault[i] * airflow ** -0.6
            T = T + alpha * (T_target - T)
            pkg_p[i], temp[i], fans[i] = P, T, rpm
        airflow = np.maximum(fans.sum(axis=1) / (4 * _FAN_BASE), 0.2)
        p_dram = 4.0 + 0.9 * mem_bw
        p_node = pkg_p.sum(axis=1) + p_dram + 60.0 + 2e-3 * fans.sum(axis=1)
        X = np.empty((n, len(names)))
        X[:, :n_cores] = load
        X[:, n_cores:2 * n_cores] = freq
        X[:, col["load_avg"]] = load.sum(axis=1) + (io > 100) * 0.5
        X[:, col["power_pkg0"]], X[:, col["power_pkg1"]] = pkg_p[:, 0], pkg_p[:, 1]
        X[:, col["power_dram"]], X[:, col["power_node"]] = p_dram, p_node
        X[:, col["temp_pkg0"]], X[:, col["temp_pkg1"]] = (temp + temp_off).T
        X[:, col["temp_dimm"]] = inlet + 1.1 * p_dram / airflow ** 0.6
        X[:, col["temp_inlet"]] = inlet
        X[:, col["temp_exhaust"]] = inlet + 0.08 * p_node / airflow
        X[:, col["fan0"]:col["fan3"] + 1] = fans * tach
        X[:, col["mem_used"]], X[:, col["swap_used"]] = used, swap
        X[:, col["mem_bw"]] = mem_bw
        X[:, col["net_rx"]] = net * busy + rng.uniform(0.1, 1.0, n)
        X[:, col["net_tx"]] = 0.8 * net * busy + rng.uniform(0.1, 1.0, n)
        X[:, col["io_bw"]] = io * busy + rng.uniform(0.0, 2.0, n)
        # sensor resolution / measurement noise
        noise = {"freq": 0.01, "power": 1.0, "temp": 0.3, "fan": 40.0, "mem_used": 0.05,
                 "mem_bw": 0.05, "load_avg": 0.05}
        for m, j in col.items():
            sd = next((v for p, v in noise.items() if m.startswith(p)), 0.0)
            if sd:
                X[:, j] += rng.normal(0, sd, n)
        np.maximum(X, 0.0, out=X)  # every metric here is a non-negative quantity
        X0 = X.copy()
        for a in plan:
            if a.kind in ("noisy_sensor", "dead_sensor"):
                j = col[a.features[0]]
                seg = slice(a.start, a.end)
                if a.kind == "dead_sensor":
                    X[seg, j] = 0.0
                else:
                    spread = X0[:lo, j].std() if lo > 1 else X0[:, j].std()
                    X[seg, j] += rng.normal(0, rng.uniform(3, 5) * spread, a.end - a.start)
                    np.maximum(X[seg, j], 0.0, out=X[seg, j])
        # governor/fan/leak/throttling change the physics, so the clean twin is the same
        # simulation without sensor faults only
        y = np.zeros(n, dtype=bool)
        for a in plan:
            y[a.start:a.end] = True
        values[key], clean[key], labels[key], idle[key] = X, X0, y, ~busy
        injected.extend(plan)

    params = {"generator": "node_fleet", "n_nodes": n_nodes, "n_metrics": n_metrics,
              "days": days, "step_s": step_s, "seed": seed, "faults": list(faults),
              "faults_per_node": faults_per_node, "healthy_days": healthy, "n_apps": n_apps,
              "start_ts": start_ts}
    return SyntheticData(keys, names, t, values, labels, injected, clean, params, idle)
