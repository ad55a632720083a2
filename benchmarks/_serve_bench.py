"""`streamad serve` scenarios for benchmarks/throughput.py (each runs in its own child process).

``serve-<detector>-<client>``: the service's pipeline (decode, per-key detector and SPOT,
score and event messages, dead letters, commit after flush) reads the pre-filled topic with a
consumer group, exactly as `streamad serve` does; the clock starts at the first record (the
ceiling loops use manual assignment and have no group join either). ``-events`` variants
publish events only (no scores topic).

``latency-<detector>-<client>``: a producer thread writes fresh records at ``--rate`` records/s
(the orchestrator passes half the measured maximum) while the service runs; the latency of a
record is from its producer timestamp to the moment the batch holding it was flushed and
committed (its score and any event are then acknowledged by the broker), p50 / p99.
"""

from __future__ import annotations

import time
import uuid

import numpy as np

COMMIT_INTERVAL_S = float(__import__("os").environ.get("STREAMAD_BENCH_COMMIT_S", "0"))
DETECTORS = {"gaussian": {"window": 32}, "zscore": {"window": 100}, "hst": {}}
NAMES = [
    "serve-gaussian-kafka-python", "serve-gaussian-kafka-python-events", "serve-zscore-kafka-python",
    "serve-hst-kafka-python", "serve-gaussian-confluent", "serve-zscore-confluent",
    "latency-gaussian-kafka-python", "latency-gaussian-confluent",
]


def _pipeline(args, detector: str, client: str, scores: bool, topic: str):
    from connectors.kafka import DeadLetterSink, for_embedded_broker, make_sink, make_source
    from streamad.service import Pipeline, ServiceConfig

    run = uuid.uuid4().hex[:6]
    cfg = ServiceConfig(bootstrap=args.bootstrap, group=f"bench-{run}", client=client,
                        kafka_settings=for_embedded_broker(), input_topics=[topic],
                        anomalies_topic=f"{args.out_topic}-anomalies", scores_topic=args.out_topic if scores else "",
                        dead_letter_topic=f"{args.out_topic}-dlq", detector=detector,
                        detector_params=DETECTORS[detector], batch_size=5000, poll_timeout_s=0.2, commit_interval_s=COMMIT_INTERVAL_S)
    source = make_source(cfg.bootstrap, cfg.group, cfg.kafka_settings, client=client)
    sink = make_sink(cfg.bootstrap, cfg.kafka_settings, client=client)
    p = Pipeline(source, sink, cfg, dead_letter=DeadLetterSink(sink, cfg.dead_letter_topic).send)
    return p, source, sink


def throughput(args, detector: str, client: str, scores: bool = True) -> dict:
    p, source, sink = _pipeline(args, detector, client, scores, args.topic)
    p.start()
    try:
        deadline = time.monotonic() + 120
        while p.records_in == 0:  # the group join is not part of the rate
            p.run_once()
            if time.monotonic() > deadline:
                raise SystemExit("no records within 120 s")
        t0 = time.perf_counter()
        first = p.records_in
        while p.records_in < args.n:
            p.run_once()
        dt = time.perf_counter() - t0
        return {"records": p.records_in - first, "seconds": dt, "events": p.events_out}
    finally:
        p.shutdown()
        source.close()
        sink.close()


def latency(args, detector: str, client: str) -> dict:
    from kafka.admin import KafkaAdminClient, NewTopic

    rate = float(args.rate or 5000)
    topic = f"{args.out_topic}-in"
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=args.partitions, replication_factor=1)])
    admin.close()
    p, source, sink = _pipeline(args, detector, client, True, topic)
    batches: list = []
    poll = source.poll

    def spy(timeout_s, max_records):
        got = poll(timeout_s, max_records)
        batches.append(got)
        return got

    source.poll = spy
    n = int(min(args.n, rate * 20))  # 20 s of traffic
    import multiprocessing as mp

    # The producer runs in its own process: a thread would compete with the service for the GIL.
    producer = mp.get_context("spawn").Process(target=_produce, args=(args.bootstrap, topic, n, rate, args.keys),
                                               daemon=True)

    p.start()
    while not source.assignment():  # join the group before traffic starts
        p.run_once()
    producer.start()
    lat: list[float] = []
    deadline = time.monotonic() + 20 + 60
    try:
        while len(lat) < n and time.monotonic() < deadline:
            batches.clear()
            p.run_once()
            now = time.time()
            for b in batches:
                lat.extend(now - m.timestamp_ms / 1000.0 for m in b if m.timestamp_ms)
    finally:
        producer.join(30)
        if producer.is_alive():
            producer.kill()
        p.shutdown()
        source.close()
        sink.close()
    a = np.array(lat) * 1000
    return {"records": len(a), "seconds": n / rate, "rate": rate,
            "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}


def _produce(bootstrap: str, topic: str, n: int, rate: float, keys: int) -> None:
    from connectors.kafka import for_embedded_broker, make_sink

    prod = make_sink(bootstrap, {**for_embedded_broker(), "linger_ms": 1})
    t0 = time.perf_counter()
    for i in range(n):
        k = i % keys
        wait = t0 + i / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        prod.send(topic, f"k{k:06d}".encode(),
                  f'{{"key":"k{k:06d}","ts":{1.7e9 + 60 * (i // keys)},"values":{{"value":{i % 97}}}}}'.encode())
    prod.flush(60)
    prod.close()


def scenarios(args) -> dict:
    out = {}
    for name in NAMES:
        parts = name.split("-")
        kind, detector = parts[0], parts[1]
        client = "confluent" if "confluent" in name else "kafka-python"
        scores = not name.endswith("-events")
        if kind == "serve":
            out[name] = (lambda d=detector, c=client, s=scores: throughput(args, d, c, s))
        else:
            out[name] = (lambda d=detector, c=client: latency(args, d, c))
    return out
