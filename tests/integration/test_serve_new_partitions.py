"""Partitions added to a topic while the service runs are read, and the lag metric covers
them before they are.

The embedded broker (Tansu 0.6) has no CreatePartitions, so the topic grows from 2 to 4
partitions by being deleted and created again with 4 (connectors.broker.regrow_topic): for
the consumer it is the same event, a subscribed topic whose partition count grew in the
metadata. The records on the old partitions are gone with the old topic; the test follows
the new partitions 2 and 3.
"""

import dataclasses
import json
import re
import sys
import threading
import uuid
from pathlib import Path

import pytest

from connectors.broker import regrow_topic
from connectors.kafka import (
    ensure_topics,
    for_embedded_broker,
    make_sink,
    make_source,
)
from streamad.records import Record, encode
from streamad.service import Pipeline
from streamad.service.deadletter import DeadLetterSink
from streamad.service.metrics import Metrics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_serve import _config, _read_all, _wait  # noqa: E402
from test_service_pipeline import MaxThreshold  # noqa: E402


def _send(bootstrap, topic, partitions, n):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for p in partitions:
            for i in range(n):
                key = f"dev-{p}"
                producer.send(topic, key=key.encode(), value=encode(Record(key, 1.7e9 + i, {"x": float(i % 7)})),
                              partition=p)
        producer.flush()
    finally:
        producer.close()


def test_partitions_added_at_run_time_are_read_and_in_the_lag_metric(bootstrap):
    names = {k: f"{k}-{uuid.uuid4().hex[:8]}" for k in ("input", "anomalies", "scores", "dlq")}
    ensure_topics(bootstrap, {names["input"]: 2, names["anomalies"]: 1, names["scores"]: 4, names["dlq"]: 1})
    _send(bootstrap, names["input"], [0, 1], 50)
    cfg = dataclasses.replace(_config(names, bootstrap, f"g-{uuid.uuid4().hex[:6]}"),
                              kafka_settings={**for_embedded_broker(), "metadata_max_age_ms": 2000})
    sink = make_sink(cfg.bootstrap, cfg.kafka_settings)
    source = make_source(cfg.bootstrap, cfg.group, cfg.kafka_settings)
    metrics = Metrics()
    p = Pipeline(source, sink, cfg, dead_letter=DeadLetterSink(sink, cfg.dead_letter_topic).send,
                 threshold_factory=MaxThreshold, metrics=metrics)
    stop = threading.Event()
    lag_seen: set[str] = set()  # partitions the lag gauge showed records behind on
    gauge = re.compile(rf'streamad_partition_lag{{partition="(\d+)",topic="{names["input"]}"}} ([0-9.e+]+)')

    def work():
        p.start()
        try:
            while not stop.is_set():
                p.run_once()
                lag_seen.update(n for n, v in gauge.findall(metrics.render().decode()) if float(v) > 0)
        finally:
            p.shutdown()
            source.close()
            sink.close()

    worker = threading.Thread(target=work)
    worker.start()
    try:
        _wait(lambda: p.records_in >= 100, 60, "the first records")
        regrow_topic(bootstrap, names["input"], 4)
        _send(bootstrap, names["input"], [2, 3], 30)
        want = {(2, o) for o in range(30)} | {(3, o) for o in range(30)}

        def scored():
            got = _read_all(bootstrap, names["scores"], timeout_s=2)[0]
            return want <= {(s["partition"], s["offset"]) for s in map(json.loads, (m.value for m in got))}

        _wait(scored, 90, "the records on the new partitions scored")
    finally:
        stop.set()
        worker.join(60)
    assert {"2", "3"} <= lag_seen  # the new partitions' backlog showed before they were read
