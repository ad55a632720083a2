"""Partition checkpoints in a Kafka changelog topic: state that needs no shared disk.

``streamad serve --state-store kafka`` keeps each input partition's checkpoint (the tree
:class:`~streamad.service.pipeline.Pipeline` writes: every key's state and the offset it
reflects) in a compacted topic named after the consumer group, ``<group>.changelog``, as
Kafka Streams does with its changelog topics. An instance that is assigned a partition
restores it from there, so instances on different machines need only the broker.

Layout. A checkpoint is the npz bytes of the tree (:mod:`streamad._state`, no pickle), cut
into chunks of at most ``chunk_bytes`` (below the broker's message size limit). Chunk ``i``
of ``n`` of a checkpoint with version id ``v`` of input partition ``(topic, p)`` is one
message with key ``topic/p/v/i`` and value ``<JSON header>\\n<bytes>``; the header holds
``v``, ``i``, ``n``, the total size and SHA-256, and the offset the checkpoint reflects. All
chunks of ``(topic, p)`` go to changelog partition ``p % N`` (``N``: the changelog's
partition count, fixed when it is created). Once a checkpoint is acknowledged, the chunks of
the ones before it get tombstones (null values), so a compacting broker keeps about one
checkpoint per partition.

Reading. :func:`latest_checkpoints` takes, per input partition, the complete checkpoint
(all ``n`` chunks, size and digest right) written last, whether or not the broker has
compacted the topic: an interrupted write (a crash between chunks) leaves an incomplete
version that is skipped, and the one before it is still there because its tombstones
come only after a newer one is complete.

>>> chunks = list(_chunk_messages(("t", 0), b"x" * 5, "v1", 2, offset=7))
>>> [(k.decode(), len(v)) for k, v in chunks][0][0], len(chunks)
('t/0/v1/0', 3)
>>> latest_checkpoints(chunks + [(b"t/0/v2/0", _value("v2", 0, 2, b"yy", 7))])[("t", 0)][1]
b'xxxxx'
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from streamad import _state
from streamad.base import StateError, TransportError
from streamad.service.transport import TopicPartition

from .kafka import _construct, _kafka_error, split_config

__all__ = ["KafkaStateStore", "changelog_topic", "latest_checkpoints"]

log = logging.getLogger(__name__)


def changelog_topic(group: str) -> str:
    """The changelog topic of consumer group ``group``."""
    return f"{group}.changelog"


def _value(version: str, i: int, n: int, data: bytes, offset: int | None, size: int | None = None,
           digest: str | None = None) -> bytes:
    head = {"v": version, "i": i, "n": n, "size": len(data) if size is None else size,
            "sha256": hashlib.sha256(data).hexdigest() if digest is None else digest, "offset": offset}
    return json.dumps(head, separators=(",", ":")).encode() + b"\n" + data


def _chunk_messages(tp: TopicPartition, blob: bytes, version: str, chunk_bytes: int,
                    offset: int | None) -> Iterable[tuple[bytes, bytes]]:
    """``(key, value)`` of each chunk of ``blob``, the checkpoint ``version`` of ``tp``."""
    n = max(1, -(-len(blob) // chunk_bytes))
    digest = hashlib.sha256(blob).hexdigest()
    for i in range(n):
        part = blob[i * chunk_bytes:(i + 1) * chunk_bytes]
        yield f"{tp[0]}/{tp[1]}/{version}/{i}".encode(), _value(version, i, n, part, offset, len(blob), digest)


def _parse_key(key: bytes | None) -> tuple[TopicPartition, str, int] | None:
    try:
        topic, partition, version, i = key.decode().rsplit("/", 3)
        return (topic, int(partition)), version, int(i)
    except (AttributeError, UnicodeDecodeError, ValueError):
        return None


def _complete(parts: dict[int, tuple[int, bytes, dict]]) -> bool:
    return bool(parts) and set(parts) == set(range(int(next(iter(parts.values()))[2]["n"])))


def latest_checkpoints(messages: Iterable[tuple[bytes | None, bytes | None]],
                       only: set[TopicPartition] | None = None
                       ) -> dict[TopicPartition, tuple[str, bytes, set[bytes]]]:
    """From changelog ``(key, value)`` messages in log order: per input partition (of
    ``only``, or all), the newest complete checkpoint as ``(version, npz bytes, keys of
    every chunk still live)``, the keys to tombstone once a newer checkpoint is written. A
    null value is a tombstone: it deletes its key's chunk, as compaction will. Malformed
    messages are skipped (and logged)."""
    # tp -> version -> chunk index -> (position in the log, bytes, header)
    chunks: dict[TopicPartition, dict[str, dict[int, tuple[int, bytes, dict]]]] = {}
    for seq, (key, value) in enumerate(messages):
        parsed = _parse_key(key)
        if parsed is None:
            log.warning("changelog message with key %r is not a checkpoint chunk; skipped", key)
            continue
        tp, version, i = parsed
        if only is not None and tp not in only:
            continue
        versions = chunks.setdefault(tp, {})
        if value is None:  # tombstone
            versions.get(version, {}).pop(i, None)
            continue
        head, sep, data = value.partition(b"\n")
        try:
            meta = json.loads(head) if sep else None
            int(meta["n"])
        except (ValueError, TypeError, KeyError):
            log.warning("changelog chunk %r has no readable header; skipped", key)
            continue
        # (memory: each checkpoint's chunks are tombstoned once a newer one is written, so
        # even a log the broker never compacted holds about one live checkpoint per partition)
        versions.setdefault(version, {})[i] = (seq, data, meta)
    out = {}
    for tp, versions in chunks.items():
        complete = []
        for version, parts in versions.items():
            if not _complete(parts):
                continue
            meta = next(iter(parts.values()))[2]
            blob = b"".join(parts[j][1] for j in range(len(parts)))
            if len(blob) != meta.get("size") or hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
                log.warning("changelog checkpoint %s/%s/%s is damaged (size or SHA-256); skipped", tp[0], tp[1],
                            version)
                continue
            complete.append((max(s for s, _, _ in parts.values()), version, blob))
        if not complete:
            continue
        _, version, blob = max(complete)
        live = {f"{tp[0]}/{tp[1]}/{v}/{j}".encode() for v, parts in versions.items() for j in parts}
        out[tp] = (version, blob, live)
    return out


class KafkaStateStore:
    """The :class:`~streamad.service.store.StateStore` on a changelog topic (module doc).

    Parameters
    ----------
    bootstrap, group, config
        The cluster, the consumer group whose partitions are checkpointed, and the client
        options (as for :class:`~connectors.kafka.KafkaSource`).
    input_topics
        The service's input topics: a new changelog topic gets as many partitions as the
        largest of them, so an instance restoring a partition reads only its share.
    chunk_bytes
        Largest chunk of a checkpoint per message (keep it under the broker's
        ``message.max.bytes``, 1 MB by default).
    timeout_s
        How long a save waits for the broker's acknowledgement, and a load for the end of
        the changelog partition.
    """

    def __init__(self, bootstrap: str, group: str, config: Mapping[str, Any] | None = None, *,
                 input_topics: Iterable[str] = (), chunk_bytes: int = 512 * 1024, timeout_s: float = 30.0):
        from kafka import KafkaProducer

        self.bootstrap, self.topic = bootstrap, changelog_topic(group)
        self.chunk_bytes, self.timeout_s = int(chunk_bytes), float(timeout_s)
        self.config = dict(config or {})
        self.partitions = self._ensure_topic(list(input_topics))
        producer = {"acks": "all", "enable_idempotence": False, "linger_ms": 0, "retries": 2**31 - 1,
                    "max_block_ms": 5_000, "delivery_timeout_ms": 120_000,
                    **split_config(self.config, "producer")}
        producer["max_request_size"] = max(int(producer.get("max_request_size", 1 << 20)), self.chunk_bytes + 4096)
        self._producer = _construct(KafkaProducer, "changelog producer", bootstrap, producer)
        self._consumer = None
        # per input partition: the chunk keys in the changelog that the next save supersedes
        # (tombstoned once it is acknowledged)
        self._live: dict[TopicPartition, set[bytes]] = {}

    def _ensure_topic(self, input_topics: list[str]) -> int:
        """Create the compacted changelog topic if it is missing; its partition count."""
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import KafkaError

        admin = _construct(KafkaAdminClient, "admin client", self.bootstrap, split_config(self.config, "admin"))
        try:
            deadline = time.monotonic() + self.timeout_s
            while True:
                existing = set(admin.list_topics())
                if self.topic in existing:
                    described = admin.describe_topics([self.topic])
                    n = len(described[0].get("partitions") or []) if described else 0
                    if n:
                        return n
                else:
                    sizes = [len(d.get("partitions") or []) for d in admin.describe_topics(
                        [t for t in input_topics if t in existing])] if input_topics else []
                    n = max([1, *sizes])
                    admin.create_topics([NewTopic(self.topic, n, 1, topic_configs={"cleanup.policy": "compact"})],
                                        raise_errors=False)
                    log.info("event=changelog_created topic=%s partitions=%d cleanup_policy=compact", self.topic, n)
                if time.monotonic() > deadline:
                    raise TransportError(f"changelog topic {self.topic!r} did not appear on {self.bootstrap} "
                                         f"within {self.timeout_s:g} s")
                time.sleep(0.1)
        except KafkaError as e:
            raise _kafka_error(e, f"cannot create the changelog topic {self.topic!r}") from e
        finally:
            admin.close()

    def _partition(self, tp: TopicPartition) -> int:
        return tp[1] % self.partitions

    def where(self, tp: TopicPartition) -> str:
        return f"changelog {self.topic}[{self._partition(tp)}] key {tp[0]}/{tp[1]}"

    def save(self, tp: TopicPartition, tree: dict[str, Any], timeout_s: float | None = None) -> None:
        """Send the checkpoint's chunks and wait (at most ``timeout_s``, default the store's)
        for their acknowledgement; then tombstone the chunks of the checkpoints before it
        (sent without waiting)."""
        from kafka.errors import KafkaError

        tp = (tp[0], int(tp[1]))
        blob = _state.dumps(tree)
        version = uuid.uuid4().hex[:16]
        part = self._partition(tp)
        keys = set()
        try:
            futures = []
            for key, value in _chunk_messages(tp, blob, version, self.chunk_bytes, tree.get("offset")):
                futures.append(self._producer.send(self.topic, key=key, value=value, partition=part))
                keys.add(key)
            self._producer.flush(timeout=self.timeout_s if timeout_s is None else max(0.1, timeout_s))
            for f in futures:
                f.get(timeout=0)  # raises the delivery error, if any
        except KafkaError as e:
            raise _kafka_error(e, f"cannot write the checkpoint of {tp[0]}[{tp[1]}] to {self.topic}") from e
        stale = self._live.get(tp, set()) - keys
        self._live[tp] = keys
        for key in stale:
            self._producer.send(self.topic, key=key, value=None, partition=part)

    def load(self, tp: TopicPartition) -> dict[str, Any] | None:
        """The newest complete checkpoint of ``tp`` in the changelog, or None."""
        from kafka import KafkaConsumer
        from kafka import TopicPartition as TP
        from kafka.errors import KafkaError

        tp = (tp[0], int(tp[1]))
        try:
            if self._consumer is None:
                options = {**split_config(self.config, "consumer"), "enable_auto_commit": False,
                           "max_partition_fetch_bytes": max(self.chunk_bytes + 4096, 1 << 20)}
                self._consumer = _construct(KafkaConsumer, "changelog consumer", self.bootstrap,
                                            {**options, "group_id": None})
            ktp = TP(self.topic, self._partition(tp))
            self._consumer.assign([ktp])
            self._consumer.seek_to_beginning(ktp)
            end = self._consumer.end_offsets([ktp], timeout_ms=int(self.timeout_s * 1000))[ktp]
            messages = []
            deadline = time.monotonic() + self.timeout_s
            # The embedded broker reports a log's end as one past the base offset of its last
            # batch; reading until the position reaches it still reads that whole batch.
            while self._consumer.position(ktp) < end:
                if time.monotonic() > deadline:
                    raise TransportError(f"cannot read {self.where(tp)} to its end ({end}) within "
                                         f"{self.timeout_s:g} s", retriable=False)
                for records in self._consumer.poll(timeout_ms=500).values():
                    messages += [(r.key, r.value) for r in records]
        except KafkaError as e:
            raise TransportError(f"cannot read {self.where(tp)}: {type(e).__name__}: {e}", retriable=False) from e
        found = latest_checkpoints(messages, only={tp}).get(tp)
        if found is None:
            return None
        version, blob, live = found
        self._live[tp] = live
        try:
            tree = _state.loads(blob)
        except StateError as e:
            raise StateError(f"{self.where(tp)} version {version}: {e}") from None
        log.info("event=changelog_restored topic=%s partition=%d version=%s bytes=%d offset=%s", tp[0], tp[1],
                 version, len(blob), tree.get("offset"))
        return tree

    def close(self) -> None:
        try:
            self._producer.close(timeout=5)
        except Exception as e:  # closing must not mask the reason we are closing
            log.warning("closing the changelog producer: %s", e)
        if self._consumer is not None:
            self._consumer.close()
