"""The service pipeline over the in-memory transport."""

import json
import math
import time

import numpy as np
import pytest

from streamad import _state
from streamad.base import ConfigError
from streamad.records import Record, encode
from streamad.service import (
    MemoryBroker,
    MemorySink,
    MemorySource,
    Pipeline,
    ServiceConfig,
    ServiceError,
    load_config,
)


class Decision:
    def __init__(self, is_anomaly, threshold):
        self.is_anomaly, self.threshold = is_anomaly, threshold


class MaxThreshold:
    """Stand-in threshold: anomalous when the score beats ``factor`` x the running max of
    earlier non-anomalous scores; the first ``warmup`` scores (detector warm-up) are ignored."""

    def __init__(self, factor=1.5, warmup=60):
        self.factor, self.warmup = factor, warmup
        self.n_, self.max_ = 0, 0.0

    def update(self, score):
        thr = self.factor * self.max_
        anomalous = self.n_ >= 2 * self.warmup and score > thr
        if not anomalous and self.n_ >= self.warmup:
            self.max_ = max(self.max_, score)
        self.n_ += 1
        return Decision(anomalous, thr)

    def state_dict(self):
        return {"n_": self.n_, "max_": self.max_}

    def load_state_dict(self, st):
        self.n_, self.max_ = int(st["n_"]), float(st["max_"])


def _broker(n_partitions=2):
    b = MemoryBroker()
    for t, n in (("telemetry", n_partitions), ("anomalies", 1), ("scores", 1), ("telemetry.dlq", 1)):
        b.create_topic(t, n)
    return b


def _fill(b, n=400, keys=("a", "b", "c"), spikes=(), seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        for j, k in enumerate(keys):
            v = float(rng.normal(10, 1)) + (40.0 if (k, i) in spikes else 0.0)
            b.produce("telemetry", k.encode(), encode(Record(k, 1e9 + i, {"x": v})), partition=j % 2)


def _pipeline(b, tmp_path=None, sink=None, **cfg):
    cfg = {"batch_size": 97, **cfg}
    config = ServiceConfig(detector="zscore", detector_params={"window": 50}, scores_topic="scores",
                           checkpoint_dir=str(tmp_path or ""), poll_timeout_s=0.0, **cfg)
    p = Pipeline(MemorySource(b), sink or MemorySink(b), config, threshold_factory=MaxThreshold)
    p.start()
    return p


def _drain(p):
    while p.run_once():
        pass
    p.shutdown()


def _scores(b):
    return [json.loads(m.value) for m in b.all("scores")]


def test_events_and_scores_trace_to_their_inputs():
    b = _broker()
    _fill(b, spikes={("a", 300), ("c", 350)})
    p = _pipeline(b, publish="records")  # one anomaly event per flagged record
    _drain(p)
    scores = _scores(b)
    assert len(scores) == 1200
    assert {(s["partition"], s["offset"]) for s in scores} == {(m.partition, m.offset) for m in b.all("telemetry")}
    events = [json.loads(m.value) for m in b.all("anomalies")]
    found = {(e["key"], int(e["ts"] - 1e9)) for e in events}
    assert {("a", 300), ("c", 350)} <= found
    assert len(events) < 10  # few false alarms on Gaussian noise
    e = next(e for e in events if e["key"] == "a" and e["ts"] == 1e9 + 300)
    assert set(e) == {"schema", "type", "key", "ts", "score", "threshold", "is_anomaly", "detector", "topic",
                      "partition", "offset"}
    assert e["schema"] == 1 and e["type"] == "anomaly"
    assert e["is_anomaly"] and e["detector"] == "zscore" and e["score"] > e["threshold"]
    src = b.read("telemetry", e["partition"], e["offset"], 1)[0]
    assert json.loads(src.value)["values"]["x"] > 40
    assert b.committed[("streamad", ("telemetry", 0))] == len(b.read("telemetry", 0))


MALFORMED = {
    "truncated": b'{"key": "a", "ts": 1, "values": {"x": 1',
    "binary": b"\xff\xfe\x00junk",
    "wrong type": b'{"key": "a", "ts": 1, "values": {"x": "hot"}}',
    "nan": b'{"key": "a", "ts": 1, "values": {"x": NaN}}',
    "not an object": b"[1, 2, 3]",
    "no values": b'{"key": "a", "ts": 1}',
    "oversize": b'{"key": "a", "ts": 1, "values": {"x": 1}, "pad": "' + b"x" * (2 << 20) + b'"}',
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_record_goes_to_dead_letter_with_reason_and_coordinates(kind):
    b = _broker(1)
    _fill(b, n=5, keys=("a",))
    bad = b.produce("telemetry", b"a", MALFORMED[kind], partition=0)
    _fill(b, n=5, keys=("a",))
    p = _pipeline(b)
    _drain(p)
    [dl] = [json.loads(m.value) for m in b.all("telemetry.dlq")]
    assert dl["source"] == {"topic": "telemetry", "partition": 0, "offset": bad.offset}
    assert dl["reason"] and isinstance(dl["reason"], str)
    import base64
    assert base64.b64decode(dl["value_b64"]) == MALFORMED[kind]
    assert len(_scores(b)) == 10 and p.dead_letters == 1
    assert b.committed[("streamad", ("telemetry", 0))] == 11


class FailingSink(MemorySink):
    def flush(self, timeout_s=30.0):
        raise OSError("broker unreachable")


def test_offsets_are_not_committed_when_the_sink_cannot_flush():
    b = _broker()
    _fill(b, n=50)
    p = _pipeline(b, sink=FailingSink(b), flush_retries=1)
    with pytest.raises(ServiceError, match="broker unreachable"):
        p.run_once()
    assert b.committed == {}
    assert b.all("scores") == []


def _reference_scores(seed):
    """Score per (partition, offset) of 300 records per key, scored in one uninterrupted run."""
    b = _broker()
    _fill(b, n=300, seed=seed)
    _drain(_pipeline(b))
    return {(s["partition"], s["offset"]): s["score"] for s in _scores(b)}


def _assert_every_offset_scored_as(b, ref):
    """Every input offset has a score, and every score (duplicates too) equals the reference."""
    got = {}
    for s in _scores(b):
        got.setdefault((s["partition"], s["offset"]), []).append(s["score"])
    assert set(got) == set(ref)
    for k, v in got.items():
        assert all(math.isclose(x, ref[k], rel_tol=1e-9, abs_tol=1e-12) for x in v), (k, v, ref[k])
    return got


def test_checkpoint_restore_gives_identical_subsequent_scores(tmp_path):
    ref = _reference_scores(seed=1)
    b2 = _broker()
    _fill(b2, n=300, seed=1)
    first = _pipeline(b2, tmp_path, checkpoint_every_records=100)
    for _ in range(3):  # part of the stream, then "crash" (no shutdown)
        first.run_once()
    ckpts = sorted((tmp_path / "streamad").glob("*.state"))
    assert ckpts, "a checkpoint should have been written"
    tree = _state.load(ckpts[0])
    assert tree["offset"] > 0 and set(tree["keys"]) <= {"a", "b", "c"}
    second = _pipeline(b2, tmp_path, checkpoint_every_records=100)
    _drain(second)
    got = _assert_every_offset_scored_as(b2, ref)
    assert any(len(v) > 1 for v in got.values())  # replayed from the checkpoint, not the commit


@pytest.mark.parametrize("commit_mode", ["wait", "pipelined"])
def test_a_crash_before_a_partitions_first_checkpoint_replays_it_from_its_first_record(tmp_path, commit_mode):
    # Offsets are committed batch by batch, checkpoints come every N records: a crash after a
    # commit but before a partition's first checkpoint must not resume it at the commit with
    # empty state (the records before the commit would then be missing from its windows).
    ref = _reference_scores(seed=2)
    b2 = _broker()
    _fill(b2, n=300, seed=2)
    first = _pipeline(b2, tmp_path, checkpoint_every_records=10_000, commit_mode=commit_mode)
    for _ in range(4):  # part of the stream, committed, no checkpoint due yet; then "crash"
        first.run_once()
    assert all(first.source.committed(tp) > 0 for tp in first.partitions)
    _drain(_pipeline(b2, tmp_path, checkpoint_every_records=10_000, commit_mode=commit_mode))
    _assert_every_offset_scored_as(b2, ref)


def test_checkpoint_ahead_of_a_recreated_topic_reads_the_new_log_from_its_start(tmp_path, caplog):
    b = _broker()
    _fill(b, n=200)
    _drain(_pipeline(b, tmp_path))
    assert max(_state.load(f)["offset"] for f in (tmp_path / "streamad").glob("*.state")) > 100
    recreated = _broker()  # same topic names, empty logs: the checkpoints point past their ends
    _fill(recreated, n=30, seed=7)
    with caplog.at_level("WARNING", logger="streamad.service"):
        _drain(_pipeline(recreated, tmp_path))
    assert "event=checkpoint_ahead_of_log" in caplog.text
    assert len(_scores(recreated)) == 30 * 3  # every record of the new log, none skipped


def test_commit_interval_batches_the_wait_for_acks_but_commits_only_flushed_output(monkeypatch):
    real = time.monotonic
    booted = real() - 1.0  # as on a machine started a second ago: the first batch still commits
    monkeypatch.setattr(time, "monotonic", lambda: real() - booted)
    b = _broker()
    _fill(b, n=300)
    sink = MemorySink(b)
    flushes = []
    original = sink.flush
    sink.flush = lambda timeout_s=30.0: (flushes.append(len(b.all("scores"))), original(timeout_s))[1]
    p = _pipeline(b, sink=sink, commit_interval_s=3600.0)
    for _ in range(5):
        assert p.run_once() > 0
    assert len(flushes) == 1  # the first batch; the next ones wait for the interval
    assert all(p.source.committed(tp) is None or p.source.committed(tp) <= 97 for tp in p.partitions)
    _drain(p)  # an empty poll (idle) and shutdown flush and commit everything
    assert sum(p.source.committed(tp) for tp in p.partitions) == 900
    assert len(_scores(b)) == 900


def test_checkpoint_of_another_detector_is_refused(tmp_path):
    b = _broker()
    _fill(b, n=20)
    _drain(_pipeline(b, tmp_path))
    config = ServiceConfig(detector="gaussian", checkpoint_dir=str(tmp_path), poll_timeout_s=0.0)
    p = Pipeline(MemorySource(b), MemorySink(b), config, threshold_factory=MaxThreshold)
    from streamad.base import StateError
    with pytest.raises(StateError, match="zscore"):
        p.start()


def test_config_file_and_flags(tmp_path):
    f = tmp_path / "serve.toml"
    f.write_text('[kafka]\nbootstrap = "h:1"\n[topics]\ninput = ["t1", "t2"]\n[detector]\nname = "zscore"\n'
                 'params = {window = 9}\n[service]\nhttp_port = 9100\n')
    cfg = load_config(f, bootstrap="h:2", batch_size=None)
    assert (cfg.bootstrap, cfg.input_topics, cfg.detector_params, cfg.http_port) == ("h:2", ["t1", "t2"],
                                                                                    {"window": 9}, 9100)


@pytest.mark.parametrize("text, message", [
    ("[kafka\n", "not valid TOML"),
    ("[kafak]\n", "unknown table [kafak]"),
    ("[service]\nbatch_size = 'x'\n", "batch_size: expected an integer"),
    ("[service]\nbatch_size = 0\n", "batch_size must be at least 1"),
    ("[topics]\ninput = []\n", "needs at least one topic"),
    ("[detector]\nfeatures = [\"a\", \"a\"]\n", "features must be distinct"),
    ("[detector]\nfeatures = \"cpu\"\n", "features: expected a list"),
    ("[detector]\nschema_change_after = 0\n", "schema_change_after must be at least 1"),
    ("[checkpoint]\nstore = \"disk\"\n", "store must be 'file' or 'kafka'"),
    ("[service]\nshutdown_timeout_s = -1\n", "shutdown_timeout_s and broker_timeout_s must be positive"),
])
def test_config_errors_are_one_line(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as e:
        load_config(f)
    assert "\n" not in str(e.value)


def test_missing_config_file_and_unknown_detector(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")
    b = _broker()
    with pytest.raises(ConfigError, match="unknown detector"):
        Pipeline(MemorySource(b), MemorySink(b), ServiceConfig(detector="nope"), threshold_factory=MaxThreshold)


def test_record_with_changed_features_goes_to_dead_letter_and_the_key_keeps_scoring():
    b = _broker(1)
    _fill(b, n=30, keys=("a",))
    bad = b.produce("telemetry", b"a", encode(Record("a", 2e9, {"x": 1.0, "y": 2.0})), partition=0)
    renamed = b.produce("telemetry", b"a", encode(Record("a", 2e9 + 1, {"z": 1.0})), partition=0)
    _fill(b, n=30, keys=("a",))
    p = _pipeline(b)
    _drain(p)
    dead = [json.loads(m.value) for m in b.all("telemetry.dlq")]
    assert [d["source"]["offset"] for d in dead] == [bad.offset, renamed.offset]
    assert "features" in dead[0]["reason"]
    assert len(_scores(b)) == 60 and p.dead_letters == 2


class FlakySink(MemorySink):
    """Fails ``failures`` flushes with a retriable error (keeping the messages), then delivers."""

    def __init__(self, broker, failures, retriable=True):
        super().__init__(broker)
        self.failures, self.retriable = failures, retriable

    def flush(self, timeout_s=30.0):
        if self.failures:
            self.failures -= 1
            e = OSError("broker away")
            e.retriable = self.retriable
            raise e
        super().flush(timeout_s)


def test_retriable_flush_failures_pause_then_deliver_and_commit(monkeypatch):
    import streamad.service.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module.time, "sleep", lambda s: None)
    b = _broker()
    _fill(b, n=20)
    p = _pipeline(b, sink=FlakySink(b, failures=2))
    paused = []
    p.source.pause = lambda: paused.append(True)
    p.run_once()
    assert paused == [True, True]
    assert len(_scores(b)) == 60
    assert sum(b.committed.values()) == 60


def test_non_retriable_flush_failure_stops_without_commit():
    b = _broker()
    _fill(b, n=20)
    p = _pipeline(b, sink=FlakySink(b, failures=1, retriable=False))
    with pytest.raises(ServiceError, match="1 attempt"):
        p.run_once()
    assert b.committed == {}


def test_every_key_starts_from_a_saved_trained_detector(tmp_path):
    from streamad import detectors

    rng = np.random.default_rng(3)
    trained = detectors.make("gaussian", window=8)
    for v in rng.normal(10, 1, size=500):
        trained.learn_one({"x": float(v)})  # the service's records carry the feature "x"
    path = tmp_path / "model.npz"
    _state.save_atomic(path, trained.state_dict())

    b = _broker(2)
    _fill(b, n=30, keys=("a", "b"))
    config = ServiceConfig(detector="zscore", detector_state=str(path), scores_topic="scores",
                           batch_size=97, poll_timeout_s=0.0)
    p = Pipeline(MemorySource(b), MemorySink(b), config, threshold_factory=MaxThreshold)
    assert p.config.detector == "gaussian"  # the file names the detector, not the config
    p.start()
    _drain(p)
    got = {}
    for s in _scores(b):
        got.setdefault(s["key"], []).append(s["score"])
    for key in ("a", "b"):  # each key continues from its own copy of the trained model
        values = np.array([[json.loads(m.value)["values"]["x"]] for m in b.all("telemetry")
                           if m.key == key.encode()])
        ref = detectors.make("gaussian", window=8)
        ref.load_state_dict(_state.load(path))
        assert got[key] == pytest.approx(ref.process_many(values).tolist(), rel=1e-9)
    untrained = detectors.make("gaussian", window=8).process_many(values)
    assert not np.allclose(untrained, got["b"])
    assert not b.all("telemetry.dlq")  # a fresh detector would score differently


def test_keys_of_a_trained_hypad_share_one_model_and_score_as_if_alone(tmp_path):
    from streamad import detectors

    params = {**detectors.HypAD._unit_test_params(), "refit_every": None}
    trained = detectors.make("hypad", **params)
    t = np.arange(400)
    trained.learn_many(np.sin(t / 5.0)[:, None] * 3 + 10)
    trained.features_ = ["x"]  # the service's records carry the feature "x"
    path = tmp_path / "hypad.npz"
    _state.save_atomic(path, trained.state_dict())

    b = _broker(2)
    _fill(b, n=60, keys=("a", "b", "c"))
    config = ServiceConfig(detector_state=str(path), scores_topic="scores", batch_size=50, poll_timeout_s=0.0,
                           checkpoint_dir=str(tmp_path / "ck"))
    p = Pipeline(MemorySource(b), MemorySink(b), config, threshold_factory=MaxThreshold)
    p.start()
    _drain(p)
    models = [m[0] for part in p.partitions.values() for m in part.models.values()]
    assert len(models) == 3 and models[0]._nets is models[1]._nets is models[2]._nets
    again = Pipeline(MemorySource(b), MemorySink(b), config, threshold_factory=MaxThreshold)
    again.start()  # restores every key from its checkpoint: same weights, so one model again
    restored = [m[0] for part in again.partitions.values() for m in part.models.values()]
    assert len(restored) == 3 and restored[0]._nets is restored[1]._nets is restored[2]._nets
    assert restored[0]._nets is not models[0]._nets
    again.shutdown()
    got = {}
    for s in _scores(b):
        got.setdefault(s["key"], []).append(s["score"])
    for key in ("a", "b", "c"):  # one model call per batch, the scores of each key alone
        values = np.array([[json.loads(m.value)["values"]["x"]] for m in b.all("telemetry")
                           if m.key == key.encode()])
        ref = detectors.make("hypad", **params)
        ref.load_state_dict(_state.load(path))
        assert np.allclose(got[key], ref.process_many(values), rtol=1e-5, atol=1e-7)
        assert len(got[key]) == 60 and max(got[key]) > 0


@pytest.mark.parametrize("content, message", [
    (None, "cannot read detector state"),
    (b"not an npz file", "is not a streamad state file"),
])
def test_bad_detector_state_file_is_a_one_line_config_error(tmp_path, content, message):
    path = tmp_path / "model.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as e:
        Pipeline(MemorySource(_broker()), MemorySink(_broker()), ServiceConfig(detector_state=str(path)))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("detector", ["gaussian", "zscore"])
def test_many_keys_one_record_each_per_batch_score_as_if_alone(detector):
    # 40 keys, 13-record batches: most keys bring one record (or two) to a batch, which goes
    # through the detector's cross-key step (process_keys) instead of a call per key
    from streamad import detectors

    keys = tuple(f"k{i:02d}" for i in range(40))
    b = _broker(2)
    _fill(b, n=80, keys=keys, spikes={("k07", 70)})
    params = {"window": 8, "refit_every": 16} if detector == "gaussian" else {"window": 10}
    config = ServiceConfig(detector=detector, detector_params=params, scores_topic="scores", batch_size=13,
                           poll_timeout_s=0.0)
    p = Pipeline(MemorySource(b), MemorySink(b), config, threshold_factory=MaxThreshold)
    p.start()
    _drain(p)
    got = {}
    for s in _scores(b):
        got.setdefault(s["key"], []).append(s["score"])
    for key in keys:
        values = np.array([[json.loads(m.value)["values"]["x"]] for m in b.all("telemetry")
                           if m.key == key.encode()])
        ref = detectors.make(detector, **params).process_many(values)
        assert np.allclose(got[key], ref, rtol=1e-9, atol=1e-12), key
    assert got["k07"][70] == max(got["k07"][20:])  # the spike stands out after warm-up


@pytest.mark.parametrize("full_every_s", [60.0, 0.0])
def test_managed_gc_collects_between_batches_and_gives_automatic_collection_back(full_every_s):
    import gc
    import weakref

    class Cycle:
        pass

    made = []

    class LeakyThreshold(MaxThreshold):
        def update(self, score):
            c = Cycle()
            c.me = c  # garbage only the cyclic collector can free
            made.append(weakref.ref(c))
            return super().update(score)

    b = _broker()
    _fill(b, n=400)
    config = ServiceConfig(detector="zscore", batch_size=97, poll_timeout_s=0.0)
    p = Pipeline(MemorySource(b), MemorySink(b), config, threshold_factory=LeakyThreshold)
    p.manage_gc, p.full_gc_every_s = True, full_every_s
    p.start()
    assert gc.isenabled()
    try:
        p.run_once()
        assert not gc.isenabled()  # no automatic collections inside batches
        while p.run_once():
            alive = sum(r() is not None for r in made)
            # young generations once > 700 new objects survive; or everything, every batch
            assert alive <= (800 if full_every_s else 0)
    finally:
        p.shutdown()
    assert gc.isenabled()
    assert len(made) == 1200


def test_managed_gc_freezes_long_lived_state_and_scans_it_again_after_a_rebalance():
    """Per-key state that survives a full collection is frozen, so the next full collections
    do not rescan it; cyclic garbage among frozen objects is freed by the deep collection that
    follows a rebalance, or the periodic one."""
    import gc
    import weakref

    class Cycle:
        pass

    replaced = []

    class HoldingThreshold(MaxThreshold):
        """Holds a self-referencing object and swaps it for a new one at every update: the old
        one is garbage only the cyclic collector can free."""

        held = None

        def update(self, score):
            if self.held is not None:
                replaced.append(weakref.ref(self.held))
            c = Cycle()
            c.me = c
            self.held = c
            return super().update(score)

    b = _broker()
    _fill(b, n=300)
    config = ServiceConfig(detector="zscore", batch_size=60, poll_timeout_s=0.0)
    p = Pipeline(MemorySource(b), MemorySink(b), config, threshold_factory=HoldingThreshold)
    p.manage_gc, p.full_gc_every_s, p.deep_gc_every_s = True, 0.0, 3600.0  # a full collection per batch
    frozen_before = gc.get_freeze_count()
    p.start()
    try:
        p.run_once()
        assert gc.get_freeze_count() > frozen_before  # the survivors, keys' state among them
        state = [t for part in p.partitions.values() for _, t in part.models.values()]
        scanned = {id(o) for o in gc.get_objects()}  # what full collections scan: not the frozen
        assert state and not any(id(t) in scanned for t in state)
        while p.run_once():
            pass
        # each key's object held at a full collection was frozen with it, so its garbage waits
        alive = [r for r in replaced if r() is not None]
        assert alive and len(alive) < len(replaced)  # the rest never lived through a collection
        p._on_revoke([("telemetry", 0)])  # a rebalance takes a partition away ...
        _fill(b, n=10, seed=1)
        p.run_once()  # ... and the next full collection scans everything again
        assert all(r() is None for r in alive)
        # periodic deep collections free such garbage without a rebalance, too
        _fill(b, n=10, seed=2)
        p.run_once()
        alive = [r for r in replaced if r() is not None]
        assert alive
        p.deep_gc_every_s = 0.0
        _fill(b, n=10, seed=3)
        p.run_once()
        assert all(r() is None for r in alive)
    finally:
        p.shutdown()
        gc.unfreeze()  # leave the test process as it was
    assert gc.isenabled()


class LaggingSink(MemorySink):
    """Delivers (acknowledges) the messages of each mark only ``lag`` marks later, or at a
    flush; ``fail_flush`` makes every flush fail for good."""

    def __init__(self, broker, lag, fail_flush=False):
        super().__init__(broker)
        self.lag, self.fail_flush = lag, fail_flush
        self.groups, self.delivered = [], 0

    def _deliver(self, upto):
        upto = max(upto, 0)
        for group in self.groups[self.delivered:upto]:
            for topic, key, value in group:
                self.broker.produce(topic, key, value)
        self.delivered = max(self.delivered, upto)

    def mark(self):
        self.groups.append(self._pending)
        self._pending = []
        self._deliver(len(self.groups) - self.lag)
        return len(self.groups) - 1

    def acked(self, token):
        return token < self.delivered

    def flush(self, timeout_s=30.0):
        if self.fail_flush:
            e = OSError("broker away")
            e.retriable = False
            raise e
        self.groups.append(self._pending)
        self._pending = []
        self._deliver(len(self.groups))


def _watch_commits(b, p):
    """Record, at each commit, the input offsets committed and the scores delivered by then."""
    seen = []
    commit = p.source.commit

    def watched(offsets, timeout_s=None):
        seen.append((dict(offsets), {(s["partition"], s["offset"]) for s in _scores(b)}, p.records_in))
        commit(offsets)

    p.source.commit = watched
    return seen


def _reference_run_and_a_fresh_broker():
    """Sorted (partition, offset, score) of a plain wait-mode run over 40-record batches, and a
    fresh broker holding the same input."""
    b = _broker()
    _fill(b, n=300, seed=2)
    _drain(_pipeline(b, batch_size=40))
    b2 = _broker()
    _fill(b2, n=300, seed=2)
    return sorted((s["partition"], s["offset"], s["score"]) for s in _scores(b)), b2


def test_pipelined_commits_follow_acknowledged_output_and_score_like_wait_mode(tmp_path):
    reference, b2 = _reference_run_and_a_fresh_broker()
    p = _pipeline(b2, tmp_path, sink=LaggingSink(b2, lag=3), batch_size=40, commit_mode="pipelined",
                  checkpoint_every_records=200)
    seen = _watch_commits(b2, p)
    while p.run_once():
        ckpts = {path.name: _state.load(path)["offset"] for path in (tmp_path / "streamad").glob("*.state")}
        delivered = {(s["partition"], s["offset"]) for s in _scores(b2)}
        for name, offset in ckpts.items():  # a checkpoint never runs ahead of delivered output
            part = int(name.rsplit("-", 1)[1].split(".")[0])
            assert all((part, o) in delivered for o in range(offset))
    assert len(seen) > 5 and ckpts
    # commits happened while later batches were still unacknowledged ...
    assert any(sum(offsets.values()) < records_in for offsets, _, records_in in seen)
    p.shutdown()
    for offsets, delivered, _ in seen:  # ... and each covered only delivered output
        for (_, part), offset in offsets.items():
            assert all((part, o) in delivered for o in range(offset))
    assert sum(b2.committed.values()) == 900
    assert sorted((s["partition"], s["offset"], s["score"]) for s in _scores(b2)) == reference


def test_pipelined_mode_waits_once_acknowledgements_lag_and_reports_a_failing_sink():
    b = _broker()
    _fill(b, n=100)
    p = _pipeline(b, sink=LaggingSink(b, lag=10 ** 6, fail_flush=True), batch_size=10, commit_mode="pipelined")
    p.max_pending_batches = 5
    for _ in range(5):
        p.run_once()
    with pytest.raises(ServiceError, match="broker away"):
        p.run_once()
    assert b.committed == {} and b.all("scores") == []


def test_pipelined_mode_needs_a_sink_that_reports_acknowledgements():
    class PlainSink:
        def send(self, topic, key, value): pass
        def flush(self, timeout_s=30.0): pass
        def close(self): pass

    with pytest.raises(ConfigError, match="pipelined"):
        Pipeline(MemorySource(_broker()), PlainSink(), ServiceConfig(commit_mode="pipelined"))
    with pytest.raises(ConfigError, match="commit_mode"):
        ServiceConfig.from_mapping({"service": {"commit_mode": "async"}})


class InFlightCommitSource(MemorySource):
    """A source whose ``commit_async`` only lands when :meth:`land` is called (a commit still
    in flight), and that records every commit."""

    def __init__(self, broker):
        super().__init__(broker)
        self.in_flight, self.calls = [], []

    def commit(self, offsets, timeout_s=None):
        self.calls.append("wait")
        super().commit(offsets)

    def commit_async(self, offsets):
        self.calls.append("async")
        self.in_flight.append(dict(offsets))

    def land(self):
        for offsets in self.in_flight:
            super().commit(offsets)
        self.in_flight = []


def test_wait_mode_commits_without_waiting_but_never_checkpoints_ahead_of_the_group(tmp_path):
    reference, b2 = _reference_run_and_a_fresh_broker()
    p = _pipeline(b2, tmp_path, batch_size=40, checkpoint_every_records=100)
    source = p.source = InFlightCommitSource(b2)
    p.start()
    delivered_at_commit = []
    commit_async = source.commit_async
    source.commit_async = lambda offsets: (delivered_at_commit.append(
        (dict(offsets), {(s["partition"], s["offset"]) for s in _scores(b2)})), commit_async(offsets))
    while p.run_once():
        for path in (tmp_path / "streamad").glob("*.state"):  # checkpoint offset <= the group's commit
            part = int(path.name.rsplit("-", 1)[1].split(".")[0])
            assert _state.load(path)["offset"] <= (source.committed(("telemetry", part)) or 0)
        if len(source.in_flight) % 3 == 2:
            source.land()
    p.shutdown()
    # the outputs were acknowledged before each commit was sent ...
    for offsets, delivered in delivered_at_commit:
        for (_, part), offset in offsets.items():
            assert all((part, o) in delivered for o in range(offset))
    # ... most commits did not wait; those that did came before checkpoints and at shutdown
    assert source.calls.count("async") > 2 * source.calls.count("wait") > 0
    assert sum(b2.committed.values()) == 900
    assert sorted((s["partition"], s["offset"], s["score"]) for s in _scores(b2)) == reference


@pytest.mark.parametrize("detector", ["hypad", "node-ae"])
def test_the_threshold_never_learns_the_scores_a_detector_gives_before_its_model(detector):
    # HypAD and node-ae score 0.0 until their warm-up is in and they train; a SPOT calibrated
    # on those zeros has threshold 0 and would flag every record after (measured: 100%)
    from streamad import detectors

    b = _broker(1)
    _fill(b, n=400, keys=("a",))
    params = type(detectors.make(detector))._unit_test_params()
    config = ServiceConfig(detector=detector, detector_params=params, scores_topic="scores", publish="records",
                           threshold="spot", threshold_params={"init": 50}, poll_timeout_s=0.0, batch_size=37)
    p = Pipeline(MemorySource(b), MemorySink(b), config)
    p.start()
    _drain(p)
    scores = [s["score"] for s in _scores(b)]
    det = p.partitions[("telemetry", 0)].models["a"][0]
    warm = det.warmup_scores_
    assert len(scores) == 400 and warm >= 50 and not any(scores[:warm]) and all(scores[warm:])
    events = [json.loads(m.value) for m in b.all("anomalies")]
    assert all(e["ts"] - 1e9 >= warm + 50 for e in events)  # SPOT calibrates on the first 50 real scores
    # Gaussian noise: a few alarms, not one per record. HypAD scores a record by the residual
    # of the window it completes, so one excursion is flagged over a few consecutive records:
    # count incidents (runs of records) as well as records.
    flagged = sorted(int(e["ts"] - 1e9) for e in events)
    incidents = sum(1 for i, t in enumerate(flagged) if i == 0 or t != flagged[i - 1] + 1)
    assert incidents < 20 and len(events) < (400 - warm - 50) / 3, (incidents, len(events))
