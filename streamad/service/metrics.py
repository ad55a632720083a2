"""Prometheus metrics of the service and a tiny local HTTP server for /metrics and /healthz."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Metrics", "serve_http"]


class Metrics:
    """The service's counters and gauges, in their own registry (so tests can build many)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.records_in = Counter("streamad_records_in", "Input records read", registry=r)
        self.events_out = Counter("streamad_events_out", "Anomaly events published", registry=r)
        self.dead_letters = Counter("streamad_dead_letter_records", "Malformed records sent to the DLQ", registry=r)
        self.lag = Gauge("streamad_partition_lag", "Records behind the partition end", ["topic", "partition"],
                         registry=r)
        self.latency = Histogram("streamad_batch_latency_seconds", "Processing time of one poll batch",
                                 buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10), registry=r)
        # per detector: a service runs one, but dashboards join several services' metrics
        self.incidents_open = Gauge("streamad_incidents_open", "Incidents open now", ["detector"], registry=r)
        self.incidents_opened = Counter("streamad_incidents_opened", "Incidents opened (incident_open sent)",
                                        ["detector"], registry=r)
        self.incidents_closed = Counter("streamad_incidents_closed", "Incidents closed (incident_close sent)",
                                        ["detector"], registry=r)
        self.checkpoint_age = Gauge("streamad_checkpoint_age_seconds", "Seconds since the oldest partition "
                                    "checkpoint", registry=r)
        self.schema_changes = Counter("streamad_schema_changes", "Keys whose detector was re-created on a new "
                                      "feature set", registry=r)
        self.broker_silence = Gauge("streamad_broker_silence_seconds", "Seconds since the broker last answered "
                                    "the consumer", registry=r)
        self.healthy_at = time.monotonic()

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def serve_http(metrics: Metrics, port: int, is_healthy=lambda: True) -> ThreadingHTTPServer:
    """Serve ``/metrics`` and ``/healthz`` on 127.0.0.1:``port`` in a daemon thread.

    ``is_healthy()`` returns a bool or ``(bool, reason)``; ``/healthz`` answers 200 ``ok`` or
    503 ``unhealthy: <reason>``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            if self.path.startswith("/metrics"):
                body, code, ctype = metrics.render(), 200, "text/plain; version=0.0.4"
            elif self.path.startswith("/healthz"):
                state = is_healthy()
                ok, reason = state if isinstance(state, tuple) else (state, "")
                text = "ok\n" if ok else f"unhealthy: {reason}\n" if reason else "unhealthy\n"
                body, code, ctype = text.encode(), (200 if ok else 503), "text/plain"
            else:
                body, code, ctype = b"not found\n", 404, "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # scrapes every few seconds would flood the log
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="streamad-http", daemon=True).start()
    return server
