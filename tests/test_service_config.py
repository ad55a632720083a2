"""A serve setting is declared once: its TOML key and its `streamad serve` flag come from the
declaration, and every flag sets its setting."""

import argparse
from dataclasses import fields

import pytest

from streamad.base import ConfigError
from streamad.service.config import ServiceConfig, load_config

#: The flags `streamad serve` has had, and the setting each one sets.
SERVE_FLAGS = {"--bootstrap": "bootstrap", "--group": "group", "--kafka-client": "client", "--topic": "input_topics",
               "--anomalies-topic": "anomalies_topic", "--scores-topic": "scores_topic",
               "--dead-letter-topic": "dead_letter_topic", "--detector": "detector", "--params": "detector_params",
               "--detector-state": "detector_state", "--threshold": "threshold", "--checkpoint-dir": "checkpoint_dir",
               "--state-store": "state_store", "--http-port": "http_port", "--log-format": "log_format",
               "--commit-mode": "commit_mode", "--shutdown-timeout": "shutdown_timeout_s", "--publish": "publish",
               "--incident-gap": "incident_gap", "--update-interval": "update_interval"}


def _parser():
    parser = argparse.ArgumentParser()
    ServiceConfig.add_arguments(parser)
    return parser


def test_every_setting_has_one_toml_key_and_the_serve_flags_are_the_declared_ones():
    keys = [(f.metadata["table"], f.metadata["key"]) for f in fields(ServiceConfig)]
    assert len(keys) == len(set(keys)) == len(fields(ServiceConfig))
    assert {t for t, _ in keys} == {"kafka", "topics", "detector", "threshold", "checkpoint", "service", "incidents"}
    declared = {f.metadata["flag"]: f.name for f in fields(ServiceConfig) if f.metadata["flag"]}
    assert declared == SERVE_FLAGS
    options = {a.option_strings[0]: a.dest for a in _parser()._actions if a.option_strings[0] != "-h"}
    assert options == SERVE_FLAGS


@pytest.mark.parametrize("flag, text, value", [
    ("--bootstrap", "h:9", "h:9"), ("--kafka-client", "confluent", "confluent"), ("--topic", "t2", ["t2"]),
    ("--params", '{"window": 9}', {"window": 9}), ("--state-store", "kafka", "kafka"), ("--http-port", "9100", 9100),
    ("--shutdown-timeout", "3.5", 3.5), ("--publish", "both", "both"), ("--incident-gap", "10m", "10m"),
    ("--log-format", "json", "json"), ("--commit-mode", "pipelined", "pipelined"),
])
def test_a_flag_sets_its_setting_over_the_toml_file(tmp_path, flag, text, value):
    f = tmp_path / "serve.toml"
    f.write_text('[kafka]\nbootstrap = "h:1"\nclient = "kafka-python"\n[topics]\ninput = "t1"\n'
                 '[detector]\nparams = {window = 5}\n[service]\nhttp_port = 1\n')
    args = _parser().parse_args([flag, text])
    cfg = load_config(f, **ServiceConfig.flags(args))
    assert getattr(cfg, SERVE_FLAGS[flag]) == value
    untouched = load_config(f, **ServiceConfig.flags(_parser().parse_args([])))
    assert untouched.input_topics == ["t1"] and untouched.detector_params == {"window": 5}


@pytest.mark.parametrize("text, message", [("[1", "--params is not a JSON object"),
                                           ("[1]", "--params must be a JSON object")])
def test_a_table_flag_takes_a_json_object(text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        ServiceConfig.flags(_parser().parse_args(["--params", text]))
