import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

pytestmark = pytest.mark.integration


def test_embedded_broker_round_trip(bootstrap):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic("broker-smoke", num_partitions=3, replication_factor=1)])
    admin.close()
    prod = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(30):
        prod.send("broker-smoke", key=str(i % 3).encode(), value=str(i).encode(), partition=i % 3)
    prod.flush()
    prod.close()
    cons = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    cons.assign([TopicPartition("broker-smoke", p) for p in range(3)])
    got = []
    for _ in range(20):
        for recs in cons.poll(timeout_ms=500).values():
            got.extend(int(r.value) for r in recs)
        if len(got) >= 30:
            break
    cons.close()
    assert sorted(got) == list(range(30))


def test_broker_stops_cleanly():
    from connectors.broker import EmbeddedBroker

    with EmbeddedBroker() as b:
        assert b.running
        proc = b.proc
    assert proc.poll() is not None
