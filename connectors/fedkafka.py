"""Federated PCA over Kafka: the :class:`~streamad.federated.channel.FedChannel` on two topics.

- ``<prefix>.updates`` (clients -> server): signed client updates. The server reads it with
  manual assignment (no consumer group: there is one server), from the end at start-up, or
  from the position saved with its checkpoint when it restarts (so it sees the updates sent
  while it was down); updates for rounds that are no longer open are refused by the gate.
- ``<prefix>.global`` (server -> clients): the signed global model, keyed ``global`` on a
  compacted topic, so the newest model survives retention and a late client reads it first.
"""

from __future__ import annotations

import logging
from typing import Any

from .kafka import KafkaSink, ensure_topics, split_config

__all__ = ["KafkaFedChannel", "create_fed_topics"]

log = logging.getLogger(__name__)


def create_fed_topics(bootstrap: str, prefix: str, config: dict[str, Any] | None = None) -> tuple[str, str]:
    """Create ``<prefix>.updates`` and ``<prefix>.global`` (compacted where the broker allows)."""
    updates, global_ = f"{prefix}.updates", f"{prefix}.global"
    ensure_topics(bootstrap, {updates: 1}, config)
    try:
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=bootstrap, **split_config(config, "admin"))
        try:
            if global_ not in set(admin.list_topics()):
                admin.create_topics([NewTopic(global_, 1, 1, topic_configs={"cleanup.policy": "compact"})])
        finally:
            admin.close()
    except Exception as e:  # a broker without compaction support still gets the topic
        log.info("compacted topic %s not created (%s); creating a plain one", global_, e)
    ensure_topics(bootstrap, {global_: 1}, config)
    return updates, global_


class KafkaFedChannel:
    def __init__(self, bootstrap: str, prefix: str, role: str, config: dict[str, Any] | None = None):
        from kafka import KafkaConsumer, TopicPartition

        if role not in ("server", "client"):
            raise ValueError(f"role must be 'server' or 'client', not {role!r}")
        self.updates_topic, self.global_topic = create_fed_topics(bootstrap, prefix, config)
        self.sink = KafkaSink(bootstrap, config)
        topic = self.updates_topic if role == "server" else self.global_topic
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                      **split_config(config, "consumer"))
        self.tp = TopicPartition(topic, 0)
        self.consumer.assign([self.tp])
        if role == "server":
            self.consumer.seek_to_end(self.tp)
        else:
            self.consumer.seek_to_beginning(self.tp)
        # Resolve the position now: resolved lazily, an update sent before the first poll
        # would be skipped.
        self.consumer.position(self.tp)
        self._latest: bytes | None = None
        self.bytes_up = self.bytes_down = 0

    def send_update(self, raw: bytes) -> None:
        self.sink.send(self.updates_topic, None, raw)
        self.sink.flush(10)
        self.bytes_up += len(raw)

    def poll_updates(self, timeout_s: float) -> list[bytes]:
        got = self.consumer.poll(timeout_ms=int(timeout_s * 1000))
        return [m.value for msgs in got.values() for m in msgs]

    def updates_position(self) -> int | None:
        return int(self.consumer.position(self.tp))

    def seek_updates(self, position: int) -> None:
        """Read updates from ``position`` on; not past the log's end (a broker that lost its
        data has a shorter log: the server then reads it from where it ends)."""
        end = self.consumer.end_offsets([self.tp], timeout_ms=10_000)[self.tp]
        self.consumer.seek(self.tp, max(0, min(int(position), int(end))))

    def publish_global(self, raw: bytes) -> None:
        self.sink.send(self.global_topic, b"global", raw)
        self.sink.flush(10)
        self.bytes_down += len(raw)

    def latest_global(self, timeout_s: float) -> bytes | None:
        got = self.consumer.poll(timeout_ms=int(timeout_s * 1000))
        for msgs in got.values():
            if msgs:
                self._latest = msgs[-1].value
        return self._latest

    def close(self) -> None:
        self.consumer.close()
        self.sink.close()
