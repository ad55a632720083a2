"""Latency floor of a bare kafka-python consumer against the embedded broker, per
``fetch_max_wait_ms``: how long after the broker acknowledged a record does ``poll`` hand it
over, with a producer process writing at a fixed rate.

    python benchmarks/consumer_latency.py --rate 16000 --seconds 10 --fetch-wait 200,10,1

Writes benchmarks/results/consumer_latency.{json,md}. Latency is measured from the
producer's acknowledgement (callback time) to the end of the poll that returned the record,
matched by (partition, offset), so the load generator's own client queue is left out.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def measure(bootstrap: str, rate: float, n: int, fetch_wait_ms: int, work: str) -> dict:
    import _serve_bench as sb
    from kafka.admin import KafkaAdminClient, NewTopic

    from connectors.kafka import for_embedded_broker, make_source

    topic = f"lat-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    admin.close()
    src = make_source(bootstrap, f"g-{topic}", for_embedded_broker({"fetch_max_wait_ms": fetch_wait_ms}))
    src.subscribe([topic])
    while not src.assignment():  # join the group before traffic starts
        src.poll(0.2, 5000)
    ack_path = f"{work}/{topic}.npy"
    producer = mp.get_context("spawn").Process(target=sb._produce, args=(bootstrap, topic, n, rate, 1000, ack_path))
    producer.start()
    seen, polls, empty = [], [], 0
    deadline = time.monotonic() + n / rate + 30
    try:
        while len(seen) < n and time.monotonic() < deadline:
            t = time.perf_counter()
            got = src.poll(0.2, 5000)
            polls.append(time.perf_counter() - t)
            now = time.time()
            empty += not got
            seen.extend((m.partition, m.offset, now) for m in got)
    finally:
        sb.stop(producer, 60)
        src.close()
    d = sb.since_ack_ms(ack_path, seen)
    return {"rate": rate, "records": len(seen), "fetch_max_wait_ms": fetch_wait_ms,
            "p50_ms": float(np.percentile(d, 50)), "p99_ms": float(np.percentile(d, 99)),
            "poll_p50_ms": float(np.median(polls)) * 1000, "poll_p99_ms": float(np.percentile(polls, 99)) * 1000,
            "empty_polls": empty, "polls": len(polls)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", default="5000,16000", help="records/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fetch-wait", default="200,10,1", help="fetch_max_wait_ms values, comma-separated")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "consumer_latency.json")
    args = ap.parse_args()
    from connectors.broker import EmbeddedBroker

    rows = []
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as work:
        for rate in (float(r) for r in args.rate.split(",")):
            for fw in (int(f) for f in args.fetch_wait.split(",")):
                r = measure(broker.bootstrap, rate, int(rate * args.seconds), fw, work)
                rows.append(r)
                print(json.dumps(r), file=sys.stderr)
    doc = {"benchmark": "consumer_latency", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    lines = ["# Bare consumer latency vs fetch_max_wait_ms (embedded broker, kafka-python, 3 partitions)", "",
             "From the producer's acknowledgement to the end of the poll that returned the record.", "",
             "| rate | fetch_max_wait_ms | p50 ms | p99 ms | poll p50 ms | poll p99 ms | empty polls |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['rate']:,.0f} | {r['fetch_max_wait_ms']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                     f"{r['poll_p50_ms']:.1f} | {r['poll_p99_ms']:.1f} | {r['empty_polls']}/{r['polls']} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
