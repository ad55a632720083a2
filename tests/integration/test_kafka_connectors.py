"""kafka-python source/sink/dead-letter sink against the real embedded broker."""

import time
import uuid

import pytest

from connectors.kafka import (
    KafkaSink,
    KafkaSource,
    ensure_topics,
    for_embedded_broker,
    make_sink,
    make_source,
)
from streamad.base import DeliveryError
from streamad.service.deadletter import DeadLetterSink, read_dead_letter
from streamad.service.transport import Message, Sink, Source

pytestmark = pytest.mark.integration


def _topic(bootstrap, partitions=3):
    name = f"kp-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(bootstrap, {name: partitions}) == {name: partitions}
    return name


def _group():
    return f"g-{uuid.uuid4().hex[:6]}"


def _fill(bootstrap, topic, n, keys=4):
    with KafkaSink(bootstrap) as sink:
        for i in range(n):
            sink.send(topic, f"k{i % keys}".encode(), str(i).encode())
        sink.flush(30)


def _drain(src, n, deadline_s=20.0):
    got = []
    end = time.monotonic() + deadline_s
    while len(got) < n and time.monotonic() < end:
        got.extend(src.poll(0.2, 500))
    return got


def test_round_trip_commit_and_resume(bootstrap):
    topic = _topic(bootstrap)
    _fill(bootstrap, topic, 300)
    group = _group()
    assigned = []
    src = KafkaSource(bootstrap, group, for_embedded_broker())
    assert isinstance(src, Source)
    src.subscribe([topic], on_assign=assigned.extend)
    got = _drain(src, 300)
    assert sorted(int(m.value) for m in got) == list(range(300))
    assert sorted(assigned) == [(topic, p) for p in range(3)]
    assert src.assignment() == {(topic, p) for p in range(3)}
    # every message keeps its key, and a key always lands on one partition
    part_of = {}
    for m in got:
        assert m.key == f"k{int(m.value) % 4}".encode()
        assert part_of.setdefault(m.key, m.partition) == m.partition
    assert src.lag() == {tp: 0 for tp in src.assignment()}
    # commit the middle of each partition, as the service would after a partial flush
    offsets = {}
    for m in got:
        offsets.setdefault((m.topic, m.partition), []).append(m.offset)
    half = {tp: sorted(offs)[len(offs) // 2] for tp, offs in offsets.items()}
    src.commit(half)
    assert {tp: src.committed(tp) for tp in half} == half
    src.close()

    again = KafkaSource(bootstrap, group, for_embedded_broker())
    again.subscribe([topic])
    expect = sum(len(offs) - half[tp] for tp, offs in offsets.items())
    rest = _drain(again, expect)
    assert len(rest) == expect
    assert all(m.offset >= half[(m.topic, m.partition)] for m in rest)
    assert again.poll(0.3, 100) == []
    again.close()


def test_seek_on_assignment_and_lag(bootstrap):
    topic = _topic(bootstrap, partitions=1)
    _fill(bootstrap, topic, 50, keys=1)
    src = KafkaSource(bootstrap, _group(), for_embedded_broker(), lag_refresh_s=0.0)
    src.subscribe([topic], on_assign=lambda tps: [src.seek(tp, 40) for tp in tps])
    got = _drain(src, 10)
    assert [int(m.value) for m in got] == list(range(40, 50))
    src.seek((topic, 0), 45)
    assert src.lag() == {(topic, 0): 5}
    assert [int(m.value) for m in _drain(src, 5)] == list(range(45, 50))
    src.close()


def test_pause_stops_fetching_until_resume(bootstrap):
    topic = _topic(bootstrap, partitions=2)
    _fill(bootstrap, topic, 20)
    src = KafkaSource(bootstrap, _group(), for_embedded_broker())
    src.subscribe([topic])
    first = _drain(src, 20)
    assert len(first) == 20
    src.pause()
    assert src.paused
    _fill(bootstrap, topic, 30)
    paused_polls = [m for _ in range(5) for m in src.poll(0.2, 500)]
    assert paused_polls == []
    # the group membership stayed alive while paused
    assert src.assignment() == {(topic, 0), (topic, 1)}
    src.resume()
    assert len(_drain(src, 30)) == 30
    src.close()


def test_dead_letter_record_content(bootstrap):
    topic, dlq = _topic(bootstrap, 1), _topic(bootstrap, 1)
    original = Message(topic, 0, 17, b"pump-3", b"\xff{truncated", 1_700_000_000_000)
    with KafkaSink(bootstrap) as sink:
        dead = DeadLetterSink(sink, dlq)
        dead.send(original, "not UTF-8 JSON")
        dead.flush(30)
    assert dead.count == 1
    src = KafkaSource(bootstrap, _group(), for_embedded_broker())
    src.subscribe([dlq])
    (msg,) = _drain(src, 1)
    src.close()
    assert msg.key == b"pump-3"
    rec = read_dead_letter(msg.value)
    assert rec["value"] == b"\xff{truncated"
    assert rec["reason"] == "not UTF-8 JSON"
    assert rec["source"] == {"topic": topic, "partition": 0, "offset": 17, "timestamp_ms": 1_700_000_000_000}


def test_flush_raises_when_the_topic_cannot_be_written(bootstrap):
    topic = _topic(bootstrap, 1)
    sink = KafkaSink(bootstrap, {"max_request_size": 2000})
    sink.send(topic, None, b"ok")
    sink.send(topic, None, b"x" * 5000)  # larger than this producer may send: never acknowledged
    with pytest.raises(DeliveryError) as info:
        sink.flush(10)
    assert len(info.value.failed) == 1 and info.value.failed[0].value == b"x" * 5000
    assert not info.value.retriable
    sink.flush(10)  # the permanent failure was reported once; nothing else is pending
    sink.close()


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_make_source_and_sink_select_the_client(bootstrap, client):
    if client == "confluent":
        pytest.importorskip("confluent_kafka")
    config = for_embedded_broker()
    topic = _topic(bootstrap, 2)
    sink = make_sink(bootstrap, client=client)
    assert isinstance(sink, Sink)
    for i in range(40):
        sink.send(topic, f"k{i % 4}".encode(), str(i).encode())
    sink.flush(30)
    src = make_source(bootstrap, _group(), config, client=client)
    assert type(src).__module__ == ("connectors.confluent" if client == "confluent" else "connectors.kafka")
    src.subscribe([topic])
    assert sorted(int(m.value) for m in _drain(src, 40)) == list(range(40))
    src.close()
    sink.close()


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_sink_marks_report_acknowledgement_and_commit_async_lands(bootstrap, client):
    if client == "confluent":
        pytest.importorskip("confluent_kafka")
    topic = _topic(bootstrap, 2)
    sink = make_sink(bootstrap, client=client)
    for i in range(50):
        sink.send(topic, f"k{i % 4}".encode(), str(i).encode())
    first = sink.mark()
    for i in range(50, 80):
        sink.send(topic, f"k{i % 4}".encode(), str(i).encode())
    second = sink.mark()
    assert second > first
    end = time.monotonic() + 20
    while not sink.acked(second) and time.monotonic() < end:
        time.sleep(0.01)
    assert sink.acked(first) and sink.acked(second)  # acknowledged without a flush
    group = _group()
    src = make_source(bootstrap, group, for_embedded_broker(), client=client)
    src.subscribe([topic])
    got = _drain(src, 80)
    assert sorted(int(m.value) for m in got) == list(range(80))
    offsets = {}
    for m in got:
        offsets[(m.topic, m.partition)] = max(offsets.get((m.topic, m.partition), 0), m.offset + 1)
    src.commit_async(offsets)
    end = time.monotonic() + 20
    while any(src.committed(tp) != o for tp, o in offsets.items()) and time.monotonic() < end:
        src.poll(0.05, 10)  # kafka-python completes the commit inside poll
    assert {tp: src.committed(tp) for tp in offsets} == offsets
    src.close()
    sink.close()


def test_broker_command_prints_address_and_stops_on_ctrl_c(tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "streamad.cli", "broker"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        address = proc.stdout.readline().strip()
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        topic = _topic(address, 1)
        _fill(address, topic, 5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=1):
        pass


def test_rebalance_commits_in_on_revoke_and_the_new_member_resumes_there(bootstrap):
    """The service's scale-out path: a member commits what it processed when partitions are
    revoked (from inside poll, on the rebalance helper thread); the member that gets them
    resumes exactly after that, so no record is read twice or skipped."""
    import threading

    topic = _topic(bootstrap, partitions=2)
    _fill(bootstrap, topic, 40)
    group = _group()
    a = KafkaSource(bootstrap, group, for_embedded_broker())
    processed: dict = {}
    revoked = []

    def on_revoke(tps):
        revoked.extend(tps)
        a.commit({tp: processed[tp] for tp in tps if tp in processed})

    a.subscribe([topic], on_revoke=on_revoke)
    seen_a = []
    for m in _drain(a, 40):
        seen_a.append(int(m.value))
        processed[(m.topic, m.partition)] = m.offset + 1
    assert sorted(seen_a) == list(range(40))

    b = KafkaSource(bootstrap, group, for_embedded_broker())
    b.subscribe([topic])
    seen_b, stop = [], threading.Event()

    def run_b():
        while not stop.is_set():
            seen_b.extend(int(m.value) for m in b.poll(0.2, 100))

    thread = threading.Thread(target=run_b)
    thread.start()
    try:
        end = time.monotonic() + 20
        while not (len(a.assignment()) == 1 and len(b.assignment()) == 1) and time.monotonic() < end:
            a.poll(0.2, 100)
        assert len(a.assignment()) == 1 and len(b.assignment()) == 1
        assert revoked, "on_revoke ran before the partitions moved"
        assert seen_b == []  # b resumed at a's commits: nothing of the first 40 again
        _fill(bootstrap, topic, 40)
        end = time.monotonic() + 20
        new_a = []
        while len(new_a) + len(seen_b) < 40 and time.monotonic() < end:
            new_a.extend(int(m.value) for m in a.poll(0.2, 100))
        assert sorted(new_a + seen_b) == list(range(40))
        assert new_a and seen_b  # both members got records
    finally:
        stop.set()
        thread.join()
        a.close()
        b.close()


def test_sink_keeps_delivering_after_a_broker_restart():
    """The embedded broker forgets producer ids on restart; the sink must not be left broken
    (kafka-python's default idempotent producer drops every later send there)."""
    from connectors.broker import EmbeddedBroker

    first = EmbeddedBroker().start()
    try:
        ensure_topics(first.bootstrap, {"t": 1})
        sink = KafkaSink(first.bootstrap, {"max_block_ms": 2000})
        sink.send("t", b"k", b"before")
        sink.flush(10)
    finally:
        first.stop()
    second = EmbeddedBroker(port=first.port).start()
    try:
        ensure_topics(second.bootstrap, {"t": 1})
        for i in range(10):
            sink.send("t", b"k", str(i).encode())
        sink.flush(20)
        sink.close()
        src = KafkaSource(second.bootstrap, _group(), for_embedded_broker())
        src.subscribe(["t"])
        assert sorted(int(m.value) for m in _drain(src, 10)) == list(range(10))
        src.close()
    finally:
        second.stop()
