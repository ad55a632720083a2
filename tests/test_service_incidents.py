"""Incidents in the service (in-memory transport): what the anomalies topic gets, checkpoints,
crash safety, metrics and configuration."""

import json

import pytest
from schema_check import assert_valid
from test_service_pipeline import MaxThreshold, _broker, _fill

from streamad.base import ConfigError
from streamad.cli import main
from streamad.service import MemorySink, MemorySource, Pipeline, ServiceConfig, load_config
from streamad.service.metrics import Metrics
from streamad.service.transport import MemoryOutputLog


def _config(tmp_path=None, **kw):
    kw = {"batch_size": 50, "incident_gap": 20, "update_interval": 100, **kw}
    return ServiceConfig(detector="zscore", detector_params={"window": 50}, scores_topic="scores",
                         checkpoint_dir=str(tmp_path or ""), poll_timeout_s=0.0, **kw)


def _pipeline(b, config, outputs=None, metrics=None):
    p = Pipeline(MemorySource(b), MemorySink(b), config, threshold_factory=MaxThreshold, outputs=outputs,
                 metrics=metrics)
    p.start()
    return p


def _drain(p, shutdown=True):
    while p.run_once():
        pass
    if shutdown:
        p.shutdown()


def _messages(b):
    return [json.loads(m.value) for m in b.all("anomalies")]


def _of(msgs, kind):
    return [m for m in msgs if m["type"] == kind]


def test_each_spike_is_one_open_and_one_close_traced_to_its_input():
    b = _broker()
    _fill(b, spikes={("a", 200), ("a", 201), ("a", 300), ("c", 350)})
    p = _pipeline(b, _config())
    _drain(p)
    msgs = _messages(b)
    for m in msgs:
        assert_valid(m)
    opens = {(m["key"], int(m["ts"] - 1e9)) for m in _of(msgs, "incident_open")}
    assert {("a", 200), ("a", 300), ("c", 350)} <= opens  # 200 and 201: one incident; 300: 99 records later
    closes = {m["id"]: m for m in _of(msgs, "incident_close")}
    for m in _of(msgs, "incident_open"):
        src = b.read("telemetry", m["partition"], m["offset"], 1)[0]
        assert json.loads(src.value)["ts"] == m["ts"] and m["id"] == f"telemetry:{m['partition']}:{m['offset']}"
        c = closes[m["id"]]  # every incident closes: the stream goes on long enough after each
        assert c["key"] == m["key"] and c["start_offset"] == m["offset"] and c["offset"] > c["end_offset"]
    spike = next(c for c in closes.values() if c["key"] == "a" and c["start"] == 1e9 + 200)
    assert spike["end"] == 1e9 + 201 and spike["flagged"] == 2 and spike["severity"] > 0
    assert len(msgs) < 12  # a few incidents, not an event per record
    assert p.incidents_opened == p.incidents_closed == len(closes) and p.incidents_open == 0


def test_publish_records_and_both():
    runs = {}
    for publish in ("records", "both", "incidents"):
        b = _broker()
        _fill(b, spikes={("a", 200), ("a", 201)})
        _drain(_pipeline(b, _config(publish=publish)))
        runs[publish] = _messages(b)
    kinds = {k: sorted({m["type"] for m in msgs}) for k, msgs in runs.items()}
    assert kinds["records"] == ["anomaly"]
    assert kinds["incidents"] == ["incident_close", "incident_open"]
    assert kinds["both"] == ["anomaly", "incident_close", "incident_open"]
    assert _of(runs["both"], "anomaly") == runs["records"]
    assert [m for m in runs["both"] if m["type"] != "anomaly"] == runs["incidents"]
    for m in runs["both"]:
        assert_valid(m)


def test_an_incident_open_at_a_checkpoint_closes_after_the_restart_without_a_second_open(tmp_path):
    b = _broker(1)
    _fill(b, n=210, keys=("a",), spikes={("a", 200)})
    p = _pipeline(b, _config(tmp_path))
    _drain(p)  # shutdown checkpoints with the incident still open (the gap has not passed)
    assert p.incidents_open == 1
    _fill(b, n=60, keys=("a",), seed=1)  # more records: the gap passes
    p2 = _pipeline(b, _config(tmp_path))
    assert p2.incidents_open == 1
    _drain(p2)
    msgs = _messages(b)
    assert [m["type"] for m in msgs] == ["incident_open", "incident_close"]
    assert msgs[0]["id"] == msgs[1]["id"] and msgs[1]["start_offset"] == 200


@pytest.mark.parametrize("read_back", [False, True])
def test_a_crash_after_an_open_is_delivered_and_before_the_next_checkpoint(tmp_path, read_back):
    # The window no order of send, commit and checkpoint closes: the open is acknowledged and
    # its offset committed, the last checkpoint is from before it. The restart scores the
    # record again from that checkpoint and makes the same open.
    b = _broker(1)
    _fill(b, n=400, keys=("a",), spikes={("a", 300), ("a", 302)})
    cfg = _config(tmp_path, checkpoint_every_records=10**6, checkpoint_every_seconds=3600, batch_size=10)
    outputs = MemoryOutputLog(b) if read_back else None
    p = _pipeline(b, cfg, outputs=outputs)
    while p.records_in < 310:
        p.run_once()  # each batch is flushed and committed: the open is on the topic
    assert [m["type"] for m in _messages(b)] == ["incident_open"]
    assert b.committed[("streamad", ("telemetry", 0))] == 310
    del p  # SIGKILL: no shutdown, no checkpoint (the last one is the partition's first, empty)
    p2 = _pipeline(b, cfg, outputs=MemoryOutputLog(b) if read_back else None)
    _drain(p2)
    msgs = _messages(b)
    opens = _of(msgs, "incident_open")
    if not read_back:  # what the read-back prevents
        assert len(opens) == 2 and opens[0] == opens[1]
        return
    assert len(opens) == 1 and p2.suppressed == 1
    (close,) = _of(msgs, "incident_close")
    assert close["id"] == opens[0]["id"] and (close["start_offset"], close["end_offset"]) == (300, 302)
    scores = {json.loads(m.value)["offset"] for m in b.all("scores")}
    assert scores == set(range(400))  # no input record lost


def test_a_restart_repeats_nothing_that_was_published_after_the_checkpoint(tmp_path):
    # two incidents and their closes published after the last checkpoint, then a crash
    b = _broker(1)
    _fill(b, n=500, keys=("a",), spikes={("a", 200), ("a", 300), ("a", 460)})
    cfg = _config(tmp_path, publish="both", checkpoint_every_records=150)
    p = _pipeline(b, cfg, outputs=MemoryOutputLog(b))
    while p.records_in < 480:
        p.run_once()
    before = _messages(b)
    del p
    p2 = _pipeline(b, cfg, outputs=MemoryOutputLog(b))
    _drain(p2)
    after = _messages(b)
    assert p2.suppressed > 0
    assert len({json.dumps(m, sort_keys=True) for m in after}) == len(after)  # not one message twice
    assert after[:len(before)] == before and _of(after, "incident_close")[-1]["start_offset"] == 460


def test_incident_metrics_per_detector():
    b = _broker()
    _fill(b, spikes={("a", 200), ("c", 350), ("b", 395)})
    m = Metrics()
    p = _pipeline(b, _config(), metrics=m)
    _drain(p)
    text = m.render().decode()
    assert 'streamad_incidents_opened_total{detector="zscore"} 3.0' in text
    assert 'streamad_incidents_closed_total{detector="zscore"} 2.0' in text  # b's spike is 4 records from the end
    assert 'streamad_incidents_open{detector="zscore"} 1.0' in text


def test_incidents_config_table_flags_and_errors(tmp_path, capsys):
    f = tmp_path / "serve.toml"
    f.write_text('[incidents]\npublish = "both"\ngap = "10m"\nupdate_interval = 0\n')
    cfg = load_config(f, incident_gap="50")
    assert (cfg.publish, cfg.incident_gap, cfg.update_interval) == ("both", "50", 0)
    assert str(cfg.incident_policy.gap) == "50 records"
    for text, message in [('gap = 0', "gap: must be more than 0"), ('gap = -3', "gap: must be more than 0"),
                          ('gap = "5 fortnights"', "unknown unit 'fortnights'"),
                          ('update_interval = -1', "update_interval: must be 0 or more"),
                          ('update_interval = "-5m"', "update_interval: must be 0 or more"),
                          ('gap = 1.5', "gap: expected an integer or a string"),
                          ('publish = "everything"', "publish must be one of incidents, records, both"),
                          ('gapp = 3', "unknown setting 'gapp'")]:
        f.write_text(f"[incidents]\n{text}\n")
        with pytest.raises(ConfigError, match=message) as e:
            load_config(f)
        assert "\n" not in str(e.value)
    for flags, message in [(["--incident-gap", "0"], "must be more than 0"),
                           (["--incident-gap", "3 weeks"], "unknown unit 'weeks'"),
                           (["--update-interval", "-1"], "must be 0 or more")]:
        assert main(["serve", "--bootstrap", "127.0.0.1:9", *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_the_shipped_configs_load_with_their_incidents_tables():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for path in (root / "examples" / "serve.toml", root / "docker" / "streamad.toml"):
        cfg = load_config(path)
        assert cfg.publish == "incidents" and str(cfg.incident_policy.gap) == "100 records", path
