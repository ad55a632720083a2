"""Service operations: metrics endpoint, /healthz, structured logs, CLI config errors."""

import json
import logging
import urllib.error
import urllib.request

import pytest

from streamad.cli import main
from streamad.service.app import StructuredFormatter
from streamad.service.metrics import Metrics, serve_http


def _get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_and_healthz_endpoints():
    m = Metrics()
    m.records_in.inc(7)
    m.lag.labels("telemetry", "2").set(41)
    healthy = [True]
    server = serve_http(m, 0, is_healthy=lambda: healthy[0])
    try:
        port = server.server_address[1]
        code, body = _get(port, "/metrics")
        assert code == 200
        assert "streamad_records_in_total 7.0" in body
        assert 'streamad_partition_lag{partition="2",topic="telemetry"} 41.0' in body
        assert "streamad_batch_latency_seconds_bucket" in body and "streamad_checkpoint_age_seconds" in body
        assert _get(port, "/healthz") == (200, "ok\n")
        healthy[0] = False
        assert _get(port, "/healthz")[0] == 503
        assert _get(port, "/nope")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


def test_structured_log_lines():
    rec = logging.LogRecord("streamad.service", logging.INFO, __file__, 1, "event=restored partition=%d offset=%d",
                            (2, 40), None)
    doc = json.loads(StructuredFormatter("json").format(rec))
    assert doc["event"] == "restored" and doc["partition"] == "2" and doc["level"] == "info"
    line = StructuredFormatter("kv").format(rec)
    assert line.startswith("ts=") and line.endswith("event=restored partition=2 offset=40") and "\n" not in line


@pytest.mark.parametrize("argv, message", [
    (["serve", "--config", "/nonexistent/serve.toml"], "cannot read config"),
    (["serve", "--params", "[1"], "--params is not a JSON object"),
    (["serve", "--http-port", "70000"], "http_port must be 0..65535"),
])
def test_serve_config_errors_are_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
