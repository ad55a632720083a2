"""`--state-store kafka` on the real broker: checkpoints in a changelog topic, in chunks;
three `streamad serve` instances in one group, each with its own empty checkpoint directory
(three machines), one killed with SIGKILL: its partitions move to the others, which restore
them from the changelog, and the scores equal those of an uninterrupted run.

The embedded broker accepts ``cleanup.policy=compact`` when the topic is created but never
compacts it (and reports no topic configs back); the reader takes the newest complete
checkpoint either way (tests/test_changelog.py checks it on compacted logs).
"""

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from connectors.changelog import KafkaStateStore, _chunk_messages, changelog_topic
from connectors.kafka import ensure_topics, for_embedded_broker, make_sink
from streamad import _state
from streamad.records import Record, encode
from streamad.service import MemoryBroker, MemorySink, MemorySource, Pipeline, ServiceConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_serve import SERVE_TOML, TESTS, _read_all, _wait  # noqa: E402


def test_a_checkpoint_in_chunks_round_trips_and_an_interrupted_write_leaves_the_previous_one(bootstrap):
    group = f"g-{uuid.uuid4().hex[:6]}"
    ensure_topics(bootstrap, {f"in-{group}": 4})
    rng = np.random.default_rng(0)
    tree = {"offset": 500, "keys": {f"k{i}": {"w": rng.normal(size=400)} for i in range(10)}}
    store = KafkaStateStore(bootstrap, group, for_embedded_broker(), input_topics=[f"in-{group}"], chunk_bytes=2048)
    assert store.partitions == 4
    tp = (f"in-{group}", 2)
    store.save(tp, tree)
    assert store.load((f"in-{group}", 1)) is None
    # a writer that dies after two chunks of a newer checkpoint
    newer = _state.dumps({**tree, "offset": 900})
    for key, value in list(_chunk_messages(tp, newer, "crashed", 2048, 900))[:2]:
        store._producer.send(store.topic, key=key, value=value, partition=2)
    store._producer.flush()
    store.close()
    other = KafkaStateStore(bootstrap, group, for_embedded_broker(), chunk_bytes=2048)  # another machine
    try:
        got = other.load(tp)
        assert got["offset"] == 500 and _state.trees_equal(got, tree)
        other.save(tp, {**tree, "offset": 700})  # then tombstones every older chunk
        other._producer.flush()
        assert other.load(tp)["offset"] == 700
    finally:
        other.close()
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        ktp = TopicPartition(changelog_topic(group), 2)
        c.assign([ktp])
        c.seek_to_beginning(ktp)
        msgs = []
        for _ in range(6):
            msgs += [m for ms in c.poll(timeout_ms=300).values() for m in ms]
    finally:
        c.close()
    chunks = len(_state.dumps(tree)) // 2048 + 1
    assert sum(m.value is not None for m in msgs) >= 2 * chunks  # written in chunks ...
    assert sum(m.value is None for m in msgs) == chunks + 2  # ... the older ones tombstoned


KEYS = [f"dev-{i}" for i in range(12)]


def _produce(bootstrap, topic, start, n, seed):
    rng = np.random.default_rng(seed)
    sink = make_sink(bootstrap, for_embedded_broker())
    for i in range(start, start + n):
        for k in KEYS:
            sink.send(topic, k.encode(), encode(Record(k, 1.7e9 + 60 * i, {"temp": float(rng.normal(20, 2)),
                                                                          "rpm": float(rng.normal())})))
    sink.flush()
    sink.close()
    return n * len(KEYS)


def _instance(names, bootstrap, group, directory, log_path):
    directory.mkdir()
    cfg = directory / "serve.toml"
    text = SERVE_TOML.format(bootstrap=bootstrap, group=group, ckpt=directory, commit_mode="wait", every_records=500,
                             **names)
    cfg.write_text(text.replace("every_records = 500", 'every_records = 200\nevery_seconds = 1\nstore = "kafka"'))
    out = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "streamad.cli", "serve", "--config", str(cfg)],
                            stdout=out, stderr=subprocess.STDOUT, cwd=TESTS.parent,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc.log_file, proc.log_path = out, log_path
    return proc


def _log(proc) -> str:
    return Path(proc.log_path).read_text(errors="replace")


def _owned(proc) -> set[int]:
    """The partitions an instance was last assigned, from its log."""
    found = re.findall(r"event=assigned partitions=(\S*)", _log(proc))
    return {int(p.rsplit("-", 1)[1]) for p in found[-1].split(",") if p} if found else set()


def test_three_instances_without_a_shared_disk_survive_a_sigkill(bootstrap, tmp_path):
    run = uuid.uuid4().hex[:8]
    names = {"input": f"telemetry-{run}", "anomalies": f"anomalies-{run}", "scores": f"scores-{run}",
             "dlq": f"dlq-{run}"}
    group = f"g-{run}"
    ensure_topics(bootstrap, {names["input"]: 6, names["anomalies"]: 1, names["scores"]: 3, names["dlq"]: 1})
    sent = _produce(bootstrap, names["input"], 0, 150, seed=1)
    procs = [_instance(names, bootstrap, group, tmp_path / f"machine-{i}", tmp_path / f"serve-{i}.log")
             for i in range(3)]
    try:
        _wait(lambda: all(_owned(p) for p in procs) and sum(len(_owned(p)) for p in procs) == 6, 90,
              "the six partitions spread over the three instances")
        _wait(lambda: len(_read_all(bootstrap, names["scores"], timeout_s=2)[0]) >= sent, 60, "the first scores")
        victim = max(procs, key=lambda p: len(_owned(p)))
        lost = _owned(victim)
        reader = KafkaStateStore(bootstrap, group, for_embedded_broker())
        try:  # the victim's partitions have checkpoints with their keys' state in the changelog
            _wait(lambda: all((reader.load((names["input"], part)) or {}).get("keys") for part in lost), 30,
                  "checkpoints with state")
        finally:
            reader.close()
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        survivors = [p for p in procs if p is not victim]
        sent += _produce(bootstrap, names["input"], 150, 150, seed=2)
        _wait(lambda: set().union(*(_owned(p) for p in survivors)) == set(range(6)), 60,
              "the killed instance's partitions to move")
        inputs, _ = _read_all(bootstrap, names["input"], expect=sent)
        want = {(m.partition, m.offset) for m in inputs}
        _wait(lambda: want <= {(s["partition"], s["offset"]) for s in map(
            json.loads, (m.value for m in _read_all(bootstrap, names["scores"], timeout_s=2)[0]))}, 90,
            "every offset scored")
        for p in survivors:
            p.send_signal(signal.SIGTERM)
        for p in survivors:
            assert p.wait(30) == 0, _log(p)[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.log_file.close()
    # no shared disk: every instance's checkpoint directory holds only its config
    assert all(sorted(x.name for x in (tmp_path / f"machine-{i}").rglob("*")) == ["serve.toml"] for i in range(3))
    # the killed instance's partitions were restored from the changelog, with their keys' state
    taken = "\n".join(_log(p) for p in survivors)
    for part in lost:
        restored = re.findall(rf"event=restored topic={names['input']} partition={part} offset=\d+ keys=(\d+)", taken)
        assert restored and int(restored[-1]) > 0, (part, taken[-3000:])
    # scores equal those of an uninterrupted run, duplicates included: no key warmed up again
    reference = _reference(inputs)
    scores = {}
    for s in map(json.loads, (m.value for m in _read_all(bootstrap, names["scores"])[0])):
        scores.setdefault((s["partition"], s["offset"]), []).append(s["score"])
    assert set(scores) == set(reference) == want
    off = {k: v for k, v in scores.items() if any(abs(x - reference[k]) > 1e-9 * max(1.0, abs(x)) for x in v)}
    assert not off, sorted(off.items())[:5]


def _reference(inputs):
    """Score per (partition, offset) of one uninterrupted run over the same records, in process
    (the memory broker numbers each partition's records from 0, as the embedded broker did)."""
    from streamad.thresholds import make

    mem = MemoryBroker()
    mem.create_topic("telemetry", 1 + max(m.partition for m in inputs))
    mem.create_topic("scores", 1)
    for m in sorted(inputs, key=lambda m: (m.partition, m.offset)):
        assert mem.produce("telemetry", m.key, m.value, partition=m.partition).offset == m.offset
    cfg = ServiceConfig(input_topics=["telemetry"], scores_topic="scores", detector="zscore",
                        detector_params={"window": 30}, poll_timeout_s=0.0, batch_size=200)
    p = Pipeline(MemorySource(mem), MemorySink(mem), cfg, threshold_factory=lambda: make("spot", init=200))
    p.start()
    while p.run_once():
        pass
    p.shutdown()
    return {(s["partition"], s["offset"]): s["score"] for s in map(json.loads, (m.value for m in mem.all("scores")))}
