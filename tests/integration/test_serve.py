"""`streamad serve` against the real embedded broker: delivery, dead letters, crash, SIGTERM, scale-out."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from connectors.kafka import (
    ensure_topics,
    for_embedded_broker,
    make_sink,
    make_source,
)
from streamad.records import Record, encode
from streamad.service import Pipeline, ServiceConfig
from streamad.service.deadletter import DeadLetterSink

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
from schema_check import assert_valid  # noqa: E402
from test_service_pipeline import MALFORMED, MaxThreshold  # noqa: E402

KEYS = ["pump-1", "pump-2", "fan-1", "fan-2", "valve-1"]


def _topics(bootstrap, partitions=3):
    run = uuid.uuid4().hex[:8]
    names = {"input": f"telemetry-{run}", "anomalies": f"anomalies-{run}", "scores": f"scores-{run}",
             "dlq": f"dlq-{run}"}
    ensure_topics(bootstrap, {names["input"]: partitions, names["anomalies"]: 1, names["scores"]: 3,
                              names["dlq"]: 1})
    return names


def _produce(bootstrap, topic, n_per_key, malformed=0, seed=0, spike_at=None):
    """Send ``n_per_key`` records per key (and ``malformed`` junk messages); returns how many were sent."""
    rng = np.random.default_rng(seed)
    sink = make_sink(bootstrap, for_embedded_broker())
    bad = sorted(MALFORMED.values(), key=len)[:-1]  # oversize is covered in the unit tests
    every = max(1, n_per_key // malformed) if malformed else 0
    sent = 0
    for i in range(n_per_key):
        for k in KEYS:
            v = float(rng.normal(20, 2)) + (30.0 if spike_at is not None and i == spike_at and k == KEYS[0] else 0)
            sink.send(topic, k.encode(), encode(Record(k, 1.7e9 + 60 * i, {"temp": v, "rpm": float(rng.normal())})))
            sent += 1
        if every and i % every == 0:
            sink.send(topic, b"junk", bad[i % len(bad)])
            sent += 1
    sink.flush()
    sink.close()
    return sent


def _read_all(bootstrap, topic, expect=None, timeout_s=30.0):
    """Every message of ``topic`` (all partitions, from the start): at least ``expect`` of them
    and then until nothing new arrives for a moment (duplicates may follow)."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or [])]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        out = []
        deadline = time.monotonic() + timeout_s
        idle_since = time.monotonic()
        while time.monotonic() < deadline:
            got = [m for msgs in c.poll(timeout_ms=300).values() for m in msgs]
            out.extend(got)
            if got:
                idle_since = time.monotonic()
            if len(out) >= (expect or 0) and time.monotonic() - idle_since > (0.5 if expect else 1.0):
                break
        ends = {}
        for m in out:
            ends[m.partition] = max(ends.get(m.partition, 0), m.offset + 1)
        return out, ends
    finally:
        c.close()


def _config(names, bootstrap, group, **kw):
    return ServiceConfig(bootstrap=bootstrap, group=group, input_topics=[names["input"]],
                         anomalies_topic=names["anomalies"], scores_topic=names["scores"],
                         dead_letter_topic=names["dlq"], detector="zscore", detector_params={"window": 30},
                         kafka_settings=for_embedded_broker(), poll_timeout_s=0.2, **kw)


def _pipeline(cfg):
    sink = make_sink(cfg.bootstrap, cfg.kafka_settings, client=cfg.client)
    source = make_source(cfg.bootstrap, cfg.group, cfg.kafka_settings, client=cfg.client)
    p = Pipeline(source, sink, cfg, dead_letter=DeadLetterSink(sink, cfg.dead_letter_topic).send,
                 threshold_factory=MaxThreshold)
    return p, source, sink


def _shut_down_and_check_commits(p, source, sink, names, ends):
    """Shut the pipeline down; its group must then have committed every partition's end."""
    p.shutdown()
    committed = {tp: source.committed(tp) for tp in p.partitions}
    source.close()
    sink.close()
    assert committed == {(names["input"], part): end for part, end in ends.items()}


def test_end_to_end_scores_events_and_dead_letters(bootstrap, tmp_path):
    names = _topics(bootstrap)
    n, n_bad = 2000, 40  # 10,000 valid records over 5 keys and 3 partitions
    sent = _produce(bootstrap, names["input"], n, malformed=n_bad, spike_at=300)
    inputs, ends = _read_all(bootstrap, names["input"], expect=sent)
    n_dlq = sum(1 for m in inputs if m.key == b"junk")
    assert n_dlq == n_bad and len(inputs) == sent
    p, source, sink = _pipeline(_config(names, bootstrap, f"g-{uuid.uuid4().hex[:6]}", checkpoint_dir=str(tmp_path)))
    p.start()
    deadline = time.monotonic() + 60
    while p.records_in < len(inputs) and time.monotonic() < deadline:
        p.run_once()
    _shut_down_and_check_commits(p, source, sink, names, ends)
    scores = [json.loads(m.value) for m in _read_all(bootstrap, names["scores"], expect=sent - n_dlq)[0]]
    assert {(s["partition"], s["offset"]) for s in scores} == {(m.partition, m.offset) for m in inputs
                                                               if m.key != b"junk"}
    dead = [json.loads(m.value) for m in _read_all(bootstrap, names["dlq"], expect=n_dlq)[0]]
    assert len(dead) == n_dlq and all(d["reason"] for d in dead)
    assert {(d["source"]["partition"], d["source"]["offset"]) for d in dead} == {
        (m.partition, m.offset) for m in inputs if m.key == b"junk"}
    events = [json.loads(m.value) for m in _read_all(bootstrap, names["anomalies"])[0]]
    assert any(e["key"] == KEYS[0] and e["ts"] == 1.7e9 + 60 * 300 for e in events)
    assert len(events) <= 10
    assert sorted(Path(tmp_path, p.config.group).glob("*.state"))


SERVE_TOML = """
[kafka]
bootstrap = "{bootstrap}"
group = "{group}"
settings = {{ session_timeout_ms = 6000, heartbeat_interval_ms = 1000, max_poll_interval_ms = 10000 }}
[topics]
input = ["{input}"]
anomalies = "{anomalies}"
scores = "{scores}"
dead_letter = "{dlq}"
[detector]
name = "zscore"
params = {{ window = 30 }}
[threshold]
name = "spot"
params = {{ init = 200 }}
[checkpoint]
dir = "{ckpt}"
every_records = {every_records}
[service]
batch_size = 200
poll_timeout_s = 0.2
commit_mode = "{commit_mode}"
[incidents]
gap = 50
"""


def _child(names, bootstrap, group, ckpt, commit_mode="wait", every_records=500):
    """The real `streamad serve` in its own process, configured by a TOML file."""
    cfg = Path(ckpt) / "serve.toml"
    cfg.write_text(SERVE_TOML.format(bootstrap=bootstrap, group=group, ckpt=ckpt, commit_mode=commit_mode,
                                     every_records=every_records, **names))
    return subprocess.Popen([sys.executable, "-m", "streamad.cli", "serve", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=TESTS.parent,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


class _Output:
    """Drains a child's stdout in a thread, so a test can wait for a line while the child runs."""

    def __init__(self, child):
        self.child, self.chunks = child, []
        self.thread = threading.Thread(target=lambda: self.chunks.extend(iter(child.stdout.readline, b"")),
                                       daemon=True)
        self.thread.start()

    def has(self, marker: bytes) -> bool:
        return any(marker in line for line in list(self.chunks))

    def wait(self, timeout_s: float) -> bytes:
        self.child.wait(timeout=timeout_s)
        self.thread.join(timeout=timeout_s)
        return b"".join(self.chunks)


def _committed(bootstrap, group, topic):
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: c.committed(TopicPartition(topic, p)) for p in sorted(c.partitions_for_topic(topic))}
    finally:
        c.close()


def _checkpointed_keys(tmp_path, group) -> bool:
    """True once a checkpoint holds some key's state (a partition's first checkpoint is empty)."""
    from streamad import _state
    return any(_state.load(f)["keys"] for f in Path(tmp_path, group).glob("*.state"))


def _wait(cond, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_pipelined_commits_run_ahead_of_no_output_and_cover_every_record(bootstrap, client):
    if client == "confluent":
        pytest.importorskip("confluent_kafka")
    names = _topics(bootstrap)
    sent = _produce(bootstrap, names["input"], 600, seed=4)
    inputs, ends = _read_all(bootstrap, names["input"], expect=sent)
    cfg = _config(names, bootstrap, f"g-{uuid.uuid4().hex[:6]}", client=client, commit_mode="pipelined",
                  batch_size=100)
    p, source, sink = _pipeline(cfg)
    commits = []
    commit_async = source.commit_async
    source.commit_async = lambda offsets: (commits.append((dict(offsets), p.records_in)), commit_async(offsets))
    p.start()
    deadline = time.monotonic() + 60
    while p.records_in < len(inputs) and time.monotonic() < deadline:
        p.run_once()
    end = time.monotonic() + 20  # in-flight acknowledgements arrive; an idle poll commits the rest
    while {tp: source.committed(tp) for tp in p.partitions} != {(names["input"], k): v for k, v in ends.items()} \
            and time.monotonic() < end:
        p.run_once()
    _shut_down_and_check_commits(p, source, sink, names, ends)
    # offsets were committed without waiting for acknowledgements (the flush path), batch by batch
    assert len(commits) >= 3 and any(sum(o.values()) < n for o, n in commits)
    scores = [json.loads(m.value) for m in _read_all(bootstrap, names["scores"], expect=sent)[0]]
    assert {(s["partition"], s["offset"]) for s in scores} == {(m.partition, m.offset) for m in inputs}


@pytest.mark.parametrize("commit_mode", ["wait", "pipelined"])
def test_kill9_restart_scores_every_offset_and_sigterm_commits(bootstrap, tmp_path, commit_mode):
    names = _topics(bootstrap)
    group = f"g-{uuid.uuid4().hex[:6]}"
    sent = _produce(bootstrap, names["input"], 1200, seed=3)
    inputs, ends = _read_all(bootstrap, names["input"], expect=sent)
    child = _child(names, bootstrap, group, tmp_path, commit_mode)
    try:
        _wait(lambda: _checkpointed_keys(tmp_path, group), 60, "a checkpoint with state")
        child.kill()  # SIGKILL mid-stream
        first_out, _ = child.communicate(timeout=10)
        assert child.returncode == -signal.SIGKILL
        child = _child(names, bootstrap, group, tmp_path, commit_mode)
        output = _Output(child)
        # The first run may have committed everything before the kill: wait for this run's restore
        # too, or SIGTERM could land while the child is still importing (no handler yet).
        _wait(lambda: output.has(b"event=restored") and _committed(bootstrap, group, names["input"]) == ends,
              60, "the restart's restore and all offsets committed")
        child.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        out = output.wait(timeout_s=10)
        assert child.returncode == 0, out.decode()[-2000:]
        assert time.monotonic() - t0 < 10
        assert b"event=restored" in out
        assert b"checkpoint_ahead_of_log" not in out  # the log did not restart: resume at the checkpoint
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    scores = [json.loads(m.value) for m in _read_all(bootstrap, names["scores"], expect=sent)[0]]
    seen = {(s["partition"], s["offset"]) for s in scores}
    assert seen == {(m.partition, m.offset) for m in inputs}  # every input offset has a score
    # Scores after the restart continue from restored state: a duplicate equals the first score.
    by_offset = {}
    for s in scores:
        by_offset.setdefault((s["partition"], s["offset"]), []).append(s["score"])
    dups = {k: v for k, v in by_offset.items() if len(v) > 1}
    bad = {k: v for k, v in dups.items() if max(v) - min(v) > 1e-9 * max(1.0, abs(v[0]))}
    events = [line for line in (first_out + out).decode().splitlines() if "event=" in line and "checkpoint " not in line]
    assert not bad, (len(bad), len(dups), sorted(bad.items())[:5], events[-40:])
    from streamad import _state
    for part, end in ends.items():  # the SIGTERM checkpoint reflects everything committed
        assert _state.load(Path(tmp_path, group, f"{names['input']}-{part}.state"))["offset"] == end


def _produce_range(bootstrap, topic, start, stop, spikes=(), seed=0):
    """Records ``start`` to ``stop`` of every key (``spikes``: the (key, i) that jump by 80, far
    above the z-scores of the detector's first records, which SPOT calibrates on)."""
    rng = np.random.default_rng(seed)
    sink = make_sink(bootstrap, for_embedded_broker())
    for i in range(start, stop):
        for k in KEYS:
            v = float(rng.normal(20, 2)) + (80.0 if (k, i) in spikes else 0.0)
            sink.send(topic, k.encode(), encode(Record(k, 1.7e9 + 60 * i, {"temp": v, "rpm": float(rng.normal())})))
    sink.flush()
    sink.close()
    return (stop - start) * len(KEYS)


@pytest.mark.parametrize("every_records", [1_000_000, 40], ids=["no-checkpoint-after-the-open", "checkpoints"])
def test_kill9_mid_incident_restart_sends_no_second_open_and_the_close(bootstrap, tmp_path, every_records):
    # every_records 1,000,000: the only checkpoint is each partition's first (empty), so the
    # restart scores the open's record again and must find the open already on the topic;
    # 40: the restored state most likely holds the open incident itself
    names = _topics(bootstrap)
    group = f"g-{uuid.uuid4().hex[:6]}"
    spikes = {(KEYS[0], 300)}
    sent = _produce_range(bootstrap, names["input"], 0, 310, spikes, seed=7)

    def incident(kind):
        msgs = [json.loads(m.value) for m in _read_all(bootstrap, names["anomalies"], timeout_s=5)[0]]
        return [m for m in msgs if m["type"] == kind and m["key"] == KEYS[0] and m["start" if kind != "incident_open"
                                                                                else "ts"] == 1.7e9 + 60 * 300]

    child = _child(names, bootstrap, group, tmp_path, every_records=every_records)
    try:
        _wait(lambda: incident("incident_open"), 60, "the spike's incident_open")
        assert not incident("incident_close")  # 9 records after the spike, the gap is 50
        child.kill()  # SIGKILL mid-incident
        child.communicate(timeout=10)
        sent += _produce_range(bootstrap, names["input"], 310, 500, seed=8)
        inputs, ends = _read_all(bootstrap, names["input"], expect=sent)
        child = _child(names, bootstrap, group, tmp_path, every_records=every_records)
        output = _Output(child)
        _wait(lambda: output.has(b"event=restored") and _committed(bootstrap, group, names["input"]) == ends,
              60, "the restart's restore and all offsets committed")
        child.send_signal(signal.SIGTERM)
        out = output.wait(timeout_s=10)
        assert child.returncode == 0, out.decode()[-2000:]
        if every_records == 1_000_000:  # the open came back from the topic, not from a checkpoint
            assert b"event=read_back" in out and b"not_repeated=0" not in out, out.decode()[-2000:]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    opens, closes = incident("incident_open"), incident("incident_close")
    assert len(opens) == 1, opens  # no second open after the restart
    assert len(closes) == 1 and closes[0]["id"] == opens[0]["id"], closes
    assert (closes[0]["start_offset"], closes[0]["end_offset"]) == (opens[0]["offset"], opens[0]["offset"])
    msgs = [json.loads(m.value) for m in _read_all(bootstrap, names["anomalies"])[0]]
    ids = [m["id"] for m in msgs if m["type"] == "incident_open"]
    assert len(ids) == len(set(ids))  # nor of any other incident
    for m in msgs:
        assert_valid(m)
    scores = [json.loads(m.value) for m in _read_all(bootstrap, names["scores"], expect=sent)[0]]
    assert {(s["partition"], s["offset"]) for s in scores} == {(m.partition, m.offset) for m in inputs}


def test_two_instances_share_partitions_and_one_takes_over_from_checkpoints(bootstrap, tmp_path):
    names = _topics(bootstrap)
    group = f"g-{uuid.uuid4().hex[:6]}"
    sent = _produce(bootstrap, names["input"], 600, seed=5)
    pipelines = [_pipeline(_config(names, bootstrap, group, batch_size=100, checkpoint_dir=str(tmp_path)))
                 for _ in range(2)]
    owned = [set(), set()]
    restored = []
    stops = [threading.Event(), threading.Event()]
    p1 = pipelines[1][0]
    original_restore = p1._restore

    def spy(tp):  # which partitions instance 1 resumed from a checkpoint
        offset = original_restore(tp)
        if offset is not None:
            restored.append(tp)
        return offset

    p1._restore = spy

    def work(i):
        p, source, sink = pipelines[i]
        p.start()
        try:
            while not stops[i].is_set():
                p.run_once()
                owned[i] |= set(source.assignment())
        finally:
            p.shutdown()
            source.close()
            sink.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    threads[0].start()
    time.sleep(2)  # the second member joins mid-stream: a rebalance
    threads[1].start()
    try:
        _wait(lambda: owned[0] and owned[1] and sum(len(p.partitions) for p, _, _ in pipelines) >= 3, 30,
              "both instances to own partitions")
        stops[0].set()  # instance 0 leaves: flush, commit, checkpoint; instance 1 takes over
        threads[0].join(30)
        sent += _produce(bootstrap, names["input"], 300, seed=6)
        inputs, ends = _read_all(bootstrap, names["input"], expect=sent)
        _wait(lambda: _committed(bootstrap, group, names["input"]) == ends, 60, "all offsets committed")
    finally:
        for e in stops:
            e.set()
        for t in threads:
            t.join(30)
    assert owned[0] and owned[1], owned
    assert set(restored) & owned[0], (restored, owned)  # took over instance 0's partitions from checkpoints
    scores = [json.loads(m.value) for m in _read_all(bootstrap, names["scores"], expect=sent)[0]]
    assert {(s["partition"], s["offset"]) for s in scores} == {(m.partition, m.offset) for m in inputs}
