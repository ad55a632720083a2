"""Kafka source and sink (kafka-python) behind the transport contract of ``streamad.service``.

:class:`KafkaSource` is a consumer-group member with manual offset commits,
pause/resume backpressure and cheap per-partition lag; :class:`KafkaSink` is a producer with
``acks="all"`` whose :meth:`~KafkaSink.flush` raises if anything sent since the last flush
was not acknowledged. They raise the transport errors of :mod:`streamad.base`
(:class:`~streamad.base.TransportError`, :class:`~streamad.base.CommitError`,
:class:`~streamad.base.DeliveryError`), which say whether trying again may work; dead letters
go through :class:`streamad.service.deadletter.DeadLetterSink` like any other output.

Every client-specific line lives in this module. Use :func:`make_source` / :func:`make_sink`
to build them; ``client="confluent"`` returns the confluent-kafka classes of
:mod:`connectors.confluent` behind the same interface.

Configuration is one dict shared by consumer, producer and admin client: kafka-python
option names (``security_protocol``, ``ssl_cafile``, ``sasl_mechanism``,
``sasl_plain_username``, ...) or their Java spellings (``security.protocol``); each client
gets the options it understands, and a name no client knows is a :class:`ConfigError`.

>>> split_config({"security.protocol": "SSL", "max_poll_records": 100}, "producer")
{'security_protocol': 'SSL'}
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from streamad.base import CommitError, ConfigError, DeliveryError, FailedSend, TransportError
from streamad.service.transport import BaseSource, Message, TopicPartition

__all__ = [
    "CLIENTS",
    "CONSUMER_DEFAULTS",
    "EMBEDDED_GROUP_TIMEOUTS",
    "PRODUCER_DEFAULTS",
    "KafkaOutputLog",
    "KafkaSink",
    "KafkaSource",
    "ensure_topics",
    "for_embedded_broker",
    "make_output_log",
    "make_sink",
    "make_source",
    "split_config",
]

log = logging.getLogger(__name__)

# -- configuration ----------------------------------------------------------------------

#: kafka-python backs off up to 30 s between attempts to reach a broker that went away (the
#: Java clients: 1 s), so after an outage the service came back up to half a minute late.
_RECONNECT = {"reconnect_backoff_max_ms": 1000}

#: Consumer defaults for a real cluster: read a new group's partitions from the start,
#: commit only what the pipeline finished, fetch in large batches, and look for partitions
#: added to the topics every 30 s (the clients' default is 5 min).
CONSUMER_DEFAULTS: dict[str, Any] = {
    **_RECONNECT,
    "metadata_max_age_ms": 30_000,
    "auto_offset_reset": "earliest",
    "enable_auto_commit": False,
    "max_poll_records": 1000,
    "fetch_max_wait_ms": 200,
    "fetch_min_bytes": 1,
    "max_partition_fetch_bytes": 1024 * 1024,
    "fetch_max_bytes": 32 * 1024 * 1024,
    "bootstrap_timeout_ms": 30_000,
}

#: Producer defaults: every replica acknowledges, retries until ``delivery_timeout_ms``,
#: short linger so events batch without adding visible latency. ``max_block_ms`` bounds how
#: long a send waits for topic metadata when the cluster is unreachable. Idempotence is off
#: (kafka-python turns it on by default): after a broker restart that forgets producer ids
#: (the embedded broker always does) kafka-python's epoch bump fails and every later send is
#: dropped; without it a retry may write a duplicate, which at-least-once delivery allows.
PRODUCER_DEFAULTS: dict[str, Any] = {
    **_RECONNECT,
    "acks": "all",
    "enable_idempotence": False,
    "retries": 2**31 - 1,
    "delivery_timeout_ms": 120_000,
    "linger_ms": 5,
    "batch_size": 64 * 1024,
    "max_block_ms": 10_000,
    "bootstrap_timeout_ms": 30_000,
}

#: Group timeouts for the embedded broker (Tansu): with the defaults a group join takes
#: ~20 s there. Fine for a single local broker, too aggressive for a loaded cluster.
EMBEDDED_GROUP_TIMEOUTS: dict[str, Any] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 10_000,
}


def for_embedded_broker(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``config`` with the short group timeouts that suit the embedded broker.

    >>> for_embedded_broker({"session_timeout_ms": 9000})["session_timeout_ms"]
    9000
    """
    return {**EMBEDDED_GROUP_TIMEOUTS, **(config or {})}


def _known_options() -> dict[str, set[str]]:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient

    return {
        "consumer": set(KafkaConsumer.DEFAULT_CONFIG),
        "producer": set(KafkaProducer.DEFAULT_CONFIG),
        "admin": set(KafkaAdminClient.DEFAULT_CONFIG),
    }


def split_config(config: Mapping[str, Any] | None, role: str) -> dict[str, Any]:
    """The options of ``config`` that the ``role`` client ("consumer", "producer", "admin")
    understands; Java-style dotted names are accepted. Unknown names raise ConfigError."""
    known = _known_options()
    if role not in known:
        raise ConfigError(f"unknown Kafka client role {role!r}")
    out: dict[str, Any] = {}
    unknown = []
    for name, value in (config or {}).items():
        opt = name.replace(".", "_").replace("-", "_")
        if opt == "bootstrap_servers":
            continue  # given explicitly as `bootstrap`
        if not any(opt in opts for opts in known.values()):
            unknown.append(name)
        elif opt in known[role]:
            out[opt] = value
    if unknown:
        raise ConfigError(f"unknown Kafka client option(s): {', '.join(sorted(unknown))}")
    return out


#: Idempotent-producer state errors (e.g. after a broker restart that forgot the producer
#: id). kafka-python recovers by bumping the producer epoch, but fails the batches that were
#: in flight; sending those again is safe, so the sink treats them as retriable.
_PRODUCER_STATE_ERRORS = ("UnknownProducerIdError", "OutOfOrderSequenceNumberError", "InvalidProducerEpochError")


def _retriable(e: BaseException) -> bool:
    return bool(getattr(e, "retriable", False)) or type(e).__name__ in _PRODUCER_STATE_ERRORS


def _kafka_error(e: Exception, what: str, cls: type[TransportError] = TransportError) -> TransportError:
    retriable = bool(getattr(e, "retriable", False))
    return cls(f"{what}: {type(e).__name__}: {e}", retriable=retriable)


def _construct(factory: Callable[..., Any], what: str, bootstrap: str, options: dict[str, Any]):
    from kafka.errors import KafkaConfigurationError, KafkaError

    try:
        return factory(bootstrap_servers=bootstrap, **options)
    except KafkaConfigurationError as e:
        raise ConfigError(f"bad Kafka {what} configuration: {e}") from e
    except KafkaError as e:
        raise _kafka_error(e, f"cannot connect the Kafka {what} to {bootstrap}") from e
    except (TypeError, ValueError, OSError) as e:
        raise ConfigError(f"bad Kafka {what} configuration: {e}") from e


# -- source -------------------------------------------------------------------------------


def _listener(source: KafkaSource, on_assign, on_revoke):
    from kafka import TopicPartition as TP
    from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener

    class Listener(AsyncConsumerRebalanceListener):
        # kafka-python runs rebalance listeners on its IO thread, where a blocking call
        # (commit, committed) raises. The pipeline's callbacks flush, commit and load
        # checkpoints, so they run on a helper thread while this coroutine yields to the
        # IO loop; the caller's poll() stays blocked meanwhile, so the pipeline never sees
        # them run concurrently with its own code.
        async def _run(self, cb, tps):
            if cb is None or not tps:
                return
            done = threading.Event()
            box: dict[str, BaseException] = {}

            def target():
                try:
                    cb(sorted((tp.topic, tp.partition) for tp in tps))
                except BaseException as e:  # re-raised from poll() on the caller's thread
                    box["error"] = e
                finally:
                    done.set()

            threading.Thread(target=target, name="streamad-rebalance", daemon=True).start()
            while not done.is_set():
                await source._consumer._net.sleep(0.002)
            if "error" in box:
                source._callback_error = box["error"]

        async def on_partitions_revoked(self, revoked):
            source._forget(revoked)
            await self._run(on_revoke, revoked)

        async def on_partitions_assigned(self, assigned):
            source._end_offsets_at = 0.0  # new partitions: refresh lag baselines
            if source._paused and assigned:
                source._consumer.pause(*[TP(tp.topic, tp.partition) for tp in assigned])
            await self._run(on_assign, assigned)

        async def on_partitions_lost(self, lost):
            # Another member owns them now; the callback may try to commit and fail, which
            # is safe (CommitError): the new owner resumes from the last good commit.
            await self.on_partitions_revoked(lost)

    return Listener()


def _offset_payload(offsets: Mapping[TopicPartition, int]) -> dict:
    """kafka-python's form of ``{(topic, partition): next offset}`` for a commit."""
    from kafka import TopicPartition as TP
    from kafka.structs import OffsetAndMetadata

    return {TP(t, p): OffsetAndMetadata(int(o), "", -1) for (t, p), o in offsets.items()}


def _log_failed_commit(offsets, response) -> None:
    if isinstance(response, BaseException):
        log.warning("asynchronous offset commit failed: %s", response)


class KafkaSource(BaseSource):
    """A consumer-group member that reads telemetry topics; offsets are committed by hand.

    Parameters
    ----------
    bootstrap
        ``host:port[,host:port...]`` of the cluster.
    group_id
        Consumer group; instances with the same group share the partitions.
    config
        Extra client options (security, fetch sizes, group timeouts...), see the module doc.
    commit_timeout_s
        How long :meth:`commit` and :meth:`committed` wait for the group coordinator.
    lag_refresh_s
        End offsets for :meth:`lag` are fetched at most this often (and taken from fetch
        responses in between), so lag costs little per poll. The fetch is also how the source
        notices that the broker stopped answering (:meth:`broker_contact`).

    Partitions added to a subscribed topic show up in the metadata the consumer refreshes
    every ``metadata_max_age_ms``; :meth:`poll` then leaves the group and joins it again, so
    the new partitions are assigned. (Apache Kafka would reassign them on the group leader's
    own rejoin, but the embedded broker, Tansu 0.6, keeps a group's generation when its
    members rejoin and hands back the previous assignment; a new member id gets a new one.)

    Raises :class:`TransportError` when no broker answers within ``bootstrap_timeout_ms``.
    """

    client = "kafka-python"

    def __init__(self, bootstrap: str, group_id: str = "streamad",
                 config: Mapping[str, Any] | None = None, *,
                 commit_timeout_s: float = 10.0, lag_refresh_s: float = 1.0):
        from kafka import KafkaConsumer

        options = {**CONSUMER_DEFAULTS, **split_config(config, "consumer")}
        if options.get("enable_auto_commit"):
            raise ConfigError("enable_auto_commit must stay off: streamad commits offsets after the sink acknowledged")
        self.bootstrap, self.group_id = bootstrap, group_id
        self.commit_timeout_s, self.lag_refresh_s = commit_timeout_s, lag_refresh_s
        self._paused = False
        self._closed = False
        self._callback_error: BaseException | None = None
        self._next: dict[TopicPartition, int] = {}
        self._end: dict[TopicPartition, int] = {}
        self._others: dict[TopicPartition, int] = {}  # lag of partitions assigned elsewhere
        self._end_offsets_at = 0.0
        self._topics: list[str] = []
        self._callbacks: tuple = (None, None)
        self._partition_counts: dict[str, int] = {}
        self._partitions_checked_at = 0.0
        self._rejoin_due = False
        self._consumer = _construct(KafkaConsumer, "consumer", bootstrap, {**options, "group_id": group_id})
        self._contact_at = time.monotonic()  # it answered the bootstrap

    # -- group membership -----------------------------------------------------------
    def subscribe(self, topics: list[str], on_assign=None, on_revoke=None) -> None:
        """Join the group for ``topics``. The callbacks get sorted ``[(topic, partition)]``
        from inside :meth:`poll`: ``on_assign`` after partitions arrive (load state, then
        :meth:`seek`), ``on_revoke`` before they leave (flush, commit, checkpoint)."""
        if isinstance(topics, str):
            topics = [topics]
        self._topics, self._callbacks = list(topics), (on_assign, on_revoke)
        self._consumer.subscribe(topics=list(topics), listener=_listener(self, on_assign, on_revoke))

    def _rejoin(self) -> None:
        """Leave the group and join again (new member id), after partitions were added.
        Leaving does not call the rebalance listener, so ``on_revoke`` runs here first."""
        on_assign, on_revoke = self._callbacks
        assigned = sorted(self.assignment())
        if on_revoke is not None and assigned:
            on_revoke(assigned)
        self._forget(self._consumer.assignment())
        self._consumer.unsubscribe()
        self._consumer.subscribe(topics=self._topics, listener=_listener(self, on_assign, on_revoke))
        self._end_offsets_at = 0.0

    def _check_partitions(self) -> None:
        """Note partitions added to the subscribed topics (from the cached metadata)."""
        for topic in self._topics:
            n = len(self._consumer.partitions_for_topic(topic) or ())
            before = self._partition_counts.get(topic)
            if n and before is not None and n > before:
                log.warning("event=partitions_added topic=%s partitions_before=%d partitions=%d action=rejoin_group",
                            topic, before, n)
                self._rejoin_due = True
            if n:
                self._partition_counts[topic] = max(n, before or 0)

    def assignment(self) -> set[TopicPartition]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def _forget(self, tps: Iterable) -> None:
        for tp in tps:
            key = (tp.topic, tp.partition)
            self._next.pop(key, None)
            self._end.pop(key, None)

    # -- reading --------------------------------------------------------------------
    def poll(self, timeout_s: float, max_records: int) -> list[Message]:
        """Up to ``max_records`` messages, in offset order within each partition; ``[]`` if
        none arrive within ``timeout_s`` (also while paused or while the broker is down)."""
        from kafka.errors import KafkaError

        now = time.monotonic()
        if now - self._partitions_checked_at >= self.lag_refresh_s:  # cached metadata: cheap
            self._partitions_checked_at = now
            self._check_partitions()
        if self._rejoin_due:
            self._rejoin_due = False
            self._rejoin()
        try:
            batches = self._consumer.poll(timeout_ms=max(0, int(timeout_s * 1000)), max_records=max_records)
        except KafkaError as e:
            err, self._callback_error = self._callback_error, None
            if err is not None:
                raise err from None
            raise _kafka_error(e, "poll failed") from e
        err, self._callback_error = self._callback_error, None
        if err is not None:
            raise err
        out: list[Message] = []
        for tp, records in batches.items():
            if not records:
                continue
            for r in records:
                out.append(Message(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp))
            self._next[(tp.topic, tp.partition)] = records[-1].offset + 1
        if out:
            self._contact_at = time.monotonic()
        return out

    def seek(self, tp: TopicPartition, offset: int) -> None:
        from kafka import TopicPartition as TP
        from kafka.errors import KafkaError

        try:
            self._consumer.seek(TP(tp[0], tp[1]), int(offset))
        except (KafkaError, AssertionError) as e:
            raise TransportError(f"cannot seek {tp[0]}[{tp[1]}] to {offset}: {e}", retriable=False) from e
        self._next[(tp[0], tp[1])] = int(offset)

    def pause(self) -> None:
        """Stop fetching from every assigned partition (also those assigned later) until
        :meth:`resume`; the group membership stays alive as long as :meth:`poll` is called."""
        self._paused = True
        self._consumer.pause(*self._consumer.assignment())

    def resume(self) -> None:
        self._paused = False
        self._consumer.resume(*self._consumer.paused())

    @property
    def paused(self) -> bool:
        return self._paused

    # -- offsets --------------------------------------------------------------------
    def commit(self, offsets: Mapping[TopicPartition, int], timeout_s: float | None = None) -> None:
        """Commit ``{(topic, partition): next offset to read}`` synchronously, waiting at most
        ``timeout_s`` (default ``commit_timeout_s``).

        Raises :class:`CommitError`: retriable on timeouts / broker outage; not retriable
        when the group moved on (the partition belongs to another member now)."""
        from kafka.errors import CommitFailedError, KafkaError

        if not offsets:
            return
        payload = _offset_payload(offsets)
        timeout = self.commit_timeout_s if timeout_s is None else min(timeout_s, self.commit_timeout_s)
        try:
            self._consumer.commit(payload, timeout_ms=max(1, int(timeout * 1000)))
            self._contact_at = time.monotonic()
        except CommitFailedError as e:
            raise CommitError(f"commit rejected, the group rebalanced: {e}", retriable=False) from e
        except (KafkaError, RuntimeError) as e:
            raise _kafka_error(e, "commit failed", CommitError) from e

    def commit_async(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit without waiting for the broker's answer; a failure is logged (a later commit
        covers the same offsets)."""
        from kafka.errors import KafkaError

        if not offsets:
            return
        try:
            self._consumer.commit_async(_offset_payload(offsets), callback=_log_failed_commit)
        except (KafkaError, RuntimeError) as e:
            raise _kafka_error(e, "commit failed", CommitError) from e

    def committed(self, tp: TopicPartition) -> int | None:
        from kafka import TopicPartition as TP
        from kafka.errors import KafkaError

        try:
            return self._consumer.committed(TP(tp[0], tp[1]), timeout_ms=int(self.commit_timeout_s * 1000))
        except (KafkaError, RuntimeError) as e:
            raise _kafka_error(e, f"cannot read the committed offset of {tp[0]}[{tp[1]}]") from e

    def position(self, tp: TopicPartition) -> int | None:
        """The next offset :meth:`poll` returns for ``tp``, if known without a broker call."""
        return self._next.get((tp[0], tp[1]))

    def end_offset(self, tp: TopicPartition) -> int | None:
        """The log end offset of ``tp``; None when the broker does not answer in time."""
        from kafka import TopicPartition as TP
        from kafka.errors import KafkaError

        try:
            ends = self._consumer.end_offsets([TP(tp[0], tp[1])], timeout_ms=2000)
        except (KafkaError, RuntimeError) as e:
            log.debug("end offset of %s[%d] unavailable: %s", tp[0], tp[1], e)
            return None
        end = next(iter(ends.values()), None)
        return None if end is None else int(end)

    def broker_contact(self) -> float | None:
        """``time.monotonic()`` of the broker's last answer (a fetch with records, a commit,
        or the end offsets :meth:`lag` asks for every ``lag_refresh_s``)."""
        return self._contact_at

    def lag(self) -> dict[TopicPartition, int]:
        """Records behind the end of every partition of the subscribed topics: from this
        member's position for its own partitions, from the group's committed offset for the
        others (assigned to another member, or to none yet: added partitions before the
        group rebalanced), so new partitions show their backlog instead of being missing."""
        from kafka import TopicPartition as TP
        from kafka.errors import KafkaError

        assigned = list(self._consumer.assignment())
        now = time.monotonic()
        if now - self._end_offsets_at >= self.lag_refresh_s:
            self._end_offsets_at = now
            everything = [TP(t, p) for t in self._topics for p in sorted(self._consumer.partitions_for_topic(t) or ())]
            # partitions without a position here: another member's, or not fetched from yet
            others = [tp for tp in everything if (tp.topic, tp.partition) not in self._next]
            try:
                if not everything:  # no metadata yet: nothing to ask
                    raise RuntimeError("no partitions known yet")
                ends = self._consumer.end_offsets(everything, timeout_ms=1000)
                self._contact_at = time.monotonic()
                self._end.update({(tp.topic, tp.partition): int(o) for tp, o in ends.items()})
                committed = self._committed_many(others) if others else {}
                self._others = {(tp.topic, tp.partition): max(0, self._end[(tp.topic, tp.partition)]
                                                              - (committed.get(tp) or 0))
                                for tp in others if (tp.topic, tp.partition) in self._end}
            except (KafkaError, RuntimeError) as e:  # outage: keep the last known ends
                log.debug("end offsets unavailable: %s", e)
        out = dict(self._others)
        for tp in assigned:
            key = (tp.topic, tp.partition)
            pos = self._next.get(key)
            if pos is None:
                continue
            try:
                high = self._consumer.highwater(TP(tp.topic, tp.partition))
            except KafkaError:
                high = None
            end = max(x for x in (high, self._end.get(key), pos) if x is not None)
            out[key] = end - pos
        return out

    def _committed_many(self, tps: list) -> dict:
        """The group's committed offsets of ``tps`` in one request (None where there is none)."""
        from kafka.errors import KafkaError

        try:
            got = self._consumer._coordinator.fetch_committed_offsets(set(tps), timeout_ms=1000)
        except (KafkaError, RuntimeError, AttributeError) as e:
            log.debug("committed offsets unavailable: %s", e)
            return {}
        return {tp: (None if om is None else om.offset) for tp, om in (got or {}).items()}

    def close(self, timeout_s: float | None = None) -> None:
        """Leave the group (``on_revoke`` runs first), waiting at most ``timeout_s`` (default
        ``commit_timeout_s``) for the broker. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        timeout = self.commit_timeout_s if timeout_s is None else timeout_s
        try:
            self._consumer.close(autocommit=False, timeout_ms=max(1, int(timeout * 1000)))
        except Exception as e:  # closing must not mask the reason we are closing
            log.warning("closing the Kafka consumer: %s", e)

    def __enter__(self) -> KafkaSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- sink ---------------------------------------------------------------------------------

_Outgoing = tuple[str, bytes | None, bytes, list | None]


class KafkaSink:
    """Producer with ``acks="all"``; :meth:`flush` returns only when every message sent
    since the last flush is acknowledged, and raises :class:`DeliveryError` otherwise.

    ``send`` never raises for delivery problems: failures are collected from the send
    futures and reported by the next ``flush``; retriable ones are re-sent by it.
    """

    client = "kafka-python"

    def __init__(self, bootstrap: str, config: Mapping[str, Any] | None = None):
        from kafka import KafkaProducer

        options = {**PRODUCER_DEFAULTS, **split_config(config, "producer")}
        self.bootstrap = bootstrap
        self._lock = threading.Lock()
        self._failed: list[FailedSend] = []
        self._retry: list[_Outgoing] = []
        self._holding = False  # a send just failed for lack of a broker: queue, don't block
        self._closed = False
        self.sent = 0
        self._group = 0  # mark() number of the sends now being made
        self._inflight: deque[tuple[int, Any]] = deque()  # (mark group, send future), oldest first
        self._producer = _construct(KafkaProducer, "producer", bootstrap, options)

    def send(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
        if self._closed:
            raise TransportError("send on a closed sink", retriable=False)
        if self._holding:
            self._retry.append((topic, key, value, headers))
            return
        self._send((topic, key, value, headers))

    def _send(self, msg: _Outgoing) -> None:
        from kafka.errors import KafkaError

        topic, key, value, headers = msg
        try:
            fut = self._producer.send(topic, key=key, value=value, headers=headers)
        except KafkaError as e:
            retriable = _retriable(e)
            if retriable:
                self._holding = True
            with self._lock:
                self._failed.append(FailedSend(topic, key, value, f"{type(e).__name__}: {e}", retriable, headers))
            return
        self.sent += 1
        fut.add_errback(self._on_error, msg)
        self._inflight.append((self._group, fut))

    def mark(self) -> int:
        """Close the group of messages sent since the last mark; see :meth:`acked`."""
        self._group += 1
        return self._group - 1

    def acked(self, token: int) -> bool:
        """True once every message sent up to mark ``token`` is acknowledged (does not block);
        False while any is pending, held for a retry or failed (:meth:`flush` reports failures)."""
        inflight = self._inflight
        while inflight and inflight[0][1].is_done:
            inflight.popleft()
        with self._lock:
            failed = bool(self._failed)
        return not (failed or self._retry or self._holding) and (not inflight or inflight[0][0] > token)

    def _on_error(self, msg: _Outgoing, exc: BaseException) -> None:  # runs on the IO thread
        topic, key, value, headers = msg
        with self._lock:
            self._failed.append(FailedSend(topic, key, value, f"{type(exc).__name__}: {exc}",
                                           _retriable(exc), headers))

    def flush(self, timeout_s: float = 30.0) -> None:
        """Send what is queued and wait for acknowledgements of everything sent so far.

        Raises :class:`DeliveryError` (``retriable=True``: call ``flush`` again later; the
        sink keeps and re-sends the messages) if anything is unacknowledged."""
        from kafka.errors import KafkaError

        retry, self._retry, self._holding = self._retry, [], False
        for i, msg in enumerate(retry):
            if self._holding:  # broker still unreachable: keep the rest for next time
                self._retry.extend(retry[i:])
                break
            self._send(msg)
        try:
            self._producer.flush(timeout=timeout_s)
            self._inflight.clear()  # all done: acknowledged, or failed and reported below
        except KafkaError as e:
            raise DeliveryError(f"messages not acknowledged within {timeout_s:g} s: {e}", [], retriable=True) from e
        with self._lock:
            failed, self._failed = self._failed, []
        if not failed and not self._retry:
            return
        held = self._retry
        again = [f for f in failed if f.retriable]
        self._retry = [(f.topic, f.key, f.value, f.headers) for f in again] + held
        permanent = len(failed) - len(again)
        first = failed[0].error if failed else "broker unreachable"
        raise DeliveryError(
            f"{len(failed) + len(held)} message(s) not delivered, {permanent} of them dropped "
            f"as undeliverable; first error: {first}",
            failed, retriable=permanent == 0)

    @property
    def pending_retries(self) -> int:
        """Messages held for the next flush after retriable failures."""
        return len(self._retry)

    def close(self, timeout_s: float | None = 10.0) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._producer.close(timeout=10.0 if timeout_s is None else timeout_s)
        except Exception as e:
            log.warning("closing the Kafka producer: %s", e)

    def __enter__(self) -> KafkaSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class KafkaOutputLog:
    """Reads back a topic the service publishes to (:class:`~streamad.service.transport.OutputLog`):
    a consumer outside any group, assigned the topic's partitions only while it reads."""

    def __init__(self, bootstrap: str, config: Mapping[str, Any] | None = None, *, timeout_s: float = 30.0):
        from kafka import KafkaConsumer

        options = {**CONSUMER_DEFAULTS, **split_config(config, "consumer"), "enable_auto_commit": False}
        self.timeout_s = timeout_s
        self._consumer = _construct(KafkaConsumer, "consumer", bootstrap, {**options, "group_id": None})

    def end_offsets(self, topic: str) -> dict[int, int]:
        from kafka import TopicPartition as TP
        from kafka.errors import KafkaError

        try:
            parts = self._consumer.partitions_for_topic(topic)
            if not parts:
                return {}
            ends = self._consumer.end_offsets([TP(topic, p) for p in sorted(parts)], timeout_ms=5000)
        except (KafkaError, RuntimeError) as e:
            raise TransportError(f"cannot read the end offsets of {topic}: {type(e).__name__}: {e}") from e
        return {tp.partition: int(o) for tp, o in ends.items()}

    def read(self, topic: str, starts: dict[int, int]) -> list[Message]:
        from kafka import TopicPartition as TP
        from kafka.errors import KafkaError

        ends = self.end_offsets(topic)
        todo = {TP(topic, p): end for p, end in ends.items() if starts.get(p, 0) < end}
        out: list[Message] = []
        if not todo:
            return out
        c = self._consumer
        try:
            c.assign(list(todo))
            for tp in todo:
                c.seek(tp, starts.get(tp.partition, 0))
            deadline = time.monotonic() + self.timeout_s
            while todo:
                if time.monotonic() > deadline:
                    raise TransportError(f"reading {topic} back took over {self.timeout_s:g} s")
                for tp, msgs in c.poll(timeout_ms=200).items():
                    out += [Message(m.topic, m.partition, m.offset, m.key, m.value) for m in msgs
                            if m.offset < todo.get(tp, -1)]
                todo = {tp: end for tp, end in todo.items() if c.position(tp) < end}
        except (KafkaError, RuntimeError) as e:
            raise TransportError(f"cannot read {topic} back: {type(e).__name__}: {e}") from e
        finally:
            c.unsubscribe()
        return out

    def close(self) -> None:
        try:
            self._consumer.close(autocommit=False)
        except Exception as e:  # closing must not mask the reason we are closing
            log.warning("closing the read-back consumer: %s", e)


def make_output_log(bootstrap: str, config: Mapping[str, Any] | None = None, client: str = "kafka-python"):
    """An :class:`~streamad.service.transport.OutputLog` for ``bootstrap`` using ``client``."""
    if _check_client(client) == "confluent":
        from connectors.confluent import ConfluentOutputLog

        return ConfluentOutputLog(bootstrap, dict(config or {}))
    return KafkaOutputLog(bootstrap, config)


# -- topics and factories ------------------------------------------------------------------


def ensure_topics(bootstrap: str, topics: Mapping[str, int], config: Mapping[str, Any] | None = None,
                  replication_factor: int = 1, timeout_s: float = 30.0) -> dict[str, int]:
    """Create the missing ``{topic: partitions}``; returns every topic's partition count.

    Existing topics are left alone (a topic with fewer partitions than asked for is logged,
    not resized: resizing moves keys between partitions).
    """
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    admin = _construct(KafkaAdminClient, "admin client", bootstrap,
                       {"bootstrap_timeout_ms": int(timeout_s * 1000), **split_config(config, "admin")})
    try:
        existing = set(admin.list_topics())
        missing = {t: n for t, n in topics.items() if t not in existing}
        if missing:
            admin.create_topics(
                {t: {"num_partitions": int(n), "replication_factor": replication_factor} for t, n in missing.items()},
                timeout_ms=int(timeout_s * 1000), raise_errors=False)
        counts: dict[str, int] = {}
        deadline = time.monotonic() + timeout_s
        while True:
            described = {d["name"]: len(d.get("partitions") or []) for d in admin.describe_topics(list(topics))}
            counts = {t: described.get(t, 0) for t in topics}
            if all(counts[t] >= 1 for t in topics) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    except KafkaError as e:
        raise _kafka_error(e, f"cannot create topics on {bootstrap}") from e
    finally:
        admin.close()
    for t, n in topics.items():
        if counts[t] == 0:
            raise TransportError(f"topic {t!r} did not appear on {bootstrap} within {timeout_s:g} s")
        if counts[t] < n:
            log.warning("topic %s has %d partitions, %d were asked for; left as is", t, counts[t], n)
    return counts


#: Client names accepted by :func:`make_source` / :func:`make_sink`.
CLIENTS = ("kafka-python", "confluent")
_ALIASES = {"kafka-python": "kafka-python", "kafka_python": "kafka-python",
            "confluent": "confluent", "confluent-kafka": "confluent", "confluent_kafka": "confluent"}


def _check_client(client: str) -> str:
    try:
        return _ALIASES[client]
    except KeyError:
        raise ConfigError(f"unknown Kafka client {client!r}; choose one of {', '.join(CLIENTS)}") from None


def make_source(bootstrap: str, group_id: str = "streamad", config: Mapping[str, Any] | None = None,
                client: str = "kafka-python", **kwargs):
    """A :class:`~streamad.service.transport.Source` for ``bootstrap`` using ``client``
    ("kafka-python", the default, or "confluent" from :mod:`connectors.confluent`, which
    takes librdkafka option names; :func:`for_embedded_broker` suits both clients).

    >>> make_source("127.0.0.1:9", client="jafka")
    Traceback (most recent call last):
    ...
    streamad.base.ConfigError: unknown Kafka client 'jafka'; choose one of kafka-python, confluent
    """
    if _check_client(client) == "confluent":
        from connectors.confluent import ConfluentSource

        return ConfluentSource(bootstrap, group_id, dict(config or {}))
    return KafkaSource(bootstrap, group_id, config, **kwargs)


def make_sink(bootstrap: str, config: Mapping[str, Any] | None = None, client: str = "kafka-python"):
    """A :class:`~streamad.service.transport.Sink` for ``bootstrap`` using ``client``."""
    if _check_client(client) == "confluent":
        from connectors.confluent import ConfluentSink

        return ConfluentSink(bootstrap, dict(config or {}))
    return KafkaSink(bootstrap, config)
