"""The ``records`` detector's own rules, beyond the generic conformance suite."""

import numpy as np

from streamad import _state
from streamad.detectors import RecordExperts


def _stream(n: int = 3000, seed: int = 0) -> np.ndarray:
    """A noisy daily-like cycle with a burst of growing spikes, then a lone spike."""
    t = np.arange(n)
    x = np.sin(2 * np.pi * t / 96) + 0.05 * np.random.default_rng(seed).normal(size=n)
    x[2000:2030] += np.linspace(3.0, 6.0, 30)  # rising: a record on many consecutive rows
    x[2600] += 8.0
    return x[:, None]


def test_refractory_scores_zero_unless_the_row_beats_the_period_before_it():
    X = _stream()
    raw = RecordExperts(refractory=0).process_many(X)
    for k in (1, 7, 50):
        got = RecordExperts(refractory=k).process_many(X)
        before = np.array([raw[max(i - k, 0):i].max(initial=0.0) for i in range(len(raw))])
        want = np.where(raw > before, raw, 0.0)
        assert np.array_equal(got, want), f"refractory={k}: row {np.flatnonzero(got != want)[0]} differs"
    # the burst alarms on its first row and is then mostly silent; the lone spike still alarms
    assert (raw[2000:2030] > 0).sum() > (got[2000:2030] > 0).sum() >= 1
    assert got[2600] > 0.5


def test_refractory_period_survives_a_state_round_trip():
    X = _stream()
    det = RecordExperts()
    det.learn_many(X[:2005])  # inside the burst: its alarms are in the refractory period
    assert det._recent, "no alarm is remembered inside the burst"
    twin = RecordExperts()
    twin.load_state_dict(_state.loads(_state.dumps(det.state_dict())))
    assert np.array_equal(det.process_many(X[2005:]), twin.process_many(X[2005:]))
