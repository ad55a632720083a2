"""Ceiling scenarios: a bare consume -> produce loop, no decoding, no detection.

Each function reads ``n`` records from ``topic`` (all partitions, manual assignment, no group
join) and writes every value unchanged to ``out_topic``, then waits for the acks. What it
measures is the most any service built on that client can do on this machine.
"""

from __future__ import annotations

import time


def kafka_python_loop(bootstrap: str, topic: str, out_topic: str, n: int, partitions: int) -> dict:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    cons = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                         max_poll_records=5000, fetch_max_bytes=52428800, max_partition_fetch_bytes=4194304)
    cons.assign([TopicPartition(topic, p) for p in range(partitions)])
    cons.seek_to_beginning()
    prod = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, batch_size=256 * 1024)
    seen = 0
    t0 = time.perf_counter()
    while seen < n:
        for recs in cons.poll(timeout_ms=500, max_records=5000).values():
            for r in recs:
                prod.send(out_topic, key=r.key, value=r.value)
            seen += len(recs)
    prod.flush()
    dt = time.perf_counter() - t0
    cons.close()
    prod.close()
    return {"records": seen, "seconds": dt}


def confluent_loop(bootstrap: str, topic: str, out_topic: str, n: int, partitions: int) -> dict:
    from connectors.confluent import ConfluentSink, ConfluentSource

    src = ConfluentSource(bootstrap, "ceiling", {"fetch.max.bytes": 52428800})
    src.assign([(topic, p) for p in range(partitions)], {(topic, p): 0 for p in range(partitions)})
    sink = ConfluentSink(bootstrap, {"linger.ms": 5, "batch.size": 1_000_000})
    seen = 0
    t0 = time.perf_counter()
    while seen < n:
        msgs = src.poll(0.5, 10000)
        for m in msgs:
            sink.send(out_topic, m.key, m.value)
        seen += len(msgs)
    sink.flush(60)
    dt = time.perf_counter() - t0
    src.close()
    return {"records": seen, "seconds": dt}
