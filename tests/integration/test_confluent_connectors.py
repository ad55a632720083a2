"""The confluent-kafka source/sink against the real embedded broker."""

import uuid

import pytest

pytest.importorskip("confluent_kafka")
from kafka.admin import KafkaAdminClient, NewTopic  # noqa: E402

from connectors.confluent import EMBEDDED_BROKER_CONSUMER, ConfluentSink, ConfluentSource  # noqa: E402
from streamad.base import StreamadError  # noqa: E402

pytestmark = pytest.mark.integration


def _topic(bootstrap, partitions=3):
    name = f"ck-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    admin.close()
    return name


def _drain(src, n, rounds=60):
    got = []
    for _ in range(rounds):
        got.extend(src.poll(0.5, 500))
        if len(got) >= n:
            break
    return got


def test_sink_source_commit_and_resume(bootstrap):
    topic = _topic(bootstrap)
    sink = ConfluentSink(bootstrap)
    for i in range(300):
        sink.send(topic, f"k{i % 4}".encode(), str(i).encode())
    sink.flush(30)
    group = f"g-{uuid.uuid4().hex[:6]}"
    assigned = []
    src = ConfluentSource(bootstrap, group, EMBEDDED_BROKER_CONSUMER)
    src.subscribe([topic], on_assign=assigned.extend)
    got = _drain(src, 300)
    assert sorted(int(m.value) for m in got) == list(range(300))
    assert sorted(assigned) == [(topic, p) for p in range(3)]
    # commit only the first half of each partition, as a service would after a partial flush
    nxt = {}
    for m in got:
        nxt.setdefault((m.topic, m.partition), []).append(m.offset)
    half = {tp: sorted(offs)[len(offs) // 2] for tp, offs in nxt.items()}
    src.commit(half)
    assert {tp: src.committed(tp) for tp in half} == half
    src.close()

    again = ConfluentSource(bootstrap, group, EMBEDDED_BROKER_CONSUMER)
    again.subscribe([topic])
    expect = sum(len(offs) - half[tp] for tp, offs in nxt.items())
    rest = _drain(again, expect)
    assert len(rest) == expect
    assert all(m.offset >= half[(m.topic, m.partition)] for m in rest)
    again.close()


def test_seek_inside_assignment_callback(bootstrap):
    topic = _topic(bootstrap, partitions=1)
    sink = ConfluentSink(bootstrap)
    for i in range(50):
        sink.send(topic, None, str(i).encode())
    sink.flush(30)
    src = ConfluentSource(bootstrap, f"g-{uuid.uuid4().hex[:6]}", EMBEDDED_BROKER_CONSUMER)
    src.subscribe([topic], on_assign=lambda tps: [src.seek(tp, 40) for tp in tps])
    got = _drain(src, 10)
    assert [int(m.value) for m in got] == list(range(40, 50))
    assert src.lag() == {(topic, 0): 0}
    src.close()


def test_flush_raises_when_delivery_fails(bootstrap):
    topic = _topic(bootstrap, partitions=1)
    sink = ConfluentSink(bootstrap, {"message.max.bytes": 2000})
    with pytest.raises(StreamadError) as info:
        sink.send(topic, None, b"x" * 5000)
        sink.flush(10)
    assert "size" in str(info.value).lower() or "large" in str(info.value).lower()


def test_poll_returns_what_has_arrived_without_waiting_for_a_full_batch(bootstrap):
    # librdkafka's consume(n, timeout) holds on until it has n messages or the timeout is
    # over; the source must hand over a smaller batch as soon as there is one.
    import time

    topic = _topic(bootstrap, partitions=1)
    src = ConfluentSource(bootstrap, f"g-{uuid.uuid4().hex[:6]}", EMBEDDED_BROKER_CONSUMER)
    src.subscribe([topic])
    for _ in range(60):  # join the group on the empty topic
        src.poll(0.5, 10)
        if src.assignment():
            break
    sink = ConfluentSink(bootstrap)
    for i in range(5):
        sink.send(topic, None, str(i).encode())
    sink.flush(30)
    t0 = time.monotonic()
    got = []
    while len(got) < 5 and time.monotonic() - t0 < 60:
        got.extend(src.poll(30.0, 10_000))
    waited = time.monotonic() - t0
    src.close()
    assert [int(m.value) for m in got] == list(range(5))
    assert waited < 15.0, f"poll held a 5-record batch for {waited:.1f} s"
