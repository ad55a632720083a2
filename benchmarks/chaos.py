"""Chaos probes of `streamad serve` and the federation against the embedded broker.

    python benchmarks/chaos.py [--out r.json] [--only kill,malformed,...] [--keep-logs DIR]

Each probe starts its own embedded broker behind a proxy that can cut every connection
(connectors.broker.BrokerProxy: an outage without losing the memory-only broker's data),
runs the real `streamad serve` / `fed-server` / `fed-client` processes with the settings of
examples/serve.toml (gaussian + SPOT, checkpoints every 2,000 records or 5 s, batches of
500, a score per record) and the embedded broker's short group timeouts, and is bounded in
time and records; everything listens on 127.0.0.1.

- kill: 20,000 records (10 keys, 3 partitions, produced at 2,000/s) while the service is
  killed with SIGKILL 3 times and restarted; records lost, scored twice, and whether every
  score (duplicates too) equals an uninterrupted in-process run over the same topic.
- malformed: 200 malformed messages of 40 kinds among 2,000 good ones: each kind is a dead
  letter with a reason, or accepted under a documented rule; the service stays healthy and
  scores every good record.
- sigterm: SIGTERM with the broker up and with it cut off: seconds to exit and exit code
  (0: the final commit was accepted; 1: it was not); records lost after a restart.
- outage: the broker is cut off for 20 s: when /healthz turns 503 (and its reason), when it
  is 200 again after the broker is back, records lost.
- partitions: the input topic grows from 2 to 4 partitions while the service runs (deleted
  and created again: the embedded broker has no CreatePartitions), with the shipped consumer
  settings: seconds until the new partitions' records are scored.
- fed: a fed-server (round timeout 10 s, a key ring of 3 clients of which 2 run, so each round
  stays open its full timeout) is killed with SIGKILL while a round is open and both clients
  have answered it, then restarted from its checkpoint: seconds until it closes a round.
- scaleout: three `serve --state-store kafka` instances, each with its own empty checkpoint
  directory, one killed with SIGKILL: every offset scored, scores equal an uninterrupted run,
  the moved partitions restored from the changelog with their keys' state, no files written.

Prints one table; writes it to benchmarks/results/chaos.md, and with --out the figures as
JSON. Exits 1 when a bar is missed; the last line names the bars missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.broker import BrokerProxy, EmbeddedBroker, free_port, regrow_topic  # noqa: E402
from connectors.kafka import ensure_topics, for_embedded_broker, make_sink  # noqa: E402
from streamad.records import Record, encode  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
KAFKA = for_embedded_broker()

# The bars of issue 35 (checked in ``bars``).
SIGTERM_BAR_S = 20.0
HEALTHZ_BAR_S = 10.0
PARTITIONS_BAR_S = 60.0
FED_ROUND_TIMEOUT_S = 10.0


# -- plumbing ---------------------------------------------------------------------------
class Cluster:
    """An embedded broker that clients reach through a proxy that can cut them off."""

    def __init__(self, workdir: Path):
        self.proxy = BrokerProxy()
        self.broker = EmbeddedBroker(advertised_port=self.proxy.port, log_path=workdir / "broker.log").start()
        self.proxy.start(self.broker.port)
        self.bootstrap = self.proxy.bootstrap

    def stop(self) -> None:
        self.proxy.stop()
        self.broker.stop()


class Tail:
    """Every message of a topic from its start, read incrementally."""

    def __init__(self, bootstrap: str, topic: str):
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                      max_partition_fetch_bytes=8 << 20)
        deadline = time.monotonic() + 30
        parts = None
        while not parts and time.monotonic() < deadline:
            parts = self.consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts or ())]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.messages: list = []
        self.coords: set[tuple[int, int]] = set()  # (partition, offset) of the scored inputs ...
        self._counted = 0  # ... from this many messages

    def poll(self, seconds: float = 0.3) -> list:
        got = [m for ms in self.consumer.poll(timeout_ms=int(seconds * 1000), max_records=100_000).values()
               for m in ms]
        self.messages += got
        return got

    def scored(self) -> int:
        """Distinct input offsets in this scores topic so far (after a poll)."""
        self.poll(0.05)
        for m in self.messages[self._counted:]:
            s = json.loads(m.value)
            self.coords.add((s["partition"], s["offset"]))
        self._counted = len(self.messages)
        return len(self.coords)

    def drain(self, quiet_s: float = 1.0, timeout_s: float = 60.0) -> list:
        """Read until nothing new arrives for ``quiet_s``."""
        deadline, quiet = time.monotonic() + timeout_s, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet < quiet_s:
            if self.poll():
                quiet = time.monotonic()
        return self.messages

    def json(self) -> list[dict]:
        return [json.loads(m.value) for m in self.messages]

    def close(self) -> None:
        self.consumer.close()


def wait(cond, timeout_s: float, step_s: float = 0.2) -> float | None:
    """Seconds until ``cond()`` is true, or None after ``timeout_s``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if cond():
            return time.monotonic() - t0
        time.sleep(step_s)
    return None


def inputs_scored(bootstrap: str, topic: str, scores: Tail, timeout_s: float) -> Tail:
    """Every message of the input ``topic`` (read to its end), once ``scores`` holds a score
    for each of them or after ``timeout_s`` (:func:`coverage` then counts what was lost)."""
    inputs = Tail(bootstrap, topic)
    inputs.drain()
    wait(lambda: scores.poll() is not None and coverage(inputs.messages, scores.json())["lost"] == 0, timeout_s, 0.5)
    return inputs


def streamad_process(args: list[str], log_file) -> subprocess.Popen:
    """A `streamad` CLI process of this checkout, its output to ``log_file``, one thread for
    numpy (the probes' processes share the machine)."""
    return subprocess.Popen([sys.executable, "-m", "streamad.cli", *args], stdout=log_file, stderr=subprocess.STDOUT,
                            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})


def topics(bootstrap: str, partitions: int = 3) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    names = {k: f"{k}-{run}" for k in ("telemetry", "anomalies", "scores", "dlq")}
    ensure_topics(bootstrap, {names["telemetry"]: partitions, names["anomalies"]: 1, names["scores"]: 3,
                              names["dlq"]: 1})
    return names


def produce(bootstrap: str, topic: str, keys: int, per_key: int, seed: int = 0, start: int = 0,
            rate: float | None = None) -> int:
    """``per_key`` records for each of ``keys`` keys (3 features), at ``rate`` records/s."""
    rng = np.random.default_rng(seed)
    sink = make_sink(bootstrap, {**KAFKA, "max_request_size": 4 << 20})
    t0, n = time.monotonic(), 0
    for i in range(start, start + per_key):
        for k in range(keys):
            key = f"dev-{k}"
            values = {"cpu": float(rng.normal(40, 5)), "mem": float(rng.normal(60, 3)), "temp": float(rng.normal(30, 1))}
            sink.send(topic, key.encode(), encode(Record(key, 1.7e9 + 60 * i, values)))
            n += 1
            if rate and n % 100 == 0:
                ahead = n / rate - (time.monotonic() - t0)
                if ahead > 0:
                    sink.flush()
                    time.sleep(ahead)
    sink.flush()
    sink.close()
    return n


SERVE_TOML = """
[kafka]
bootstrap = "{bootstrap}"
group = "{group}"
settings = {{ session_timeout_ms = 6000, heartbeat_interval_ms = 1000, max_poll_interval_ms = 10000 }}
[topics]
input = ["{telemetry}"]
anomalies = "{anomalies}"
scores = "{scores}"
dead_letter = "{dlq}"
[detector]
name = "gaussian"
params = {{ window = 64 }}
[threshold]
name = "spot"
[checkpoint]
dir = "{ckpt}"
every_records = 2000
every_seconds = 5
{store}
[service]
batch_size = 500
poll_timeout_s = 0.5
http_port = {port}
"""


class Serve:
    """A `streamad serve` process whose log goes to a file; its checkpoints go to
    ``state_dir`` (default: a directory of its own, as on a machine of its own)."""

    def __init__(self, names, bootstrap, group, workdir: Path, name: str, store: str = "", port: int = 0,
                 state_dir: Path | None = None):
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state_dir = state_dir or self.workdir / "state"
        self.port = port or free_port()
        cfg = self.workdir / "serve.toml"
        cfg.write_text(SERVE_TOML.format(bootstrap=bootstrap, group=group, ckpt=self.state_dir,
                                         store=store, port=self.port, **names))
        self.log_path = workdir / f"{name}.log"
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait()/kill()
        self.proc = streamad_process(["serve", "--config", str(cfg)], self.log_file)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def has(self, text: str) -> bool:
        return text in self.log()

    def healthz(self) -> tuple[int | None, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return r.status, r.read().decode().strip()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode().strip()
        except OSError as e:
            return None, str(e)

    def terminate(self, timeout_s: float = 40.0) -> tuple[float, int | None]:
        """SIGTERM; (seconds to exit, exit code)."""
        self.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            code = None
        self.log_file.close()
        return time.monotonic() - t0, code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()


def coverage(inputs: list, scores: list[dict]) -> dict:
    """Records lost (input offsets without a score) and scored more than once."""
    want = {(m.partition, m.offset) for m in inputs}
    counts: dict = {}
    for s in scores:
        k = (s["partition"], s["offset"])
        counts[k] = counts.get(k, 0) + 1
    return {"records": len(want), "lost": len(want - set(counts)),
            "scored_twice_or_more": sum(1 for k, n in counts.items() if k in want and n > 1)}


def reference_scores(names: dict, bootstrap: str, total: int) -> dict:
    """Score per (partition, offset) of one uninterrupted in-process run over the topic."""
    from connectors.kafka import make_source
    from streamad.service import MemoryBroker, MemorySink, ServiceConfig
    from streamad.service.app import serve

    mem = MemoryBroker()
    mem.create_topic("scores", 1)
    cfg = ServiceConfig(bootstrap=bootstrap, group=f"ref-{uuid.uuid4().hex[:6]}", input_topics=[names["telemetry"]],
                        scores_topic="scores", detector="gaussian", detector_params={"window": 64},
                        kafka_settings=KAFKA, batch_size=500)
    source = make_source(cfg.bootstrap, cfg.group, cfg.kafka_settings)
    serve(cfg, source, MemorySink(mem), install_signals=False, max_seconds=300,
          until=lambda: len(mem.all("scores")) >= total)
    return {(s["partition"], s["offset"]): s["score"] for s in map(json.loads, (m.value for m in mem.all("scores")))}


def equal_to_reference(scores: list[dict], reference: dict) -> dict:
    off = [s for s in scores if not np.isclose(s["score"], reference.get((s["partition"], s["offset"]), np.nan),
                                               rtol=1e-9, atol=1e-12)]
    return {"scores_compared": len(scores), "scores_off_reference": len(off)}


# -- probes ---------------------------------------------------------------------------------
def probe_kill(workdir: Path) -> dict:
    cluster = Cluster(workdir)
    try:
        names = topics(cluster.bootstrap)
        group = f"g-{uuid.uuid4().hex[:6]}"
        total = 20_000
        producer = threading.Thread(target=produce, args=(cluster.bootstrap, names["telemetry"], 10, total // 10),
                                    kwargs={"rate": 2000.0, "seed": 1})
        producer.start()
        scores = Tail(cluster.bootstrap, names["scores"])
        kills = []
        state = workdir / "state"  # one machine: every restart finds the checkpoints
        service = Serve(names, cluster.bootstrap, group, workdir, "kill-0", state_dir=state)
        for i, at in enumerate((0.25, 0.5, 0.75)):
            wait(lambda at=at: scores.scored() >= at * total, 120, 0.05)
            service.kill()  # SIGKILL
            kills.append(scores.scored())
            service = Serve(names, cluster.bootstrap, group, workdir, f"kill-{i + 1}", state_dir=state)
        producer.join()
        inputs = inputs_scored(cluster.bootstrap, names["telemetry"], scores, 120)
        scores.drain()
        took, code = service.terminate()
        got = scores.json()
        result = {**coverage(inputs.messages, got), "kills_at_scored": kills, "last_exit_code": code}
        result.update(equal_to_reference(got, reference_scores(names, cluster.bootstrap, total)))
        inputs.close()
        scores.close()
        return result
    finally:
        cluster.stop()


def malformed_kinds() -> list[tuple[str, bytes, bytes | None, str]]:
    """(kind, value, Kafka key, expected): expected is "dead letter", or "accepted: <rule>".
    Sent with the Kafka key ``dev-0`` where the kind names none, as a producer that keys its
    messages by device does (a message without a Kafka key lands in any partition)."""
    ok = b'"ts": 1700000000, '
    deep = b"[" * 50_000 + b"]" * 50_000
    kinds = [
        ("not UTF-8", b"\xff\xfe\xfa{", None, "dead letter"),
        ("truncated JSON", b'{"key": "dev-0", "ts": 1, "values": {"cpu": 1', None, "dead letter"),
        ("empty", b"", None, "dead letter"),
        ("whitespace", b"   \n ", None, "dead letter"),
        ("JSON array", b"[1, 2, 3]", None, "dead letter"),
        ("JSON number", b"42", None, "dead letter"),
        ("JSON string", b'"cpu=40"', None, "dead letter"),
        ("JSON null", b"null", None, "dead letter"),
        ("JSON true", b"true", None, "dead letter"),
        ("no values", b'{"key": "dev-0", ' + ok + b'"x": 1}', None, "dead letter"),
        ("empty values", b'{"key": "dev-0", ' + ok + b'"values": {}}', None, "dead letter"),
        ("values a list", b'{"key": "dev-0", ' + ok + b'"values": [1, 2]}', None, "dead letter"),
        ("values a string", b'{"key": "dev-0", ' + ok + b'"values": "cpu"}', None, "dead letter"),
        ("value a string", b'{"key": "dev-0", ' + ok + b'"values": {"cpu": "hot", "mem": 1, "temp": 1}}', None,
         "dead letter"),
        ("NaN", b'{"key": "dev-0", ' + ok + b'"values": {"cpu": NaN, "mem": 1, "temp": 1}}', None, "dead letter"),
        ("Infinity", b'{"key": "dev-0", ' + ok + b'"values": {"cpu": Infinity, "mem": 1, "temp": 1}}', None,
         "dead letter"),
        ("-Infinity", b'{"key": "dev-0", ' + ok + b'"values": {"cpu": -Infinity, "mem": 1, "temp": 1}}', None,
         "dead letter"),
        ("1e999", b'{"key": "dev-0", ' + ok + b'"values": {"cpu": 1e999, "mem": 1, "temp": 1}}', None, "dead letter"),
        ("huge integer", b'{"key": "dev-0", ' + ok + b'"values": {"cpu": 1' + b"0" * 400 + b', "mem": 1, "temp": 1}}',
         None, "dead letter"),
        ("boolean value", b'{"key": "dev-0", ' + ok + b'"values": {"cpu": true, "mem": 1, "temp": 1}}', None,
         "dead letter"),
        ("null value", b'{"key": "dev-0", ' + ok + b'"values": {"cpu": null, "mem": 1, "temp": 1}}', None,
         "dead letter"),
        ("nested value", b'{"key": "dev-0", ' + ok + b'"values": {"cpu": {"v": 1}, "mem": 1, "temp": 1}}', None,
         "dead letter"),
        ("hex string value", b'{"key": "dev-0", ' + ok + b'"values": {"cpu": "0x10", "mem": 1, "temp": 1}}', None,
         "dead letter"),
        ("bad ts text", b'{"key": "dev-0", "ts": "yesterday", "values": {"cpu": 1, "mem": 1, "temp": 1}}', None,
         "dead letter"),
        ("bad ISO date", b'{"key": "dev-0", "ts": "2024-13-45T99:00:00", "values": {"cpu": 1, "mem": 1, "temp": 1}}',
         None, "dead letter"),
        ("boolean ts", b'{"key": "dev-0", "ts": true, "values": {"cpu": 1, "mem": 1, "temp": 1}}', None,
         "dead letter"),
        ("null ts", b'{"key": "dev-0", "ts": null, "values": {"cpu": 1, "mem": 1, "temp": 1}}', None, "dead letter"),
        ("infinite ts", b'{"key": "dev-0", "ts": 1e400, "values": {"cpu": 1, "mem": 1, "temp": 1}}', None,
         "dead letter"),
        ("key a list", b'{"key": ["dev-0"], ' + ok + b'"values": {"cpu": 1, "mem": 1, "temp": 1}}', None,
         "dead letter"),
        ("key an object", b'{"key": {"id": 1}, ' + ok + b'"values": {"cpu": 1, "mem": 1, "temp": 1}}', None,
         "dead letter"),
        ("key mismatch", b'{"key": "dev-1", ' + ok + b'"values": {"cpu": 1, "mem": 1, "temp": 1}}', b"dev-0",
         "dead letter"),
        ("trailing garbage", b'{"key": "dev-0", ' + ok + b'"values": {"cpu": 1, "mem": 1, "temp": 1}}{}', None,
         "dead letter"),
        ("UTF-8 BOM", b'\xef\xbb\xbf{"key": "dev-0", ' + ok + b'"values": {"cpu": 1, "mem": 1, "temp": 1}}', None,
         "dead letter"),
        ("nested too deeply", deep, None, "dead letter"),
        ("too many features", b'{"key": "dev-0", ' + ok + b'"values": {' + b", ".join(
            b'"f%d": 1' % i for i in range(1001)) + b"}}", None, "dead letter"),
        ("over 1 MiB", b'{"key": "dev-0", ' + ok + b'"values": {"cpu": 1}, "pad": "' + b"x" * (1 << 20) + b'"}', None,
         "dead letter"),
        ("a feature missing", b'{"key": "dev-0", ' + ok + b'"values": {"cpu": 1, "mem": 1}}', None, "dead letter"),
        ("a feature renamed", b'{"key": "dev-0", ' + ok + b'"values": {"cpu": 1, "mem": 1, "tmp": 1}}', None,
         "dead letter"),
        ("no ts", b'{"key": "dev-0", "values": {"cpu": 40, "mem": 60, "temp": 30}}', None,
         "accepted: a record without ts takes the Kafka message timestamp (streamad/records.py)"),
        ("no key", b'{"ts": 1700000000, "values": {"cpu": 40, "mem": 60, "temp": 30}}', b"dev-0",
         "accepted: a record without key takes the Kafka message key (streamad/records.py)"),
    ]
    return kinds


def probe_malformed(workdir: Path) -> dict:
    cluster = Cluster(workdir)
    try:
        names = topics(cluster.bootstrap)
        service = Serve(names, cluster.bootstrap, f"g-{uuid.uuid4().hex[:6]}", workdir, "malformed")
        kinds = malformed_kinds()
        sink = make_sink(cluster.bootstrap, {**KAFKA, "max_request_size": 4 << 20})
        rng = np.random.default_rng(2)
        sent_bad: dict[tuple[int, int], str] = {}
        futures = []
        for i in range(2200):  # every 11th message malformed: 200 of them, 2,000 good
            if i % 11 == 10:
                kind, value, key, _ = kinds[len(futures) % len(kinds)]
                futures.append((kind, sink._producer.send(names["telemetry"], key=key or b"dev-0", value=value)))
            else:
                k = f"dev-{i % 10}"
                values = {"cpu": float(rng.normal(40, 5)), "mem": float(rng.normal(60, 3)),
                          "temp": float(rng.normal(30, 1))}
                sink.send(names["telemetry"], k.encode(), encode(Record(k, 1.7e9 + 60 * i, values)))
        sink.flush()
        for kind, f in futures:
            md = f.get(timeout=30)
            sent_bad[(md.partition, md.offset)] = kind
        sink.close()
        expected = {kind: rule for kind, _, _, rule in kinds}
        inputs = Tail(cluster.bootstrap, names["telemetry"])
        inputs.drain()
        good = [m for m in inputs.messages if (m.partition, m.offset) not in sent_bad]
        scores, dead = Tail(cluster.bootstrap, names["scores"]), Tail(cluster.bootstrap, names["dlq"])
        wait(lambda: (scores.poll(), dead.poll()) and len(dead.messages) >= sum(
            r == "dead letter" for r in (expected[k] for k in sent_bad.values())) and coverage(
            good, scores.json())["lost"] == 0, 90, 0.5)
        scores.drain()
        dead.drain()
        health = service.healthz()
        alive = service.proc.poll() is None
        took, code = service.terminate()
        dead_at = {(d["source"]["partition"], d["source"]["offset"]): d["reason"] for d in dead.json()}
        scored = {(s["partition"], s["offset"]) for s in scores.json()}
        per_kind: dict[str, dict] = {}
        for coords, kind in sent_bad.items():
            row = per_kind.setdefault(kind, {"sent": 0, "as_expected": 0, "expected": expected[kind], "reason": None})
            row["sent"] += 1
            if expected[kind] == "dead letter":
                ok = bool(dead_at.get(coords))
                row["reason"] = row["reason"] or dead_at.get(coords)
            else:
                ok = coords in scored and coords not in dead_at
            row["as_expected"] += ok
        result = {"malformed": len(sent_bad), "kinds": len(per_kind),
                  "dead_letters_with_reason": sum(1 for c in sent_bad if dead_at.get(c)),
                  "accepted_by_rule": sum(r["as_expected"] for r in per_kind.values()
                                          if r["expected"] != "dead letter"),
                  "as_expected": sum(r["as_expected"] for r in per_kind.values()),
                  "good_records": len(good), "good_lost": coverage(good, scores.json())["lost"],
                  "alive": alive, "healthz": health[0], "exit_code": code, "per_kind": per_kind}
        inputs.close()
        scores.close()
        dead.close()
        return result
    finally:
        cluster.stop()


def probe_sigterm(workdir: Path) -> dict:
    cluster = Cluster(workdir)
    try:
        names = topics(cluster.bootstrap)
        group = f"g-{uuid.uuid4().hex[:6]}"
        scores = Tail(cluster.bootstrap, names["scores"])
        out = {}
        total = 0
        for case, cut in (("broker_up", False), ("broker_down", True)):
            total += produce(cluster.bootstrap, names["telemetry"], 10, 300, seed=3 + cut, start=total // 10)
            service = Serve(names, cluster.bootstrap, group, workdir, f"sigterm-{case}", state_dir=workdir / "state")
            wait(lambda n=total: scores.scored() >= n, 90, 0.3)
            if cut:
                cluster.proxy.cut()
                time.sleep(1.0)
            took, code = service.terminate()
            out[case] = {"seconds_to_exit": round(took, 2), "exit_code": code,
                         "final_commit": "accepted" if "committed=true" in service.log() else "failed",
                         "checkpoints_written": "checkpoints_written=true" in service.log()}
            cluster.proxy.restore()
        # nothing lost: a restart resumes from the checkpoints and the committed offsets
        total += produce(cluster.bootstrap, names["telemetry"], 10, 100, seed=5, start=total // 10)
        service = Serve(names, cluster.bootstrap, group, workdir, "sigterm-restart", state_dir=workdir / "state")
        inputs = inputs_scored(cluster.bootstrap, names["telemetry"], scores, 90)
        service.terminate()
        out.update(coverage(inputs.messages, scores.drain() and scores.json()))
        inputs.close()
        scores.close()
        return out
    finally:
        cluster.stop()


def probe_outage(workdir: Path) -> dict:
    cluster = Cluster(workdir)
    try:
        names = topics(cluster.bootstrap)
        total = produce(cluster.bootstrap, names["telemetry"], 10, 300, seed=6)
        service = Serve(names, cluster.bootstrap, f"g-{uuid.uuid4().hex[:6]}", workdir, "outage")
        scores = Tail(cluster.bootstrap, names["scores"])
        wait(lambda: scores.poll() is not None and len(scores.messages) >= total, 90, 0.3)
        wait(lambda: service.healthz()[0] == 200, 30)
        before = service.healthz()
        cluster.proxy.cut()
        unhealthy_after = wait(lambda: service.healthz()[0] == 503, 20.0, 0.1)
        during = service.healthz()
        time.sleep(max(0.0, 20.0 - (unhealthy_after or 20.0)))
        cluster.proxy.restore()
        healthy_after = wait(lambda: service.healthz()[0] == 200, 60.0, 0.1)
        total += produce(cluster.bootstrap, names["telemetry"], 10, 100, seed=7, start=300)
        inputs = inputs_scored(cluster.bootstrap, names["telemetry"], scores, 90)
        alive = service.proc.poll() is None
        took, code = service.terminate()
        result = {"healthz_before": list(before), "seconds_to_unhealthy": unhealthy_after,
                  "healthz_during": list(during), "seconds_to_healthy_after_restore": healthy_after,
                  "outage_s": 20.0, "alive": alive, "exit_code": code,
                  **coverage(inputs.messages, scores.drain() and scores.json())}
        inputs.close()
        scores.close()
        return result
    finally:
        cluster.stop()


def probe_partitions(workdir: Path) -> dict:
    from kafka import KafkaProducer

    cluster = Cluster(workdir)
    try:
        names = topics(cluster.bootstrap, partitions=2)
        total = produce(cluster.bootstrap, names["telemetry"], 10, 100, seed=8)
        service = Serve(names, cluster.bootstrap, f"g-{uuid.uuid4().hex[:6]}", workdir, "partitions")
        scores = Tail(cluster.bootstrap, names["scores"])
        wait(lambda: scores.poll() is not None and len(scores.messages) >= total, 90, 0.3)
        regrow_topic(cluster.bootstrap, names["telemetry"], 4)
        t0 = time.monotonic()
        producer = KafkaProducer(bootstrap_servers=cluster.bootstrap)
        per = 500
        for p in (2, 3):
            for i in range(per):
                key = f"new-{p}"
                producer.send(names["telemetry"], key=key.encode(),
                              value=encode(Record(key, 1.7e9 + 60 * i, {"cpu": 40.0 + i % 7, "mem": 60.0,
                                                                        "temp": 30.0})), partition=p)
        producer.flush()
        producer.close()

        def new_scored():
            scores.poll()
            return {(s["partition"], s["offset"]) for s in scores.json() if s["partition"] in (2, 3)}

        first = wait(lambda: bool(new_scored()), 120, 0.2)
        first_s = None if first is None else time.monotonic() - t0
        wait(lambda: len(new_scored()) >= 2 * per, 60, 0.3)
        all_s = time.monotonic() - t0
        lost = 2 * per - len(new_scored())
        log = service.log()
        took, code = service.terminate()
        scores.close()
        return {"partitions_before": 2, "partitions_after": 4, "seconds_to_first_new_record_scored": first_s,
                "seconds_to_all_new_records_scored": round(all_s, 1) if lost == 0 else None,
                "new_records": 2 * per, "lost": lost, "rejoined": "event=partitions_added" in log,
                "metadata_max_age_ms": 30_000}
    finally:
        cluster.stop()


def probe_fed(workdir: Path) -> dict:
    from streamad.federated.protocol import write_key_file

    broker = EmbeddedBroker(log_path=workdir / "broker-fed.log").start()
    procs: list = []
    try:
        bootstrap = broker.bootstrap
        prefix = f"fed-{uuid.uuid4().hex[:6]}"
        write_key_file(workdir / "keys.json", ["gw0", "gw1", "gw2"])  # gw2 never runs
        rng = np.random.default_rng(9)
        basis = np.linalg.qr(rng.normal(size=(5, 2)))[0]
        sink = make_sink(bootstrap, KAFKA)
        ensure_topics(bootstrap, {f"tel-{prefix}-{c}": 1 for c in ("gw0", "gw1")} | {f"anom-{prefix}": 1})
        for c in ("gw0", "gw1"):
            for i in range(800):
                x = basis @ (rng.normal(size=2) * [3.0, 2.0]) + 0.1 * rng.normal(size=5)
                sink.send(f"tel-{prefix}-{c}", b"dev", encode(Record("dev", 1e9 + i, {f"m{j}": float(v)
                                                                                     for j, v in enumerate(x)})))
        sink.flush()
        sink.close()
        kafka_args = [a for k, v in KAFKA.items() for a in ("--kafka-option", f"{k}={v}")]
        common = ["--bootstrap", bootstrap, "--key-file", str(workdir / "keys.json"), "--prefix", prefix, "--k", "2",
                  *kafka_args]

        def start(args, name):
            out = open(workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed below
            p = streamad_process(args, out)
            p.log_file, p.log_path = out, workdir / f"{name}.log"
            procs.append(p)
            return p

        def text(p):
            return Path(p.log_path).read_text(errors="replace")

        server_args = ["fed-server", *common, "--dim", "5", "--min-clients", "2", "--round-timeout",
                       str(FED_ROUND_TIMEOUT_S), "--checkpoint", str(workdir / "server.state")]
        server = start(server_args, "fed-server")
        for c in ("gw0", "gw1"):
            start(["fed-client", *common, "--client-id", c, "--topic", f"tel-{prefix}-{c}", "--anomalies-topic",
                   f"anom-{prefix}", "--checkpoint", str(workdir / f"{c}.state")], f"fed-{c}")
        # both clients answered the open round (round >= 2); the round waits for gw2 until its timeout
        opened = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            closed = re.findall(r"event=fed_round_closed round=(\d+)", text(server))
            if closed and int(closed[-1]) >= 1:
                r = int(closed[-1]) + 1
                if len(re.findall(rf"event=fed_update_admitted round={r} ", text(server))) >= 2:
                    opened = r
                    break
            time.sleep(0.2)
        server.kill()
        server.wait()
        server.log_file.close()
        if opened is None:
            raise RuntimeError("no round with both clients' updates admitted within 120 s")
        t0 = time.monotonic()
        again = start(server_args, "fed-server-restarted")
        done = wait(lambda: f"event=fed_round_closed round={opened} " in text(again), 6 * FED_ROUND_TIMEOUT_S, 0.1)
        restored = "event=fed_restored" in text(again)
        return {"killed_in_round": opened, "round_timeout_s": FED_ROUND_TIMEOUT_S, "restored": restored,
                "seconds_to_next_round_closed": None if done is None else round(time.monotonic() - t0, 1),
                "resent_updates": sum(text(p).count("event=fed_update_resent") for p in procs if p is not again)}
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
            p.log_file.close()
        broker.stop()


def probe_scaleout(workdir: Path) -> dict:
    cluster = Cluster(workdir)
    procs: list[Serve] = []
    try:
        names = topics(cluster.bootstrap, partitions=6)
        group = f"g-{uuid.uuid4().hex[:6]}"
        total = produce(cluster.bootstrap, names["telemetry"], 12, 500, seed=10)
        procs = [Serve(names, cluster.bootstrap, group, workdir, f"scaleout-{i}", store='store = "kafka"')
                 for i in range(3)]
        scores = Tail(cluster.bootstrap, names["scores"])

        def owned(s: Serve) -> set[int]:
            found = re.findall(r"event=assigned partitions=(\S*)", s.log())
            return {int(p.rsplit("-", 1)[1]) for p in found[-1].split(",") if p} if found else set()

        spread = wait(lambda: all(owned(s) for s in procs) and sum(len(owned(s)) for s in procs) == 6, 120, 0.5)
        wait(lambda: scores.poll() is not None and len(scores.messages) >= total, 120, 0.5)
        time.sleep(6.0)  # a checkpoint of every partition (every 5 s)
        victim = max(procs, key=lambda s: len(owned(s)))
        lost_parts = owned(victim)
        victim.kill()
        survivors = [s for s in procs if s is not victim]
        total += produce(cluster.bootstrap, names["telemetry"], 12, 500, seed=11, start=500)
        moved = wait(lambda: set().union(*(owned(s) for s in survivors)) == set(range(6)), 90, 0.5)
        inputs = inputs_scored(cluster.bootstrap, names["telemetry"], scores, 120)
        codes = [s.terminate()[1] for s in survivors]
        got = scores.drain() and scores.json()
        logs = "\n".join(s.log() for s in survivors)
        restored = {p: re.findall(rf"event=restored topic={names['telemetry']} partition={p} offset=\d+ keys=(\d+)",
                                  logs) for p in lost_parts}
        files = [str(f) for s in procs for f in s.state_dir.rglob("*")]
        result = {"instances": 3, "partitions": 6, "spread_s": spread, "moved_s": moved,
                  "killed_instance_partitions": sorted(lost_parts),
                  "moved_partitions_restored_with_state": sum(bool(r) and int(r[-1]) > 0 for r in restored.values()),
                  "files_in_checkpoint_dirs": len(files), "exit_codes": codes,
                  **coverage(inputs.messages, got)}
        result.update(equal_to_reference(got, reference_scores(names, cluster.bootstrap, total)))
        inputs.close()
        scores.close()
        return result
    finally:
        for s in procs:
            s.kill()
        cluster.stop()


PROBES = {"kill": probe_kill, "malformed": probe_malformed, "sigterm": probe_sigterm, "outage": probe_outage,
          "partitions": probe_partitions, "fed": probe_fed, "scaleout": probe_scaleout}


# -- bars and report ------------------------------------------------------------------------
def bars(r: dict) -> list[tuple[str, str, bool]]:
    """(bar, measured, met) for every bar of issue 35 whose probe ran."""
    out = []
    lost = {k: v.get("lost", v.get("good_lost")) for k, v in r.items()}
    lost = {k: v for k, v in lost.items() if v is not None}
    if lost:
        out.append(("0 records lost in every probe", ", ".join(f"{k} {v}" for k, v in lost.items()),
                    all(v == 0 for v in lost.values())))
    if "kill" in r:
        k = r["kill"]
        out.append(("scores after SIGKILL restarts equal the reference run",
                    f"{k['scores_off_reference']} of {k['scores_compared']} off ({k['scored_twice_or_more']} "
                    f"records scored twice)", k["scores_off_reference"] == 0 and k["lost"] == 0))
    if "malformed" in r:
        m = r["malformed"]
        out.append(("100% of malformed records dead letters with a reason or accepted under a documented rule",
                    f"{m['as_expected']} of {m['malformed']} ({m['kinds']} kinds; {m['dead_letters_with_reason']} "
                    f"dead letters, {m['accepted_by_rule']} accepted by rule); alive {m['alive']}, good lost "
                    f"{m['good_lost']}",
                    m["as_expected"] == m["malformed"] == 200 and m["kinds"] >= 30 and m["alive"]
                    and m["good_lost"] == 0))
    if "sigterm" in r:
        s = r["sigterm"]
        up, down = s["broker_up"], s["broker_down"]
        out.append(("SIGTERM exits within 20 s even with the broker down; its exit code says whether the final "
                    "commit succeeded",
                    f"up: {up['seconds_to_exit']} s, exit {up['exit_code']} (commit {up['final_commit']}); down: "
                    f"{down['seconds_to_exit']} s, exit {down['exit_code']} (commit {down['final_commit']})",
                    up["seconds_to_exit"] < SIGTERM_BAR_S and down["seconds_to_exit"] < SIGTERM_BAR_S
                    and up["exit_code"] == 0 and up["final_commit"] == "accepted"
                    and down["exit_code"] not in (0, None) and down["final_commit"] == "failed"))
    if "outage" in r:
        o = r["outage"]
        t = o["seconds_to_unhealthy"]
        out.append(("/healthz unhealthy within 10 s of losing the broker",
                    f"{'never' if t is None else f'{t:.1f} s'}: {o['healthz_during'][1]!r}; ok again "
                    f"{o['seconds_to_healthy_after_restore'] or float('nan'):.1f} s after the broker came back",
                    t is not None and t <= HEALTHZ_BAR_S and o["seconds_to_healthy_after_restore"] is not None))
    if "partitions" in r:
        p = r["partitions"]
        t = p["seconds_to_all_new_records_scored"]
        out.append(("new partitions read within 60 s", "never" if t is None else
                    f"first record {p['seconds_to_first_new_record_scored']:.1f} s, all {t} s",
                    t is not None and t <= PARTITIONS_BAR_S))
    if "fed" in r:
        f = r["fed"]
        t = f.get("seconds_to_next_round_closed")
        out.append(("a restarted fed-server finishes its next round within 2 round timeouts",
                    f"{'never' if t is None else f'{t} s'} after the restart (round timeout "
                    f"{f['round_timeout_s']:g} s)", t is not None and t <= 2 * f["round_timeout_s"]))
    if "scaleout" in r:
        s = r["scaleout"]
        out.append(("the three-instance changelog test passes with no shared directory",
                    f"{s['lost']} lost, {s['scores_off_reference']} of {s['scores_compared']} scores off the "
                    f"reference, {s['moved_partitions_restored_with_state']} of "
                    f"{len(s['killed_instance_partitions'])} moved partitions restored with state, "
                    f"{s['files_in_checkpoint_dirs']} files in the checkpoint dirs",
                    s["lost"] == 0 and s["scores_off_reference"] == 0 and s["files_in_checkpoint_dirs"] == 0
                    and s["moved_partitions_restored_with_state"] == len(s["killed_instance_partitions"]) > 0))
    return out


def report(r: dict, checked: list, seconds: float) -> str:
    lines = ["# Chaos probes of `streamad serve` and the federation", "",
             f"`python benchmarks/chaos.py`, {time.strftime('%Y-%m-%d')}, {platform.machine()} with "
             f"{os.cpu_count()} CPUs shared with other jobs, Python {platform.python_version()}, embedded broker "
             "(Tansu, memory storage) "
             f"behind a proxy that cuts every connection for the outages; {seconds:.0f} s in all. The probes "
             "and their settings are described in the script's docstring.", "",
             "| bar | measured | met |", "|---|---|---|"]
    lines += [f"| {bar} | {measured} | {'yes' if met else '**no**'} |" for bar, measured, met in checked]
    if "malformed" in r:
        lines += ["", "Malformed kinds (each sent 5 times; 40 kinds in a 200-message cycle):", "",
                  "| kind | as expected | expected | reason given |", "|---|---:|---|---|"]
        for kind, row in r["malformed"]["per_kind"].items():
            reason = (row["reason"] or "").replace("|", "/")
            lines.append(f"| {kind} | {row['as_expected']}/{row['sent']} | {row['expected']} | "
                         f"{reason[:90]}{'...' if len(reason) > 90 else ''} |")
    lines += ["", "Figures per probe:", "", "```", json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "per_kind"}
                                                               for k, v in r.items()}, indent=1, default=str), "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    ap.add_argument("--only", default=None, help=f"comma-separated probes of {','.join(PROBES)}")
    ap.add_argument("--keep-logs", default=None, metavar="DIR", help="keep the processes' logs in DIR")
    ap.add_argument("--md", default=str(RESULTS / "chaos.md"), help="markdown copy (default: results/chaos.md)")
    args = ap.parse_args()
    names = list(PROBES) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        print(f"chaos.py: error: unknown probe(s) {', '.join(unknown)}; choose from {', '.join(PROBES)}",
              file=sys.stderr)
        return 2
    work = Path(args.keep_logs) if args.keep_logs else Path(tempfile.mkdtemp(prefix="chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    t0 = time.monotonic()
    for name in names:
        t = time.monotonic()
        print(f"== {name}", flush=True)
        d = work / name
        d.mkdir(exist_ok=True)
        try:
            results[name] = PROBES[name](d)
        except Exception as e:  # a probe that breaks is a missed bar, not a lost run
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        results[name]["probe_seconds"] = round(time.monotonic() - t, 1)
        print(json.dumps({k: v for k, v in results[name].items() if k != "per_kind"}, default=str), flush=True)
    checked = [(f"the {name} probe ran", results[name]["error"], False) for name in names if "error" in results[name]]
    checked += bars({k: v for k, v in results.items() if "error" not in v})
    seconds = time.monotonic() - t0
    text = report(results, checked, seconds)
    print()
    table = text.split("| bar |", 1)[1].split("\n\n", 1)[0]
    print("| bar |" + table)
    if not args.only:
        Path(args.md).write_text(text)
    if args.out:
        Path(args.out).write_text(json.dumps({"results": results, "bars": [
            {"bar": b, "measured": m, "met": bool(ok_)} for b, m, ok_ in checked]}, indent=1, default=str))
    missed = [b for b, _, met in checked if not met]
    print(f"bars missed: {'; '.join(missed)}" if missed else f"all {len(checked)} bars met")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
