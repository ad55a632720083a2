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
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import gc
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import _state
from ..base import BaseDetector, ConfigError, Decision, DecodeError, StateError, StreamadError
from ..incidents import IncidentTracker
from ..records import decode
from .config import ServiceConfig
from .store import FileStateStore, StateStore
from .transport import Message, Sink, Source, TopicPartition

__all__ = ["Pipeline", "ServiceError", "dead_letter_json"]

log = logging.getLogger("streamad.service")


class ServiceError(StreamadError):
    """The service cannot continue (e.g. the sink keeps failing to deliver); ``retriable``
    when trying again later may work."""

    def __init__(self, message: str, retriable: bool = False):
        super().__init__(message)
        self.retriable = retriable


def dead_letter_json(message: Message, reason: str) -> bytes:
    """A dead-letter record: the reason, the source coordinates and the original bytes."""
    return json.dumps({
        "reason": reason, "kind": "decode",
        "source": {"topic": message.topic, "partition": message.partition, "offset": message.offset},
        "key_b64": None if message.key is None else base64.b64encode(message.key).decode(),
        "value_b64": None if message.value is None else base64.b64encode(message.value).decode(),
    }, separators=(",", ":")).encode()


class _Partition:
    __slots__ = ("models", "next_offset", "since_checkpoint", "checkpointed_at", "heads", "incidents", "context",
                 "id_prefix", "delivered", "replay_until", "schema_runs")

    def __init__(self, tp: TopicPartition, detector: str) -> None:
        self.models: dict[str, tuple[Any, Any]] = {}  # key -> (detector, threshold)
        self.heads: dict[str, tuple[bytes, str, str]] = {}  # key -> its output key and JSON parts
        self.incidents: dict[str, IncidentTracker] = {}  # key -> its open incident (none: no entry)
        self.context = {"detector": detector, "topic": tp[0], "partition": tp[1]}
        self.id_prefix = f"{tp[0]}:{tp[1]}:"
        # After a restore: (key, message type) -> the highest source offset of such a message
        # already on the anomalies topic (those are not sent again), until the records up to
        # ``replay_until`` are scored again
        self.delivered: dict[tuple[str, str], int] | None = None
        self.replay_until = -1
        # key -> (sorted feature names, count): the latest records of the key came, this many
        # in a row, with these features instead of its detector's (see _schema_changes)
        self.schema_runs: dict[str, tuple[tuple[str, ...], int]] = {}
        self.next_offset: int | None = None
        self.since_checkpoint = 0
        self.checkpointed_at = time.monotonic()


_WARMING_UP = Decision(False, math.inf)


def _has_features(values: dict, feats: list) -> bool:
    return len(values) == len(feats) and all(f in values for f in feats)


def _skipping(update: Callable[[float], Decision], n: int) -> Callable[[float], Decision]:
    """``update`` that answers "no anomaly" to its first ``n`` scores without learning them."""
    left = n

    def skip(score: float) -> Decision:
        nonlocal left
        if left > 0:
            left -= 1
            return _WARMING_UP
        return update(score)

    return skip


class _KeyBatch:
    """One key's part of a batch while it is being scored."""

    __slots__ = ("detector", "threshold", "pairs", "scores", "rows", "ok", "width", "warm0")

    def __init__(self, detector: Any, threshold: Any) -> None:
        self.detector, self.threshold = detector, threshold
        self.warm0 = getattr(detector, "warmup_scores_", 0)  # to tell this batch's warm-up scores
        self.pairs: list = []   # (message, record) scored so far, in order ...
        self.scores: list = []  # ... and their scores
        self.rows: list = []    # feature values still to score, ``width`` per record, flat ...
        self.ok: list = []      # ... and their (message, record)
        self.width = 0


def trained_detector_factory(path: str) -> Callable[[], Any]:
    """A builder of per-key detectors that all start from the trained detector saved at
    ``path`` (a state file of ``streamad detect --save-state``; npz, never pickle)."""
    from .. import detectors

    try:
        blob = Path(path).read_bytes()
        tree = _state.loads(blob)
    except OSError as e:
        raise ConfigError(f"cannot read detector state {path}: {e.strerror}") from None
    except StateError as e:
        raise ConfigError(f"detector state {path} is not a streamad state file: {e}") from None
    if not isinstance(tree, dict) or not isinstance(tree.get("detector"), str) \
            or not isinstance(tree.get("params"), dict):
        raise ConfigError(f"detector state {path} is not a saved detector (no detector name and parameters)")
    name, params = tree["detector"], tree["params"]

    def fresh():
        det = detectors.make(name, **params)
        det.load_state_dict(_state.loads(blob))  # a fresh copy per key: keys never share arrays
        return det

    try:
        template = fresh()
    except StateError as e:
        raise ConfigError(f"detector state {path} does not load: {e}") from None

    def rejoin(det, only_if_equal: bool = True) -> None:
        """Share the template's model (e.g. HypAD: one model for all keys, scored across keys
        at once); a key restored from a checkpoint only if it has not retrained."""
        share = getattr(det, "share_model", None)
        if share is not None:
            share(template, only_if_equal=only_if_equal)

    def build():
        det = fresh()
        rejoin(det, only_if_equal=False)
        return det

    log.info("event=detector_state path=%s detector=%s", path, name)
    build.detector_name, build.params, build.rejoin = name, params, rejoin
    return build


@functools.cache
def _scoring(cls: type) -> tuple[bool, bool, bool]:
    """How the service scores a batch of records of one key with a detector of class ``cls``:
    ``(vectorised, keys, across)``. ``vectorised``: it has ``process_many``; ``keys``: it has
    ``process_keys`` (one call for the keys of a batch); ``across``: it overrides
    ``process_keys``, so even a key with a single record in the batch goes into that call."""
    own = getattr(getattr(cls, "process_keys", None), "__func__", None)
    return (hasattr(cls, "process_many"), hasattr(cls, "process_keys"),
            own is not None and own is not BaseDetector.process_keys.__func__)


class Pipeline:
    """Runs the service loop over any :class:`Source`/:class:`Sink` pair.

    Parameters
    ----------
    dead_letter
        ``(message, reason) -> None``; default: :func:`dead_letter_json` to the DLQ topic via ``sink``.
    detector_factory, threshold_factory
        Zero-argument builders of a fresh per-key detector / threshold; default: from ``config``.
    state_store
        Where partition checkpoints go (:mod:`.store`); default: files under
        ``config.checkpoint_dir`` when it is set, else no checkpoints.
    """

    def __init__(self, source: Source, sink: Sink, config: ServiceConfig, *,
                 dead_letter: Callable[[Message, str], None] | None = None,
                 detector_factory: Callable[[], Any] | None = None,
                 threshold_factory: Callable[[], Any] | None = None,
                 metrics=None, on_event: Callable[[dict], None] | None = None, outputs=None,
                 state_store: StateStore | None = None) -> None:
        self.source, self.sink, self.config = source, sink, config
        if state_store is None and config.checkpoint_dir:
            state_store = FileStateStore(config.checkpoint_dir, config.group)
        self.store = state_store
        if detector_factory is None and config.detector_state:
            detector_factory = trained_detector_factory(config.detector_state)
            config = dataclasses.replace(config, detector=detector_factory.detector_name,
                                         detector_params=detector_factory.params)
            self.config = config
        if detector_factory is None:
            from .. import detectors
            detectors.make(config.detector, **config.detector_params)  # fail on bad params now, not per key
            detector_factory = lambda: detectors.make(config.detector, **config.detector_params)  # noqa: E731
        if threshold_factory is None:
            from .. import thresholds
            name, params = thresholds.resolve(config.threshold, config.threshold_params, config.detector)
            if (name, params) != (config.threshold, config.threshold_params):  # "auto": the detector's own
                config = self.config = dataclasses.replace(config, threshold=name, threshold_params=params)
            thresholds.make(config.threshold, **config.threshold_params)
            threshold_factory = lambda: thresholds.make(config.threshold, **config.threshold_params)  # noqa: E731
        self.detector_factory, self.threshold_factory = detector_factory, threshold_factory
        if dead_letter is None:
            topic = config.dead_letter_topic
            dead_letter = lambda m, reason: sink.send(topic, m.key, dead_letter_json(m, reason))  # noqa: E731
        self.dead_letter = dead_letter
        self.metrics, self.on_event = metrics, on_event
        # where the anomalies topic can be read back (crash safety, see the module doc); None:
        # a crash after a message's acknowledgement and before the next checkpoint repeats it
        self.outputs = outputs
        self.policy = config.incident_policy
        self._track = config.publish in ("incidents", "both")
        self._per_record = config.publish in ("records", "both")
        self.partitions: dict[TopicPartition, _Partition] = {}
        self.records_in = self.events_out = self.dead_letters = self.scored = self.schema_changes = 0
        self.incidents_opened = self.incidents_closed = self.incidents_open = 0
        self.suppressed = 0  # messages not sent again after a restart (already on the topic)
        self._replaying = False  # some partition has ``delivered`` messages ahead
        self._reported = (0, 0)  # incidents opened and closed, as the metrics last counted them
        self.stopping = False
        self.stop_requested_at: float | None = None
        # after shutdown(): True when every output was delivered, the checkpoints written and
        # the final commit accepted (the exit code of `streamad serve` says so)
        self.clean_stop: bool | None = None
        self.last_batch_at = time.monotonic()
        self._unacked = 0  # records processed since the last flush + commit
        self._committed_at = -math.inf  # the first batch commits, however recently the machine booted
        # commit_mode "pipelined": (sink mark, offsets, when) of batches whose outputs were sent
        # but whose offsets are not committed yet, oldest first
        self._points: deque[tuple[Any, dict[TopicPartition, int], float]] = deque()
        self._pipelined = config.commit_mode == "pipelined"
        # True after a commit sent without waiting for the broker's answer: the next checkpoint
        # first commits and waits (a checkpoint's offset must never be ahead of the group's)
        self._commit_unconfirmed = False
        if self._pipelined and not (hasattr(sink, "mark") and hasattr(sink, "acked")):
            raise ConfigError(f"commit_mode 'pipelined' needs a sink that reports acknowledgements "
                              f"(mark/acked); {type(sink).__name__} does not")
        self._gc_was_enabled = False
        self._full_gc_at = self._deep_gc_at = 0.0
        self._deep_gc_due = False  # a rebalance released per-key state: scan everything next time

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
        if self._gc_was_enabled:  # automatic collection was switched off by _collect_garbage
            gc.enable()
            self._gc_was_enabled = False
        deadline = self.shutdown_deadline()
        delivered = self._flush(deadline)
        saved = committed = False
        if delivered:
            saved = all([self._checkpoint(tp, deadline) for tp in list(self.partitions)])
            committed = self._commit(self._offsets(), deadline)
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
    #: collector then runs between batches, not inside them (:meth:`_collect_garbage`).
    manage_gc = False
    #: With ``manage_gc``: seconds between full collections (of what is not frozen; see
    #: :meth:`_collect_garbage`) ...
    full_gc_every_s = 60.0
    #: ... and between deep ones, which first unfreeze everything.
    deep_gc_every_s = 1800.0

    def run_once(self) -> int:
        """Poll one batch, score it, flush outputs, then commit its offsets. Returns its size."""
        n = self._run_once()
        if self.manage_gc:
            self._collect_garbage()  # the batch's objects are gone now
        return n

    def _collect_garbage(self) -> None:
        """Run the cyclic garbage collector at a batch boundary.

        Python's automatic collections are triggered by allocations, so they fall inside
        batches: every object of the batch in flight is then scanned, survives and gets
        promoted, and the promotions trigger full collections over all per-key state (measured
        in a latency run: 37 full collections in 20 s, 83 ms each on average, up to 134 ms,
        the records of the batch in flight waiting meanwhile). Here automatic collection is
        off; at the end of a batch, once more than 700 new objects survive (gc's default
        threshold), the young generations are collected, when there is little to scan, and
        the rest once per ``full_gc_every_s``.

        What survives a full collection is frozen (``gc.freeze``): it is mostly per-key state
        (detectors, thresholds), which lives as long as its partition is assigned, and
        scanning it again every minute is the pause that grows with the keys (Gaussian keys
        with SPOT: 48 ms at 10,000 keys, 0.8 s at 100,000; benchmarks/gc_pause.py). Frozen
        objects are still freed when nothing refers to them; only garbage in reference
        cycles among them waits for a deep collection, which unfreezes everything first: the
        first full collection after a rebalance (a revoked partition's state goes) and one
        per ``deep_gc_every_s``.
        """
        now = time.monotonic()
        if gc.isenabled():
            gc.disable()
            self._gc_was_enabled, self._full_gc_at, self._deep_gc_at = True, now, now
        if now - self._full_gc_at >= self.full_gc_every_s:
            if self._deep_gc_due or now - self._deep_gc_at >= self.deep_gc_every_s:
                gc.unfreeze()
                self._deep_gc_at, self._deep_gc_due = now, False
            gc.collect()
            gc.freeze()
            self._full_gc_at = now
        elif gc.get_count()[0] > 700:
            gc.collect(1)

    def _run_once(self) -> int:
        try:
            batch = self.source.poll(self.config.poll_timeout_s, self.config.batch_size)
        except StreamadError as e:
            if not getattr(e, "retriable", False):
                raise
            log.warning("event=poll_failed error=%s", json.dumps(str(e)))  # broker away: try again
            time.sleep(1.0)
            return 0
        now = self.last_batch_at = time.monotonic()
        self._watch_broker()
        if not batch:
            if self._unacked:
                self._commit_now(now)
            self._maybe_checkpoint()
            return 0
        t0 = time.perf_counter()
        if self._points:  # pipelined: what was acknowledged during the poll, before scoring
            self._commit_acked()
        self._process(batch)
        self._unacked += len(batch)
        if self._pipelined:
            self._mark_and_commit_acked(now)
        elif now - self._committed_at >= self.config.commit_interval_s:
            self._commit_now(now)
        if self.metrics is not None:
            self.metrics.records_in.inc(len(batch))
            self.metrics.latency.observe(time.perf_counter() - t0)
        return len(batch)

    #: commit_mode "pipelined": wait for acknowledgements (flush) once this many batches, or
    #: this many seconds of output, are unacknowledged (a slow or failing broker; the flush
    #: then reports the failure and retries as in "wait" mode).
    max_pending_batches = 64
    max_pending_s = 2.0

    def _mark_and_commit_acked(self, now: float) -> None:
        """commit_mode "pipelined": remember this batch's offsets with a mark of the sink's
        sends, then commit, without waiting, the newest offsets all of whose outputs (and
        those of every batch before) the broker has acknowledged. A checkpoint that falls
        due, or acknowledgements that lag too far, take the waiting path (:meth:`_commit_now`)."""
        self._points.append((self.sink.mark(), self._offsets(), now))
        self._commit_acked()
        if self._points and (len(self._points) > self.max_pending_batches or now - self._points[0][2] > self.max_pending_s):
            self._commit_now(now)
        else:
            self._maybe_checkpoint()

    def _commit_acked(self) -> None:
        """Commit, without waiting, the offsets of the newest batch whose outputs, and those of
        every batch before it, are acknowledged."""
        newest = None
        while self._points and self.sink.acked(self._points[0][0]):
            newest = self._points.popleft()
        if not self._points:
            self._unacked = 0
        if newest is not None and newest[1]:
            self._commit_without_waiting(newest[1])

    def _commit_without_waiting(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets`` without waiting for the broker's answer (sources without
        ``commit_async`` commit and wait). A failure is logged: a later commit covers the same
        offsets, and a restart before it re-scores the records (duplicates, never a gap)."""
        commit = getattr(self.source, "commit_async", None)
        try:
            if commit is None:
                self.source.commit(offsets)
            else:
                commit(offsets)
                self._commit_unconfirmed = True
        except StreamadError as e:
            log.warning("event=commit_failed error=%s", json.dumps(str(e)))

    def _offsets(self) -> dict[TopicPartition, int]:
        """The next offset to read of every partition with records processed."""
        return {tp: p.next_offset for tp, p in self.partitions.items() if p.next_offset is not None}

    def _commit_now(self, now: float) -> None:
        """Wait for the outputs' acknowledgements, then commit the offsets they cover without
        waiting for the broker's answer (Kafka's usual loop: asynchronous commits while
        running, a synchronous one at shutdown, on revocation and before a checkpoint)."""
        # Checkpoints follow a commit: their offsets must never run ahead of acknowledged output.
        if not self._flush_and_commit(wait_for_commit=False):
            return  # stopping while the sink cannot deliver: shutdown() tries once more
        self._unacked, self._committed_at = 0, now
        self._maybe_checkpoint()

    def _process(self, batch: list[Message]) -> None:
        """Decode the batch, then score it key by key: one vectorised ``process_many`` call per
        key and batch where the detector has one (same results as score_one + learn_one)."""
        parts = self.partitions
        groups: dict[tuple[TopicPartition, str], list] = {}
        dlq = 0
        part_tp, part = None, None
        for m in batch:
            tp = (m.topic, m.partition)
            if tp != part_tp:
                part_tp, part = tp, parts.get(tp)
                if part is None:
                    part = self._new_partition(tp, m.offset)
            part.next_offset = m.offset + 1
            part.since_checkpoint += 1
            try:
                rec = decode(m.value, key=m.key,
                             default_ts=None if m.timestamp_ms is None else m.timestamp_ms / 1000.0)
            except DecodeError as e:
                self.dead_letter(m, e.reason)
                dlq += 1
                continue
            group = groups.get((tp, rec.key))
            if group is None:
                group = groups[(tp, rec.key)] = []
            group.append((m, rec))
        keyed = [self._prepare_key(parts[tp], key, items) for (tp, key), items in groups.items()]
        # one process_keys call per detector class: detectors that share a model score the
        # windows of every key of the batch in one model call
        by_class: dict[tuple[type, int], list] = {}
        for ks in keyed:
            for k in ks:
                if k.ok:
                    by_class.setdefault((type(k.detector), k.width), []).append(k)
        for (cls, width), ks in by_class.items():
            # one array for the class's rows, one view of it per key
            flat: list = []
            for k in ks:
                flat += k.rows
            rows = np.array(flat, dtype=np.float64).reshape(-1, width)
            jobs, start = [], 0
            for k in ks:
                end = start + len(k.ok)
                jobs.append((k.detector, rows[start:end]))
                start = end
            for k, scores in zip(ks, cls.process_keys(jobs), strict=True):
                k.pairs += k.ok
                k.scores += scores.tolist()
        emit = []
        for ks, ((tp, _), items) in zip(keyed, groups.items(), strict=True):
            dlq += len(items)
            for k in ks:
                dlq -= len(k.pairs)
                if k.pairs:
                    emit.append((k, parts[tp]))
        events = self._emit(emit)
        if self._replaying:
            self._replaying = False
            for p in parts.values():
                if p.delivered is not None:
                    if p.next_offset is not None and p.next_offset > p.replay_until:
                        p.delivered = None  # past everything published before the restart
                    else:
                        self._replaying = True
        self.records_in += len(batch)
        self.scored += len(batch) - dlq
        self.events_out += events
        self.dead_letters += dlq
        if self.metrics is not None:
            self.metrics.events_out.inc(events)
            self.metrics.dead_letters.inc(dlq)
            self._report_incidents()

    def _report_incidents(self) -> None:
        """Bring the incident gauge and counters of ``metrics`` up to date."""
        m, name = self.metrics, self.config.detector
        m.incidents_open.labels(name).set(self.incidents_open)
        opened, closed = self._reported
        if self.incidents_opened > opened:
            m.incidents_opened.labels(name).inc(self.incidents_opened - opened)
        if self.incidents_closed > closed:
            m.incidents_closed.labels(name).inc(self.incidents_closed - closed)
        self._reported = (self.incidents_opened, self.incidents_closed)

    def _prepare_key(self, part: _Partition, key: str, items: list) -> list[_KeyBatch]:
        """The key's models, and its records split into those already scored one by one and
        the feature rows left for one vectorised call (``process_keys``). One batch, or more
        when the key's detector is re-created on a new feature set in the middle of it."""
        if self.config.features:
            items = self._configured_features(key, items)
            if not items:
                return []
        models = part.models.get(key)
        if models is None:
            models = part.models[key] = (self.detector_factory(), self.threshold_factory())
        batch = _KeyBatch(*models)
        rest = items
        if getattr(batch.detector, "features_", None) is None:
            rest = items[1:]  # the first record names the features (dict keys), then batch the rest
            self._score_one(batch.detector, items[0], batch)
        if key in part.schema_runs or not self._fill(batch, rest):
            return self._schema_changes(part, key, batch, rest)  # rare: records with other features
        return [batch]

    def _fill(self, batch: _KeyBatch, items: list) -> bool:
        """Score ``items`` into ``batch`` (or leave their rows for ``process_keys``). False,
        with nothing scored, when any record's features are not the detector's."""
        detector = batch.detector
        vectorised, keys, across = _scoring(type(detector))
        feats = getattr(detector, "features_", None)
        if vectorised and feats is not None and (len(items) > 1 or items and across):
            rows: list = []
            n = len(feats)
            f0 = feats[0]
            for item in items:
                vals = item[1].values
                if len(vals) != n:
                    return False
                try:
                    if n == 1:
                        rows.append(vals[f0])
                    else:
                        rows += [vals[f] for f in feats]
                except KeyError:
                    return False
            if keys:
                batch.rows, batch.ok, batch.width = rows, items, n
            else:
                batch.pairs += items
                batch.scores += detector.process_many(np.array(rows, dtype=np.float64).reshape(-1, n)).tolist()
            return True
        if feats is not None and not all(_has_features(item[1].values, feats) for item in items):
            return False
        for item in items:
            self._score_one(detector, item, batch)
        return True

    def _schema_changes(self, part: _Partition, key: str, batch: _KeyBatch, items: list) -> list[_KeyBatch]:
        """``items`` record by record, for a key whose records do not all have its detector's
        features (the probe that found this: one ``{"cpu": ...}`` record locked a device's
        key to one feature, and the 300 three-feature records after it were dead letters).

        A record with other features is a dead letter, unless it is the
        ``schema_change_after``-th in a row with the same new features: a lasting change (a
        firmware update adds a metric), so the key gets a new detector and threshold, which
        score it and the records after it. A lone odd record changes nothing. The count
        survives batches and restarts (it is checkpointed)."""
        out, segment = [batch], []
        feats = getattr(batch.detector, "features_", None)
        after = self.config.schema_change_after
        for item in items:
            vals = item[1].values
            if feats is None or _has_features(vals, feats):
                part.schema_runs.pop(key, None)
                segment.append(item)
                continue
            new = tuple(sorted(vals))
            run = part.schema_runs.get(key)
            count = run[1] + 1 if run is not None and run[0] == new else 1
            reason = f"record of key {key!r} has features {list(new)}, earlier records had {list(feats)}"
            if count >= after:
                models = self._recreate(key, item[0], feats, new)
                if models is not None:
                    if not self._fill(out[-1], segment):  # pragma: no cover - segment holds matching records only
                        raise AssertionError("a segment of matching records did not fill")
                    part.models[key] = models
                    part.schema_runs.pop(key, None)
                    out.append(_KeyBatch(*models))
                    segment, feats = [item], list(new)
                    continue
                reason += " (the key's detector has the features of its trained state)"
            elif after > 1:
                reason += f" ({count} in a row; {after} in a row re-create the key's detector on the new features)"
            part.schema_runs[key] = (new, count)
            self.dead_letter(item[0], reason)
        if not self._fill(out[-1], segment):  # pragma: no cover - as above
            raise AssertionError("a segment of matching records did not fill")
        return out

    def _recreate(self, key: str, m: Message, old: list, new: tuple) -> tuple[Any, Any] | None:
        """A new detector and threshold for ``key``, whose records now have the features
        ``new``; None when the detector cannot take them (a trained one has its own)."""
        detector, threshold = self.detector_factory(), self.threshold_factory()
        fixed = getattr(detector, "features_", None)
        if fixed is not None and list(fixed) != list(new):
            return None
        self.schema_changes += 1
        if self.metrics is not None:
            self.metrics.schema_changes.inc()
        log.warning("event=schema_changed key=%s topic=%s partition=%d offset=%d features_before=%s features=%s "
                    "records_in_a_row=%d action=new_detector", json.dumps(key), m.topic, m.partition, m.offset,
                    json.dumps(list(old)), json.dumps(list(new)), self.config.schema_change_after)
        return detector, threshold

    def _configured_features(self, key: str, items: list) -> list:
        """``items`` with only the configured features (``[detector] features``); a record
        missing one of them is a dead letter."""
        feats = self.config.features
        out = []
        for m, rec in items:
            vals = rec.values
            try:
                out.append((m, rec._replace(values={f: vals[f] for f in feats})))
            except KeyError:
                missing = [f for f in feats if f not in vals]
                self.dead_letter(m, f"record of key {key!r} lacks the configured feature(s) {missing}; "
                                    f"it has {sorted(vals)}")
        return out

    def _score_one(self, detector, item, batch: _KeyBatch) -> None:
        m, rec = item
        try:
            score = float(detector.score_one(rec.values))
            detector.learn_one(rec.values)
        except StreamadError as e:  # e.g. a record whose features differ from the key's earlier ones
            self.dead_letter(m, str(e))
            return
        batch.pairs.append(item)
        batch.scores.append(score)

    def _emit(self, batches: list[tuple[_KeyBatch, _Partition]]) -> int:
        """Update each key's threshold with each of its scores, send score messages, and feed
        flagged records (and every record while the key has an open incident) to its incident
        state machine. ``batches`` holds ``(key batch, partition)``: one key's scored records of
        one partition. Returns the messages sent to the anomalies topic."""
        cfg = self.config
        send, dumps = self.sink.send, json.dumps
        scores_topic = cfg.scores_topic
        isfinite = math.isfinite
        flagged = self._flagged
        events = 0
        for k, part in batches:
            update = k.threshold.update
            warming = getattr(k.detector, "warmup_scores_", 0) - k.warm0
            if warming:  # the key's first scores came from no model yet: keep them from the threshold
                update = _skipping(update, warming)
            m, rec = k.pairs[0]
            incident = part.incidents.get(rec.key)  # open: every record goes to it; else flagged ones
            if not scores_topic:  # events only: nothing to format for a normal record
                for (m, rec), score in zip(k.pairs, k.scores, strict=True):
                    decision = update(score)
                    if decision.is_anomaly or incident is not None:
                        incident, sent = flagged(part, k.detector, incident, m, rec, score, decision)
                        events += sent
                continue
            heads = part.heads
            cached = heads.get(rec.key)
            if cached is None:
                # One score message per record is the service's largest output; formatting it
                # directly is ~3x cheaper than json.dumps of a dict (same JSON).
                cached = heads[rec.key] = (rec.key.encode(), f'{{"key":{dumps(rec.key)},"ts":',
                                           f',"topic":{dumps(m.topic)},"partition":{m.partition},"offset":')
            key_bytes, head, tail = cached
            for (m, rec), score in zip(k.pairs, k.scores, strict=True):
                decision = update(score)
                if isfinite(score) and isfinite(rec.ts):
                    value = f'{head}{rec.ts!r},"score":{score!r}{tail}{m.offset}}}'.encode()
                else:
                    value = dumps({"key": rec.key, "ts": rec.ts, "score": score, "topic": m.topic,
                                   "partition": m.partition, "offset": m.offset}, separators=(",", ":")).encode()
                send(scores_topic, key_bytes, value)
                if decision.is_anomaly or incident is not None:
                    incident, sent = flagged(part, k.detector, incident, m, rec, score, decision)
                    events += sent
        return events

    def _flagged(self, part: _Partition, detector, incident: IncidentTracker | None, m: Message, rec, score: float,
                 decision) -> tuple[IncidentTracker | None, int]:
        """A flagged record, or any record of a key with an open incident: its ``anomaly``
        event and its incident's messages. Returns the key's open incident (None when there
        is none now) and the number of messages sent."""
        sent = 0
        explain = self._explainer(detector, rec.values)
        if decision.is_anomaly and self._per_record:
            event = {"schema": 1, "type": "anomaly", "key": rec.key, "ts": rec.ts,
                     "score": score if math.isfinite(score) else None,
                     "threshold": float(decision.threshold), "is_anomaly": True, "detector": self.config.detector,
                     "topic": m.topic, "partition": m.partition, "offset": m.offset}
            if explain is not None:
                top = explain()
                if top:
                    event["top_features"] = top
            sent += self._publish(part, event)
        if not self._track:
            return None, sent
        if incident is None:
            incident = part.incidents[rec.key] = IncidentTracker(rec.key, self.policy, part.context, part.id_prefix)
        for msg in incident.step(decision.is_anomaly, score, float(decision.threshold), rec.ts, m.offset, explain):
            kind = msg["type"]
            if kind == "incident_open":
                self.incidents_opened += 1
                self.incidents_open += 1
            elif kind == "incident_close":
                self.incidents_closed += 1
                self.incidents_open -= 1
            sent += self._publish(part, msg)
        if not incident.open:
            del part.incidents[rec.key]
            incident = None
        return incident, sent

    @staticmethod
    def _explainer(detector, values) -> Callable[[], list] | None:
        """The features' contributions to a record's score, for detectors that explain
        themselves (node-ae: the metrics that are off, largest error first); computed only
        when a message needs them."""
        explain = getattr(detector, "explain", None)
        if explain is None:
            return None

        def top() -> list:
            try:
                return [[name, round(err, 4)] for name, err in explain(values)]
            except StreamadError:
                return []

        return top

    def _publish(self, part: _Partition, msg: dict) -> int:
        """Send one message to the anomalies topic, unless a run before a restart already
        published it (module doc). Returns 1 if sent."""
        if part.delivered is not None and msg["offset"] <= part.delivered.get((msg["key"], msg["type"]), -1):
            self.suppressed += 1
            return 0
        self.sink.send(self.config.anomalies_topic, msg["key"].encode(), json.dumps(msg, separators=(",", ":")).encode())
        if self.on_event is not None:
            self.on_event(msg)
        return 1

    #: Seconds one flush of the sink may wait for acknowledgements before it counts as a
    #: failed attempt (retried; nothing is dropped): bounds how long a stop waits on a broker
    #: that does not answer.
    flush_attempt_s = 5.0

    def _flush_and_commit(self, wait_for_commit: bool = True) -> bool:
        """Flush the sink, then commit the offsets it covers (with ``wait_for_commit=False``
        without waiting for the broker's answer: :meth:`_commit_without_waiting`). Returns
        False, with nothing committed, when a stop was asked for while the sink could not
        deliver (:meth:`shutdown` then has the last word).

        A retriable delivery failure (broker down) is retried with backoff while the input is
        paused, up to ``flush_retries`` times; the sink keeps and re-sends the messages. Any
        other failure raises :class:`ServiceError` with nothing committed, so a restart
        re-scores those records instead of losing them.
        """
        if not self._flush():
            return False
        offsets = self._offsets()
        if not offsets:
            return True
        if not wait_for_commit:
            self._commit_without_waiting(offsets)
            return True
        self._commit(offsets)
        return True

    def _flush(self, deadline: float | None = None) -> bool:
        """Flush the sink, retrying retriable failures (see :meth:`_flush_and_commit`). With a
        ``deadline`` (shutdown), attempts stop there; without one, they stop when a stop is
        asked for. False when the outputs are not all delivered."""
        retries = max(0, self.config.flush_retries)
        attempt = 0
        delivered = False
        while True:
            timeout = self.flush_attempt_s
            limit = deadline if deadline is not None or not self.stopping else self.shutdown_deadline()
            if limit is not None:
                timeout = min(timeout, limit - time.monotonic())
                if timeout <= 0:
                    break
            try:
                self.sink.flush(timeout)
                delivered = True
                break
            except Exception as e:
                retriable = getattr(e, "retriable", True)
                if not retriable or (deadline is None and attempt >= retries):
                    if attempt:
                        self.source.resume()
                    raise ServiceError(f"sink could not deliver after {attempt + 1} attempt(s): {e}") from e
                # Hold the input while the sink is failing or slow: paused partitions keep the
                # group membership without fetching more work.
                log.warning("event=flush_failed attempt=%d error=%s", attempt + 1, json.dumps(str(e)))
                self.source.pause()
                attempt += 1
                if deadline is None and self.stopping:
                    break
                pause = min(5.0, 0.2 * 2 ** (attempt - 1))
                if deadline is not None:
                    pause = min(pause, max(0.0, deadline - time.monotonic()))
                time.sleep(pause)
        if attempt:
            self.source.resume()
        if delivered:
            self._points.clear()  # everything sent is acknowledged: a commit now covers it
        return delivered

    def _commit(self, offsets: dict[TopicPartition, int], deadline: float | None = None) -> bool:
        """Commit ``offsets`` and wait for the broker's answer, retrying retriable failures up
        to ``flush_retries`` times (with a ``deadline``: until then). True when committed.

        Raises :class:`ServiceError` when the retries run out outside a shutdown; a rejected
        commit (the group moved on) is logged and counts as done: the new owner re-scores from
        its committed offset or checkpoint (duplicates, never a gap)."""
        if not offsets:
            return True
        retries = max(0, self.config.flush_retries)
        attempt = 0
        while True:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                log.warning("event=commit_failed reason=%s", json.dumps("the shutdown deadline passed"))
                return False
            try:
                if timeout is None:
                    self.source.commit(offsets)
                else:
                    self.source.commit(offsets, timeout_s=timeout)
                self._commit_unconfirmed = False
                return True
            except StreamadError as e:
                if not getattr(e, "retriable", False):
                    log.warning("event=commit_rejected error=%s", json.dumps(str(e)))
                    return deadline is None
                attempt += 1
                log.warning("event=commit_failed attempt=%d error=%s", attempt, json.dumps(str(e)))
                if deadline is None and (attempt > retries or self.stopping):
                    if self.stopping:
                        return False
                    raise ServiceError(f"cannot commit offsets: {e}") from e
                pause = min(5.0, 0.2 * 2 ** (attempt - 1))
                if deadline is not None:
                    pause = min(pause, max(0.0, deadline - time.monotonic()))
                time.sleep(pause)

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

    # -- checkpoints ------------------------------------------------------------------------
    def _maybe_checkpoint(self) -> None:
        if self.store is None:
            return
        now = time.monotonic()
        oldest = now
        for tp, p in list(self.partitions.items()):
            if p.since_checkpoint >= self.config.checkpoint_every_records or (
                    p.since_checkpoint and now - p.checkpointed_at >= self.config.checkpoint_every_seconds):
                if self._points or self._commit_unconfirmed:
                    # a checkpoint must not run ahead of acknowledged output (pipelined) nor of
                    # the group's committed offset (the restart check in _log_restarted_below)
                    if not self._flush_and_commit():
                        return
                self._checkpoint(tp)
            oldest = min(oldest, p.checkpointed_at)
        if self.metrics is not None:
            self.metrics.checkpoint_age.set(now - oldest)

    def _new_partition(self, tp: TopicPartition, first_offset: int) -> _Partition:
        """State for a partition that had no checkpoint, starting at ``first_offset``.

        With checkpoints on, its empty state is checkpointed at once: offsets are committed
        batch by batch and checkpoints come every N records, so a crash in between would
        otherwise resume the partition at the committed offset with empty state (the records
        before it missing from every window) instead of replaying it from its first record."""
        part = self.partitions[tp] = _Partition(tp, self.config.detector)
        if self.store is not None:
            part.next_offset = first_offset
            self._checkpoint(tp)
        return part

    def _checkpoint(self, tp: TopicPartition, deadline: float | None = None) -> bool:
        """Write the state of ``tp`` (call only after its outputs were flushed), with where the
        anomalies topic ends now: whatever this partition publishes after the checkpoint lands
        beyond that, which is where a restart from it reads back (:meth:`_read_back`). False
        when the store could not take it (the Kafka store while the broker is away, or past the
        ``deadline``; the previous checkpoint stays and the next one is tried later)."""
        p = self.partitions.get(tp)
        if self.store is None or p is None or p.next_offset is None:
            return True
        tree = {"format": 1, "topic": tp[0], "partition": tp[1], "offset": p.next_offset,
                "detector": self.config.detector, "threshold": self.config.threshold,
                "keys": {k: {"detector": d.state_dict(), "threshold": t.state_dict()}
                         for k, (d, t) in p.models.items()},
                "incidents": {k: inc.state_dict() for k, inc in p.incidents.items()}}
        # At a stop (a deadline) the checkpoint covers every record processed, so a restart
        # scores nothing again and has nothing to read back; asking the broker for the
        # anomalies topic's ends could then only spend the deadline while the broker is away.
        ends = self._output_ends() if deadline is None else None
        if ends is not None:
            tree["outputs"] = {"topic": self.config.anomalies_topic, "ends": {str(k): v for k, v in ends.items()}}
        if p.schema_runs:
            tree["schema_runs"] = {k: [list(f), n] for k, (f, n) in p.schema_runs.items()}
        try:
            if deadline is None:
                self.store.save(tp, tree)
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServiceError("the shutdown deadline passed", retriable=True)
                self.store.save(tp, tree, timeout_s=left)
        except StreamadError as e:
            if not getattr(e, "retriable", False):
                raise
            log.warning("event=checkpoint_failed topic=%s partition=%d error=%s", tp[0], tp[1], json.dumps(str(e)))
            return False
        p.since_checkpoint = 0
        p.checkpointed_at = time.monotonic()
        log.debug("event=checkpoint topic=%s partition=%d offset=%d keys=%d incidents=%d", tp[0], tp[1],
                  p.next_offset, len(p.models), len(p.incidents))
        return True

    def _output_ends(self) -> dict[int, int] | None:
        """The anomalies topic's end offset per partition, or None without an output log (or
        when it cannot say: a restart from this checkpoint then reads nothing back)."""
        if self.outputs is None:
            return None
        try:
            return self.outputs.end_offsets(self.config.anomalies_topic)
        except StreamadError as e:
            log.warning("event=output_ends_failed error=%s", json.dumps(str(e)))
            return None

    def _restore(self, tp: TopicPartition) -> tuple[int, dict | None] | None:
        """Load ``tp``'s checkpoint: its offset and where the anomalies topic ended then."""
        if self.store is None:
            return None
        tree = self.store.load(tp)
        if tree is None:
            return None
        if tree.get("detector") != self.config.detector or tree.get("threshold") != self.config.threshold:
            raise StateError(f"checkpoint {self.store.where(tp)} was written by detector {tree.get('detector')!r} / threshold "
                             f"{tree.get('threshold')!r}; this service runs {self.config.detector!r} / "
                             f"{self.config.threshold!r} (remove the checkpoints to start fresh)")
        p = _Partition(tp, self.config.detector)
        for key, st in tree["keys"].items():
            d, t = self.detector_factory(), self.threshold_factory()
            d.load_state_dict(st["detector"])
            t.load_state_dict(st["threshold"])
            rejoin = getattr(self.detector_factory, "rejoin", None)
            if rejoin is not None:
                rejoin(d)
            p.models[key] = (d, t)
        for key, st in tree.get("incidents", {}).items():  # checkpoints before incidents have none
            inc = IncidentTracker(key, self.policy, p.context, p.id_prefix)
            inc.load_state_dict(st)
            if inc.open:
                p.incidents[key] = inc
        self.incidents_open += len(p.incidents)
        p.schema_runs = {k: (tuple(f), int(n)) for k, (f, n) in tree.get("schema_runs", {}).items()}
        p.next_offset = int(tree["offset"])
        self.partitions[tp] = p
        return p.next_offset, tree.get("outputs")

    def _on_assign(self, tps: list[TopicPartition]) -> None:
        since: dict[TopicPartition, dict] = {}
        log.info("event=assigned partitions=%s", ",".join(f"{t}-{p}" for t, p in tps))
        for tp in tps:
            restored = self._restore(tp)
            if restored is None:
                continue
            offset, outputs = restored
            if self._log_restarted_below(tp, offset):
                log.warning("event=checkpoint_ahead_of_log topic=%s partition=%d checkpoint_offset=%d "
                            "action=read_from_start", tp[0], tp[1], offset)
                offset = 0
                self.partitions[tp].next_offset = None
            elif outputs is not None and outputs.get("topic") == self.config.anomalies_topic:
                since[tp] = outputs["ends"]
            self.source.seek(tp, offset)
            log.info("event=restored topic=%s partition=%d offset=%d keys=%d incidents=%d", tp[0], tp[1], offset,
                     len(self.partitions[tp].models), len(self.partitions[tp].incidents))
        if since:
            self._read_back(since)

    def _read_back(self, since: dict[TopicPartition, dict]) -> None:
        """For the partitions just restored, read what the anomalies topic got since their
        checkpoints (from the ends recorded in them): the messages of records the restored
        state will score again. Those messages are then not sent a second time (``_publish``).

        This is what makes the anomalies topic free of repeats after a crash, including a
        crash between a message's acknowledgement and the next checkpoint, which no order of
        sending, committing and checkpointing can rule out. A restarted run scores the same
        records from the same state and so makes the same messages, in the same order per key
        and kind (source offsets and incident ids included); comparing by key, kind and source
        offset finds them."""
        # a partition of the anomalies topic that one checkpoint did not list did not exist
        # then: everything in it came later
        parts = {int(part) for ends in since.values() for part in ends}
        starts = {part: min(int(ends.get(str(part), 0)) for ends in since.values()) for part in parts}
        try:
            messages = self.outputs.read(self.config.anomalies_topic, starts)
        except StreamadError as e:
            log.warning("event=read_back_failed error=%s", json.dumps(str(e)))
            return
        found = 0
        for m in messages:  # those before a partition's own checkpoint have lower source offsets
            try:
                msg = json.loads(m.value)
                tp, offset = (msg["topic"], msg["partition"]), msg["offset"]
                what = (msg["key"], msg.get("type", "anomaly"))
            except (ValueError, TypeError, KeyError, AttributeError):
                continue  # not one of ours (another writer on the topic)
            p = self.partitions.get(tp) if tp in since else None
            if p is None or not isinstance(offset, int) or offset < (p.next_offset or 0):
                continue
            if p.delivered is None:
                p.delivered = {}
            if offset > p.delivered.get(what, -1):
                p.delivered[what] = offset
                p.replay_until = max(p.replay_until, offset)
            found += 1
        self._replaying = self._replaying or found > 0
        if found:
            log.info("event=read_back messages=%d partitions=%d", found, len(since))

    def _log_restarted_below(self, tp: TopicPartition, offset: int) -> bool:
        """True when ``tp``'s log now ends before the checkpointed ``offset`` and the group has
        no committed offset there: the topic was recreated (or the broker lost its data).
        Waiting for the old offset would then leave every new record unread.

        The missing commit is the witness, because a log-end offset alone is not trusted: the
        embedded broker reports the end of a log as one past the base offset of its last
        batch (measured: 7 after records 0-105 were written in batches of 1, 5 and 100). A
        commit behind the checkpoint is no witness either: a stop with the broker away writes
        its checkpoints and then fails to commit."""
        try:
            end = self.source.end_offset(tp) if hasattr(self.source, "end_offset") else None
            if end is None or offset <= end:
                return False
            committed = self.source.committed(tp)
        except StreamadError:
            return False
        return committed is None

    def _on_revoke(self, tps: list[TopicPartition]) -> None:
        # Called inside poll, between batches: everything processed so far is in ``partitions``.
        # After shutdown() (the source's close revokes everything) there is nothing left to do.
        if self.clean_stop is None and self._flush_and_commit():
            for tp in tps:
                self._checkpoint(tp)
        for tp in tps:
            p = self.partitions.pop(tp, None)
            if p is not None:
                self.incidents_open -= len(p.incidents)  # the new owner carries them on
        self._deep_gc_due = True  # the state dropped here may be frozen (_collect_garbage)
