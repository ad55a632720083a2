"""`streamad demo` end to end on its own embedded broker, with its default stream, detector and threshold."""

import io
import json

import pytest

import connectors.kafka as kafka
from connectors.broker import EmbeddedBroker
from streamad.cli import main
from streamad.service.demo import DEMO_BASE, run_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_demo_finds_every_kind_of_anomaly_with_one_alert_each_and_stops_the_broker(tmp_path):
    out = io.StringIO()
    brokers = []

    def factory():
        brokers.append(EmbeddedBroker())
        return brokers[-1]

    r = run_demo(broker_factory=factory, kafka=kafka, max_seconds=40, out_dir=str(tmp_path), out=out)
    text = out.getvalue()
    assert r.scored == 6 * 2000 and r.dead_letters > 0 and r.records == r.scored
    # issue 33's bars: every kind counts, flatlines and frequency changes included
    assert r.found >= 0.9 * r.true_anomalies, text
    assert r.alerts_per_found <= 1.2 and r.false_per_10k <= 5, text
    assert {k for k, (_, found) in r.per_kind.items() if found} >= {"flatline", "frequency_change"}
    assert r.detector == "spread" and r.detector_params == {"base": DEMO_BASE}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {k: summary[k] for k in ("records", "true_anomalies", "incidents", "found", "false_incidents",
                                    "alerts_per_found")} == {
        "records": 12000, "true_anomalies": r.true_anomalies, "incidents": r.incidents, "found": r.found,
        "false_incidents": r.false_incidents, "alerts_per_found": r.alerts_per_found}
    last = text.strip().splitlines()[-1]  # the summary as one line
    assert last.startswith("demo: 12,000 records") and f"found {r.found}/{r.true_anomalies}" in last
    assert "broker stopped" in text
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert not brokers[0].running


def test_demo_bad_arguments_are_one_line(capsys):
    assert main(["demo", "--detector", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown detector 'nope'" in err and len(err.strip().splitlines()) == 1
