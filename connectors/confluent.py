"""confluent-kafka (librdkafka) source and sink behind the same Source/Sink protocols.

Optional (``pip install 'streamad[fast]'``): about ten times the records/s of the pure-Python
client, with the same delivery guarantees: manual commits of offsets the caller has
processed, ``acks=all`` on the sink, and ``flush`` raising if any message was not delivered.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from streamad.base import CommitError, ConfigError, DeliveryError, TransportError
from streamad.service.transport import AssignCallback, BaseSource, Message, TopicPartition

__all__ = ["ConfluentOutputLog", "ConfluentSink", "ConfluentSource", "EMBEDDED_BROKER_CONSUMER"]

log = logging.getLogger(__name__)

# Short group timeouts make group joins against the single-node embedded broker take ~1 s.
EMBEDDED_BROKER_CONSUMER = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000, "max.poll.interval.ms": 10000}


def _ck():
    try:
        import confluent_kafka
    except ImportError as e:
        raise ConfigError("the confluent client needs the 'fast' extra: pip install 'streamad[fast]'") from e
    return confluent_kafka


# kafka-python names whose librdkafka name is not the same words joined by dots
_RENAMED = {"fetch_max_wait_ms": "fetch.wait.max.ms"}


def _translate(config: dict[str, Any] | None) -> dict[str, Any]:
    """Accept kafka-python style keys (security_protocol) as well as librdkafka's (security.protocol).

    >>> _translate({"security_protocol": "SSL", "fetch_max_wait_ms": 20})
    {'security.protocol': 'SSL', 'fetch.wait.max.ms': 20}
    """
    return {_RENAMED.get(k, k.replace("_", ".")): v for k, v in (config or {}).items()}


class ConfluentSource(BaseSource):
    def __init__(self, bootstrap: str, group_id: str, config: dict[str, Any] | None = None):
        ck = _ck()
        self._ck = ck
        conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "topic.metadata.refresh.interval.ms": 30_000,  # see partitions added to the topics soon
            **_translate(config),
        }
        try:
            self._consumer = ck.Consumer(conf)
        except ck.KafkaException as e:
            raise ConfigError(f"bad confluent consumer config: {e}") from e
        self._assigned: set[TopicPartition] = set()
        self._pending_seeks: dict[TopicPartition, int] | None = None
        self._paused = False
        self._contact_at = time.monotonic()
        self._probed_at = 0.0

    # -- group membership ---------------------------------------------------------------
    def subscribe(self, topics: list[str], on_assign: AssignCallback | None = None,
                  on_revoke: AssignCallback | None = None) -> None:
        ck = self._ck

        def assigned(consumer, partitions):
            tps = [(p.topic, p.partition) for p in partitions]
            self._assigned.update(tps)
            # librdkafka cannot seek a partition before it is assigned: collect the seeks the
            # callback asks for and hand them to assign() as start offsets.
            self._pending_seeks = {}
            try:
                if on_assign:
                    on_assign(tps)
            finally:
                seeks, self._pending_seeks = self._pending_seeks, None
            consumer.assign([ck.TopicPartition(t, p, seeks.get((t, p), ck.OFFSET_STORED)) for t, p in tps])

        def revoked(consumer, partitions):
            tps = [(p.topic, p.partition) for p in partitions]
            try:
                if on_revoke:
                    on_revoke(tps)
            finally:
                self._assigned.difference_update(tps)
                consumer.unassign()

        self._consumer.subscribe(list(topics), on_assign=assigned, on_revoke=revoked, on_lost=revoked)

    def assign(self, tps: list[TopicPartition], offsets: dict[TopicPartition, int] | None = None) -> None:
        """Manual assignment, no group protocol (benchmarks, tools)."""
        ck = self._ck
        offsets = offsets or {}
        self._consumer.assign([ck.TopicPartition(t, p, offsets.get((t, p), ck.OFFSET_STORED)) for t, p in tps])
        self._assigned = set(tps)

    # -- consuming ----------------------------------------------------------------------
    def poll(self, timeout_s: float, max_records: int) -> list[Message]:
        """Up to ``max_records`` messages, returned as soon as any are there.

        librdkafka's ``consume(n, timeout)`` waits until it has ``n`` messages or the timeout
        passes, so at a modest rate every batch would wait the whole timeout (200 ms of added
        latency at 5,000 records/s). Take what the background fetcher has queued; only when
        that is nothing, wait for the first message, then take what has arrived with it.
        """
        consumer = self._consumer
        msgs = consumer.consume(num_messages=max_records, timeout=0)
        if not msgs:
            first = consumer.poll(timeout_s)
            if first is None:
                return []
            msgs = [first]
            if max_records > 1:
                msgs += consumer.consume(num_messages=max_records - 1, timeout=0)
        out: list[Message] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != self._ck.KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", err)
                continue
            ts_type, ts = m.timestamp()
            out.append(Message(m.topic(), m.partition(), m.offset(), m.key(), m.value(), ts if ts_type else None))
        return out

    def commit(self, offsets: dict[TopicPartition, int], timeout_s: float | None = None) -> None:
        """Commit ``{(topic, partition): next offset}`` and wait for the broker's answer
        (librdkafka's synchronous commit takes no timeout; ``timeout_s`` is not used)."""
        self._commit(offsets, asynchronous=False)
        self._contact_at = time.monotonic()

    def commit_async(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit without waiting for the broker's answer (librdkafka logs a failure; a later
        commit covers the same offsets)."""
        self._commit(offsets, asynchronous=True)

    def _commit(self, offsets: dict[TopicPartition, int], asynchronous: bool) -> None:
        if not offsets:
            return
        ck = self._ck
        try:
            self._consumer.commit(offsets=[ck.TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                  asynchronous=asynchronous)
        except ck.KafkaException as e:
            # not retried by the service (as a rejected commit): a later commit covers these offsets
            raise CommitError(f"offset commit failed: {e}", retriable=False) from e

    def committed(self, tp: TopicPartition) -> int | None:
        (res,) = self._consumer.committed([self._ck.TopicPartition(*tp)], timeout=10)
        return res.offset if res.offset >= 0 else None

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if self._pending_seeks is not None:
            self._pending_seeks[tp] = offset
            return
        self._consumer.seek(self._ck.TopicPartition(tp[0], tp[1], offset))

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def pause(self) -> None:
        parts = self._consumer.assignment()
        if parts:
            self._consumer.pause(parts)
        self._paused = True

    def resume(self) -> None:
        parts = self._consumer.assignment()
        if parts:
            self._consumer.resume(parts)
        self._paused = False

    def end_offset(self, tp: TopicPartition) -> int | None:
        """The log end offset of ``tp``; None when the broker does not answer in time."""
        try:
            _, high = self._consumer.get_watermark_offsets(self._ck.TopicPartition(tp[0], tp[1]), timeout=2.0)
        except self._ck.KafkaException:
            return None
        return int(high) if high >= 0 else None

    def broker_contact(self) -> float | None:
        """``time.monotonic()`` of the broker's last answer to a metadata request (sent by
        :meth:`lag` at most once a second) or a commit."""
        return self._contact_at

    def lag(self) -> dict[TopicPartition, int]:
        now = time.monotonic()
        if now - self._probed_at >= 1.0:
            self._probed_at = now
            try:
                self._consumer.list_topics(timeout=1.0)
                self._contact_at = time.monotonic()
            except self._ck.KafkaException as e:
                log.debug("metadata unavailable: %s", e)
        out = {}
        parts = self._consumer.assignment()
        if not parts:
            return out
        for p in self._consumer.position(parts):
            _, high = self._consumer.get_watermark_offsets(p, cached=True)
            if high >= 0 and p.offset >= 0:
                out[(p.topic, p.partition)] = max(0, high - p.offset)
        return out

    def close(self, timeout_s: float | None = None) -> None:
        self._consumer.close()


class ConfluentOutputLog:
    """Reads back a topic the service publishes to (:class:`~streamad.service.transport.OutputLog`)
    by manual assignment: it never joins the consumer group it names."""

    def __init__(self, bootstrap: str, config: dict[str, Any] | None = None, *, timeout_s: float = 30.0):
        ck = _ck()
        self._ck, self.timeout_s = ck, timeout_s
        conf = {"bootstrap.servers": bootstrap, "group.id": "streamad-read-back", "enable.auto.commit": False,
                "enable.partition.eof": False, **_translate(config)}
        try:
            self._consumer = ck.Consumer(conf)
        except ck.KafkaException as e:
            raise ConfigError(f"bad confluent consumer config: {e}") from e

    def end_offsets(self, topic: str) -> dict[int, int]:
        ck = self._ck
        try:
            meta = self._consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None:
                return {}
            return {p: int(self._consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=5)[1])
                    for p in sorted(meta.partitions)}
        except ck.KafkaException as e:
            raise TransportError(f"cannot read the end offsets of {topic}: {e}") from e

    def read(self, topic: str, starts: dict[int, int]) -> list[Message]:
        ck = self._ck
        ends = self.end_offsets(topic)
        todo = {p: end for p, end in ends.items() if starts.get(p, 0) < end}
        out: list[Message] = []
        if not todo:
            return out
        consumer = self._consumer
        pos = {p: starts.get(p, 0) for p in todo}
        try:
            consumer.assign([ck.TopicPartition(topic, p, pos[p]) for p in todo])
            deadline = time.monotonic() + self.timeout_s
            while any(pos[p] < end for p, end in todo.items()):
                if time.monotonic() > deadline:
                    raise TransportError(f"reading {topic} back took over {self.timeout_s:g} s")
                for m in consumer.consume(num_messages=1000, timeout=0.2):
                    if m.error() is not None or m.partition() not in todo:
                        continue
                    pos[m.partition()] = m.offset() + 1
                    if m.offset() < todo[m.partition()]:
                        out.append(Message(m.topic(), m.partition(), m.offset(), m.key(), m.value()))
        except ck.KafkaException as e:
            raise TransportError(f"cannot read {topic} back: {e}") from e
        finally:
            consumer.unassign()
        return out

    def close(self) -> None:
        self._consumer.close()


class ConfluentSink:
    def __init__(self, bootstrap: str, config: dict[str, Any] | None = None):
        ck = _ck()
        self._ck = ck
        conf = {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": False,
            "linger.ms": 5,
            "compression.type": "none",
            **_translate(config),
        }
        try:
            self._producer = ck.Producer(conf)
        except ck.KafkaException as e:
            raise ConfigError(f"bad confluent producer config: {e}") from e
        self._errors: list[str] = []
        # Acknowledgement tracking for mark()/acked(): sends are grouped by mark; librdkafka
        # runs the delivery callbacks inside poll()/flush(), on this thread.
        self._group = 0
        self._open: dict[int, int] = {}  # group -> messages not yet acknowledged
        self._on_delivery = functools.partial(self._delivered, 0)

    def _delivered(self, group: int, err, msg) -> None:
        left = self._open[group] - 1
        if left:
            self._open[group] = left
        else:
            del self._open[group]
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err}")

    def mark(self) -> int:
        """Close the group of messages sent since the last mark; see :meth:`acked`."""
        group = self._group
        self._group += 1
        self._on_delivery = functools.partial(self._delivered, self._group)
        return group

    def acked(self, token: int) -> bool:
        """True once every message sent up to mark ``token`` is acknowledged (does not block);
        False while any is pending or failed (:meth:`flush` reports failures)."""
        self._producer.poll(0)
        return not self._errors and (not self._open or min(self._open) > token)

    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: list[tuple[str, bytes]] | None = None) -> None:
        group = self._group
        self._open[group] = self._open.get(group, 0) + 1
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=self._on_delivery, headers=headers)
                break
            except BufferError:  # local queue full: serve delivery reports, then retry
                self._producer.poll(0.05)
            except self._ck.KafkaException as e:  # permanent for this message, e.g. too large
                self._delivered(group, None, None)  # not in flight: no callback will come
                raise TransportError(f"cannot send to {topic}: {e.args[0].str()}", retriable=False) from e
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise DeliveryError(f"{remaining} messages not acknowledged within {timeout_s:.0f} s", [], retriable=True)
        if self._errors:
            errs, self._errors = self._errors, []
            # retriable as before the error tree (the service flushes again), although librdkafka,
            # which retried them itself, does not keep these messages for the next flush
            raise DeliveryError(f"{len(errs)} messages failed delivery, first: {errs[0]}", [], retriable=True)

    def close(self, timeout_s: float | None = None) -> None:
        self._producer.flush(10 if timeout_s is None else timeout_s)
