"""`streamad demo`: the whole service on a laptop in well under a minute.

Starts the embedded broker, replays a synthetic multi-sensor stream with labelled anomalies
(plus a few malformed messages), runs the service in-process until every record is scored,
and compares the anomaly events with the injected labels. The Kafka pieces are passed in by
the CLI, so this module stays free of connector imports.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import ServiceConfig

__all__ = ["DemoResult", "run_demo", "score_events"]

MALFORMED_EXAMPLES = (b'{"key": "sensor-0", "ts": 1, "values": {"cpu": "hot"}}', b"\x00\x9c binary junk",
                      b'{"key": "sensor-1", "values": {"cpu": 1', b'{"key": "sensor-2", "values": {"cpu": NaN}}')


@dataclass
class DemoResult:
    records: int
    scored: int
    events: int
    dead_letters: int
    seconds: float
    precision: float
    recall: float
    f1: float
    per_kind: dict[str, tuple[int, int]]
    median_delay_points: float | None

    @property
    def records_per_s(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0


def score_events(data, events: list[dict], slack: int = 10) -> dict[str, Any]:
    """Match events to injected anomalies: an event is a true positive when its record lies in
    an anomaly or up to ``slack`` points after it (detectors react once the shape is visible);
    an anomaly is found when at least one event matches it.

    >>> from streamad.synthetic import generate
    >>> d = generate(n_keys=1, n_points=600, seed=1)
    >>> a = d.anomalies[0]
    >>> r = score_events(d, [{"key": a.key, "ts": float(d.timestamps[a.start])}])
    >>> r["precision"], r["recall"] > 0
    (1.0, True)
    """
    index = {float(t): i for i, t in enumerate(data.timestamps.tolist())}
    by_key: dict[str, list] = {}
    for a in data.anomalies:
        by_key.setdefault(a.key, []).append(a)
    tp = 0
    first_hit: dict[int, int] = {}
    ids = {id(a): n for n, a in enumerate(data.anomalies)}
    for e in events:
        i = index.get(float(e["ts"]))
        hit = None
        for a in by_key.get(e["key"], ()):
            if i is not None and a.start <= i < a.end + slack:
                hit = a
                break
        if hit is not None:
            tp += 1
            n = ids[id(hit)]
            first_hit[n] = min(first_hit.get(n, i), i)
    precision = tp / len(events) if events else 0.0
    recall = len(first_hit) / len(data.anomalies) if data.anomalies else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    per_kind: dict[str, tuple[int, int]] = {}
    for n, a in enumerate(data.anomalies):
        injected, found = per_kind.get(a.kind, (0, 0))
        per_kind[a.kind] = (injected + 1, found + (n in first_hit))
    delays = [i - data.anomalies[n].start for n, i in first_hit.items()]
    return {"precision": precision, "recall": recall, "f1": f1, "per_kind": per_kind,
            "median_delay_points": float(np.median(delays)) if delays else None}


def run_demo(*, broker_factory, kafka, n_keys: int = 6, n_points: int = 2000, seed: int = 7,
             detector: str = "gaussian", detector_params: dict | None = None, threshold: str = "spot",
             threshold_params: dict | None = None, max_seconds: float = 45.0, plot: str | None = None,
             out=sys.stdout, threshold_factory=None) -> DemoResult:
    """Run the demo. ``kafka`` is ``connectors.kafka`` (make_source, make_sink, ensure_topics,
    for_embedded_broker, DeadLetterSink); ``broker_factory()`` returns an unstarted broker."""
    from ..records import Record, encode
    from ..synthetic import generate, iter_records
    from .pipeline import Pipeline

    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    if threshold_params is None and threshold == "spot":
        # Calibrate SPOT on the first 300 scores per sensor (the stream's clean start) rather
        # than its default 1,000, so anomalies early in a short demo stream can be flagged.
        threshold_params = {"init": 300, "q": 3e-3}
    data = generate(n_keys=n_keys, n_points=n_points, n_features=3, seed=seed)
    broker = broker_factory()
    say("starting the embedded Kafka-protocol broker ...")
    broker.start()
    try:
        bootstrap = broker.bootstrap
        settings = kafka.for_embedded_broker()
        topics = {"input": "telemetry", "anomalies": "anomalies", "dlq": "telemetry.dlq"}
        kafka.ensure_topics(bootstrap, {topics["input"]: 3, topics["anomalies"]: 1, topics["dlq"]: 1}, settings)
        sink = kafka.make_sink(bootstrap, settings)
        n = 0
        every = max(1, (n_keys * n_points) // 20)
        for rec in iter_records(data):
            sink.send(topics["input"], rec.key.encode(), encode(Record(rec.key, rec.ts, rec.values)))
            n += 1
            if n % every == 0:  # sprinkle malformed messages: they must go to the DLQ, not stop the service
                sink.send(topics["input"], None, MALFORMED_EXAMPLES[(n // every) % len(MALFORMED_EXAMPLES)])
                n += 1
        sink.flush()
        sink.close()
        say(f"replayed {n:,} messages ({n_keys} sensors x {n_points} points x 3 features, "
            f"{len(data.anomalies)} labelled anomalies, a few malformed) to {bootstrap}/{topics['input']}")

        cfg = ServiceConfig(bootstrap=bootstrap, group="streamad-demo", input_topics=[topics["input"]],
                            anomalies_topic=topics["anomalies"], dead_letter_topic=topics["dlq"],
                            detector=detector, detector_params=dict(detector_params or {}),
                            threshold=threshold, threshold_params=dict(threshold_params or {}),
                            kafka_settings=settings, poll_timeout_s=0.2)
        source = kafka.make_source(bootstrap, cfg.group, settings)
        out_sink = kafka.make_sink(bootstrap, settings)
        dlq = kafka.DeadLetterSink(out_sink, cfg.dead_letter_topic)
        pipeline = Pipeline(source, out_sink, cfg, dead_letter=dlq.send, threshold_factory=threshold_factory)
        events: list[dict] = []
        pipeline.on_event = events.append
        say(f"scoring with detector={detector} threshold={threshold} (one instance per sensor) ...")
        t0 = time.monotonic()
        last = t0
        first = None  # throughput counts from the first record, not from the group join
        pipeline.start()
        try:
            while pipeline.records_in < n and time.monotonic() - t0 < max_seconds:
                if pipeline.run_once() and first is None:
                    first = time.monotonic()
                if time.monotonic() - last >= 2.0:
                    last = time.monotonic()
                    if pipeline.records_in:
                        say(f"  {pipeline.records_in:>7,} / {n:,} records  {pipeline.events_out:>4} events  "
                            f"{pipeline.dead_letters} dead letters")
                    else:
                        say("  joining the consumer group ...")
            seconds = time.monotonic() - (first or t0)
            pipeline.shutdown()
        finally:
            source.close()
            out_sink.close()
    finally:
        broker.stop()
        say("broker stopped")

    m = score_events(data, events)
    result = DemoResult(pipeline.records_in, pipeline.scored, len(events), pipeline.dead_letters, seconds,
                        m["precision"], m["recall"], m["f1"], m["per_kind"], m["median_delay_points"])
    say("")
    say(f"records {result.records:,}  scored {result.scored:,}  events {result.events}  "
        f"dead letters {result.dead_letters}  in {seconds:.1f} s ({result.records_per_s:,.0f} records/s, "
        f"in-process with the demo's own producer on the same cores)")
    say("")
    say(f"{'anomaly kind':<18}{'injected':>9}{'detected':>9}")
    for kind, (injected, found) in sorted(result.per_kind.items()):
        say(f"{kind:<18}{injected:>9}{found:>9}")
    say(f"{'all':<18}{len(data.anomalies):>9}{sum(f for _, f in result.per_kind.values()):>9}")
    say("")
    delay = "-" if result.median_delay_points is None else f"{result.median_delay_points:g} points"
    say(f"precision {result.precision:.2f}  recall {result.recall:.2f}  F1 {result.f1:.2f}  "
        f"median delay from anomaly start to first event: {delay}")
    if plot:
        _plot(data, events, plot)
        say(f"plot: {plot}")
    return result


def _plot(data, events, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = data.keys[:3]
    fig, axes = plt.subplots(len(keys), 1, figsize=(11, 2.6 * len(keys)), sharex=True)
    axes = np.atleast_1d(axes)
    index = {float(t): i for i, t in enumerate(data.timestamps.tolist())}
    for ax, key in zip(axes, keys, strict=False):
        X = data.values[key]
        x = np.arange(len(X))
        for j, name in enumerate(data.features):
            ax.plot(x, X[:, j], lw=0.6, label=name)
        for a in data.anomalies:
            if a.key == key:
                ax.axvspan(a.start, a.end, color="tab:red", alpha=0.15)
        hits = [index[float(e["ts"])] for e in events if e["key"] == key and float(e["ts"]) in index]
        ax.plot(hits, [X[:, 0].max()] * len(hits), "v", color="black", ms=4, label="event")
        ax.set_ylabel(key)
    axes[0].legend(loc="upper right", fontsize=7, ncol=4)
    axes[-1].set_xlabel("point (red: injected anomaly, triangles: anomaly events)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary_json(result: DemoResult) -> str:
    return json.dumps(result.__dict__ | {"records_per_s": result.records_per_s})
