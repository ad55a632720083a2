"""Stopping and health on the in-memory transport: a stop ends within the shutdown time
whatever the broker does, checkpoints come before the final commit, the result says whether
everything went through, and /healthz says why it is unhealthy."""

import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from streamad import _state
from streamad.records import Record, encode
from streamad.service import MemoryBroker, MemorySink, MemorySource, Pipeline, ServiceConfig
from streamad.service.app import serve
from streamad.service.metrics import Metrics, serve_http
from streamad.service.store import MemoryStateStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_service_app import _get  # noqa: E402


class Unreachable(Exception):
    retriable = True


def _broker(n=300):
    b = MemoryBroker()
    for t, parts in (("telemetry", 2), ("anomalies", 1), ("scores", 1), ("telemetry.dlq", 1)):
        b.create_topic(t, parts)
    rng = np.random.default_rng(0)
    for i in range(n):
        for j, k in enumerate(("a", "b", "c")):
            b.produce("telemetry", k.encode(), encode(Record(k, 1e9 + i, {"x": float(rng.normal())})), partition=j % 2)
    return b


def _config(tmp_path, **kw):
    return ServiceConfig(detector="zscore", detector_params={"window": 30}, scores_topic="scores", poll_timeout_s=0.0,
                         batch_size=100, checkpoint_dir=str(tmp_path), **kw)


class HangingSink(MemorySink):
    """A sink whose broker went away: every flush waits its whole timeout, then fails."""

    def __init__(self, broker):
        super().__init__(broker)
        self.down = False
        self.waited = []

    def flush(self, timeout_s=30.0):
        if self.down:
            self.waited.append(timeout_s)
            time.sleep(timeout_s)
            raise Unreachable("broker unreachable")
        super().flush(timeout_s)


class NoCommitSource(MemorySource):
    """A source whose commits fail (the broker went away after the outputs were delivered)."""

    down = False

    def commit(self, offsets, timeout_s=None):
        if self.down:
            if timeout_s:
                time.sleep(min(timeout_s, 0.2))
            from streamad.base import CommitError
            raise CommitError("commit failed: broker unreachable", retriable=True)
        super().commit(offsets)


def _offsets(tmp_path):
    return {p.name: _state.load(p)["offset"] for p in (tmp_path / "streamad").glob("*.state")}


def test_a_stop_while_the_sink_cannot_deliver_ends_in_time_and_keeps_the_last_good_checkpoints(tmp_path):
    b = _broker()
    sink = HangingSink(b)
    p = Pipeline(MemorySource(b), sink, _config(tmp_path, shutdown_timeout_s=3.0))
    p.start()
    for _ in range(3):
        p.run_once()
    p._commit_now(time.monotonic())  # flushed, committed and (at first records) checkpointed
    good = _offsets(tmp_path)
    sink.down = True
    p.stop()  # SIGTERM, then the batch in flight: scored, but its outputs cannot be delivered
    t0 = time.monotonic()
    p.run_once()
    assert p.shutdown() is False and p.clean_stop is False
    assert time.monotonic() - t0 < 3.0 - min(p.close_reserve_s, 3.0 / 4) + 0.5
    assert sink.waited and all(w <= 3.0 for w in sink.waited)
    assert _offsets(tmp_path) == good  # the checkpoints of undelivered records were not written


def test_a_stop_whose_final_commit_fails_writes_its_checkpoints_first_and_nothing_is_lost(tmp_path):
    b = _broker()
    source = NoCommitSource(b)
    p = Pipeline(source, MemorySink(b), _config(tmp_path, shutdown_timeout_s=2.0))
    p.start()
    for _ in range(3):
        p.run_once()
    source.down = True  # the broker goes away after these outputs were acknowledged
    p.run_once()
    p.stop()
    t0 = time.monotonic()
    assert p.shutdown() is False
    assert time.monotonic() - t0 < 2.0
    committed = {tp: source.committed(tp) or 0 for tp in p.partitions}
    offsets = {f"{t}-{n}.state": p.partitions[(t, n)].next_offset for t, n in p.partitions}
    assert _offsets(tmp_path) == offsets  # written although the commit then failed ...
    assert any(offsets[f"{t}-{n}.state"] > c for (t, n), c in committed.items())  # ... ahead of the group
    # The next start resumes from the checkpoints: every record scored, none scored twice.
    again = Pipeline(MemorySource(b), MemorySink(b), _config(tmp_path))
    again.start()
    while again.run_once():
        pass
    assert again.shutdown() is True
    scored = [(s["partition"], s["offset"]) for s in map(json.loads, (m.value for m in b.all("scores")))]
    assert len(scored) == len(set(scored)) == 900


def test_serve_reports_a_clean_stop_and_closes_within_the_shutdown_time(tmp_path):
    b = _broker(50)
    closed = {}

    class Source(MemorySource):
        def close(self, timeout_s=None):
            closed["source"] = timeout_s

    class Sink(MemorySink):
        def close(self, timeout_s=None):
            closed["sink"] = timeout_s

    p = serve(_config(tmp_path, shutdown_timeout_s=8.0), Source(b), Sink(b), install_signals=False,
              until=lambda: len(b.all("scores")) >= 150)
    assert p.clean_stop is True
    assert 0 < closed["source"] <= 4.0 and 0 < closed["sink"] <= 4.0  # shares of what is left of 8 s


def test_a_state_store_takes_the_place_of_the_checkpoint_dir(tmp_path):
    b = _broker()
    store = MemoryStateStore()
    config = ServiceConfig(detector="zscore", detector_params={"window": 30}, scores_topic="scores",
                           poll_timeout_s=0.0, batch_size=100, checkpoint_every_records=50)
    p = Pipeline(MemorySource(b), MemorySink(b), config, state_store=store)
    p.start()
    for _ in range(7):
        p.run_once()  # partition 0 (600 records), 100 of partition 1; then "crash": no shutdown
    assert set(store.blobs) == {("telemetry", 0), ("telemetry", 1)}
    again = Pipeline(MemorySource(b), MemorySink(b), config, state_store=store)
    again.start()
    assert all(part.models for part in again.partitions.values())  # restored, not empty
    while again.run_once():
        pass
    again.shutdown()
    got = {}
    for s in map(json.loads, (m.value for m in b.all("scores"))):
        got.setdefault((s["partition"], s["offset"]), set()).add(s["score"])
    assert len(got) == 900 and all(len(v) == 1 for v in got.values())  # duplicates score the same


class SilentSource(MemorySource):
    contact = None

    def broker_contact(self):
        return self.contact


def test_health_says_the_broker_is_unreachable_and_is_ok_again_once_it_answers():
    b = _broker(10)
    source = SilentSource(b)
    p = Pipeline(source, MemorySink(b), ServiceConfig(detector="zscore", poll_timeout_s=0.0, broker_timeout_s=5.0))
    source.contact = time.monotonic()
    assert p.health() == (True, "ok")
    source.contact = time.monotonic() - 7.0
    ok, reason = p.health()
    assert not ok and re.fullmatch(r"broker unreachable: no answer from 127.0.0.1:9092 for 7\.\d s \(limit 5 s\)", reason)
    source.contact = time.monotonic()
    assert p.health()[0]
    p.last_batch_at -= 120  # the loop is stuck
    assert not p.health()[0] and "no poll for 120 s" in p.health()[1]


def test_healthz_answers_503_with_the_reason():
    state = [(False, "broker unreachable: no answer for 9 s")]
    server = serve_http(Metrics(), 0, is_healthy=lambda: state[0])
    try:
        port = server.server_address[1]
        assert _get(port, "/healthz") == (503, "unhealthy: broker unreachable: no answer for 9 s\n")
        state[0] = (True, "ok")
        assert _get(port, "/healthz") == (200, "ok\n")
    finally:
        server.shutdown()
        server.server_close()


def test_bad_shutdown_and_store_flags_are_one_line_errors(capsys):
    from streamad.cli import main

    assert main(["serve", "--shutdown-timeout", "0"]) == 2
    err = capsys.readouterr().err
    assert "shutdown_timeout_s and broker_timeout_s must be positive" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--state-store", "disk"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "invalid choice: 'disk'" in err and len(err.strip().splitlines()) == 1
