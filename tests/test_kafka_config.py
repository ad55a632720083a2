"""Kafka client configuration: security pass-through, defaults, bad options (no broker)."""

import kafka
import pytest

from connectors.kafka import (
    CONSUMER_DEFAULTS,
    PRODUCER_DEFAULTS,
    KafkaSink,
    KafkaSource,
    for_embedded_broker,
    make_source,
    split_config,
)
from streamad.base import ConfigError

SECURITY = {
    "security.protocol": "SASL_SSL",
    "ssl_cafile": "/etc/kafka/ca.pem",
    "ssl_check_hostname": True,
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl.plain.username": "streamad",
    "sasl_plain_password": "s3cret",
}
EXPECTED = {
    "security_protocol": "SASL_SSL",
    "ssl_cafile": "/etc/kafka/ca.pem",
    "ssl_check_hostname": True,
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_plain_username": "streamad",
    "sasl_plain_password": "s3cret",
}


class _Recorder:
    """Stands in for the kafka-python client class: records the keyword arguments it gets."""

    DEFAULT_CONFIG = {}
    made: list[dict] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        _Recorder.made.append(kwargs)

    def close(self, *a, **k):
        pass


@pytest.fixture
def recorded(monkeypatch):
    _Recorder.made = []
    for name in ("KafkaConsumer", "KafkaProducer"):
        real = getattr(kafka, name)
        fake = type(name, (_Recorder,), {"DEFAULT_CONFIG": real.DEFAULT_CONFIG})
        monkeypatch.setattr(kafka, name, fake)
    return _Recorder.made


def test_security_settings_reach_consumer_and_producer(recorded):
    KafkaSource("broker-1:9093,broker-2:9093", "fleet", SECURITY).close()
    KafkaSink("broker-1:9093", SECURITY).close()
    consumer, producer = recorded
    for kwargs in (consumer, producer):
        assert {k: kwargs[k] for k in EXPECTED} == EXPECTED
    assert consumer["bootstrap_servers"] == "broker-1:9093,broker-2:9093"
    assert consumer["group_id"] == "fleet"
    assert consumer["enable_auto_commit"] is False
    assert producer["acks"] == "all"


def test_defaults_suit_a_real_cluster_and_can_be_overridden(recorded):
    KafkaSource("b:9092", "g").close()
    KafkaSink("b:9092", {"linger_ms": 50, "acks": "all"}).close()
    consumer, producer = recorded
    # a real cluster keeps the client's own (long) group timeouts; see PRODUCER_DEFAULTS on idempotence
    assert "session_timeout_ms" not in consumer
    assert {k: consumer[k] for k in CONSUMER_DEFAULTS} == CONSUMER_DEFAULTS
    assert producer["linger_ms"] == 50
    assert {k: producer[k] for k in PRODUCER_DEFAULTS if k != "linger_ms"} == {
        k: v for k, v in PRODUCER_DEFAULTS.items() if k != "linger_ms"}


def test_embedded_broker_timeouts(recorded):
    KafkaSource("127.0.0.1:9092", "g", for_embedded_broker({"max_poll_records": 10})).close()
    (consumer,) = recorded
    assert consumer["session_timeout_ms"] == 6000
    assert consumer["heartbeat_interval_ms"] == 1000
    assert consumer["max_poll_interval_ms"] == 10_000
    assert consumer["max_poll_records"] == 10


def test_split_config_routes_options_by_role():
    cfg = {**SECURITY, "max_poll_records": 5, "linger_ms": 1, "bootstrap.servers": "ignored:1"}
    consumer, producer = split_config(cfg, "consumer"), split_config(cfg, "producer")
    assert consumer["max_poll_records"] == 5 and "linger_ms" not in consumer
    assert producer["linger_ms"] == 1 and "max_poll_records" not in producer
    assert "bootstrap_servers" not in consumer
    assert {k: split_config(cfg, "admin")[k] for k in EXPECTED} == EXPECTED


@pytest.mark.parametrize("bad, match", [
    ({"sasl_mechansim": "PLAIN"}, "sasl_mechansim"),
    ({"enable_auto_commit": True}, "enable_auto_commit"),
])
def test_bad_consumer_options_are_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        KafkaSource("127.0.0.1:9", "g", bad)


def test_unknown_client_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown Kafka client 'jafka'"):
        make_source("127.0.0.1:9", client="jafka")
