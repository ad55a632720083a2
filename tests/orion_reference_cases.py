"""Inputs for checking streamad against Orion's own code (``tests/data/orion_*.json``).

Everything is built with exact arithmetic only (an integer LCG scaled by 2**-32, a triangle
wave, injected spikes, dips and shifts), so every platform and NumPy version regenerates the
same floats; the reference files then only need Orion's outputs, not the inputs.
``tests/data/make_orion_references.py`` writes them with Orion itself.
"""

from __future__ import annotations

from collections.abc import Iterator


class _LCG:
    def __init__(self, seed: int):
        self.state = seed & 0xFFFFFFFF

    def next(self) -> int:
        self.state = (1664525 * self.state + 1013904223) & 0xFFFFFFFF
        return self.state

    def uniform(self) -> float:  # exact: a multiple of 2**-32 in [0, 1)
        return self.next() / 4294967296.0

    def integer(self, lo: int, hi: int) -> int:  # in [lo, hi)
        return lo + self.next() % (hi - lo)


#: Orion's pipelines' settings (TadGAN, AER) and variations of each parameter; Orion's own
#: default threshold is the dynamic search, which streamad implements differently on purpose
#: (see streamad/thresholds/_orion.py), so every case fixes the threshold.
SETTINGS = [
    {"window_size_portion": 0.33, "window_step_size_portion": 0.1, "fixed_threshold": True},
    {"window_size_portion": 0.33, "window_step_size_portion": 0.1, "fixed_threshold": True, "anomaly_padding": 10},
    {"window_size_portion": 0.33, "window_step_size_portion": 0.1, "fixed_threshold": True, "anomaly_padding": 0},
    {"window_size_portion": 0.33, "window_step_size_portion": 0.1, "fixed_threshold": True, "min_percent": 0.0},
    {"window_size_portion": 0.33, "window_step_size_portion": 0.1, "fixed_threshold": True, "min_percent": 0.3},
    {"window_size_portion": 1.0, "window_step_size_portion": 1.0, "fixed_threshold": True},
    {"window_size_portion": 0.5, "window_step_size_portion": 0.25, "fixed_threshold": True, "anomaly_padding": 5},
    {"window_size_portion": 0.33, "window_step_size_portion": 0.1, "fixed_threshold": True, "lower_threshold": True},
    {"window_size_portion": 0.33, "window_step_size_portion": 0.1, "fixed_threshold": True, "inverse": True},
]


def series(seed: int) -> list[float]:
    """One error series: noise (a sum of uniforms), sometimes a trend wave, and 0-4 events."""
    r = _LCG(seed)
    n = (200, 500, 1000, 2500)[seed % 4]
    scale = (0.1, 1.0, 0.01)[r.integer(0, 3)]
    k = r.integer(1, 4)  # uniforms summed: flat to bell-shaped noise
    period = r.integer(20, 400)
    wave = (0.0, 0.5, 2.0)[r.integer(0, 3)] * scale
    e = []
    for i in range(n):
        phase = (i % period) / period
        tri = 2 * phase if phase < 0.5 else 2 - 2 * phase
        e.append(sum(r.uniform() for _ in range(k)) * scale + wave * tri)
    for _ in range(r.integer(1, 6)):
        kind = (0, 0, 0, 0, 0, 1, 1, 2, 2, 3)[r.integer(0, 10)]
        start, width = r.integer(0, n), r.integer(1, 25)
        size = (2 + r.uniform() * 10) * scale * k
        for i in range(start, min(n, start + width)):
            if kind == 0:
                e[i] += size  # spike or burst (half the events)
            elif kind == 1:
                e[i] -= size  # dip
            elif kind == 2:
                e[i] += size / 3  # small shift
            else:
                e[i] = e[start]  # flat stretch
    return e


def find_anomalies_cases() -> Iterator[tuple[str, list[float], dict]]:
    """(name, errors, find_anomalies keyword arguments) for every reference case."""
    for seed in range(48):
        yield f"seed{seed}", series(seed), SETTINGS[seed % len(SETTINGS)]
    for j, kw in enumerate(SETTINGS):
        yield f"constant{j}", [0.25] * 300, kw
        yield f"single_spike{j}", [0.0] * 150 + [3.0] + [0.0] * 149, kw


#: TadGAN scoring cases: (points, window); the last one has critic values from a set of two,
#: so some points' covering critic values are all equal (Orion's KDE fallback: the median).
TADGAN_CASES = [(300, 50), (600, 100), (400, 60)]


def tadgan_case(k: int) -> tuple[list[float], list[list[float]], list[float]]:
    """(series, reconstructed windows, critic value per window) for TadGAN's scoring: the
    reconstruction is a damped copy of each window plus noise, and the critic values carry a
    bump in the middle of the series."""
    n, window = TADGAN_CASES[k]
    r = _LCG(1000 + k)
    x = []
    for i in range(n):
        phase = (i % 40) / 40
        x.append((2 * phase if phase < 0.5 else 2 - 2 * phase) - 0.5 + (r.uniform() - 0.5) * 0.125)
    for i in range(n // 2, n // 2 + 8):
        x[i] += 0.75
    m = n - window + 1
    x_hat = [[0.75 * x[i + j] + (r.uniform() - 0.5) * 0.25 for j in range(window)] for i in range(m)]
    if k == len(TADGAN_CASES) - 1:
        critic = [float(r.integer(0, 2)) if i % 50 < 25 else 0.5 for i in range(m)]
    else:
        critic = [(r.uniform() - 0.5) + (2.0 if m // 3 <= i < m // 3 + 30 else 0.0) for i in range(m)]
    return x, x_hat, critic


def aer_case() -> tuple[list[float], list[list[float]], list[float], list[float]]:
    """(series, reconstructed inner points per window, backward prediction of each window's
    first point, forward prediction of its last point) for AER's scoring: 400 points, windows
    of 50."""
    n, window = 400, 50
    x, _, _ = tadgan_case(2)  # 400 points
    r = _LCG(2000)
    m = n - window + 1
    inner = [[0.7 * x[i + j] + (r.uniform() - 0.5) * 0.125 for j in range(1, window - 1)] for i in range(m)]
    first = [x[i] + (r.uniform() - 0.5) * 0.25 for i in range(m)]
    last = [x[i + window - 1] + (r.uniform() - 0.5) * 0.25 for i in range(m)]
    return x, inner, first, last
