"""Transport contracts between the streaming pipeline and a message system.

The pipeline (``streamad.service``) only sees these protocols; ``connectors.kafka``
implements them for Kafka, and :class:`MemoryBroker` implements them in memory for unit
tests. Offsets follow Kafka's convention: a committed offset is the *next* offset to read.

Optional parts have defaults, so the pipeline calls them without asking first: a source
derived from :class:`BaseSource` commits and waits where it cannot commit asynchronously
(:func:`commits_asynchronously`) and cannot tell a partition's end offset unless it knows
how. A sink that reports acknowledgements without a flush (:class:`AcknowledgingSink`) is
what commit mode "pipelined" needs.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

__all__ = ["AcknowledgingSink", "BaseSource", "MemoryBroker", "MemoryOutputLog", "MemorySink", "MemorySource", "Message",
           "OutputLog", "Sink", "Source", "TopicPartition", "commits_asynchronously"]

TopicPartition = tuple[str, int]


class Message(NamedTuple):
    """One consumed message. Immutable; a named tuple (as kafka-python's ConsumerRecord)
    because the service builds one per record: 0.4 us against 1.2 us for a frozen dataclass."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


AssignCallback = Callable[[list[TopicPartition]], None]


@runtime_checkable
class Source(Protocol):
    def subscribe(self, topics: list[str], on_assign: AssignCallback | None = None,
                  on_revoke: AssignCallback | None = None) -> None: ...

    def poll(self, timeout_s: float, max_records: int) -> list[Message]: ...

    def commit(self, offsets: dict[TopicPartition, int], timeout_s: float | None = None) -> None:
        """Commit and wait for the broker's answer (at most ``timeout_s``: None, the source's own)."""
        ...

    def commit_async(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit without waiting for the broker's answer, where the source can (see
        :class:`BaseSource`)."""
        ...

    def committed(self, tp: TopicPartition) -> int | None: ...

    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    def assignment(self) -> set[TopicPartition]: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def lag(self) -> dict[TopicPartition, int]:
        """Records behind the end of every partition of the subscribed topics, also those
        not assigned here (from the group's committed offset)."""
        ...

    def broker_contact(self) -> float | None:
        """``time.monotonic()`` of the broker's last answer to this source (it asks at least
        every few seconds while :meth:`lag` is called), or None when it cannot tell."""
        ...

    def end_offset(self, tp: TopicPartition) -> int | None:
        """The partition's log end offset, or None when the broker cannot say right now."""
        ...

    def close(self, timeout_s: float | None = None) -> None: ...


class BaseSource:
    """Defaults for the optional parts of :class:`Source` (the in-memory and Kafka sources
    derive from it)."""

    def commit(self, offsets: dict[TopicPartition, int], timeout_s: float | None = None) -> None:
        raise NotImplementedError

    def commit_async(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit and wait: this source cannot commit without waiting. A source that can
        overrides this method (:func:`commits_asynchronously`)."""
        self.commit(offsets)

    def end_offset(self, tp: TopicPartition) -> int | None:
        """None: this source cannot tell."""
        return None


@functools.cache
def commits_asynchronously(cls: type) -> bool:
    """Whether sources of class ``cls`` commit without waiting for the broker's answer in
    :meth:`~Source.commit_async` (they have their own, not :class:`BaseSource`'s), so that a
    commit is confirmed only by a later one that waits.

    >>> commits_asynchronously(MemorySource)
    False
    """
    return cls.commit_async is not BaseSource.commit_async


@runtime_checkable
class Sink(Protocol):
    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: list[tuple[str, bytes]] | None = None) -> None:
        """Queue a message; ``headers`` go with it where the message system has them."""
        ...

    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until every message sent so far is acknowledged; raise on delivery failure
        (a :class:`~streamad.base.DeliveryError` says whether flushing again may deliver)."""

    def close(self, timeout_s: float | None = None) -> None: ...


@runtime_checkable
class AcknowledgingSink(Sink, Protocol):
    """A sink that tells, without blocking, which messages are acknowledged: what the
    service's commit mode "pipelined" needs (every sink here is one)."""

    def mark(self) -> Any:
        """Close the group of messages sent since the previous mark; returns its token."""
        ...

    def acked(self, token: Any) -> bool:
        """True once every message sent before the mark ``token`` is acknowledged; False while
        any is pending or has failed (:meth:`flush` then reports the failure)."""
        ...


@runtime_checkable
class OutputLog(Protocol):
    """Reads back a topic the service writes to (the anomalies topic), so that a restart
    does not publish again what a crashed run already published (``streamad.service.pipeline``)."""

    def end_offsets(self, topic: str) -> dict[int, int]:
        """The end offset of each partition of ``topic`` ({} when it does not exist yet)."""
        ...

    def read(self, topic: str, starts: dict[int, int]) -> list[Message]:
        """Every message of ``topic`` from ``starts[partition]`` (0 for a partition not in
        ``starts``) to the end as it is now."""
        ...

    def close(self) -> None: ...


class MemoryBroker:
    """A tiny in-process log: topics of partitions of messages, and committed offsets.

    >>> b = MemoryBroker()
    >>> b.create_topic("t", partitions=2)
    >>> b.produce("t", b"k", b"v", partition=1).offset
    0
    >>> [m.value for m in b.read("t", 1)]
    [b'v']
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.topics: dict[str, list[list[Message]]] = {}
        self.committed: dict[tuple[str, TopicPartition], int] = {}

    def create_topic(self, name: str, partitions: int = 1) -> None:
        with self._lock:
            self.topics.setdefault(name, [[] for _ in range(partitions)])

    def produce(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> Message:
        with self._lock:
            parts = self.topics.setdefault(topic, [[]])
            if partition is None:
                partition = (hash(key) % len(parts)) if key is not None else 0
            log = parts[partition]
            msg = Message(topic, partition, len(log), key, value)
            log.append(msg)
            return msg

    def read(self, topic: str, partition: int, start: int = 0, limit: int | None = None) -> list[Message]:
        with self._lock:
            log = self.topics.get(topic, [[]])[partition]
            return log[start: None if limit is None else start + limit]

    def all(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for p in self.topics.get(topic, []) for m in p]


class MemorySource(BaseSource):
    """Single-member consumer group over a :class:`MemoryBroker` (all partitions assigned)."""

    def __init__(self, broker: MemoryBroker, group_id: str = "streamad") -> None:
        self.broker, self.group_id = broker, group_id
        self._pos: dict[TopicPartition, int] = {}
        self._paused = False
        self._closed = False

    def subscribe(self, topics, on_assign=None, on_revoke=None) -> None:
        tps = [(t, p) for t in topics for p in range(len(self.broker.topics.get(t, [[]])))]
        for tp in tps:
            self._pos[tp] = self.committed(tp) or 0
        if on_assign:
            on_assign(tps)

    def poll(self, timeout_s: float, max_records: int) -> list[Message]:
        if self._paused:
            return []
        out: list[Message] = []
        for tp, pos in sorted(self._pos.items()):
            msgs = self.broker.read(tp[0], tp[1], pos, max_records - len(out))
            out.extend(msgs)
            self._pos[tp] = pos + len(msgs)
            if len(out) >= max_records:
                break
        return out

    def commit(self, offsets, timeout_s: float | None = None) -> None:
        for tp, off in offsets.items():
            self.broker.committed[(self.group_id, tp)] = off

    def committed(self, tp) -> int | None:
        return self.broker.committed.get((self.group_id, tp))

    def seek(self, tp, offset: int) -> None:
        self._pos[tp] = offset

    def assignment(self):
        return set(self._pos)

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def lag(self):
        return {tp: len(self.broker.read(*tp)) - pos for tp, pos in self._pos.items()}

    def broker_contact(self) -> float | None:
        return time.monotonic()  # the memory broker always answers

    def end_offset(self, tp) -> int | None:
        return len(self.broker.read(*tp))

    def close(self, timeout_s: float | None = None) -> None:
        self._closed = True


class MemoryOutputLog:
    """:class:`OutputLog` over a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    def end_offsets(self, topic: str) -> dict[int, int]:
        return {p: len(self.broker.read(topic, p)) for p in range(len(self.broker.topics.get(topic, [])))}

    def read(self, topic: str, starts: dict[int, int]) -> list[Message]:
        return [m for p in range(len(self.broker.topics.get(topic, []))) for m in self.broker.read(topic, p, starts.get(p, 0))]

    def close(self) -> None:
        pass


class MemorySink:
    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self._pending: list[tuple[str, bytes | None, bytes]] = []
        self._marks = 0

    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: list[tuple[str, bytes]] | None = None) -> None:
        """Queue a message (the memory broker keeps no headers)."""
        self._pending.append((topic, key, value))

    def flush(self, timeout_s: float = 30.0) -> None:
        pending, self._pending = self._pending, []
        for topic, key, value in pending:
            self.broker.produce(topic, key, value)

    def mark(self) -> int:
        """Deliver what was sent (the memory broker acknowledges at once); see :class:`Sink`."""
        self.flush()
        self._marks += 1
        return self._marks

    def acked(self, token: int) -> bool:
        return True

    def close(self, timeout_s: float | None = None) -> None:
        self.flush()


