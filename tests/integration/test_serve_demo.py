"""`streamad demo` end to end on its own embedded broker, with its default stream, detector and threshold."""

import io

import pytest

import connectors.kafka as kafka
from connectors.broker import EmbeddedBroker
from streamad.service.demo import run_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_demo_scores_every_record_finds_labelled_anomalies_and_stops_the_broker(tmp_path):
    out = io.StringIO()
    brokers = []

    def factory():
        brokers.append(EmbeddedBroker())
        return brokers[-1]

    r = run_demo(broker_factory=factory, kafka=kafka, max_seconds=40, plot=str(tmp_path / "demo.png"), out=out)
    text = out.getvalue()
    assert r.scored == 6 * 2000 and r.dead_letters > 0 and r.records == r.scored + r.dead_letters
    assert r.recall >= 0.5 and r.precision >= 0.5, text
    assert "precision" in text and "broker stopped" in text
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert not brokers[0].running
