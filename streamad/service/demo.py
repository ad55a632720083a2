"""`streamad demo`: the whole service on a laptop in well under a minute.

Starts the embedded broker, replays a synthetic multi-sensor stream with labelled anomalies
(plus a few malformed messages), runs the service in-process until every record is scored,
and judges the incidents it publishes against the injected labels, as an on-call engineer
would: how many anomalies raised an alert, how many alerts each one raised, how many alerts
were false. The Kafka pieces are passed in by the CLI, so this module stays free of connector
imports.

The detector is ``spread`` around the service's default detector: the default alone finds
no flatline (a stuck sensor is too predictable, not too far off) and no faster oscillation.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import ServiceConfig
from .deadletter import DeadLetterSink

__all__ = ["DemoResult", "run_demo", "score_incidents"]

MALFORMED_EXAMPLES = (b'{"key": "sensor-0", "ts": 1, "values": {"cpu": "hot"}}', b"\x00\x9c binary junk",
                      b'{"key": "sensor-1", "values": {"cpu": 1', b'{"key": "sensor-2", "values": {"cpu": NaN}}')

#: Points after an anomaly's end in which an incident still counts as finding it: detectors
#: react once a shape is visible (a drift is most visible when it snaps back).
SLACK = 10


@dataclass
class DemoResult:
    """What ``DIR/summary.json`` holds (``seconds`` and ``records_per_s`` aside)."""

    records: int
    true_anomalies: int
    incidents: int
    found: int
    false_incidents: int
    alerts_per_found: float | None
    false_per_10k: float
    per_kind: dict[str, list[int]]
    median_delay_points: float | None
    scored: int
    dead_letters: int
    detector: str
    detector_params: dict[str, Any]
    seconds: float

    @property
    def records_per_s(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        apf = "-" if self.alerts_per_found is None else f"{self.alerts_per_found:.2f}"
        return (f"demo: {self.records:,} records, {self.true_anomalies} true anomalies, {self.incidents} incidents: "
                f"found {self.found}/{self.true_anomalies}, alerts per found {apf}, false incidents "
                f"{self.false_incidents} ({self.false_per_10k:.1f} per 10,000 records)")


def score_incidents(data, incidents: list[tuple[str, float, float]], slack: int = SLACK) -> dict[str, Any]:
    """Judge ``incidents`` ``(key, start ts, end ts)`` against the injected anomalies.

    An incident overlaps an anomaly when they share a point of the key, the anomaly
    extended by ``slack`` points after its end. ``found``: anomalies overlapped by at least
    one incident; ``false_incidents``: incidents that overlap none; ``alerts_per_found``:
    incidents that overlap an anomaly, divided by ``found`` (1.0: one alert per anomaly).

    >>> from streamad.synthetic import generate
    >>> d = generate(n_keys=1, n_points=600, seed=1)
    >>> a = d.anomalies[0]
    >>> t = d.timestamps
    >>> r = score_incidents(d, [(a.key, float(t[a.start]), float(t[a.start + 1])), (a.key, float(t[5]), float(t[5]))])
    >>> r["found"], r["false_incidents"], r["alerts_per_found"]
    (1, 1, 1.0)
    """
    index = {float(t): i for i, t in enumerate(data.timestamps.tolist())}
    by_key: dict[str, list[int]] = {}
    for n, a in enumerate(data.anomalies):
        by_key.setdefault(a.key, []).append(n)
    first_hit: dict[int, int] = {}
    alerts = false = 0
    for key, start_ts, end_ts in incidents:
        s, e = index.get(float(start_ts)), index.get(float(end_ts))
        if s is None or e is None:
            false += 1
            continue
        hits = [n for n in by_key.get(key, ()) if s < data.anomalies[n].end + slack and e >= data.anomalies[n].start]
        if not hits:
            false += 1
            continue
        alerts += 1
        for n in hits:
            first_hit[n] = min(first_hit.get(n, s), s)
    per_kind: dict[str, list[int]] = {}
    for n, a in enumerate(data.anomalies):
        kind = per_kind.setdefault(a.kind, [0, 0])
        kind[0] += 1
        kind[1] += n in first_hit
    delays = [max(0, i - data.anomalies[n].start) for n, i in first_hit.items()]
    found = len(first_hit)
    return {"true_anomalies": len(data.anomalies), "incidents": len(incidents), "found": found,
            "false_incidents": false, "alerts_per_found": alerts / found if found else None,
            "per_kind": dict(sorted(per_kind.items())),
            "median_delay_points": float(np.median(delays)) if delays else None}


#: The demo's base detector inside ``spread``.
DEMO_BASE = "gaussian"


def demo_detector(base: str | None = None, spread: bool = True) -> tuple[str, dict[str, Any]]:
    """The demo's detector: ``spread`` around ``base`` (default: ``gaussian``), or ``base`` alone.

    Not the service's default (``records``): the demo's sensors are short (2,000 points each,
    about eight of their cycles) and half their anomaly kinds change how a series moves, not
    where it is (flatlines, frequency changes), which spread around gaussian finds and records
    mostly does not (docs/nab.md, "The demo")."""
    base = base or DEMO_BASE
    return ("spread", {"base": base}) if spread and base != "spread" else (base, {})


def run_demo(*, broker_factory, kafka, n_keys: int = 6, n_points: int = 2000, seed: int = 7,
             detector: str | None = None, detector_params: dict | None = None, threshold: str = "spot",
             threshold_params: dict | None = None, max_seconds: float = 45.0, out_dir: str | None = "out",
             plot: str | None = None, out=sys.stdout, threshold_factory=None) -> DemoResult:
    """Run the demo. ``kafka`` is ``connectors.kafka`` (make_source, make_sink, ensure_topics,
    for_embedded_broker); ``broker_factory()`` returns an unstarted broker.
    ``detector`` None: :func:`demo_detector`. Writes ``out_dir/summary.json`` (None: no file)
    and the plot (``plot``; default ``out_dir/demo.png``, "" for none)."""
    from ..records import Record, encode
    from ..synthetic import generate, iter_records
    from .pipeline import Pipeline

    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    if detector is None:
        detector, detector_params = demo_detector()
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
        dlq = DeadLetterSink(out_sink, cfg.dead_letter_topic)
        pipeline = Pipeline(source, out_sink, cfg, dead_letter=dlq.send, threshold_factory=threshold_factory)
        messages: list[dict] = []
        pipeline.on_event = messages.append
        params = f" {json.dumps(detector_params)}" if detector_params else ""
        say(f"scoring with detector={detector}{params} threshold={threshold} (one instance per sensor), "
            f"incidents closing after {cfg.incident_policy.gap} without a flag ...")
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
                        say(f"  {pipeline.records_in:>7,} / {n:,} records  {pipeline.incidents_opened:>4} incidents  "
                            f"{pipeline.dead_letters} dead letters")
                    else:
                        say("  joining the consumer group ...")
            seconds = time.monotonic() - (first or t0)
            pipeline.shutdown()
            incidents = _incidents(messages, pipeline)  # before close: leaving the group drops the partitions
        finally:
            source.close()
            out_sink.close()
    finally:
        broker.stop()
        say("broker stopped")

    m = score_incidents(data, incidents)
    records = n_keys * n_points
    result = DemoResult(records=records, true_anomalies=m["true_anomalies"], incidents=m["incidents"],
                        found=m["found"], false_incidents=m["false_incidents"],
                        alerts_per_found=m["alerts_per_found"], false_per_10k=1e4 * m["false_incidents"] / records,
                        per_kind=m["per_kind"], median_delay_points=m["median_delay_points"],
                        scored=pipeline.scored, dead_letters=pipeline.dead_letters, detector=detector,
                        detector_params=dict(detector_params or {}), seconds=seconds)
    say("")
    say(f"scored {result.scored:,} records, {result.dead_letters} dead letters, in {seconds:.1f} s "
        f"({result.records_per_s:,.0f} records/s, in-process with the demo's own producer on the same cores)")
    say("")
    say(f"{'anomaly kind':<18}{'injected':>9}{'found':>9}")
    for kind, (injected, found) in result.per_kind.items():
        say(f"{kind:<18}{injected:>9}{found:>9}")
    say(f"{'all':<18}{result.true_anomalies:>9}{result.found:>9}")
    delay = "-" if result.median_delay_points is None else f"{result.median_delay_points:g} points"
    say(f"median delay from an anomaly's start to its incident's open: {delay}")
    say("")
    files = []
    if out_dir is not None:
        path = Path(out_dir) / "summary.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(result) | {"records_per_s": round(result.records_per_s, 1)}, indent=2) + "\n")
        files.append(str(path))
        if plot is None:
            plot = str(Path(out_dir) / "demo.png")
    if plot:
        _plot(data, incidents, plot)
        files.append(plot)
    say(result.line() + (f"; wrote {', '.join(files)}" if files else ""))
    return result


def _incidents(messages: list[dict], pipeline) -> list[tuple[str, float, float]]:
    """``(key, start ts, end ts)`` of every incident the run published: closed ones
    from their close, those still open at the end from the pipeline's state (the stream
    stopped before their gap passed)."""
    out = [(m["key"], m["start"], m["end"]) for m in messages if m["type"] == "incident_close"]
    for part in pipeline.partitions.values():
        out += [(key, inc.start_ts, inc.end_ts) for key, inc in part.incidents.items()]
    return sorted(out, key=lambda x: (x[0], x[1]))


def _plot(data, incidents, path: str) -> None:
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
                ax.axvspan(a.start, a.end, color="tab:green", alpha=0.2, lw=0)
        opens = []
        for k, s, e in incidents:
            if k == key and float(s) in index and float(e) in index:
                i, j = index[float(s)], index[float(e)]
                ax.axvspan(i, max(j, i + 3), color="tab:red", alpha=0.35, lw=0)
                opens.append(i)
        ax.plot(opens, [X.max()] * len(opens), "v", color="tab:red", ms=6, label="incident opens")
        ax.set_ylabel(key)
    axes[0].legend(loc="upper right", fontsize=7, ncol=4)
    axes[-1].set_xlabel("point (green: injected anomaly, red: incident, triangles: where each opens)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
