"""The incident state machine (streamad.incidents): one alert per anomaly."""

import json
import math

import numpy as np
import pytest
from schema_check import anomalies_schema, assert_valid, errors

from streamad.base import ConfigError, StateError
from streamad.incidents import IncidentPolicy, IncidentTracker, Span, parse_span, track_series

CONTEXT = {"detector": "gaussian", "topic": "telemetry", "partition": 2}


def _run(flags, policy, scores=None, ts=None, start=0):
    """Feed a key's records to a tracker as the service does; returns its messages."""
    t = IncidentTracker("pump-1", policy, CONTEXT, "telemetry:2:")
    out = []
    for i, f in enumerate(flags):
        if f or t.open:
            s = (scores[i] if scores is not None else (5.0 if f else 1.0))
            out += t.step(bool(f), s, 3.0, float(ts[i] if ts is not None else 100.0 + 60 * i), start + i)
    return out, t


def _kinds(msgs):
    return [m["type"] for m in msgs]


@pytest.mark.parametrize("value, span", [
    (30, Span(30, True)), ("30", Span(30, True)), ("30 records", Span(30, True)), ("1 record", Span(1, True)),
    ("90s", Span(90.0, False)), ("10m", Span(600.0, False)), ("1.5h", Span(5400.0, False)),
    ("2 d", Span(172800.0, False)), (" 5 MIN ", Span(300.0, False)),
])
def test_spans_are_records_or_durations(value, span):
    assert parse_span(value, "gap") == span


@pytest.mark.parametrize("value, allow_zero, message", [
    (0, False, "gap: must be more than 0"),
    ("0m", False, "gap: must be more than 0"),
    (-5, False, "gap: must be more than 0"),
    ("-10m", True, "gap: must be 0 or more"),
    (-1, True, "gap: must be 0 or more"),
    ("5 parsecs", False, "unknown unit 'parsecs'"),
    ("ten minutes", False, "expected a number of records or a duration"),
    (2.5, False, "a number of records must be whole"),
    (True, False, "expected a number of records or a duration"),
    (float("nan"), False, "must be finite"),
])
def test_bad_spans_are_one_line_config_errors(value, allow_zero, message):
    with pytest.raises(ConfigError, match=message) as e:
        parse_span(value, "gap", allow_zero=allow_zero)
    assert "\n" not in str(e.value)


def test_update_interval_may_be_zero_but_the_gap_may_not():
    assert IncidentPolicy.parse(gap=1, update_interval=0).update_interval == Span(0, True)
    with pytest.raises(ConfigError, match="incident gap"):
        IncidentPolicy.parse(gap=0)


def test_one_spike_gives_exactly_one_open_and_one_close():
    flags = np.zeros(200, dtype=bool)
    flags[50:53] = True  # a three-record spike
    msgs, t = _run(flags, IncidentPolicy.parse(gap=10, update_interval=100))
    assert _kinds(msgs) == ["incident_open", "incident_close"]
    opened, closed = msgs
    assert opened["offset"] == 50 and opened["score"] == 5.0 and opened["threshold"] == 3.0
    assert opened["id"] == closed["id"] == "telemetry:2:50"
    assert (closed["start_offset"], closed["end_offset"], closed["flagged"]) == (50, 52, 3)
    assert closed["offset"] == 52 + 10  # the tenth record without a flag closes it
    assert closed["start"] == 100.0 + 60 * 50 and closed["end"] == 100.0 + 60 * 52
    assert not t.open
    for m in msgs:
        assert m["schema"] == 1 and m["key"] == "pump-1" and m["detector"] == "gaussian"
        assert_valid(m)


@pytest.mark.parametrize("distance, incidents", [(10, 1), (11, 2), (40, 2)])
def test_two_spikes_farther_apart_than_the_gap_are_two_incidents(distance, incidents):
    flags = np.zeros(300, dtype=bool)
    flags[[100, 100 + distance]] = True
    msgs, _ = _run(flags, IncidentPolicy.parse(gap=10))
    assert _kinds(msgs).count("incident_open") == incidents
    assert _kinds(msgs).count("incident_close") == incidents


def test_a_duration_gap_counts_event_time_not_records():
    # one record a minute; a 5-minute gap: flags 5 minutes apart stay one incident, 6 do not
    ts = 1.7e9 + 60.0 * np.arange(100)
    flags = np.zeros(100, dtype=bool)
    flags[[10, 15, 30, 36]] = True
    msgs, _ = _run(flags, IncidentPolicy.parse(gap="5m"), ts=ts)
    closes = [m for m in msgs if m["type"] == "incident_close"]
    assert [(c["start_offset"], c["end_offset"]) for c in closes] == [(10, 15), (30, 30), (36, 36)]
    # a key whose next record comes after a long silence, flagged again: the old incident
    # closes and a new one opens on the same record
    t = IncidentTracker("k", IncidentPolicy.parse(gap="5m"))
    t.step(True, 5.0, 3.0, 0.0, 0)
    later = t.step(True, 6.0, 3.0, 3600.0, 1)
    assert _kinds(later) == ["incident_close", "incident_open"] and later[1]["id"] == "1"


def test_updates_only_when_the_peak_grows_and_at_most_one_per_interval():
    scores = np.full(400, 1.0)
    flags = np.zeros(400, dtype=bool)
    flags[100:300] = True
    scores[100:300] = np.linspace(5, 50, 200)  # rising for 200 records
    msgs, _ = _run(flags, IncidentPolicy.parse(gap=20, update_interval=50), scores=scores)
    updates = [m for m in msgs if m["type"] == "incident_update"]
    # every 50 records while it grows; the last growth (record 299) is reported by record 300
    assert [u["offset"] for u in updates] == [150, 200, 250, 300]
    assert updates[-1]["peak_offset"] == 299
    assert all(u["peak_score"] > prev for u, prev in zip(updates, [5.0] + [u["peak_score"] for u in updates],
                                                             strict=False))
    flat = np.where(flags, 7.0, 1.0)  # no growth after the open: no update at all
    msgs, _ = _run(flags, IncidentPolicy.parse(gap=20, update_interval=0), scores=flat)
    assert _kinds(msgs) == ["incident_open", "incident_close"]
    msgs, _ = _run(flags, IncidentPolicy.parse(gap=20, update_interval=0), scores=scores)
    assert _kinds(msgs).count("incident_update") == 199  # interval 0: every growth
    for m in msgs[:3] + msgs[-3:]:
        assert_valid(m)


def test_a_grown_peak_waiting_for_its_interval_is_reported_by_a_later_record():
    scores = np.full(100, 1.0)
    flags = np.zeros(100, dtype=bool)
    flags[[10, 12]] = True
    scores[10], scores[12] = 5.0, 9.0
    msgs, _ = _run(flags, IncidentPolicy.parse(gap=30, update_interval=5), scores=scores)
    assert _kinds(msgs) == ["incident_open", "incident_update", "incident_close"]
    assert msgs[1]["offset"] == 15 and msgs[1]["peak_offset"] == 12 and msgs[1]["peak_score"] == 9.0


def test_close_reports_peak_severity_and_explanations_go_with_the_open():
    t = IncidentTracker("k", IncidentPolicy.parse(gap=2, update_interval=0), CONTEXT, "telemetry:2:")
    calls = []

    def explain():
        calls.append(1)
        return [["cpu", 4.5], ["memory", 1.25]]

    (opened,) = t.step(True, 6.0, 4.0, 10.0, 7, explain)
    assert opened["top_features"] == [["cpu", 4.5], ["memory", 1.25]]
    t.step(False, 1.0, 4.0, 11.0, 8, explain)  # no message, so no explanation asked for
    assert len(calls) == 1
    t.step(True, 12.0, 3.0, 12.0, 9)
    t.step(False, 1.0, 3.0, 13.0, 10)
    (closed,) = t.step(False, 1.0, 3.0, 14.0, 11)
    assert closed["peak_score"] == 12.0 and closed["peak_offset"] == 9 and closed["threshold"] == 3.0
    assert closed["severity"] == pytest.approx((12.0 - 3.0) / 3.0)
    assert closed["flagged"] == 2
    assert_valid(opened)
    assert_valid(closed)


def test_non_finite_scores_are_null_in_messages():
    t = IncidentTracker("k", IncidentPolicy.parse(gap=1), CONTEXT, "telemetry:2:")
    (opened,) = t.step(True, math.inf, 3.0, 10.0, 1)
    (closed,) = t.step(False, 1.0, 3.0, 11.0, 2)
    assert opened["score"] is None and closed["peak_score"] is None
    json.dumps(closed, allow_nan=False)
    assert_valid(opened)
    assert_valid(closed)


def test_state_round_trip_mid_incident_continues_identically():
    flags = np.zeros(300, dtype=bool)
    flags[[100, 104, 130, 131]] = True
    scores = np.where(flags, np.arange(300) / 10.0, 1.0)
    policy = IncidentPolicy.parse(gap=30, update_interval=10)
    whole, _ = _run(flags, policy, scores=scores)
    first, t = _run(flags[:120], policy, scores=scores[:120])
    assert t.open
    state = json.loads(json.dumps(t.state_dict()))  # JSON values only
    twin = IncidentTracker("pump-1", policy, CONTEXT, "telemetry:2:")
    twin.load_state_dict(state)
    rest = []
    for i in range(120, 300):
        if flags[i] or twin.open:
            rest += twin.step(bool(flags[i]), float(scores[i]), 3.0, 100.0 + 60 * i, i)
    assert first + rest == whole
    assert IncidentTracker("k", policy).state_dict() == {"open": False}
    with pytest.raises(StateError, match="malformed"):
        twin.load_state_dict({"open": "yes"})
    with pytest.raises(StateError, match="has no 'start_ts'"):
        twin.load_state_dict({"open": True, "id": "x"})


def test_track_series_gives_the_intervals_of_the_service_messages():
    rng = np.random.default_rng(4)
    flags = rng.random(2000) < 0.01
    scores = rng.random(2000) + flags * 5
    policy = IncidentPolicy.parse(gap=15)
    msgs, t = _run(flags, policy, scores=scores)
    closes = [m for m in msgs if m["type"] == "incident_close"]
    if t.open:
        closes.append(t.close())
    found = track_series(flags, scores, thresholds=np.full(2000, 3.0), policy=policy)
    assert [(i.start, i.end, i.flagged) for i in found] == [(c["start_offset"], c["end_offset"], c["flagged"])
                                                             for c in closes]
    assert [i.peak_score for i in found] == [c["peak_score"] for c in closes]
    assert sum(i.flagged for i in found) == flags.sum()
    # gap 1 is the old rule: every run of consecutive flagged records is one interval
    runs = track_series(flags, scores, policy=IncidentPolicy.parse(gap=1))
    starts = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(int)])) == 1)
    assert [i.start for i in runs] == starts.tolist()


def test_an_incident_open_at_the_end_of_a_series_ends_at_its_last_flag():
    found = track_series([0, 0, 1, 1, 0], [0, 0, 4, 5, 0], policy=IncidentPolicy.parse(gap=10))
    assert [(i.start, i.end, i.peak, i.flagged) for i in found] == [(2, 3, 3, 2)]


def test_the_schema_rejects_what_it_should():
    schema = anomalies_schema()
    t = IncidentTracker("k", IncidentPolicy.parse(gap=1), CONTEXT, "telemetry:2:")
    (opened,) = t.step(True, 5.0, 3.0, 10.0, 1)
    assert not errors(opened, schema)
    assert errors({**opened, "schema": 2}, schema)
    assert errors({**opened, "type": "incident_reopen"}, schema)
    assert errors({k: v for k, v in opened.items() if k != "offset"}, schema)
    assert errors({**opened, "extra": 1}, schema)
    assert errors({**opened, "partition": "2"}, schema)
