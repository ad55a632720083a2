"""Delivery and offsets: outputs acknowledged before the input offsets they cover are committed.

:class:`Delivery` is the part of the :class:`~streamad.service.pipeline.Pipeline` that keeps
delivery at-least-once. It flushes the sink (waits for the broker's acknowledgements of
everything sent), retrying retriable failures with backoff while the input is paused, and
commits input offsets only once the outputs derived from them are acknowledged. Two commit
modes (``config.commit_mode``):

- ``"wait"``: after each batch (or every ``commit_interval_s``), flush, then commit without
  waiting for the broker's answer; a commit that must be confirmed (before a checkpoint, on
  revocation, at shutdown) waits for it.
- ``"pipelined"``: go on with the next batch at once; each batch's offsets are remembered
  with a mark of the sink's sends, and committed, without waiting, once the sink reports
  every message up to that mark acknowledged (:class:`~.transport.AcknowledgingSink`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..base import ConfigError, ServiceError, StreamadError
from .config import ServiceConfig
from .transport import AcknowledgingSink, Sink, Source, TopicPartition, commits_asynchronously

__all__ = ["Delivery"]

log = logging.getLogger("streamad.service")


def _flush_again(e: Exception) -> bool:
    """Whether flushing again may deliver after ``e``: streamad's errors say so (``retriable``);
    any other exception a sink lets through (a client library's own) is tried again unless it
    carries ``retriable = False`` itself, as kafka-python's errors do."""
    if isinstance(e, StreamadError):
        return e.retriable
    return getattr(e, "retriable", True)


def _back_off(attempt: int, deadline: float | None) -> None:
    """Wait before retry number ``attempt`` (1, 2, ...): 0.2 s, doubling up to 5 s, and never
    past ``deadline``."""
    pause = min(5.0, 0.2 * 2 ** (attempt - 1))
    if deadline is not None:
        pause = min(pause, max(0.0, deadline - time.monotonic()))
    time.sleep(pause)


class Delivery:
    """Flushes, commits and the pipelined commit points of one pipeline (module doc).

    ``offsets()`` gives the next offset to read of every partition processed so far (what a
    commit now covers); ``stopping()`` tells whether a stop was asked for, and ``deadline()``
    when a stop must be done by.
    """

    #: Seconds one flush of the sink may wait for acknowledgements before it counts as a
    #: failed attempt (retried; nothing is dropped): bounds how long a stop waits on a broker
    #: that does not answer.
    flush_attempt_s = 5.0

    #: commit_mode "pipelined": wait for acknowledgements (flush) once this many batches, or
    #: this many seconds of output, are unacknowledged (a slow or failing broker; the flush
    #: then reports the failure and retries as in "wait" mode).
    max_pending_batches = 64
    max_pending_s = 2.0

    def __init__(self, source: Source, sink: Sink, config: ServiceConfig, *,
                 offsets: Callable[[], dict[TopicPartition, int]], stopping: Callable[[], bool],
                 deadline: Callable[[], float]) -> None:
        self.source, self.sink, self.config = source, sink, config
        self.offsets, self.stopping, self.deadline = offsets, stopping, deadline
        self.unacked = 0  # records processed since the last flush + commit
        self.committed_at = -math.inf  # the first batch commits, however recently the machine booted
        # commit_mode "pipelined": (sink mark, offsets, when) of batches whose outputs were sent
        # but whose offsets are not committed yet, oldest first
        self.points: deque[tuple[Any, dict[TopicPartition, int], float]] = deque()
        self.pipelined = config.commit_mode == "pipelined"
        # True after a commit sent without waiting for the broker's answer: the next checkpoint
        # first commits and waits (a checkpoint's offset must never be ahead of the group's)
        self.commit_unconfirmed = False
        if self.pipelined and not isinstance(sink, AcknowledgingSink):
            raise ConfigError(f"commit_mode 'pipelined' needs a sink that reports acknowledgements "
                              f"(mark/acked); {type(sink).__name__} does not")

    # -- commit_mode "pipelined" ----------------------------------------------------------
    def mark(self, now: float) -> None:
        """Remember the offsets processed so far with a mark of the sink's sends (the batch
        just scored)."""
        self.points.append((self.sink.mark(), self.offsets(), now))

    def lagging(self, now: float) -> bool:
        """Whether acknowledgements lag too far (``max_pending_batches``/``max_pending_s``):
        time to wait for them."""
        return bool(self.points) and (len(self.points) > self.max_pending_batches
                                      or now - self.points[0][2] > self.max_pending_s)

    def commit_acked(self) -> None:
        """Commit, without waiting, the offsets of the newest batch whose outputs, and those of
        every batch before it, are acknowledged."""
        newest = None
        while self.points and self.sink.acked(self.points[0][0]):
            newest = self.points.popleft()
        if not self.points:
            self.unacked = 0
        if newest is not None and newest[1]:
            self.commit_without_waiting(newest[1])

    def commit_without_waiting(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets`` without waiting for the broker's answer (a source that cannot
        commits and waits). A failure is logged: a later commit covers the same offsets, and a
        restart before it re-scores the records (duplicates, never a gap)."""
        try:
            self.source.commit_async(offsets)
            if commits_asynchronously(type(self.source)):
                self.commit_unconfirmed = True
        except StreamadError as e:
            log.warning("event=commit_failed error=%s", json.dumps(str(e)))

    def settle(self) -> bool:
        """Before a checkpoint: make sure its offsets are not ahead of acknowledged output
        (pipelined) nor of the group's committed offset (a commit not confirmed yet), by a
        flush and a commit that waits. False when a stop came while the sink could not deliver."""
        if self.points or self.commit_unconfirmed:
            return self.flush_and_commit()
        return True

    def flush_and_commit(self, wait_for_commit: bool = True) -> bool:
        """Flush the sink, then commit the offsets it covers (with ``wait_for_commit=False``
        without waiting for the broker's answer: :meth:`commit_without_waiting`). Returns
        False, with nothing committed, when a stop was asked for while the sink could not
        deliver (the pipeline's shutdown then has the last word).

        A retriable delivery failure (broker down) is retried with backoff while the input is
        paused, up to ``flush_retries`` times; the sink keeps and re-sends the messages. Any
        other failure raises :class:`ServiceError` with nothing committed, so a restart
        re-scores those records instead of losing them.
        """
        if not self.flush():
            return False
        offsets = self.offsets()
        if not offsets:
            return True
        if not wait_for_commit:
            self.commit_without_waiting(offsets)
            return True
        self.commit(offsets)
        return True

    def flush(self, deadline: float | None = None) -> bool:
        """Flush the sink, retrying retriable failures (see :meth:`flush_and_commit`). With a
        ``deadline`` (shutdown), attempts stop there; without one, they stop when a stop is
        asked for. False when the outputs are not all delivered."""
        retries = max(0, self.config.flush_retries)
        attempt = 0
        delivered = False
        while True:
            timeout = self.flush_attempt_s
            limit = deadline if deadline is not None or not self.stopping() else self.deadline()
            if limit is not None:
                timeout = min(timeout, limit - time.monotonic())
                if timeout <= 0:
                    break
            try:
                self.sink.flush(timeout)
                delivered = True
                break
            except Exception as e:
                if not _flush_again(e) or (deadline is None and attempt >= retries):
                    if attempt:
                        self.source.resume()
                    raise ServiceError(f"sink could not deliver after {attempt + 1} attempt(s): {e}") from e
                # Hold the input while the sink is failing or slow: paused partitions keep the
                # group membership without fetching more work.
                log.warning("event=flush_failed attempt=%d error=%s", attempt + 1, json.dumps(str(e)))
                self.source.pause()
                attempt += 1
                if deadline is None and self.stopping():
                    break
                _back_off(attempt, deadline)
        if attempt:
            self.source.resume()
        if delivered:
            self.points.clear()  # everything sent is acknowledged: a commit now covers it
        return delivered

    def commit(self, offsets: dict[TopicPartition, int], deadline: float | None = None) -> bool:
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
                self.commit_unconfirmed = False
                return True
            except StreamadError as e:
                if not e.retriable:
                    log.warning("event=commit_rejected error=%s", json.dumps(str(e)))
                    return deadline is None
                attempt += 1
                log.warning("event=commit_failed attempt=%d error=%s", attempt, json.dumps(str(e)))
                if deadline is None and (attempt > retries or self.stopping()):
                    if self.stopping():
                        return False
                    raise ServiceError(f"cannot commit offsets: {e}") from e
                _back_off(attempt, deadline)
