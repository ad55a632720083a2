"""Feature sets and keys on the real broker: a device whose first record had one metric and
every later one three (the probe's case) gets a new detector after ``schema_change_after``
records instead of 300 dead letters; a lone odd record and a record whose JSON key is not its
Kafka key are dead letters; configured features fix the schema."""

import json
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from connectors.kafka import for_embedded_broker, make_sink
from streamad.records import Record, encode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_serve import _config, _pipeline, _read_all, _topics  # noqa: E402


def _three(rng):
    return {"cpu": float(rng.normal(20, 2)), "latency": float(rng.normal(5, 1)), "memory": float(rng.normal(60, 3))}


def _run(cfg, total):
    p, source, sink = _pipeline(cfg)
    p.start()
    try:
        deadline = time.monotonic() + 60
        while p.records_in < total and time.monotonic() < deadline:
            p.run_once()
    finally:
        p.shutdown()
        source.close()
        sink.close()
    assert p.records_in == total
    return p


def test_a_devices_new_metrics_recreate_its_detector_and_odd_records_are_dead_letters(bootstrap):
    names = _topics(bootstrap, partitions=1)
    rng = np.random.default_rng(5)
    sink = make_sink(bootstrap, for_embedded_broker())

    def send(kafka_key, key, values, i):
        sink.send(names["input"], kafka_key.encode(), encode(Record(key, 1.7e9 + i, values)))

    send("sensor-X", "sensor-X", {"cpu": 20.0}, 0)
    for i in range(1, 301):
        send("sensor-X", "sensor-X", _three(rng), i)
    for i in range(100):
        send("sensor-Y", "sensor-Y", _three(rng), i)
        if i == 50:
            send("sensor-Y", "sensor-Y", {"cpu": 1.0}, i)  # lone odd record
    send("sensor-Z", "sensor-Y", _three(rng), 101)  # JSON key is not the Kafka key
    sink.flush()
    sink.close()
    total = 1 + 300 + 101 + 1

    p = _run(_config(names, bootstrap, f"g-{uuid.uuid4().hex[:6]}", schema_change_after=10), total)
    assert p.schema_changes == 1
    scores = [json.loads(m.value) for m in _read_all(bootstrap, names["scores"], expect=total - 11)[0]]
    dead = [json.loads(m.value) for m in _read_all(bootstrap, names["dlq"], expect=11)[0]]
    by_key = {}
    for s in scores:
        by_key[s["key"]] = by_key.get(s["key"], 0) + 1
    assert by_key == {"sensor-X": 1 + 291, "sensor-Y": 100}
    reasons = [d["reason"] for d in dead]
    assert sum("earlier records had ['cpu']" in r and "in a row" in r for r in reasons) == 9
    assert sum("earlier records had ['cpu', 'latency', 'memory']" in r for r in reasons) == 1
    assert sum(r.startswith("key mismatch: the record's key 'sensor-Y' is not its Kafka message key 'sensor-Z'")
               for r in reasons) == 1

    # the same stream with the features configured: the schema is fixed from the first record
    cfg = _config(names, bootstrap, f"g-{uuid.uuid4().hex[:6]}", features=["cpu", "latency", "memory"])
    fixed = _run(cfg, total)
    assert fixed.schema_changes == 0
    assert fixed.dead_letters == 1 + 1 + 1  # X's one-metric record, Y's odd one, the key mismatch
