"""The streaming pipeline: poll -> decode -> per-key detector and threshold -> incidents.

Each key's threshold decisions go through its incident state machine
(:class:`~streamad.incidents.IncidentTracker`): the anomalies topic gets one
``incident_open`` when something starts, a few ``incident_update`` while it grows and one
``incident_close`` after a quiet gap (and/or, as an option, one ``anomaly`` event per flagged
record, ``config.publish``).

Delivery is at-least-once: input offsets are committed only after the sink flushed every
output derived from them. State (detectors, thresholds and open incidents of the keys seen
on a partition) is checkpointed per partition together with the offset it reflects, the
first time (empty) at the partition's first record; on assignment the consumer seeks back to
that offset, so scores after a restart continue from the restored state (records between
checkpoint and crash are scored again: duplicate scores carry the same source offset and the
same score). Messages on the anomalies topic are not repeated: a checkpoint records where
that topic ended when it was written, and a partition restored from it first reads what was
published for it since (an ``outputs`` log, :class:`~streamad.service.transport.OutputLog`),
then suppresses those messages when the records that caused them are scored again.

:class:`Pipeline` runs the loop and composes the parts, one module each:

- :mod:`.scoring` (:class:`~.scoring.Scorer`): decode, per-key detectors and thresholds,
  incidents, what goes to the sink, the counts;
- :mod:`.delivery` (:class:`~.delivery.Delivery`): flushes, commits, the two commit modes;
- :mod:`.partitions` (:class:`~.partitions.PartitionState`): each partition's state,
  checkpoints, restores, assignment and revocation, the read-back after a restore;
- :mod:`.gctuning` (:class:`~.gctuning.GcTuning`): garbage collection between batches.
"""

from __future__ import annotations

import json
import logging
import operator
import time
from collections.abc import Callable
from typing import Any

from ..base import BaseDetector, ServiceError, StreamadError
from .config import ServiceConfig
from .deadletter import DeadLetterSink
from .delivery import Delivery
from .gctuning import GcTuning
from .partitions import Partition, PartitionState
from .scoring import Scorer, models_for
from .store import FileStateStore, StateStore
from .transport import Message, OutputLog, Sink, Source, TopicPartition

__all__ = ["Pipeline", "ServiceError"]

log = logging.getLogger("streamad.service")


def _part(part: str, name: str, doc: str, settable: bool = False) -> property:
    """An attribute of one of the pipeline's parts (``part``: ``"scorer"``, ``"delivery"``,
    ``"collector"``), read (and with ``settable``, set) as an attribute of the pipeline."""

    def put(self, value) -> None:
        setattr(operator.attrgetter(part)(self), name, value)

    return property(operator.attrgetter(f"{part}.{name}"), put if settable else None, doc=doc)


class Pipeline:
    """Runs the service loop over any :class:`Source`/:class:`Sink` pair.

    Parameters
    ----------
    dead_letter
        ``(message, reason) -> None``; default: a :class:`~.deadletter.DeadLetterSink` to the
        dead-letter topic through ``sink`` that keeps the original values whole (``streamad
        serve`` passes one that cuts them to fit a Kafka message).
    detector_factory, threshold_factory
        Zero-argument builders of a fresh per-key detector (a
        :class:`~streamad.base.BaseDetector`) / threshold; default: from ``config``.
    state_store
        Where partition checkpoints go (:mod:`.store`); default: files under
        ``config.checkpoint_dir`` when it is set, else no checkpoints.
    outputs
        Where the anomalies topic can be read back (:class:`~.transport.OutputLog`; crash
        safety, see the module doc); None: a crash after a message's acknowledgement and
        before the next checkpoint repeats it.
    """

    def __init__(self, source: Source, sink: Sink, config: ServiceConfig, *,
                 dead_letter: Callable[[Message, str], None] | None = None,
                 detector_factory: Callable[[], BaseDetector] | None = None,
                 threshold_factory: Callable[[], Any] | None = None,
                 metrics=None, on_event: Callable[[dict], None] | None = None, outputs: OutputLog | None = None,
                 state_store: StateStore | None = None) -> None:
        if state_store is None and config.checkpoint_dir:
            state_store = FileStateStore(config.checkpoint_dir, config.group)
        config, detector_factory, threshold_factory = models_for(config, detector_factory, threshold_factory)
        self._source, self.sink, self.config, self.metrics = source, sink, config, metrics
        if dead_letter is None:
            dead_letter = DeadLetterSink(sink, config.dead_letter_topic, max_original_bytes=None).send
        self.partitions: dict[TopicPartition, Partition] = {}
        self.scorer = Scorer(config, sink, self.partitions, detector_factory=detector_factory,
                             threshold_factory=threshold_factory, dead_letter=dead_letter, metrics=metrics,
                             on_event=on_event)
        self.stopping = False
        self.stop_requested_at: float | None = None
        # after shutdown(): True when every output was delivered, the checkpoints written and
        # the final commit accepted (the exit code of `streamad serve` says so)
        self.clean_stop: bool | None = None
        self.last_batch_at = time.monotonic()
        self.delivery = Delivery(source, sink, config, offsets=lambda: self.state.offsets(),
                                 stopping=lambda: self.stopping, deadline=self.shutdown_deadline)
        self.state = PartitionState(config, self.partitions, self.scorer, self.delivery, source, state_store, outputs,
                                    metrics)
        self.collector = GcTuning()

    # -- the parts' settings and counts, as attributes of the pipeline ----------------------
    @property
    def source(self) -> Source:
        return self._source

    @source.setter
    def source(self, source: Source) -> None:
        self._source = self.delivery.source = self.state.source = source

    @property
    def detector_factory(self) -> Callable[[], BaseDetector]:
        return self.scorer.detector_factory

    @property
    def threshold_factory(self) -> Callable[[], Any]:
        return self.scorer.threshold_factory

    on_event = _part("scorer", "on_event", "Called with every message sent to the anomalies topic.", settable=True)

    records_in = _part("scorer", "records_in", "Records polled.")
    scored = _part("scorer", "scored", "Records scored (not dead letters).")
    events_out = _part("scorer", "events_out", "Messages sent to the anomalies topic.")
    dead_letters = _part("scorer", "dead_letters", "Records sent to the dead-letter topic.")
    schema_changes = _part("scorer", "schema_changes", "Keys whose detector was re-created on a new feature set.")
    incidents_opened = _part("scorer", "incidents_opened", "Incidents opened.")
    incidents_closed = _part("scorer", "incidents_closed", "Incidents closed.")
    incidents_open = _part("scorer", "incidents_open", "Incidents open now on the partitions held here.")
    suppressed = _part("scorer", "suppressed", "Messages not sent again after a restart (already on the topic).")

    max_pending_batches = _part("delivery", "max_pending_batches", 'commit_mode "pipelined": unacknowledged '
                                "batches before a flush (:class:`~.delivery.Delivery`).", settable=True)
    full_gc_every_s = _part("collector", "full_every_s", "With ``manage_gc``: seconds between full collections "
                            "(:mod:`.gctuning`) ...", settable=True)
    deep_gc_every_s = _part("collector", "deep_every_s", "... and between deep ones, which first unfreeze everything.",
                            settable=True)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self.source.subscribe(list(self.config.input_topics), on_assign=self._on_assign, on_revoke=self._on_revoke)

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in flight (safe from a signal handler);
        from now on, :meth:`run` and :meth:`shutdown` end within ``config.shutdown_timeout_s``
        less :attr:`close_reserve_s` (left for closing the clients)."""
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
        self.stopping = True

    #: Seconds of the shutdown time kept for closing the Kafka clients after :meth:`shutdown`
    #: (at most a quarter of it).
    close_reserve_s = 4.0

    def shutdown_deadline(self) -> float:
        """When :meth:`shutdown` must be done: ``shutdown_timeout_s`` after :meth:`stop`
        (or from now), less the time kept for closing the clients."""
        start = self.stop_requested_at if self.stop_requested_at is not None else time.monotonic()
        timeout = self.config.shutdown_timeout_s
        return start + timeout - min(self.close_reserve_s, timeout / 4)

    def run(self, max_seconds: float | None = None, until: Callable[[], bool] | None = None) -> None:
        """Process batches until :meth:`stop`, ``max_seconds`` or ``until()``; then shut down cleanly."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            while not self.stopping:
                self.run_once()
                if deadline is not None and time.monotonic() > deadline or until is not None and until():
                    break
        finally:
            self.shutdown()

    def shutdown(self) -> bool:
        """Flush, checkpoint and commit everything held, by :meth:`shutdown_deadline` whatever
        the broker does; the source and sink stay open. Returns (and keeps in
        :attr:`clean_stop`) whether all of it succeeded.

        The checkpoints come before the commit: they need only the outputs delivered, so with
        the broker gone after the flush they are still written, and the next start resumes
        from them. Nothing is lost when the commit then fails (the checkpoints are ahead of
        the group's offsets, which a restart does not read). When the outputs cannot be
        delivered, the previous checkpoints stay: the next start scores those records again.
        """
        if self.clean_stop is not None:
            return self.clean_stop
        self.collector.release()  # automatic collection was switched off by _collect_garbage
        deadline = self.shutdown_deadline()
        delivered = self.delivery.flush(deadline)
        saved = committed = False
        if delivered:
            saved = all([self.state.checkpoint(tp, deadline) for tp in list(self.partitions)])
            committed = self.delivery.commit(self.state.offsets(), deadline)
        else:
            log.warning("event=checkpoint_skipped reason=%s", json.dumps(
                "outputs not delivered by the shutdown deadline; the previous checkpoints stay"))
        self.clean_stop = delivered and saved and committed
        started = self.stop_requested_at
        log.info("event=shutdown outputs_delivered=%s checkpoints_written=%s committed=%s seconds=%s",
                 str(delivered).lower(), str(saved).lower(), str(committed).lower(),
                 "-" if started is None else f"{time.monotonic() - started:.1f}")
        return self.clean_stop

    # -- the loop -------------------------------------------------------------------------
    #: Set when the process runs only this pipeline (``streamad serve``): the cyclic garbage
    #: collector then runs between batches, not inside them (:mod:`.gctuning`).
    manage_gc = False

    def run_once(self) -> int:
        """Poll one batch, score it, flush outputs, then commit its offsets. Returns its size."""
        n = self._run_once()
        if self.manage_gc:
            self._collect_garbage()  # the batch's objects are gone now
        return n

    def _collect_garbage(self) -> None:
        """Run the cyclic garbage collector at a batch boundary (:class:`~.gctuning.GcTuning`)."""
        self.collector.collect()

    def _run_once(self) -> int:
        try:
            batch = self.source.poll(self.config.poll_timeout_s, self.config.batch_size)
        except StreamadError as e:
            if not e.retriable:
                raise
            log.warning("event=poll_failed error=%s", json.dumps(str(e)))  # broker away: try again
            time.sleep(1.0)
            return 0
        now = self.last_batch_at = time.monotonic()
        self._watch_broker()
        delivery = self.delivery
        if not batch:
            if delivery.unacked:
                self._commit_now(now)
            self.state.maybe_checkpoint()
            return 0
        t0 = time.perf_counter()
        if delivery.points:  # pipelined: what was acknowledged during the poll, before scoring
            delivery.commit_acked()
        self.scorer.process(batch, self.state.new)
        delivery.unacked += len(batch)
        if delivery.pipelined:
            self._mark_and_commit_acked(now)
        elif now - delivery.committed_at >= self.config.commit_interval_s:
            self._commit_now(now)
        if self.metrics is not None:
            self.metrics.records_in.inc(len(batch))
            self.metrics.latency.observe(time.perf_counter() - t0)
        return len(batch)

    def _mark_and_commit_acked(self, now: float) -> None:
        """commit_mode "pipelined": remember this batch's offsets with a mark of the sink's
        sends, then commit, without waiting, the newest offsets all of whose outputs (and
        those of every batch before) the broker has acknowledged. A checkpoint that falls
        due, or acknowledgements that lag too far, take the waiting path (:meth:`_commit_now`)."""
        self.delivery.mark(now)
        self.delivery.commit_acked()
        if self.delivery.lagging(now):
            self._commit_now(now)
        else:
            self.state.maybe_checkpoint()

    def _commit_now(self, now: float) -> None:
        """Wait for the outputs' acknowledgements, then commit the offsets they cover without
        waiting for the broker's answer (Kafka's usual loop: asynchronous commits while
        running, a synchronous one at shutdown, on revocation and before a checkpoint)."""
        # Checkpoints follow a commit: their offsets must never run ahead of acknowledged output.
        if not self.delivery.flush_and_commit(wait_for_commit=False):
            return  # stopping while the sink cannot deliver: shutdown() tries once more
        self.delivery.unacked, self.delivery.committed_at = 0, now
        self.state.maybe_checkpoint()

    # -- health ---------------------------------------------------------------------------
    def _watch_broker(self) -> None:
        """Refresh the lag gauges (the source asks the broker at most every second or so,
        which is also how it notices that the broker stopped answering: :meth:`health`)."""
        if self.metrics is None:
            return
        try:
            lag = self.source.lag()
        except Exception:  # lag is best effort; a failing metadata call must not stop scoring
            return
        for (topic, partition), n in lag.items():
            self.metrics.lag.labels(topic, str(partition)).set(n)
        contact = self.source.broker_contact()
        if contact is not None:
            self.metrics.broker_silence.set(max(0.0, time.monotonic() - contact))

    def health(self) -> tuple[bool, str]:
        """``(healthy, reason)`` for ``/healthz`` (safe from another thread): unhealthy when the
        broker has not answered for ``broker_timeout_s`` (it is healthy again as soon as it
        answers), or when the loop has not polled for a minute (stuck)."""
        now = time.monotonic()
        contact = self.source.broker_contact()
        if contact is not None and now - contact > self.config.broker_timeout_s:
            return False, (f"broker unreachable: no answer from {self.config.bootstrap} for {now - contact:.1f} s "
                           f"(limit {self.config.broker_timeout_s:g} s)")
        stale_after = max(60.0, 20 * self.config.poll_timeout_s)
        if now - self.last_batch_at > stale_after:
            return False, f"no poll for {now - self.last_batch_at:.0f} s (limit {stale_after:g} s)"
        return True, "ok"

    # -- rebalances (called inside the source's poll) ----------------------------------------
    def _on_assign(self, tps: list[TopicPartition]) -> None:
        self.state.assign(tps)

    @property
    def _restore(self) -> Callable[[TopicPartition], tuple[int, dict | None] | None]:
        """:meth:`PartitionState.restore <.partitions.PartitionState.restore>`, which loads a
        partition's checkpoint when it is assigned; replaceable here, where it used to live,
        so a test can watch which partitions resume from a checkpoint."""
        return self.state.restore

    @_restore.setter
    def _restore(self, restore: Callable[[TopicPartition], tuple[int, dict | None] | None]) -> None:
        self.state.restore = restore

    def _on_revoke(self, tps: list[TopicPartition]) -> None:
        # Called inside poll, between batches: everything processed so far is in ``partitions``.
        # After shutdown() (the source's close revokes everything) there is nothing left to do.
        if self.clean_stop is None and self.delivery.flush_and_commit():
            for tp in tps:
                self.state.checkpoint(tp)
        self.state.drop(tps)
        self.collector.deep_due = True  # the state dropped here may be frozen (:mod:`.gctuning`)
