"""The synthetic telemetry generators: determinism, shapes, and that every labelled anomaly
really changes the series where it is labelled and nowhere else."""

import numpy as np
import pytest

from streamad.base import ConfigError
from streamad.synthetic import ANOMALY_KINDS, FAULT_KINDS, generate, iter_records, node_fleet


@pytest.fixture(scope="module")
def data():
    # enough anomalies per key that every kind appears at least once
    return generate(n_keys=4, n_points=3000, n_features=3, seed=3, anomaly_rate=0.03)


def test_same_seed_same_data_other_seed_other_data():
    a, b = generate(n_keys=2, n_points=800, seed=5), generate(n_keys=2, n_points=800, seed=5)
    c = generate(n_keys=2, n_points=800, seed=6)
    for k in a.keys:
        assert np.array_equal(a.values[k], b.values[k])
        assert np.array_equal(a.labels[k], b.labels[k])
    assert a.anomalies == b.anomalies
    assert not np.allclose(a.values["device-00"], c.values["device-00"])


def test_shapes_keys_and_timestamps(data):
    assert data.keys == [f"device-{i:02d}" for i in range(4)]
    assert len(data.features) == 3 and len(set(data.features)) == 3
    assert data.timestamps.shape == (3000,)
    assert np.all(np.diff(data.timestamps) == 300.0)
    for k in data.keys:
        assert data.values[k].shape == (3000, 3) and np.all(np.isfinite(data.values[k]))
        assert data.labels[k].dtype == bool and data.labels[k].shape == (3000,)
    assert generate(n_features=10, n_points=100, anomaly_rate=0).values["device-00"].shape == (100, 10)


def test_every_kind_is_injected_and_labels_match_the_list(data):
    assert {a.kind for a in data.anomalies} == set(ANOMALY_KINDS)
    for k in data.keys:
        y = np.zeros(data.n_points, dtype=bool)
        for a in data.anomalies:
            if a.key == k:
                assert a.start >= 0.3 * data.n_points  # warm-up stretch stays clean
                assert not y[a.start:a.end].any(), "anomalies overlap"
                y[a.start:a.end] = True
        assert np.array_equal(y, data.labels[k])


def test_values_equal_clean_outside_anomalies(data):
    for k in data.keys:
        diff = np.abs(data.values[k] - data.clean[k]).max(axis=1) > 0
        assert not diff[~data.labels[k]].any(), "values changed outside a labelled anomaly"


def test_each_kind_changes_its_feature_as_described(data):
    idx = {f: j for j, f in enumerate(data.features)}
    for a in data.anomalies:
        j = idx[a.features[0]]
        x, x0 = data.values[a.key][:, j], data.clean[a.key][:, j]
        seg, seg0 = x[a.start:a.end], x0[a.start:a.end]
        sd = x0.std()
        other = [c for c in range(len(data.features)) if c != j]
        assert np.array_equal(data.values[a.key][a.start:a.end, other],
                              data.clean[a.key][a.start:a.end, other]), "another feature changed"
        if a.kind == "spike":
            assert np.all(np.abs(seg - seg0) > 5 * sd)
        elif a.kind == "level_shift":
            assert abs(np.mean(seg - seg0)) > 1.5 * sd
            assert np.ptp(seg - seg0) < 1e-9  # a constant step
        elif a.kind == "drift":
            d = np.abs(seg - seg0)
            assert np.all(np.diff(d) > 0) and d[-1] > 2.5 * sd
        elif a.kind == "flatline":
            assert np.ptp(seg) == 0.0 and np.var(seg0) > 0
        elif a.kind == "noise_burst":
            assert np.std(np.diff(seg)) > 3 * np.std(np.diff(seg0))
        elif a.kind == "frequency_change":
            # many more zero crossings of the detrended signal than the normal daily cycle
            def crossings(v):
                v = v - v.mean()
                return int(np.sum(np.signbit(v[1:]) != np.signbit(v[:-1])))
            assert crossings(seg) >= 4 * max(crossings(seg0), 1) or crossings(seg) >= 8


def test_iter_records_streams_every_point_in_time_order(data):
    recs = list(iter_records(data))
    assert len(recs) == 4 * data.n_points
    ts = [r.ts for r in recs]
    assert ts == sorted(ts)
    r = recs[5]
    key, t, values, label = r  # a plain tuple too
    i = 5 // 4
    assert key == data.keys[5 % 4] and t == data.timestamps[i]
    assert values == dict(zip(data.features, data.values[key][i].tolist(), strict=True))
    assert sum(r.label for r in recs) == sum(int(v.sum()) for v in data.labels.values())


def test_bad_parameters_raise_config_error():
    with pytest.raises(ConfigError, match="unknown anomaly kind"):
        generate(anomalies=("spike", "meteor"))
    with pytest.raises(ConfigError):
        generate(n_keys=0)
    with pytest.raises(ConfigError, match="do not fit"):
        generate(n_points=50, anomaly_rate=0.4)


# -- node_fleet --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fleet():
    return node_fleet(n_nodes=8, n_metrics=30, days=6, seed=2)


def test_fleet_is_deterministic_and_shaped(fleet):
    again = node_fleet(n_nodes=8, n_metrics=30, days=6, seed=2)
    assert fleet.anomalies == again.anomalies
    for k in fleet.keys:
        assert np.array_equal(fleet.values[k], again.values[k])
        assert fleet.values[k].shape == (6 * 288, 30) and np.all(fleet.values[k] >= 0)
    assert fleet.keys == [f"node-{i:02d}" for i in range(8)]
    assert {a.kind for a in fleet.anomalies} == set(FAULT_KINDS)
    assert not np.array_equal(fleet.values["node-00"], node_fleet(
        n_nodes=8, n_metrics=30, days=6, seed=3).values["node-00"])


def test_fleet_faults_only_after_the_healthy_period_and_labelled(fleet):
    lo = 3 * 288
    for k in fleet.keys:
        y = np.zeros(fleet.n_points, dtype=bool)
        for a in fleet.anomalies:
            if a.key == k:
                assert a.start >= lo
                y[a.start:a.end] = True
        assert np.array_equal(y, fleet.labels[k])
        busy = ~fleet.idle[k]
        assert 0.4 < busy.mean() < 0.95, "jobs and idle periods alternate"


def _col(fleet, key, name):
    return fleet.values[key][:, fleet.features.index(name)]


def test_fleet_metrics_are_physically_coupled(fleet):
    for k in fleet.keys:
        h = ~fleet.labels[k]
        load = _col(fleet, k, "load_avg")[h]
        power = _col(fleet, k, "power_node")[h]
        temp = _col(fleet, k, "temp_pkg0")[h]
        assert np.corrcoef(load, power)[0, 1] > 0.8
        assert np.corrcoef(power, temp)[0, 1] > 0.6
        core = _col(fleet, k, "load_cpu0")[h]
        freq = _col(fleet, k, "freq_cpu0")[h]
        assert freq[core > 0.8].mean() > 2.3 > 1.2 > freq[core < 0.1].mean()
    idle_power = [np.median(_col(fleet, k, "power_node")[fleet.idle[k]]) for k in fleet.keys]
    assert np.ptp(idle_power) > 3, "nodes differ from each other"


def test_each_fault_shows_in_its_metrics(fleet):
    for a in fleet.anomalies:
        seg = slice(a.start, a.end)
        busy = ~fleet.idle[a.key][seg]
        X = fleet.values[a.key]
        m = _col(fleet, a.key, a.features[0])[seg]
        if a.kind == "governor_powersave":
            loaded = _col(fleet, a.key, "load_cpu0")[seg] > 0.8
            assert np.all(m[loaded] < 1.1)
        elif a.kind == "governor_performance":
            assert np.all(m > 2.4)
        elif a.kind == "fan_failure":
            assert np.all(m < 200)
            others = [f"fan{i}" for i in range(4) if f"fan{i}" != a.features[0]]
            assert np.all(np.stack([_col(fleet, a.key, o)[seg] for o in others]) > 3500)
        elif a.kind == "memory_leak":
            grow = m[-1] + _col(fleet, a.key, "swap_used")[a.end - 1] - m[0]
            hours = (a.end - a.start) / 12
            assert grow > 1.5 * hours - 60  # 2-5 GB/h minus job memory swings
        elif a.kind == "thermal_throttling":
            if busy.sum() > 24:
                temp = _col(fleet, a.key, "temp_pkg0")
                assert temp[seg][busy].max() > temp[:3 * 288].max() + 5
        elif a.kind == "dead_sensor":
            assert np.all(m == 0)
        elif a.kind == "noisy_sensor":
            clean = fleet.clean[a.key][seg, fleet.features.index(a.features[0])]
            assert np.std(np.diff(m)) > 2 * np.std(np.diff(clean))
        assert np.isfinite(X[seg]).all()
