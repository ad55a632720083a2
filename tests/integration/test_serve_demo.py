"""`streamad demo` machinery end to end on its own embedded broker (small stream)."""

import io
import sys
from pathlib import Path

import pytest

import connectors.kafka as kafka
from connectors.broker import EmbeddedBroker
from streamad.service.demo import run_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_service_pipeline import MaxThreshold  # noqa: E402


def _threshold():
    """The demo's own threshold (SPOT) when streamad.thresholds has it, else the local stand-in."""
    try:
        from streamad import thresholds

        thresholds.make("spot")
        return None
    except ImportError:
        return lambda: MaxThreshold(factor=1.2, warmup=200)


def test_demo_scores_every_record_finds_labelled_anomalies_and_stops_the_broker(tmp_path):
    out = io.StringIO()
    brokers = []

    def factory():
        brokers.append(EmbeddedBroker())
        return brokers[-1]

    r = run_demo(broker_factory=factory, kafka=kafka, n_keys=4, n_points=1200, seed=3, max_seconds=40,
                 plot=str(tmp_path / "demo.png"), out=out, threshold_factory=_threshold())
    text = out.getvalue()
    assert r.scored == 4 * 1200 and r.dead_letters > 0 and r.records == r.scored + r.dead_letters
    assert r.recall >= 0.5 and r.precision >= 0.3, text
    assert "precision" in text and "broker stopped" in text
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert not brokers[0].running
