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


def _cycle_out_of_phase(n: int = 4000, seed: int = 1) -> np.ndarray:
    """A noisy cycle of 96 rows in which one cycle (rows 2500-2595) is in anti-phase: every
    window of it has been seen before, but not at that time of the cycle."""
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    x = np.sin(2 * np.pi * t / 96) + 0.05 * rng.normal(size=n)
    x[2500:2596] = np.sin(2 * np.pi * (t[2500:2596] + 48) / 96) + 0.05 * rng.normal(size=96)
    return x[:, None]


def test_season_expert_finds_the_period_and_a_cycle_out_of_phase():
    X = _cycle_out_of_phase()
    det = RecordExperts()
    det.learn_many(X[:2501])
    assert det._feats[0].period == 96
    assert det.explain({"value": float(X[2501, 0])})[0][0] == "value:season"
    with_season = RecordExperts().process_many(X)
    without = RecordExperts(season_span=0).process_many(X)
    assert with_season[2500:2600].max() > 0.3 > 10 * without[2500:2600].max()
    noise = RecordExperts()
    noise.learn_many(np.random.default_rng(2).normal(size=(3000, 1)))
    assert noise._feats[0].period == 0  # no clear period, no season expert


def test_season_state_survives_a_round_trip():
    X = _cycle_out_of_phase()
    for cut in (700, 2501, 3100):  # period just found; inside the anomaly; history wrapped
        det = RecordExperts()
        det.learn_many(X[:cut])
        twin = RecordExperts()
        twin.load_state_dict(_state.loads(_state.dumps(det.state_dict())))
        assert np.array_equal(det.process_many(X[cut:]), twin.process_many(X[cut:])), f"cut at row {cut}"
