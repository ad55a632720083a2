"""Service configuration: a TOML file, overridden by command-line flags.

>>> cfg = ServiceConfig.from_mapping({"topics": {"input": ["telemetry"]}, "detector": {"name": "zscore"}})
>>> cfg.input_topics, cfg.detector, cfg.threshold
(['telemetry'], 'zscore', 'auto')
>>> ServiceConfig.from_mapping({"detector": {"nmae": "x"}})
Traceback (most recent call last):
...
streamad.base.ConfigError: config [detector]: unknown setting 'nmae'
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..base import ConfigError
from ..incidents import IncidentPolicy, parse_span

__all__ = ["PUBLISH", "ServiceConfig", "load_config"]

# TOML table -> {setting: (attribute, type)}
_TABLES: dict[str, dict[str, tuple[str, type | tuple[type, ...]]]] = {
    "kafka": {"bootstrap": ("bootstrap", str), "group": ("group", str), "client": ("client", str),
              "settings": ("kafka_settings", dict)},
    "topics": {"input": ("input_topics", list), "anomalies": ("anomalies_topic", str),
               "scores": ("scores_topic", str), "dead_letter": ("dead_letter_topic", str)},
    "detector": {"name": ("detector", str), "params": ("detector_params", dict),
                 "state": ("detector_state", str), "features": ("features", list),
                 "schema_change_after": ("schema_change_after", int)},
    "threshold": {"name": ("threshold", str), "params": ("threshold_params", dict)},
    "checkpoint": {"dir": ("checkpoint_dir", str), "every_records": ("checkpoint_every_records", int),
                   "every_seconds": ("checkpoint_every_seconds", (int, float)), "store": ("state_store", str),
                   "chunk_bytes": ("state_chunk_bytes", int)},
    "service": {"batch_size": ("batch_size", int), "poll_timeout_s": ("poll_timeout_s", (int, float)),
                "http_port": ("http_port", int), "log_format": ("log_format", str),
                "flush_retries": ("flush_retries", int),
                "commit_interval_s": ("commit_interval_s", (int, float)),
                "commit_mode": ("commit_mode", str),
                "shutdown_timeout_s": ("shutdown_timeout_s", (int, float)),
                "broker_timeout_s": ("broker_timeout_s", (int, float))},
    "incidents": {"publish": ("publish", str), "gap": ("incident_gap", (int, str)),
                  "update_interval": ("update_interval", (int, str))},
}

#: What the service publishes on the anomalies topic: incident messages (open, update,
#: close), one ``anomaly`` event per flagged record, or both.
PUBLISH = ("incidents", "records", "both")


@dataclass
class ServiceConfig:
    """Everything `streamad serve` needs. Empty ``scores_topic`` = no scores topic."""

    bootstrap: str = "127.0.0.1:9092"
    group: str = "streamad"
    client: str = "kafka-python"
    kafka_settings: dict[str, Any] = field(default_factory=dict)
    input_topics: list[str] = field(default_factory=lambda: ["telemetry"])
    anomalies_topic: str = "anomalies"
    scores_topic: str = ""
    dead_letter_topic: str = "telemetry.dlq"
    detector: str = "records"
    detector_params: dict[str, Any] = field(default_factory=dict)
    # A trained detector (`streamad detect --save-state FILE`): every key starts from it, and
    # the detector and its parameters are the file's.
    detector_state: str = ""
    # The features every record is scored on (extra ones are ignored, a record missing one is
    # a dead letter). Empty: each key's first record names its features, and a key whose
    # records come with another feature set for ``schema_change_after`` records in a row (a
    # firmware update that adds a metric) gets a new detector and threshold on the new set;
    # fewer odd records in a row are dead letters.
    features: list[str] = field(default_factory=list)
    schema_change_after: int = 10
    # "auto": the detector's own default (``default_threshold``: records -> fixed 0.07, others -> SPOT)
    threshold: str = "auto"
    threshold_params: dict[str, Any] = field(default_factory=dict)
    checkpoint_dir: str = ""
    checkpoint_every_records: int = 10_000
    checkpoint_every_seconds: float = 30.0
    # "file": checkpoints under checkpoint_dir (one machine, or a shared directory); "kafka":
    # a compacted changelog topic of the consumer group (no shared disk), values cut into
    # chunks of at most state_chunk_bytes (under the broker's message size limit).
    state_store: str = "file"
    state_chunk_bytes: int = 512 * 1024
    batch_size: int = 1000
    poll_timeout_s: float = 0.5
    http_port: int = 0
    log_format: str = "kv"
    flush_retries: int = 60  # with backoff capped at 5 s: rides out a ~5 min broker outage
    # Wait for acknowledgements and commit at most this often (0: after every batch). Outputs
    # are sent as they are produced either way; only the wait for acks is batched.
    commit_interval_s: float = 0.0
    # "wait": after each batch (or commit_interval_s), wait for the outputs' acknowledgements,
    # then commit (without waiting for the broker's answer, except at shutdown, on revocation
    # and before a checkpoint). "pipelined": go on with the next batch at once and commit,
    # asynchronously, the offsets whose outputs have been acknowledged meanwhile (same
    # at-least-once guarantee; the waits leave the processing loop). Needs a sink with
    # mark()/acked().
    commit_mode: str = "wait"
    # [incidents]: what goes to the anomalies topic (PUBLISH), and the incident state
    # machine's gap and update interval: a number of records or a duration ("10m"); see
    # streamad.incidents. The gap of 100 records gave the best NAB score of the gaps tried
    # (1-200) with gaussian, pca and spread on NAB's streaming protocol
    # (benchmarks/results/incident_gaps.md).
    publish: str = "incidents"
    incident_gap: int | str = 100
    update_interval: int | str = 100
    # SIGTERM/SIGINT: finish the batch, flush, checkpoint, commit and close the clients within
    # this many seconds, whatever the broker does (an orchestrator's grace period is ~30 s).
    shutdown_timeout_s: float = 20.0
    # /healthz reports unhealthy once the broker has not answered for this long.
    broker_timeout_s: float = 6.0

    @classmethod
    def from_mapping(cls, doc: dict[str, Any]) -> ServiceConfig:
        values: dict[str, Any] = {}
        for table, body in doc.items():
            if table not in _TABLES:
                raise ConfigError(f"config: unknown table [{table}]; expected one of {', '.join(sorted(_TABLES))}")
            if not isinstance(body, dict):
                raise ConfigError(f"config: [{table}] must be a table")
            for name, value in body.items():
                if name not in _TABLES[table]:
                    raise ConfigError(f"config [{table}]: unknown setting {name!r}")
                attr, typ = _TABLES[table][name]
                if attr == "input_topics" and isinstance(value, str):
                    value = [value]
                if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
                    raise ConfigError(f"config [{table}] {name}: expected {_tname(typ)}, got {value!r}")
                values[attr] = value
        return cls(**values).validated()

    def validated(self) -> ServiceConfig:
        if not self.input_topics or not all(isinstance(t, str) and t for t in self.input_topics):
            raise ConfigError("config [topics] input: needs at least one topic name")
        if self.batch_size < 1:
            raise ConfigError(f"config [service] batch_size must be at least 1, got {self.batch_size}")
        if not 0 <= self.http_port < 65536:
            raise ConfigError(f"config [service] http_port must be 0..65535, got {self.http_port}")
        if self.log_format not in ("kv", "json"):
            raise ConfigError(f"config [service] log_format must be 'kv' or 'json', got {self.log_format!r}")
        if self.commit_mode not in ("wait", "pipelined"):
            raise ConfigError(f"config [service] commit_mode must be 'wait' or 'pipelined', got {self.commit_mode!r}")
        if self.checkpoint_every_records < 1 or self.checkpoint_every_seconds <= 0:
            raise ConfigError("config [checkpoint]: every_records and every_seconds must be positive")
        if self.state_store not in ("file", "kafka"):
            raise ConfigError(f"config [checkpoint] store must be 'file' or 'kafka', got {self.state_store!r}")
        if self.state_chunk_bytes < 1024:
            raise ConfigError(f"config [checkpoint] chunk_bytes must be at least 1024, got {self.state_chunk_bytes}")
        if not all(isinstance(f, str) and f for f in self.features) or len(set(self.features)) != len(self.features):
            raise ConfigError(f"config [detector] features must be distinct feature names, got {self.features!r}")
        if self.schema_change_after < 1:
            raise ConfigError(f"config [detector] schema_change_after must be at least 1, got {self.schema_change_after}")
        if not self.shutdown_timeout_s > 0 or not self.broker_timeout_s > 0:
            raise ConfigError("config [service]: shutdown_timeout_s and broker_timeout_s must be positive")
        if self.publish not in PUBLISH:
            raise ConfigError(f"config [incidents] publish must be one of {', '.join(PUBLISH)}, got {self.publish!r}")
        self.incident_policy  # noqa: B018 - a bad gap or update interval fails here
        return self

    @property
    def checkpoints(self) -> bool:
        """Whether partition state is checkpointed (a checkpoint dir, or the Kafka store)."""
        return bool(self.checkpoint_dir) or self.state_store == "kafka"

    @property
    def incident_policy(self) -> IncidentPolicy:
        """The incident state machine's settings (a ConfigError names a bad one)."""
        return IncidentPolicy(parse_span(self.incident_gap, "config [incidents] gap"),
                              parse_span(self.update_interval, "config [incidents] update_interval",
                                         allow_zero=True))

    def override(self, **flags: Any) -> ServiceConfig:
        """A copy with every non-None flag applied (flags use the attribute names)."""
        known = {f.name for f in fields(self)}
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in flags.items():
            if k not in known:
                raise ConfigError(f"unknown setting {k!r}")
            if v is not None:
                values[k] = v
        return ServiceConfig(**values).validated()


def _tname(typ) -> str:
    names = {str: "a string", int: "an integer", float: "a number", dict: "a table", list: "a list"}
    typs = typ if isinstance(typ, tuple) else (typ,)
    return " or ".join(names.get(t, t.__name__) for t in typs)


def load_config(path: str | Path | None, **flags: Any) -> ServiceConfig:
    """Read ``path`` (TOML; None = defaults) and apply the non-None ``flags``."""
    cfg = ServiceConfig()
    if path is not None:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config {path} is not valid TOML: {e}") from None
        cfg = ServiceConfig.from_mapping(doc)
    return cfg.override(**flags)
