"""A key's feature set over time, on the in-memory transport: a lasting change re-creates the
key's detector, a lone odd record is a dead letter, configured features fix the schema."""

import json
import math

import numpy as np
import pytest

from streamad.records import Record, encode
from streamad.service import (
    MemoryBroker,
    MemorySink,
    MemorySource,
    Pipeline,
    ServiceConfig,
)
from streamad.service.metrics import Metrics

FEATS3 = ("cpu", "latency", "memory")


def _broker():
    b = MemoryBroker()
    for t in ("telemetry", "anomalies", "scores", "telemetry.dlq"):
        b.create_topic(t, 1)
    return b


def _send(b, key, values, i):
    return b.produce("telemetry", key.encode(), encode(Record(key, 1e9 + i, values)), partition=0)


def _three(rng):
    return {"cpu": float(rng.normal(20, 2)), "latency": float(rng.normal(5, 1)), "memory": float(rng.normal(60, 3))}


def _run(b, tmp_path=None, metrics=None, batch_size=97, **cfg):
    config = ServiceConfig(detector="gaussian", detector_params={"window": 20}, scores_topic="scores",
                           poll_timeout_s=0.0, batch_size=batch_size, checkpoint_dir=str(tmp_path or ""), **cfg)
    p = Pipeline(MemorySource(b), MemorySink(b), config, metrics=metrics)
    p.start()
    while p.run_once():
        pass
    p.shutdown()
    return p


def _scores(b):
    return {s["offset"]: s["score"] for s in map(json.loads, (m.value for m in b.all("scores")))}


def _dead(b):
    return [json.loads(m.value) for m in b.all("telemetry.dlq")]


@pytest.mark.parametrize("batch_size", [1, 97])
def test_a_lasting_feature_change_recreates_the_keys_detector(batch_size):
    # the probe that found it: one {"cpu": ...} record, then 300 records with three features
    rng = np.random.default_rng(0)
    b = _broker()
    _send(b, "sensor-X", {"cpu": 20.0}, 0)
    new = [_send(b, "sensor-X", _three(rng), i) for i in range(1, 301)]
    metrics = Metrics()
    p = _run(b, metrics=metrics, batch_size=batch_size, schema_change_after=10)

    dead = _dead(b)
    assert [d["source"]["offset"] for d in dead] == [m.offset for m in new[:9]]  # 9 in a row, then the change
    assert "has features ['cpu', 'latency', 'memory'], earlier records had ['cpu']" in dead[0]["reason"]
    assert "1 in a row; 10 in a row re-create" in dead[0]["reason"]
    assert p.schema_changes == 1
    assert "streamad_schema_changes_total 1.0" in metrics.render().decode()
    scores = _scores(b)
    assert set(scores) == {0} | {m.offset for m in new[9:]}
    # the new detector is a fresh one: its scores are those of a key that starts at the 10th record
    fresh = _broker()
    rng = np.random.default_rng(0)
    values = [_three(rng) for _ in range(300)]
    for i, v in enumerate(values[9:]):
        _send(fresh, "sensor-X", v, i)
    _run(fresh, batch_size=batch_size)
    # (batch boundaries differ between the two runs: equal up to rounding)
    assert np.allclose(list(_scores(fresh).values()), [scores[m.offset] for m in new[9:]], rtol=1e-9, atol=0)


def test_a_lone_odd_record_is_a_dead_letter_and_the_key_scores_as_without_it():
    rng = np.random.default_rng(1)
    values = [{"cpu": float(x)} for x in rng.normal(20, 2, size=200)]
    b, ref = _broker(), _broker()
    for i, v in enumerate(values):
        _send(b, "k", v, i)
        _send(ref, "k", v, i)
        if i == 120:
            odd = _send(b, "k", {"cpu": 1.0, "fan": 2.0}, i)
    p = _run(b)
    _run(ref)
    [dead] = _dead(b)
    assert dead["source"]["offset"] == odd.offset and "earlier records had ['cpu']" in dead["reason"]
    assert p.schema_changes == 0
    got = _scores(b)
    assert sorted(got.values()) == sorted(_scores(ref).values())  # the odd record changed nothing


def test_odd_records_that_stop_short_of_k_change_nothing_and_the_count_starts_again():
    rng = np.random.default_rng(2)
    b = _broker()
    i = 0
    for run in (4, 4):  # two runs of 4 odd records, each ended by a normal one: never 5 in a row
        for _ in range(30):
            _send(b, "k", {"cpu": float(rng.normal(20, 2))}, i)
            i += 1
        for _ in range(run):
            _send(b, "k", {"cpu": 1.0, "fan": 2.0}, i)
            i += 1
    p = _run(b, schema_change_after=5)
    assert p.schema_changes == 0 and len(_dead(b)) == 8 and len(_scores(b)) == 60


def test_the_count_of_odd_records_survives_a_restart_from_checkpoints(tmp_path):
    """A crash between odd records 2 and 3 of 5: the restarted service still re-creates the
    detector at the 5th, so its scores equal an uninterrupted run's."""
    rng = np.random.default_rng(3)
    sends = [{"cpu": float(rng.normal(20, 2))} for _ in range(40)] + [_three(rng) for _ in range(60)]
    ref, b = _broker(), _broker()
    for i, v in enumerate(sends):
        _send(ref, "k", v, i)
        _send(b, "k", v, i)
    _run(ref, schema_change_after=5)
    first = Pipeline(MemorySource(b), MemorySink(b), ServiceConfig(
        detector="gaussian", detector_params={"window": 20}, scores_topic="scores", poll_timeout_s=0.0,
        batch_size=42, checkpoint_dir=str(tmp_path), checkpoint_every_records=1, schema_change_after=5))
    first.start()
    first.run_once()  # offsets 0-41: the first two odd records; checkpointed, then "crash"
    assert first.partitions[("telemetry", 0)].schema_runs == {"k": (FEATS3, 2)}
    again = _run(b, tmp_path, batch_size=42, schema_change_after=5)
    assert again.schema_changes == 1
    got = {}
    for s in map(json.loads, (m.value for m in b.all("scores"))):
        got.setdefault(s["offset"], set()).add(s["score"])
    want = _scores(ref)
    assert set(got) == set(want)
    assert all(len(v) == 1 and math.isclose(v.pop(), want[o], rel_tol=1e-12) for o, v in got.items())


def test_configured_features_ignore_extras_and_dead_letter_a_record_missing_one():
    rng = np.random.default_rng(4)
    b, ref = _broker(), _broker()
    for i in range(100):
        v = _three(rng)
        _send(b, "k", {**v, "fan": float(i)} if i % 2 else v, i)  # extra feature on every other record
        _send(ref, "k", v, i)
    missing = _send(b, "k", {"cpu": 1.0, "fan": 3.0}, 100)
    p = _run(b, features=list(FEATS3))
    _run(ref)
    [dead] = _dead(b)
    assert dead["source"]["offset"] == missing.offset
    assert "lacks the configured feature(s) ['latency', 'memory']" in dead["reason"]
    assert p.schema_changes == 0
    assert list(_scores(b).values()) == list(_scores(ref).values())
