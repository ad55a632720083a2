"""Service configuration: a TOML file, overridden by command-line flags.

Each setting is one field of :class:`ServiceConfig`, declared once with :func:`setting`: its
default, its TOML table and key, and its ``streamad serve`` flag. The TOML reader
(:meth:`ServiceConfig.from_mapping`) and the flags (:meth:`ServiceConfig.add_arguments`) are
made from those declarations, so a new setting is one edit.

>>> cfg = ServiceConfig.from_mapping({"topics": {"input": ["telemetry"]}, "detector": {"name": "zscore"}})
>>> cfg.input_topics, cfg.detector, cfg.threshold
(['telemetry'], 'zscore', 'auto')
>>> ServiceConfig.from_mapping({"detector": {"nmae": "x"}})
Traceback (most recent call last):
...
streamad.base.ConfigError: config [detector]: unknown setting 'nmae'
"""

from __future__ import annotations

import argparse
import builtins
import functools
import json
import tomllib
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..base import ConfigError
from ..incidents import IncidentPolicy

__all__ = ["PUBLISH", "ServiceConfig", "load_config", "setting"]

#: What the service publishes on the anomalies topic: incident messages (open, update,
#: close), one ``anomaly`` event per flagged record, or both.
PUBLISH = ("incidents", "records", "both")


def setting(default: Any = MISSING, *, toml: str, flag: str | None = None, help: str = "",
            choices: tuple[str, ...] | None = None, type: type | tuple[type, ...] | None = None,
            factory: Callable[[], Any] | None = None, one_as_list: bool = False) -> Any:
    """Declare a setting of :class:`ServiceConfig`: its default (or ``factory``), its TOML
    ``"table.key"``, and its ``streamad serve`` flag, with the flag's ``help`` (no flag:
    TOML only). What a TOML value may be (``type``) follows from the default unless given:
    a string, an integer, a number (int or float) for a float, a table for a dict, a list
    for a list (``one_as_list``: or a single string, a list of one). ``choices`` limits a
    string setting to those values, in the TOML file and on the command line alike."""
    if type is None:
        sample = factory() if factory is not None else default
        type = (int, float) if isinstance(sample, float) else builtins.type(sample)
    table, _, key = toml.partition(".")
    meta = {"table": table, "key": key, "type": type, "flag": flag, "help": help, "choices": choices,
            "one_as_list": one_as_list}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ServiceConfig:
    """Everything `streamad serve` needs. Each setting is declared once, with its TOML table
    and key and its command-line flag (:func:`setting`): :meth:`from_mapping` reads the TOML
    tables and :meth:`add_arguments` makes the flags from the same declarations."""

    bootstrap: str = setting("127.0.0.1:9092", toml="kafka.bootstrap", flag="--bootstrap",
                             help="Kafka bootstrap servers host:port[,...]")
    group: str = setting("streamad", toml="kafka.group", flag="--group", help="consumer group id")
    client: str = setting("kafka-python", toml="kafka.client", flag="--kafka-client",
                          help="kafka-python (default) or confluent")
    # Passed to the Kafka clients unchanged (connectors.kafka.split_config).
    kafka_settings: dict[str, Any] = setting(toml="kafka.settings", factory=dict)
    input_topics: list[str] = setting(toml="topics.input", flag="--topic", factory=lambda: ["telemetry"],
                                      one_as_list=True, help="input topic (repeatable)")
    anomalies_topic: str = setting("anomalies", toml="topics.anomalies", flag="--anomalies-topic",
                                   help="topic for incidents (and anomaly events)")
    # Empty: no scores topic.
    scores_topic: str = setting("", toml="topics.scores", flag="--scores-topic",
                                help="topic for one score per input record")
    dead_letter_topic: str = setting("telemetry.dlq", toml="topics.dead_letter", flag="--dead-letter-topic",
                                     help="topic for malformed records")
    detector: str = setting("records", toml="detector.name", flag="--detector",
                            help="detector name (default: records)")
    detector_params: dict[str, Any] = setting(toml="detector.params", flag="--params", factory=dict,
                                              help="detector parameters as a JSON object")
    # A trained detector (`streamad detect --save-state FILE`): every key starts from it, and
    # the detector and its parameters are the file's.
    detector_state: str = setting("", toml="detector.state", flag="--detector-state",
                                  help="trained detector (streamad detect --save-state FILE) every key starts from")
    # The features every record is scored on (extra ones are ignored, a record missing one is
    # a dead letter). Empty: each key's first record names its features, and a key whose
    # records come with another feature set for ``schema_change_after`` records in a row (a
    # firmware update that adds a metric) gets a new detector and threshold on the new set;
    # fewer odd records in a row are dead letters.
    features: list[str] = setting(toml="detector.features", factory=list)
    schema_change_after: int = setting(10, toml="detector.schema_change_after")
    # "auto": the detector's own default (``default_threshold``: records -> fixed 0.07, others -> SPOT)
    threshold: str = setting("auto", toml="threshold.name", flag="--threshold",
                             help="threshold name: auto (the detector's own), spot, quantile, fixed, likelihood, "
                                  "dspot (default: auto)")
    threshold_params: dict[str, Any] = setting(toml="threshold.params", factory=dict)
    checkpoint_dir: str = setting("", toml="checkpoint.dir", flag="--checkpoint-dir",
                                  help="directory for per-partition state")
    checkpoint_every_records: int = setting(10_000, toml="checkpoint.every_records")
    checkpoint_every_seconds: float = setting(30.0, toml="checkpoint.every_seconds")
    # "file": checkpoints under checkpoint_dir (one machine, or a shared directory); "kafka":
    # a compacted changelog topic of the consumer group (no shared disk), values cut into
    # chunks of at most state_chunk_bytes (under the broker's message size limit).
    state_store: str = setting("file", toml="checkpoint.store", flag="--state-store", choices=("file", "kafka"),
                               help="where per-partition state goes: files under --checkpoint-dir (default), or a "
                                    "compacted changelog topic GROUP.changelog (instances need no shared disk)")
    state_chunk_bytes: int = setting(512 * 1024, toml="checkpoint.chunk_bytes")
    batch_size: int = setting(1000, toml="service.batch_size")
    poll_timeout_s: float = setting(0.5, toml="service.poll_timeout_s")
    http_port: int = setting(0, toml="service.http_port", flag="--http-port",
                             help="port of /metrics and /healthz (0 = off)")
    log_format: str = setting("kv", toml="service.log_format", flag="--log-format", choices=("kv", "json"),
                              help="structured log style")
    # with backoff capped at 5 s: rides out a ~5 min broker outage
    flush_retries: int = setting(60, toml="service.flush_retries")
    # Wait for acknowledgements and commit at most this often (0: after every batch). Outputs
    # are sent as they are produced either way; only the wait for acks is batched.
    commit_interval_s: float = setting(0.0, toml="service.commit_interval_s")
    # "wait": after each batch (or commit_interval_s), wait for the outputs' acknowledgements,
    # then commit (without waiting for the broker's answer, except at shutdown, on revocation
    # and before a checkpoint). "pipelined": go on with the next batch at once and commit,
    # asynchronously, the offsets whose outputs have been acknowledged meanwhile (same
    # at-least-once guarantee; the waits leave the processing loop). Needs a sink with
    # mark()/acked().
    commit_mode: str = setting("wait", toml="service.commit_mode", flag="--commit-mode", choices=("wait", "pipelined"),
                               help="wait for output acknowledgements after each batch (default), or commit "
                                    "acknowledged offsets while the next batches run")
    # SIGTERM/SIGINT: finish the batch, flush, checkpoint, commit and close the clients within
    # this many seconds, whatever the broker does (an orchestrator's grace period is ~30 s).
    shutdown_timeout_s: float = setting(20.0, toml="service.shutdown_timeout_s", flag="--shutdown-timeout",
                                        help="seconds from SIGTERM to exit, broker or not (default: 20)")
    # /healthz reports unhealthy once the broker has not answered for this long.
    broker_timeout_s: float = setting(6.0, toml="service.broker_timeout_s")
    # [incidents]: what goes to the anomalies topic (PUBLISH), and the incident state
    # machine's gap and update interval: a number of records or a duration ("10m"); see
    # streamad.incidents. The gap of 100 records gave the best NAB score of the gaps tried
    # (1-200) with gaussian, pca and spread on NAB's streaming protocol
    # (benchmarks/results/incident_gaps.md).
    publish: str = setting("incidents", toml="incidents.publish", flag="--publish", choices=PUBLISH,
                           help="to the anomalies topic: incident messages (default), one event per flagged record, "
                                "or both")
    incident_gap: int | str = setting(100, toml="incidents.gap", flag="--incident-gap", type=(int, str),
                                      help="an incident closes after this many records without a flag, or this "
                                           "long: 10m, 90s (default: 100 records)")
    update_interval: int | str = setting(100, toml="incidents.update_interval", flag="--update-interval",
                                         type=(int, str), help="at most one incident_update per this many records, "
                                                               "or this long (default: 100 records)")

    @classmethod
    def from_mapping(cls, doc: dict[str, Any]) -> ServiceConfig:
        """The settings of a TOML document (tables of keys, :func:`setting`)."""
        tables = _tables()
        values: dict[str, Any] = {}
        for table, body in doc.items():
            if table not in tables:
                raise ConfigError(f"config: unknown table [{table}]; expected one of {', '.join(sorted(tables))}")
            if not isinstance(body, dict):
                raise ConfigError(f"config: [{table}] must be a table")
            for name, value in body.items():
                if name not in tables[table]:
                    raise ConfigError(f"config [{table}]: unknown setting {name!r}")
                f = tables[table][name]
                typ = f.metadata["type"]
                if f.metadata["one_as_list"] and isinstance(value, str):  # input = "telemetry": one topic
                    value = [value]
                if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
                    raise ConfigError(f"config [{table}] {name}: expected {_tname(typ)}, got {value!r}")
                values[f.name] = value
        return cls(**values).validated()

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """A flag for every setting that has one (``streamad serve``); :meth:`flags` reads them
        back. A list setting's flag repeats, a table's takes a JSON object, a number's is
        parsed as one; the flags default to None (the TOML file's or the default value)."""
        for f in fields(cls):
            meta = f.metadata
            if meta["flag"] is None:
                continue
            typ, extra = meta["type"], {}
            if typ is list:
                extra["action"] = "append"
            elif typ is dict:
                extra["metavar"] = "JSON"
            elif typ is int:
                extra["type"] = int
            elif typ == (int, float):
                extra["type"] = float
            if meta["choices"] is not None:
                extra["choices"] = list(meta["choices"])
            parser.add_argument(meta["flag"], dest=f.name, help=meta["help"], **extra)

    @classmethod
    def flags(cls, args: argparse.Namespace) -> dict[str, Any]:
        """The settings given on the command line (parsed by :meth:`add_arguments`): attribute
        -> value, None where the flag was not given. A table's flag that is not a JSON object
        is a one-line :class:`ConfigError` naming the flag."""
        given = vars(args)
        out: dict[str, Any] = {}
        for f in fields(cls):
            meta = f.metadata
            if meta["flag"] is None:
                continue
            value = given[f.name]
            if value is not None and meta["type"] is dict:
                value = _json_object(value, meta["flag"])
            out[f.name] = value
        return out

    def validated(self) -> ServiceConfig:
        if not self.input_topics or not all(isinstance(t, str) and t for t in self.input_topics):
            raise ConfigError("config [topics] input: needs at least one topic name")
        if self.batch_size < 1:
            raise ConfigError(f"config [service] batch_size must be at least 1, got {self.batch_size}")
        if not 0 <= self.http_port < 65536:
            raise ConfigError(f"config [service] http_port must be 0..65535, got {self.http_port}")
        for f in fields(self):  # the settings with a fixed set of values
            choices, value = f.metadata["choices"], getattr(self, f.name)
            if choices is not None and value not in choices:
                allowed = " or ".join(map(repr, choices)) if len(choices) == 2 else "one of " + ", ".join(choices)
                raise ConfigError(f"config [{f.metadata['table']}] {f.metadata['key']} must be {allowed}, got {value!r}")
        if self.checkpoint_every_records < 1 or self.checkpoint_every_seconds <= 0:
            raise ConfigError("config [checkpoint]: every_records and every_seconds must be positive")
        if self.state_chunk_bytes < 1024:
            raise ConfigError(f"config [checkpoint] chunk_bytes must be at least 1024, got {self.state_chunk_bytes}")
        if not all(isinstance(f, str) and f for f in self.features) or len(set(self.features)) != len(self.features):
            raise ConfigError(f"config [detector] features must be distinct feature names, got {self.features!r}")
        if self.schema_change_after < 1:
            raise ConfigError(f"config [detector] schema_change_after must be at least 1, got {self.schema_change_after}")
        if not self.shutdown_timeout_s > 0 or not self.broker_timeout_s > 0:
            raise ConfigError("config [service]: shutdown_timeout_s and broker_timeout_s must be positive")
        self.incident_policy  # noqa: B018 - a bad gap or update interval fails here
        return self

    @property
    def checkpoints(self) -> bool:
        """Whether partition state is checkpointed (a checkpoint dir, or the Kafka store)."""
        return bool(self.checkpoint_dir) or self.state_store == "kafka"

    @property
    def incident_policy(self) -> IncidentPolicy:
        """The incident state machine's settings (a ConfigError names a bad one)."""
        return IncidentPolicy.parse(self.incident_gap, self.update_interval, where="config [incidents]")

    def override(self, **flags: Any) -> ServiceConfig:
        """A copy with every non-None flag applied (flags use the attribute names)."""
        known = {f.name for f in fields(self)}
        for k in flags:
            if k not in known:
                raise ConfigError(f"unknown setting {k!r}")
        return replace(self, **{k: v for k, v in flags.items() if v is not None}).validated()


@functools.cache
def _tables() -> dict[str, dict[str, Field]]:
    """TOML table -> key -> the setting's field, from the declarations."""
    tables: dict[str, dict[str, Field]] = {}
    for f in fields(ServiceConfig):
        tables.setdefault(f.metadata["table"], {})[f.metadata["key"]] = f
    return tables


def _json_object(text: str, flag: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{flag} is not a JSON object: {e}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{flag} must be a JSON object")
    return value


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
