"""NodeAutoencoder on a simulated node fleet: detection quality, explanations, state."""

import numpy as np
import pytest
import torch

from streamad import _state
from streamad.base import ConfigError, NotFittedError, StateError
from streamad.bench.hpc import run_hpc_sim
from streamad.detectors import NodeAutoencoder, PCAResidual
from streamad.synthetic import node_fleet

torch.set_num_threads(1)

SMALL = {"n_nodes": 3, "n_metrics": 24, "days": 12, "epochs": 30, "seed": 1}


@pytest.fixture(scope="module")
def small_bench():
    return run_hpc_sim(SMALL, detectors=["node-ae", "pca"])


def test_per_node_autoencoder_finds_injected_faults(small_bench):
    r = small_bench["detectors"]["node-ae"]
    rand = small_bench["random_baseline"]
    assert r["f1"] > 0.5, r
    assert r["f1"] > rand["f1"] + 0.3
    assert r["f1"] > small_bench["flag_all_baseline"]["f1"] + 0.3
    # the injected faults are visible to the model even where the label-free threshold misses
    assert r["auc_pr"] > 0.5
    assert set(r["recall_per_fault"]) <= {a for a in small_bench["params"]["faults"]}
    assert small_bench["fleet"]["test_faulty_samples"] > 0
    assert 0 <= r["label_tuned"]["f1_gap"] <= 1 and r["label_tuned"]["f1"] >= r["f1"] - 1e-12


def test_bench_rejects_unknown_names():
    with pytest.raises(ConfigError, match="parameter"):
        run_hpc_sim({"n_nodez": 3})
    with pytest.raises(ConfigError, match="detector"):
        run_hpc_sim(SMALL, detectors=["nope"])


def _train_rows(fleet, key, healthy_days):
    n = healthy_days * 288
    return np.flatnonzero(~fleet.idle[key][:n])


@pytest.fixture(scope="module")
def dead_sensor_fleet():
    return node_fleet(n_nodes=2, n_metrics=24, days=6, seed=4, faults=("dead_sensor",),
                      faults_per_node=1, healthy_days=3)


def test_explain_names_the_dead_sensor(dead_sensor_fleet):
    fleet = dead_sensor_fleet
    hits = checked = 0
    for a in fleet.anomalies:
        X = fleet.values[a.key]
        det = NodeAutoencoder(epochs=30, seed=0)
        det.fit(X[_train_rows(fleet, a.key, 3)], features=fleet.features)
        rows = [i for i in range(a.start, a.end) if not fleet.idle[a.key][i]]
        if not rows:
            continue
        scores = det.score_many(X[rows])
        flagged = [i for i, sc in zip(rows, scores, strict=True) if sc > det.threshold_]
        for i in flagged:
            top = [m for m, _ in det.explain(dict(zip(fleet.features, X[i], strict=True)))]
            hits += a.features[0] in top
            checked += 1
    assert checked > 50, "the dead sensors went unnoticed"
    assert hits / checked > 0.9


def test_state_round_trip_gives_identical_scores_and_explanations(dead_sensor_fleet):
    fleet = dead_sensor_fleet
    X = fleet.values["node-00"]
    det = NodeAutoencoder(epochs=5, warmup=200, finetune_every=50, memory=100, seed=3)
    det.learn_many(X[:260])  # fitted at 200, fine-tuned at 250
    twin = NodeAutoencoder(epochs=5, warmup=200, finetune_every=50, memory=100, seed=3)
    twin.load_state_dict(_state.loads(_state.dumps(det.state_dict())))
    assert np.array_equal(det.score_many(X[300:400]), twin.score_many(X[300:400]))
    x = dict(zip(det.features_, X[350], strict=True))
    assert det.explain(x) == twin.explain(x)
    assert twin.threshold_ == det.threshold_
    det.learn_many(X[260:400])
    twin.learn_many(X[260:400])
    assert np.array_equal(det.score_many(X[400:450]), twin.score_many(X[400:450]))
    other = NodeAutoencoder(epochs=6, warmup=200, finetune_every=50, memory=100, seed=3)
    with pytest.raises(StateError, match="parameters"):
        other.load_state_dict(det.state_dict())


def test_fine_tuning_does_not_learn_a_fault_as_normal():
    rng = np.random.default_rng(0)
    load = rng.uniform(0, 1, (600, 1))
    healthy = np.hstack([load, 2 * load, 1 - load, load ** 2]) + 0.02 * rng.normal(size=(600, 4))
    det = NodeAutoencoder(epochs=40, warmup=600, finetune_every=50, finetune_epochs=20,
                          memory=200, seed=0)
    det.learn_many(healthy)
    faulty = healthy[:300].copy()
    faulty[:, 1] = 3.0  # a sensor stuck above its normal range
    before = det.score_many(faulty)
    det.learn_many(faulty)  # six fine-tuning rounds; every faulty sample is flagged
    after = det.score_many(faulty)
    assert np.all(before > det.threshold_)
    assert np.mean(after > det.threshold_) > 0.95


def test_scores_mean_below_max_seed_matters_and_errors_are_clear():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 5))
    a = NodeAutoencoder(epochs=5, seed=0)
    a.fit(X)
    b = NodeAutoencoder(epochs=5, seed=0, score="mean")
    b.fit(X)
    assert np.all(b.score_many(X[:50]) <= a.score_many(X[:50]) + 1e-12)
    c = NodeAutoencoder(epochs=5, seed=1)
    c.fit(X)
    assert not np.array_equal(a.score_many(X[:50]), c.score_many(X[:50]))
    with pytest.raises(NotFittedError):
        NodeAutoencoder().explain({"a": 1.0})
    with pytest.raises(ConfigError):
        NodeAutoencoder(score="median")
    assert NodeAutoencoder().score_one({"a": 1.0}) == 0.0  # before warm-up: no opinion


def test_pca_residual_explains_a_broken_correlation():
    rng = np.random.default_rng(2)
    load = rng.normal(size=(500, 1))
    X = np.hstack([load, 2 * load, -load, 0.5 * load]) + 0.05 * rng.normal(size=(500, 4))
    det = PCAResidual(k=1)
    det.fit(X)
    bad = np.array([[1.0, 2.0, 1.0, 0.5]])  # x2 has the wrong sign
    assert det.score_many(bad)[0] > 5 * np.percentile(det.score_many(X), 99)
    assert int(np.argmax(det.feature_errors(bad)[0])) == 2


def test_streaming_one_model_per_node_flags_the_faulty_node():
    """The service's way: records in time order, one model per key made on first sight,
    trained after its warm-up and fine-tuned as records arrive (score, then learn)."""
    from streamad.synthetic import iter_records

    fleet = node_fleet(n_nodes=3, n_metrics=24, days=5, seed=6, faults=("dead_sensor",),
                       faults_per_node=1, healthy_days=3)
    models, flags = {}, {k: [] for k in fleet.keys}
    for rec in iter_records(fleet):
        det = models.setdefault(rec.key, NodeAutoencoder(epochs=20, warmup=700,
                                                         finetune_every=144, seed=0))
        s = det.score_one(rec.values)
        flagged = det.threshold_ is not None and s > det.threshold_
        top = det.explain(rec.values)[0][0] if flagged else None
        flags[rec.key].append((flagged, top))
        det.learn_one(rec.values)
    for a in fleet.anomalies:
        busy = [i for i in range(a.start, a.end) if not fleet.idle[a.key][i]]
        inside = [flags[a.key][i] for i in busy]
        hit = [t for f, t in inside if f]
        assert len(hit) > 0.8 * len(inside), f"{a.kind} on {a.key} missed"
        assert sum(t == a.features[0] for t in hit) > 0.8 * len(hit)
    healthy = [f for k in fleet.keys for i, (f, _) in enumerate(flags[k])
               if i >= 700 and not fleet.labels[k][i]]
    assert np.mean(healthy) < 0.05, "too many false alarms on healthy records"


def test_error_q_finds_a_small_offset_more_often_without_more_false_alarms():
    # x0 is noise, x1..x3 follow the load; an offset on x1 of five times its noise is small
    # next to the healthy errors of the other metrics under the paper's max score
    rng = np.random.default_rng(2)
    load = rng.uniform(0, 1, (1200, 1))
    X = np.hstack([rng.normal(size=(1200, 1)), load, 2 * load, 1 - load])
    X[:, 1:] += 0.01 * rng.normal(size=(1200, 3))
    faulty = X[800:].copy()
    faulty[:, 1] += 0.05
    recall = {}
    for q in (None, 0.999):
        det = NodeAutoencoder(epochs=30, error_q=q, seed=0)
        det.fit(X[:800])
        assert np.mean(det.score_many(X[800:]) > det.threshold_) < 0.02  # healthy stays quiet
        recall[q] = np.mean(det.score_many(faulty) > det.threshold_)
        if q is not None:
            flagged = faulty[det.score_many(faulty) > det.threshold_]
            tops = [det.explain(dict(zip(det.features_, x, strict=True)), top=1)[0][0]
                    for x in flagged]
            assert tops.count("x1") > 0.8 * len(tops)
            twin = NodeAutoencoder(epochs=30, error_q=q, seed=0)
            twin.load_state_dict(_state.loads(_state.dumps(det.state_dict())))
            assert np.array_equal(twin.score_many(faulty), det.score_many(faulty))
    assert recall[0.999] > recall[None] + 0.1, recall
    with pytest.raises(ConfigError, match="error_q"):
        NodeAutoencoder(error_q=0)


def test_denoising_training_is_seeded_and_can_be_switched_off():
    rng = np.random.default_rng(3)
    load = rng.uniform(0, 1, (400, 1))
    X = np.hstack([load, 2 * load + 0.05 * rng.normal(size=(400, 1)), 1 - load, load**2])
    scores = {}
    for noise in (0.0, 0.1):
        a, b = NodeAutoencoder(epochs=5, input_noise=noise, seed=1), NodeAutoencoder(epochs=5, input_noise=noise, seed=1)
        a.fit(X)
        b.fit(X)
        assert np.array_equal(a.score_many(X), b.score_many(X))  # the noise comes from the model's own generator
        scores[noise] = a.score_many(X)
    assert not np.allclose(scores[0.0], scores[0.1])
    with pytest.raises(ConfigError, match="input_noise"):
        NodeAutoencoder(input_noise=-0.1)
