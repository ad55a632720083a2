"""Partition state: what the service holds per input partition, across checkpoints,
restarts and rebalances.

Each assigned partition has a :class:`Partition`: its keys' detectors, thresholds and open
incidents, and the next offset to read. :class:`PartitionState` writes it to the state store
(every N records or T seconds, and at the partition's first record), restores it when the
partition is assigned again (here or on another instance) and seeks the consumer back to the
offset it reflects, and checkpoints and drops it when the partition is revoked.

A restored partition also reads back what the anomalies topic got since its checkpoint
(:meth:`PartitionState.read_back`), so the messages of records scored again are not
published twice (see :mod:`streamad.service.pipeline`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from ..base import ServiceError, StateError, StreamadError
from ..incidents import IncidentTracker
from .config import ServiceConfig
from .store import StateStore
from .transport import OutputLog, Source, TopicPartition

if TYPE_CHECKING:
    from .delivery import Delivery
    from .scoring import Scorer

__all__ = ["Partition", "PartitionState"]

log = logging.getLogger("streamad.service")


class Partition:
    """One input partition's state: its keys' models and open incidents, where reading goes
    on, and what a restart must not publish again."""

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
        # in a row, with these features instead of its detector's (see Scorer._schema_changes)
        self.schema_runs: dict[str, tuple[tuple[str, ...], int]] = {}
        self.next_offset: int | None = None
        self.since_checkpoint = 0
        self.checkpointed_at = time.monotonic()


class PartitionState:
    """Checkpoints, restores, assignment and revocation of the pipeline's partitions (module doc).

    ``partitions`` is the pipeline's ``{(topic, partition): Partition}``; ``scorer`` says what
    a checkpoint keeps of a partition's keys; ``delivery`` settles outputs and offsets before
    a checkpoint; ``store`` (None: no checkpoints) keeps the checkpoints; ``outputs`` (None:
    nothing is read back) reads the anomalies topic back after a restore.
    """

    def __init__(self, config: ServiceConfig, partitions: dict[TopicPartition, Partition], scorer: Scorer,
                 delivery: Delivery, source: Source, store: StateStore | None, outputs: OutputLog | None,
                 metrics=None) -> None:
        self.config, self.partitions, self.scorer, self.delivery = config, partitions, scorer, delivery
        self.source, self.store, self.outputs, self.metrics = source, store, outputs, metrics

    def offsets(self) -> dict[TopicPartition, int]:
        """The next offset to read of every partition with records processed."""
        return {tp: p.next_offset for tp, p in self.partitions.items() if p.next_offset is not None}

    def maybe_checkpoint(self) -> None:
        """Checkpoint the partitions that are due (every ``checkpoint_every_records`` records or
        ``checkpoint_every_seconds``), once their outputs are acknowledged and offsets committed."""
        if self.store is None:
            return
        now = time.monotonic()
        oldest = now
        for tp, p in list(self.partitions.items()):
            if p.since_checkpoint >= self.config.checkpoint_every_records or (
                    p.since_checkpoint and now - p.checkpointed_at >= self.config.checkpoint_every_seconds):
                # a checkpoint must not run ahead of acknowledged output (pipelined) nor of
                # the group's committed offset (the restart check in _log_restarted_below)
                if not self.delivery.settle():
                    return
                self.checkpoint(tp)
            oldest = min(oldest, p.checkpointed_at)
        if self.metrics is not None:
            self.metrics.checkpoint_age.set(now - oldest)

    def new(self, tp: TopicPartition, first_offset: int) -> Partition:
        """State for a partition that had no checkpoint, starting at ``first_offset``.

        With checkpoints on, its empty state is checkpointed at once: offsets are committed
        batch by batch and checkpoints come every N records, so a crash in between would
        otherwise resume the partition at the committed offset with empty state (the records
        before it missing from every window) instead of replaying it from its first record."""
        part = self.partitions[tp] = Partition(tp, self.config.detector)
        if self.store is not None:
            part.next_offset = first_offset
            self.checkpoint(tp)
        return part

    def checkpoint(self, tp: TopicPartition, deadline: float | None = None) -> bool:
        """Write the state of ``tp`` (call only after its outputs were flushed), with where the
        anomalies topic ends now: whatever this partition publishes after the checkpoint lands
        beyond that, which is where a restart from it reads back (:meth:`read_back`). False
        when the store could not take it (the Kafka store while the broker is away, or past the
        ``deadline``; the previous checkpoint stays and the next one is tried later)."""
        p = self.partitions.get(tp)
        if self.store is None or p is None or p.next_offset is None:
            return True
        tree = {"format": 1, "topic": tp[0], "partition": tp[1], "offset": p.next_offset,
                "detector": self.config.detector, "threshold": self.config.threshold, **self.scorer.keys_state(p)}
        # At a stop (a deadline) the checkpoint covers every record processed, so a restart
        # scores nothing again and has nothing to read back; asking the broker for the
        # anomalies topic's ends could then only spend the deadline while the broker is away.
        ends = self._output_ends() if deadline is None else None
        if ends is not None:
            tree["outputs"] = {"topic": self.config.anomalies_topic, "ends": {str(k): v for k, v in ends.items()}}
        try:
            if deadline is None:
                self.store.save(tp, tree)
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServiceError("the shutdown deadline passed", retriable=True)
                self.store.save(tp, tree, timeout_s=left)
        except StreamadError as e:
            if not e.retriable:
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

    def restore(self, tp: TopicPartition) -> tuple[int, dict | None] | None:
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
        p = Partition(tp, self.config.detector)
        self.scorer.restore_keys(p, tree)
        p.next_offset = int(tree["offset"])
        self.partitions[tp] = p
        return p.next_offset, tree.get("outputs")

    def assign(self, tps: list[TopicPartition]) -> None:
        """Partitions ``tps`` arrived: restore those with a checkpoint and seek back to the
        offset it reflects (or to the start when the log was recreated below it)."""
        since: dict[TopicPartition, dict] = {}
        log.info("event=assigned partitions=%s", ",".join(f"{t}-{p}" for t, p in tps))
        for tp in tps:
            restored = self.restore(tp)
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
            self.read_back(since)

    def read_back(self, since: dict[TopicPartition, dict]) -> None:
        """For the partitions just restored, read what the anomalies topic got since their
        checkpoints (from the ends recorded in them): the messages of records the restored
        state will score again. Those messages are then not sent a second time (``Scorer._publish``).

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
        self.scorer.replaying = self.scorer.replaying or found > 0
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
            end = self.source.end_offset(tp)
            if end is None or offset <= end:
                return False
            committed = self.source.committed(tp)
        except StreamadError:
            return False
        return committed is None

    def drop(self, tps: list[TopicPartition]) -> None:
        """Forget the state of revoked partitions (their new owner restores it)."""
        for tp in tps:
            p = self.partitions.pop(tp, None)
            if p is not None:
                self.scorer.release(p)
