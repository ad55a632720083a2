"""Running the pipeline as a process: signals, logs, metrics endpoint, clean shutdown.

Transport-agnostic: the caller (the CLI) builds the Kafka source and sink.
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import threading
import time
from collections.abc import Callable

from .config import ServiceConfig
from .metrics import Metrics, serve_http
from .pipeline import Pipeline

__all__ = ["StructuredFormatter", "configure_logging", "serve", "settle_gc"]

log = logging.getLogger("streamad.service")


class StructuredFormatter(logging.Formatter):
    """One line per log record: ``key=value`` pairs, or a JSON object."""

    def __init__(self, style: str = "kv") -> None:
        super().__init__()
        self.style = style

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        msg = record.getMessage()
        if self.style == "json":
            doc = {"ts": ts, "level": record.levelname.lower(), "logger": record.name}
            for part in msg.split(" "):  # messages are written as key=value pairs
                k, sep, v = part.partition("=")
                if sep:
                    doc[k] = v.strip("'\"")
                else:
                    doc["msg"] = (doc.get("msg", "") + " " + part).strip()
            if record.exc_info:
                doc["exc"] = self.formatException(record.exc_info)
            return json.dumps(doc)
        line = f"ts={ts} level={record.levelname.lower()} logger={record.name} {msg}"
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


def configure_logging(style: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(StructuredFormatter(style))
    root = logging.getLogger("streamad")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def settle_gc(pipeline: Pipeline) -> None:
    """Tune the process's garbage collector for ``pipeline`` (call once, when the process is
    set up and runs nothing else): what exists now (imported modules: numpy, scipy, torch, the
    Kafka client, ...) leaves the cyclic collector's scans for good (``gc.freeze``), and the
    pipeline collects between its batches instead of inside them (``Pipeline.manage_gc``).
    """
    gc.collect()
    gc.freeze()
    pipeline.manage_gc = True


def serve(config: ServiceConfig, source, sink, *, dead_letter=None, max_seconds: float | None = None,
          install_signals: bool = True, on_event: Callable[[dict], None] | None = None,
          until: Callable[[], bool] | None = None, threshold_factory: Callable | None = None,
          on_start: Callable[[Pipeline], None] | None = None, own_process: bool = False, outputs=None,
          state_store=None) -> Pipeline:
    """Run until SIGTERM/SIGINT (or ``max_seconds``/``until()``): stop fetching, finish the
    batch in flight, flush, checkpoint, commit, and close ``source``, ``sink`` and
    ``state_store``, all within ``config.shutdown_timeout_s`` of the signal even when the
    broker does not answer. ``pipeline.clean_stop`` then says whether the outputs were
    delivered, the checkpoints written and the final commit accepted.

    ``own_process``: the process exists to run this service (``streamad serve``), so it may
    tune the process-wide garbage collector (:func:`settle_gc`). ``outputs``: an
    :class:`~streamad.service.transport.OutputLog` of the anomalies topic, read back after a
    restart so nothing published before a crash is published again; closed here too."""
    metrics = Metrics()
    pipeline = Pipeline(source, sink, config, dead_letter=dead_letter, metrics=metrics, on_event=on_event,
                        threshold_factory=threshold_factory, outputs=outputs, state_store=state_store)
    if on_start is not None:
        on_start(pipeline)
    server = None
    if config.http_port:
        server = serve_http(metrics, config.http_port, is_healthy=pipeline.health)
        log.info("event=http_listening address=127.0.0.1:%d", server.server_address[1])
    previous = {}
    if install_signals and threading.current_thread() is threading.main_thread():
        def on_signal(signum, frame):
            log.info("event=stopping signal=%s", signal.Signals(signum).name)
            pipeline.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        log.info("event=started topics=%s group=%s detector=%s threshold=%s", ",".join(config.input_topics),
                 config.group, config.detector, config.threshold)
        pipeline.start()
        if own_process:
            settle_gc(pipeline)
        pipeline.run(max_seconds=max_seconds, until=until)
        log.info("event=stopped records=%d scored=%d events=%d incidents_opened=%d incidents_closed=%d "
                 "incidents_open=%d not_repeated=%d dead_letters=%d schema_changes=%d clean=%s", pipeline.records_in,
                 pipeline.scored, pipeline.events_out, pipeline.incidents_opened, pipeline.incidents_closed,
                 pipeline.incidents_open, pipeline.suppressed, pipeline.dead_letters, pipeline.schema_changes,
                 str(bool(pipeline.clean_stop)).lower())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            server.shutdown()
            server.server_close()
        # what is left of the shutdown time, shared by the clients (leaving the group and
        # closing connections need the broker; each gives up at its share)
        start = pipeline.stop_requested_at if pipeline.stop_requested_at is not None else time.monotonic()
        left = max(0.5, start + config.shutdown_timeout_s - time.monotonic() - 0.5)
        try:
            source.close(timeout_s=left / 2)
        finally:
            try:
                sink.close(timeout_s=left / 2)
            finally:
                try:
                    if state_store is not None:
                        state_store.close()
                finally:
                    if outputs is not None:
                        outputs.close()
    return pipeline
