"""Scoring: a batch of messages -> per-key detectors and thresholds -> incidents and scores.

:class:`Scorer` is the part of the :class:`~streamad.service.pipeline.Pipeline` that turns
polled messages into outputs: it decodes each message (a malformed one is a dead letter),
groups the records by partition and key, scores each key's records with its detector (one
vectorised call per key and batch, or one call across the keys of a batch for detectors that
share a model), updates each key's threshold, feeds flagged records to the key's incident
state machine and sends what comes out (scores, anomaly events, incident messages) to the
sink. What it keeps per key lives in the partition's :class:`~.partitions.Partition`.

The detectors are :class:`~streamad.base.BaseDetector` objects: the service calls the
capabilities declared there (``features_``, ``warmup_scores_``, ``process_keys``,
``share_model``, ``explain``) directly.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _state
from ..base import BaseDetector, ConfigError, Decision, DecodeError, StateError, StreamadError
from ..incidents import IncidentTracker, add_top_features
from ..records import decode
from .config import ServiceConfig
from .transport import Message, Sink, TopicPartition

if TYPE_CHECKING:
    from .partitions import Partition

__all__ = ["KeyBatch", "Scorer", "TrainedDetectors", "models_for"]

log = logging.getLogger("streamad.service")

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


class KeyBatch:
    """One key's part of a batch while it is being scored."""

    __slots__ = ("detector", "threshold", "pairs", "scores", "rows", "ok", "width", "warm0")

    def __init__(self, detector: BaseDetector, threshold: Any) -> None:
        self.detector, self.threshold = detector, threshold
        self.warm0 = detector.warmup_scores_  # to tell this batch's warm-up scores
        self.pairs: list = []   # (message, record) scored so far, in order ...
        self.scores: list = []  # ... and their scores
        self.rows: list = []    # feature values still to score, ``width`` per record, flat ...
        self.ok: list = []      # ... and their (message, record)
        self.width = 0


class TrainedDetectors:
    """A builder of per-key detectors that all start from the trained detector saved at
    ``path`` (a state file of ``streamad detect --save-state``; npz, never pickle)."""

    def __init__(self, path: str) -> None:
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
        self._make, self._blob = detectors.make, blob
        self.detector_name, self.params = tree["detector"], tree["params"]
        try:
            self._template = self._fresh()
        except StateError as e:
            raise ConfigError(f"detector state {path} does not load: {e}") from None
        log.info("event=detector_state path=%s detector=%s", path, self.detector_name)

    def _fresh(self) -> BaseDetector:
        det = self._make(self.detector_name, **self.params)
        det.load_state_dict(_state.loads(self._blob))  # a fresh copy per key: keys never share arrays
        return det

    def rejoin(self, det: BaseDetector, only_if_equal: bool = True) -> None:
        """Share the template's model (e.g. HypAD: one model for all keys, scored across keys
        at once); a key restored from a checkpoint only if it has not retrained."""
        det.share_model(self._template, only_if_equal=only_if_equal)

    def __call__(self) -> BaseDetector:
        det = self._fresh()
        self.rejoin(det, only_if_equal=False)
        return det


def models_for(config: ServiceConfig, detector_factory: Callable[[], BaseDetector] | None = None,
               threshold_factory: Callable[[], Any] | None = None
               ) -> tuple[ServiceConfig, Callable[[], BaseDetector], Callable[[], Any]]:
    """The builders of each key's detector and threshold (``config``'s unless given), and
    ``config`` with what they run filled in: a trained detector's name and parameters, and
    threshold "auto" resolved to the detector's own. Bad parameters fail here, not per key."""
    if detector_factory is None and config.detector_state:
        detector_factory = TrainedDetectors(config.detector_state)
        config = dataclasses.replace(config, detector=detector_factory.detector_name,
                                     detector_params=detector_factory.params)
    if detector_factory is None:
        from .. import detectors
        detectors.make(config.detector, **config.detector_params)  # fail on bad params now, not per key
        detector_factory = lambda: detectors.make(config.detector, **config.detector_params)  # noqa: E731
    if threshold_factory is None:
        from .. import thresholds
        name, params = thresholds.resolve(config.threshold, config.threshold_params, config.detector)
        if (name, params) != (config.threshold, config.threshold_params):  # "auto": the detector's own
            config = dataclasses.replace(config, threshold=name, threshold_params=params)
        thresholds.make(config.threshold, **config.threshold_params)
        threshold_factory = lambda: thresholds.make(config.threshold, **config.threshold_params)  # noqa: E731
    return config, detector_factory, threshold_factory


@functools.cache
def _scores_across_keys(cls: type[BaseDetector]) -> bool:
    """Whether detectors of class ``cls`` override ``process_keys`` (one model call for the
    keys of a batch), so that even a key with a single record in the batch goes into that
    call instead of ``score_one``/``learn_one``."""
    return cls.process_keys.__func__ is not BaseDetector.process_keys.__func__


class Scorer:
    """Scores batches of polled messages (module doc) and keeps the counts the service reports.

    Parameters
    ----------
    partitions
        The pipeline's ``{(topic, partition): Partition}``; a batch's records update their
        partition's keys and next offset.
    detector_factory, threshold_factory
        Zero-argument builders of a fresh per-key detector / threshold (:func:`models_for`).
    dead_letter
        ``(message, reason) -> None`` for input that cannot be scored.
    """

    def __init__(self, config: ServiceConfig, sink: Sink, partitions: dict[TopicPartition, Partition], *,
                 detector_factory: Callable[[], BaseDetector], threshold_factory: Callable[[], Any],
                 dead_letter: Callable[[Message, str], None], metrics=None,
                 on_event: Callable[[dict], None] | None = None) -> None:
        self.config, self.sink, self.partitions = config, sink, partitions
        self.detector_factory, self.threshold_factory = detector_factory, threshold_factory
        self.dead_letter, self.metrics, self.on_event = dead_letter, metrics, on_event
        self._rejoin = detector_factory.rejoin if isinstance(detector_factory, TrainedDetectors) else None
        self.policy = config.incident_policy
        self._track = config.publish in ("incidents", "both")
        self._per_record = config.publish in ("records", "both")
        self.records_in = self.events_out = self.dead_letters = self.scored = self.schema_changes = 0
        self.incidents_opened = self.incidents_closed = self.incidents_open = 0
        self.suppressed = 0  # messages not sent again after a restart (already on the topic)
        self.replaying = False  # some partition has ``delivered`` messages ahead
        self._reported = (0, 0)  # incidents opened and closed, as the metrics last counted them

    def process(self, batch: list[Message], new_partition: Callable[[TopicPartition, int], Partition]) -> None:
        """Decode the batch, then score it key by key: one vectorised ``process_many`` call per
        key and batch (same results as score_one + learn_one). ``new_partition(tp, offset)``
        makes the state of a partition seen for the first time, at its first record."""
        parts = self.partitions
        groups: dict[tuple[TopicPartition, str], list] = {}
        dlq = 0
        part_tp, part = None, None
        for m in batch:
            tp = (m.topic, m.partition)
            if tp != part_tp:
                part_tp, part = tp, parts.get(tp)
                if part is None:
                    part = new_partition(tp, m.offset)
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
        if self.replaying:
            self.replaying = False
            for p in parts.values():
                if p.delivered is not None:
                    if p.next_offset is not None and p.next_offset > p.replay_until:
                        p.delivered = None  # past everything published before the restart
                    else:
                        self.replaying = True
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

    def _prepare_key(self, part: Partition, key: str, items: list) -> list[KeyBatch]:
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
        batch = KeyBatch(*models)
        rest = items
        if batch.detector.features_ is None:
            rest = items[1:]  # the first record names the features (dict keys), then batch the rest
            self._score_one(batch.detector, items[0], batch)
        if key in part.schema_runs or not self._fill(batch, rest):
            return self._schema_changes(part, key, batch, rest)  # rare: records with other features
        return [batch]

    def _fill(self, batch: KeyBatch, items: list) -> bool:
        """Score ``items`` into ``batch`` (or leave their rows for ``process_keys``). False,
        with nothing scored, when any record's features are not the detector's."""
        detector = batch.detector
        feats = detector.features_
        if feats is not None and (len(items) > 1 or items and _scores_across_keys(type(detector))):
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
            batch.rows, batch.ok, batch.width = rows, items, n
            return True
        if feats is not None and not all(_has_features(item[1].values, feats) for item in items):
            return False
        for item in items:
            self._score_one(detector, item, batch)
        return True

    def _schema_changes(self, part: Partition, key: str, batch: KeyBatch, items: list) -> list[KeyBatch]:
        """``items`` record by record, for a key whose records do not all have its detector's
        features (the probe that found this: one ``{"cpu": ...}`` record locked a device's
        key to one feature, and the 300 three-feature records after it were dead letters).

        A record with other features is a dead letter, unless it is the
        ``schema_change_after``-th in a row with the same new features: a lasting change (a
        firmware update adds a metric), so the key gets a new detector and threshold, which
        score it and the records after it. A lone odd record changes nothing. The count
        survives batches and restarts (it is checkpointed)."""
        out, segment = [batch], []
        feats = batch.detector.features_
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
                    out.append(KeyBatch(*models))
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
        fixed = detector.features_
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

    def _score_one(self, detector, item, batch: KeyBatch) -> None:
        m, rec = item
        try:
            score = float(detector.score_one(rec.values))
            detector.learn_one(rec.values)
        except StreamadError as e:  # e.g. a record whose features differ from the key's earlier ones
            self.dead_letter(m, str(e))
            return
        batch.pairs.append(item)
        batch.scores.append(score)

    def _emit(self, batches: list[tuple[KeyBatch, Partition]]) -> int:
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
            warming = k.detector.warmup_scores_ - k.warm0
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

    def _flagged(self, part: Partition, detector, incident: IncidentTracker | None, m: Message, rec, score: float,
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
            add_top_features(event, explain)
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
    def _explainer(detector: BaseDetector, values) -> Callable[[], list]:
        """The features' contributions to a record's score (node-ae, records: the metrics that
        are off, largest first; none from detectors that do not explain themselves), computed
        only when a message needs them."""

        def top() -> list:
            try:
                return [[name, round(err, 4)] for name, err in detector.explain(values)]
            except StreamadError:
                return []

        return top

    def _publish(self, part: Partition, msg: dict) -> int:
        """Send one message to the anomalies topic, unless a run before a restart already
        published it (module doc). Returns 1 if sent."""
        if part.delivered is not None and msg["offset"] <= part.delivered.get((msg["key"], msg["type"]), -1):
            self.suppressed += 1
            return 0
        self.sink.send(self.config.anomalies_topic, msg["key"].encode(), json.dumps(msg, separators=(",", ":")).encode())
        if self.on_event is not None:
            self.on_event(msg)
        return 1

    # -- partition state ------------------------------------------------------------------
    def keys_state(self, part: Partition) -> dict[str, Any]:
        """What a checkpoint keeps of ``part``'s keys: detectors, thresholds, open incidents
        and schema-change counts (:meth:`restore_keys` reads it back)."""
        tree = {"keys": {k: {"detector": d.state_dict(), "threshold": t.state_dict()} for k, (d, t) in part.models.items()},
                "incidents": {k: inc.state_dict() for k, inc in part.incidents.items()}}
        if part.schema_runs:
            tree["schema_runs"] = {k: [list(f), n] for k, (f, n) in part.schema_runs.items()}
        return tree

    def restore_keys(self, part: Partition, tree: dict[str, Any]) -> None:
        """Load a checkpoint's keys (:meth:`keys_state`) into ``part``."""
        for key, st in tree["keys"].items():
            d, t = self.detector_factory(), self.threshold_factory()
            d.load_state_dict(st["detector"])
            t.load_state_dict(st["threshold"])
            if self._rejoin is not None:
                self._rejoin(d)
            part.models[key] = (d, t)
        for key, st in tree.get("incidents", {}).items():  # checkpoints before incidents have none
            inc = IncidentTracker(key, self.policy, part.context, part.id_prefix)
            inc.load_state_dict(st)
            if inc.open:
                part.incidents[key] = inc
        self.incidents_open += len(part.incidents)
        part.schema_runs = {k: (tuple(f), int(n)) for k, (f, n) in tree.get("schema_runs", {}).items()}

    def release(self, part: Partition) -> None:
        """``part`` was revoked: its new owner carries its open incidents on."""
        self.incidents_open -= len(part.incidents)
