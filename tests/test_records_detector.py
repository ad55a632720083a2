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


def _stuck_sensor(n: int = 3000, seed: int = 3) -> np.ndarray:
    """A noisy cycle whose sensor stops updating at row 2000 (repeats row 1999 for 60 rows)."""
    t = np.arange(n)
    x = np.sin(2 * np.pi * t / 96) + 0.05 * np.random.default_rng(seed).normal(size=n)
    x[2000:2060] = x[1999]
    return x[:, None]


def test_stuck_expert_alarms_at_the_third_identical_value_and_only_on_request():
    X = _stuck_sensor()
    on = RecordExperts(stuck=True)
    on.learn_many(X[:2001])  # rows 1999 and 2000 are equal: the next equal one is the third
    assert on.explain({"value": float(X[2001, 0])})[0] == ("value:stuck", 0.6667)
    s_on = RecordExperts(stuck=True, refractory=0).process_many(X)
    s_off = RecordExperts(refractory=0).process_many(X)
    assert s_on[2001] >= 0.5 > s_off[2001]
    assert np.array_equal(s_on[:2001], s_off[:2001])  # a varying stream: nothing else changes
    # again at each doubling of the run (3, 6, 12, 24, 48 values), each score above the last
    stuck_rows = [i for i in range(2000, 2060) if s_on[i] != s_off[i]]
    assert stuck_rows == [1998 + k for k in (3, 6, 12, 24, 48)]
    assert np.all(np.diff(s_on[stuck_rows]) > 0)


def _runs(n: int, longest: int, seed: int = 5) -> np.ndarray:
    """Integer readings in runs of 1 to ``longest`` equal values, each run unlike the last."""
    rng = np.random.default_rng(seed)
    runs = rng.integers(1, longest + 1, size=n)
    values = np.arange(n) % 37.0
    return np.repeat(values, runs)[:n]


def test_stuck_expert_measures_runs_against_the_longest_run_before():
    """Readings that repeat in runs of up to 4 alarm at a run of 8, not at a run of 7."""
    x = _runs(1500, 4)
    det = RecordExperts(stuck=True)
    det.learn_many(x[:1200, None])
    assert det._feats[0].rec_run == 4
    for length, alarms in ((7, False), (8, True)):
        y = x.copy()
        y[1200:1200 + length] = 99.0
        s = RecordExperts(stuck=True, season_span=0, refractory=0).process_many(y[:, None])
        base = RecordExperts(season_span=0, refractory=0).process_many(y[:, None])
        changed = np.flatnonzero(s != base)
        assert changed.tolist() == ([1207] if alarms else []), length
    # a stuck run is a record like any other: a later, shorter one does not alarm
    y = x.copy()
    y[1200:1230] = 99.0
    y[1300:1320] = 98.0
    s = RecordExperts(stuck=True, season_span=0, refractory=0).process_many(y[:, None])
    base = RecordExperts(season_span=0, refractory=0).process_many(y[:, None])
    assert s[1207] >= 0.5 and np.array_equal(s[1230:], base[1230:])


def test_stuck_expert_finds_the_flatlines_of_the_synthetic_telemetry():
    """Labelled data: flatlines of the synthetic generator (each 40-100 rows of one feature
    stuck at its last reading) found by the default threshold, with and without the expert."""
    from streamad.synthetic import generate

    found = {True: 0, False: 0}
    total = 0
    for seed in (1, 2, 3):
        data = generate(n_keys=4, n_points=2000, n_features=3, seed=seed, anomalies=("flatline",))
        for key in data.keys:
            flats = [a for a in data.anomalies if a.key == key]
            total += len(flats)
            for stuck in (True, False):
                s = RecordExperts(stuck=stuck).process_many(data.values[key])
                found[stuck] += sum(bool((s[a.start:a.end + 10] > 0.07).any()) for a in flats)
    assert total >= 8
    assert found[True] >= 0.9 * total and found[False] <= 0.5 * total, (found, total)


def test_stuck_state_survives_a_round_trip_inside_a_run():
    X = _stuck_sensor()
    for cut in (2000, 2001, 2030):
        det = RecordExperts(stuck=True)
        det.learn_many(X[:cut])
        twin = RecordExperts(stuck=True)
        twin.load_state_dict(_state.loads(_state.dumps(det.state_dict())))
        assert np.array_equal(det.process_many(X[cut:]), twin.process_many(X[cut:])), f"cut at row {cut}"
