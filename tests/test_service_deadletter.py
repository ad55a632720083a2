"""The one dead-letter format (streamad.service.deadletter): what goes in comes back out."""

import hashlib
import json

import pytest

from streamad.service import MemoryBroker, MemorySink, MemorySource, Pipeline, ServiceConfig
from streamad.service.deadletter import DeadLetterSink, dead_letter_record, read_dead_letter
from streamad.service.transport import Message


@pytest.mark.parametrize("message", [
    Message("telemetry", 2, 41, b"pump-7", b"\xff{not json", 1_700_000_000_000),
    Message("telemetry", 0, 0, None, b'{"key": "a"}'),
    Message("telemetry", 5, 9, b"\xfe\xff", None),
])
def test_a_dead_letter_round_trips_its_reason_coordinates_and_original_bytes(message):
    rec = read_dead_letter(dead_letter_record(message, "not UTF-8 JSON", kind="decode"))
    assert (rec["reason"], rec["kind"]) == ("not UTF-8 JSON", "decode")
    source = {"topic": message.topic, "partition": message.partition, "offset": message.offset}
    if message.timestamp_ms is not None:
        source["timestamp_ms"] = message.timestamp_ms
    assert rec["source"] == source
    assert (rec["key_bytes"], rec["value"]) == (message.key, message.value)
    assert rec["value_truncated"] is False
    assert rec["value_size"] == (None if message.value is None else len(message.value))
    assert rec["value_sha256"] == (None if message.value is None else hashlib.sha256(message.value).hexdigest())
    assert rec["key"] == (None if message.key is None else message.key.decode("utf-8", "replace"))


def test_a_large_original_is_cut_with_its_size_and_digest_and_kept_whole_without_a_limit():
    value = b"x" * 5000
    m = Message("telemetry", 1, 7, b"k", value)
    cut = read_dead_letter(dead_letter_record(m, "too large", max_original_bytes=1000))
    assert cut["value"] == value[:1000] and cut["value_truncated"] is True
    assert (cut["value_size"], cut["value_sha256"]) == (5000, hashlib.sha256(value).hexdigest())
    whole = read_dead_letter(dead_letter_record(m, "too large", max_original_bytes=None))
    assert whole["value"] == value and whole["value_truncated"] is False


def test_the_pipeline_writes_the_same_format_the_dead_letter_sink_does():
    b = MemoryBroker()
    for topic in ("telemetry", "anomalies", "telemetry.dlq", "other.dlq"):
        b.create_topic(topic)
    bad = b.produce("telemetry", b"a", b'{"key": "a", "values": {"x": "hot"}}')
    p = Pipeline(MemorySource(b), MemorySink(b), ServiceConfig(detector="zscore", poll_timeout_s=0.0))
    p.start()
    while p.run_once():
        pass
    p.shutdown()
    [from_pipeline] = [read_dead_letter(m.value) for m in b.all("telemetry.dlq")]
    sink = MemorySink(b)
    dlq = DeadLetterSink(sink, "other.dlq")
    dlq.send(bad, from_pipeline["reason"])
    sink.flush()
    [from_sink] = [read_dead_letter(m.value) for m in b.all("other.dlq")]
    assert dlq.count == 1 and p.dead_letters == 1
    assert set(from_pipeline) == set(from_sink)
    for doc in (from_pipeline, from_sink):
        del doc["dead_lettered_at"]
    assert from_pipeline == from_sink
    assert from_sink["value"] == bad.value and "hot" in from_sink["reason"]
    assert json.loads(b.all("other.dlq")[0].value)["source"]["offset"] == bad.offset
