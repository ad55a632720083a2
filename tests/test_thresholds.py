import math

import numpy as np
import pytest
from scipy.stats import genpareto

from streamad import _state
from streamad.base import ConfigError, StateError
from streamad.thresholds import (
    DSPOT,
    SPOT,
    AnomalyLikelihood,
    Fixed,
    Quantile,
    find_anomalies,
    make,
)


@pytest.mark.parametrize("c", [-0.1, 0.0, 0.2])
def test_spot_recovers_gpd_quantile(c):
    rng = np.random.default_rng(0)
    x = genpareto.rvs(c, scale=1.0, size=100_000, random_state=rng)
    q = 1e-3
    spot = SPOT(q=q, level=0.98).fit(x)
    truth = genpareto.ppf(1 - q, c, scale=1.0)
    assert abs(spot.threshold_ - truth) / truth < 0.05


def test_spot_calibrates_after_init_and_flags_spike_without_adding_it():
    rng = np.random.default_rng(1)
    spot = SPOT(q=1e-3, init=500)
    decisions = [spot.update(v) for v in rng.normal(size=500)]
    assert all(not d.is_anomaly and d.threshold == math.inf for d in decisions)
    assert spot.calibrated and math.isfinite(spot.threshold_)
    peaks = len(spot.peaks_)
    d = spot.update(100.0)
    assert d.is_anomaly and len(spot.peaks_) == peaks
    assert not spot.update(0.0).is_anomaly


def test_spot_false_alarm_rate_close_to_q():
    rng = np.random.default_rng(2)
    spot = SPOT(q=1e-2).fit(rng.exponential(size=2000))
    rate = np.mean([spot.update(v).is_anomaly for v in rng.exponential(size=5000)])
    assert 0.003 < rate < 0.03


def test_spot_floor_keeps_exactly_repeating_maxima_normal():
    # A periodic score (period 288: a daily cycle of 5-minute points) repeats its largest values
    # exactly. The paper's SPOT fits a bounded tail whose quantile lies just below them and flags
    # every repeat, for good, as alarms never enter the peaks. With the floor (the default) the
    # threshold stays at or above the empirical 1 - q quantile of the scores seen.
    s = np.sin(2 * np.pi * np.arange(4000) / 288)
    paper = SPOT(q=1e-3, init=600, empirical_floor=False)
    assert sum(paper.update(v).is_anomaly for v in s) >= 10
    spot = SPOT(q=1e-3, init=600)
    assert not any(spot.update(v).is_anomaly for v in s)
    assert spot.threshold_ >= spot.floor_ > 0.999
    assert spot.update(1.001).is_anomaly  # above every score seen: still an alarm


def test_spot_floor_is_the_empirical_quantile_of_the_scores_seen():
    x = np.random.default_rng(4).exponential(size=5000)
    spot = SPOT(q=1e-3).fit(x)
    assert spot.floor_ == np.sort(x)[-6]  # q * n = 5 scores may lie above it
    assert spot.threshold_ >= spot.floor_
    few = SPOT(q=1e-3).fit(x[:600])  # fewer than 1 / q scores: their largest
    assert few.floor_ == x[:600].max() and few.threshold_ >= few.floor_


def test_spot_loads_states_saved_before_the_floor():
    x = np.random.default_rng(6).normal(size=800)
    a = SPOT(init=200, empirical_floor=False)
    for v in x:
        a.update(v)
    old = a.state_dict()
    del old["floor"], old["params"]["empirical_floor"]
    b = SPOT()
    b.load_state_dict(old)
    assert b.empirical_floor and b.floor_ == -math.inf and b.threshold_ == a.threshold_


def test_dspot_follows_drifting_level():
    rng = np.random.default_rng(3)
    level = np.linspace(0, 50, 4000)
    x = level + rng.normal(size=4000)
    x[3000] += 15
    d = DSPOT(depth=20, init=500, q=1e-3)
    decisions = [d.update(v) for v in x]
    th = np.array([dd.threshold for dd in decisions[600:]])
    assert np.all(th > level[600:]) and np.all(th < level[600:] + 10)
    flagged = [i for i, dd in enumerate(decisions) if dd.is_anomaly]
    assert 3000 in flagged and len(flagged) < 20
    # a SPOT on the same stream flags the drift as anomalous over and over
    spot = SPOT(init=500, q=1e-3)
    assert sum(spot.update(v).is_anomaly for v in x) > 1000


def test_quantile_matches_numpy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=3000)
    th = Quantile(q=0.99, window=1000, init=50)
    for i, v in enumerate(x):
        d = th.update(v)
        if i >= 50:
            expect = np.quantile(x[max(0, i - 1000):i], 0.99)
            assert d.threshold == pytest.approx(expect, rel=1e-12, abs=1e-12)
            assert d.is_anomaly == (v > expect)
        else:
            assert not d.is_anomaly


def test_fixed():
    f = Fixed(2.0)
    assert f.update(2.5).is_anomaly and not f.update(2.0).is_anomaly


@pytest.mark.parametrize("factory", [lambda: SPOT(init=200), lambda: DSPOT(init=200, depth=5),
                                     lambda: Quantile(q=0.95, window=300, init=20), lambda: Fixed(1.5),
                                     lambda: AnomalyLikelihood(window=400, short=5, learn=100)])
def test_state_round_trip_mid_stream(factory, tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_t(3, size=1200) + np.linspace(0, 3, 1200)
    a = factory()
    for v in x[:150]:  # mid-calibration too
        a.update(v)
    b = factory()
    b.load_state_dict(_state.loads(_state.dumps(a.state_dict())))
    for v in x[150:700]:
        assert a.update(v) == b.update(v)
    c = factory()
    _state.save_atomic(tmp_path / "t.state", a.state_dict())
    c.load_state_dict(_state.load(tmp_path / "t.state"))
    assert _state.trees_equal(a.state_dict(), c.state_dict())
    assert [a.update(v) for v in x[700:]] == [c.update(v) for v in x[700:]]


def test_load_wrong_state_raises():
    with pytest.raises(StateError):
        SPOT().load_state_dict(Quantile().state_dict())


@pytest.mark.parametrize("build", [lambda: SPOT(q=0), lambda: SPOT(level=1.5), lambda: SPOT(init=3),
                                   lambda: DSPOT(depth=0), lambda: Quantile(q=2), lambda: Quantile(window=0),
                                   lambda: SPOT(empirical_floor="yes"),
                                   lambda: AnomalyLikelihood(epsilon=0), lambda: AnomalyLikelihood(epsilon=0.7),
                                   lambda: AnomalyLikelihood(window=5, short=10), lambda: AnomalyLikelihood(learn=0),
                                   lambda: Fixed("x"), lambda: make("nope"), lambda: make("spot", bogus=1),
                                   lambda: find_anomalies(np.ones(10), window_size_portion=0),
                                   lambda: find_anomalies(np.ones(10), anomaly_padding=-1),
                                   lambda: find_anomalies([1.0, np.nan])])
def test_bad_params_raise_config_error(build):
    with pytest.raises(ConfigError):
        build()


def test_make_builds_registered_thresholds():
    assert isinstance(make("spot", q=1e-4), SPOT) and make("fixed", value=1.0).value == 1.0


def test_find_anomalies_spike_padding_and_index():
    rng = np.random.default_rng(6)
    e = rng.uniform(0, 0.1, size=1000)
    e[500] = 5.0
    idx = np.arange(1000) * 10 + 7
    out = find_anomalies(e, index=idx, anomaly_padding=20)
    assert len(out) == 1
    start, end, severity = out[0]
    assert (start, end) == (idx[480], idx[520]) and severity > 0


def test_find_anomalies_merges_overlapping_padded_sequences():
    e = np.zeros(1000)
    e[500], e[530] = 5.0, 5.0
    out = find_anomalies(e, anomaly_padding=20)
    assert [(s, t) for s, t, _ in out] == [(480, 550)]
    # far apart they stay separate
    e = np.zeros(1000)
    e[300], e[600] = 5.0, 5.0
    assert [(s, t) for s, t, _ in find_anomalies(e, anomaly_padding=10)] == [(290, 310), (590, 610)]


def test_find_anomalies_prunes_weak_second_sequence():
    rng = np.random.default_rng(8)
    e = rng.uniform(0, 0.1, size=1000)
    e[500] = 10.0  # strong
    e[700] = 1.4  # just above mean + 4 std ...
    e[300] = 1.3  # ... but only 7% above the largest normal error
    threshold = e.mean() + 4 * e.std()
    assert e[300] < threshold < e[700]
    kept = find_anomalies(e, window_size_portion=1.0, anomaly_padding=5, min_percent=0.1)
    assert [(s, t) for s, t, _ in kept] == [(495, 505)]
    both = find_anomalies(e, window_size_portion=1.0, anomaly_padding=5, min_percent=0.05)
    assert [(s, t) for s, t, _ in both] == [(495, 505), (695, 705)]
    assert both[0][2] > both[1][2] > 0


def test_find_anomalies_dynamic_inverse_and_lower():
    rng = np.random.default_rng(7)
    e = rng.normal(1.0, 0.05, size=600)
    e[200] = 3.0
    e[400] = -1.0
    up = find_anomalies(e, fixed_threshold=False, anomaly_padding=3)
    assert any(s <= 200 <= t for s, t, _ in up)
    assert not any(s <= 400 <= t for s, t, _ in find_anomalies(e, anomaly_padding=3))
    both = find_anomalies(e, lower_threshold=True, anomaly_padding=3)
    assert any(s <= 400 <= t for s, t, _ in both) and any(s <= 200 <= t for s, t, _ in both)
    inv = find_anomalies(e, inverse=True, anomaly_padding=3)
    assert any(s <= 400 <= t for s, t, _ in inv)


def test_find_anomalies_reproduces_orion():
    # Orion's own find_anomalies (orion-ml 0.7.1) on 66 generated error series under its
    # pipelines' settings and variations of each parameter (tests/data/README.md)
    import json
    from pathlib import Path

    from orion_reference_cases import find_anomalies_cases

    ref = {c["case"]: c for c in json.loads((Path(__file__).parent / "data" / "orion_find_anomalies.json")
                                            .read_text())["cases"]}
    compared = found = 0
    for name, errors, kw in find_anomalies_cases():
        ours = find_anomalies(errors, **kw)
        if "orion_error" in ref[name]:  # Orion fails to merge zero-length sequences; we average
            assert kw.get("anomaly_padding") == 0 and ours
            continue
        assert ref[name]["n"] == len(errors), name  # the generator still makes the same series
        theirs = ref[name]["anomalies"]
        assert [[s, t] for s, t, _ in ours] == [[s, t] for s, t, _ in theirs], name
        assert [v for *_, v in ours] == pytest.approx([v for *_, v in theirs], rel=1e-12, abs=1e-12), name
        compared += 1
        found += len(theirs)
    assert compared == len(ref) - 1 and found >= 60


def test_spot_refits_the_gpd_on_peak_growth_and_tracks_refitting_on_every_peak(monkeypatch):
    from streamad.thresholds import _spot

    fits = []
    real = _spot.fit_gpd
    monkeypatch.setattr(_spot, "fit_gpd", lambda y: fits.append(len(y)) or real(y))
    x = np.random.default_rng(5).exponential(size=60_000)  # ~1,200 peaks

    def run(spot):
        fits.clear()
        return spot, np.array([spot.update(v).threshold for v in x]), len(fits)

    every, t_every, n_every = run(SPOT(q=1e-3, refit_growth=0))  # the paper: a fit per peak
    grown, t_grown, n_grown = run(SPOT(q=1e-3))                    # default: per 1% growth
    assert every.n_peaks_ > 800
    assert n_grown < n_every / 2  # every peak while there are < 100, then every 1%
    calibrated = np.isfinite(t_every)
    assert np.array_equal(calibrated, np.isfinite(t_grown))
    rel = np.abs(t_grown[calibrated] - t_every[calibrated]) / t_every[calibrated]
    assert rel.max() < 0.02, rel.max()
    twin = SPOT(q=1e-3)
    twin.load_state_dict(grown.state_dict())
    assert twin.since_fit_ == grown.since_fit_


@pytest.mark.parametrize("shape", [-0.3, 0.0, 0.2, 0.6])
@pytest.mark.parametrize("n", [12, 60, 2000])
def test_fit_gpd_is_at_least_as_likely_as_scipys_fit(shape, n):
    from scipy.stats import genpareto

    from streamad.thresholds._spot import fit_gpd

    y = genpareto.rvs(shape, scale=1.5, size=n, random_state=np.random.default_rng(n))
    g, s = fit_gpd(y)
    c, _, scale = genpareto.fit(y, floc=0)
    ours, theirs = genpareto.logpdf(y, g, scale=s).sum(), genpareto.logpdf(y, c, scale=scale).sum()
    assert ours >= theirs - 1e-6 * abs(theirs), (g, s, c, scale)


def test_likelihood_false_alarms_follow_epsilon_and_level_shifts_are_flagged():
    rng = np.random.default_rng(2)
    # iid scores: the short-term mean's tail probability is (about) uniform, so flags are rare
    th = AnomalyLikelihood(epsilon=1e-3, window=2000, short=10, learn=300)
    flags = [th.update(float(v)).is_anomaly for v in rng.gamma(2.0, 1.0, 20000)]
    assert sum(flags) / len(flags) < 5e-3
    # a sustained rise of the raw scores is flagged within the short window, a single spike is not
    th = AnomalyLikelihood(epsilon=1e-5, window=2000, short=10, learn=300)
    base = rng.gamma(2.0, 1.0, 3000)
    for v in base:
        th.update(float(v))
    assert not th.update(9.0).is_anomaly  # one high score moves the short-term mean by 0.7
    for v in base[:20]:
        th.update(float(v))
    hits = [th.update(float(v)).is_anomaly for v in base[:20] + 10.0]
    assert any(hits[:10]) and all(hits[10:]), hits


def test_likelihood_surprise_is_minus_log10_of_the_tail():
    from math import erfc, log10, sqrt

    th = AnomalyLikelihood(window=100, short=1, learn=10)
    xs = [0.0, 1.0] * 50
    for v in xs:
        th.update(v)
    mu, sd = np.mean(xs), np.std(xs)
    want = -log10(0.5 * erfc((3.0 - mu) / sd / sqrt(2)))
    assert th.surprise(3.0) == pytest.approx(want, rel=1e-9)
