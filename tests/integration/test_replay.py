"""`streamad replay` and connectors.replay against the real embedded broker."""

import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from connectors.kafka import KafkaSink, KafkaSource, ensure_topics, for_embedded_broker
from connectors.replay import read_csv, read_nab, read_npy, read_synthetic, read_yahoo, replay
from streamad.base import DataError
from streamad.cli import main
from streamad.records import Record, decode

pytestmark = pytest.mark.integration


def _topic(bootstrap, partitions=3):
    name = f"rp-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, {name: partitions})
    return name


def _consume(bootstrap, topic, n, deadline_s=20.0):
    src = KafkaSource(bootstrap, f"g-{uuid.uuid4().hex[:6]}", for_embedded_broker())
    src.subscribe([topic])
    got = []
    end = time.monotonic() + deadline_s
    while len(got) < n and time.monotonic() < end:
        got.extend(src.poll(0.2, 1000))
    got.extend(src.poll(0.3, 1000))  # nothing beyond n
    src.close()
    return got


def _csv(tmp_path, n=120):
    path = tmp_path / "plant.csv"
    rows = ["timestamp,device,temp,pressure,label"]
    for i in range(n):
        rows.append(f"2024-03-01T00:{i // 60:02d}:{i % 60:02d}Z,dev-{i % 3},{20 + i * 0.1:.1f},{1000 + i},{int(i == 50)}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_replay_csv_from_the_command_line(bootstrap, tmp_path, capsys):
    topic = _topic(bootstrap)
    path = _csv(tmp_path)
    assert main(["replay", "--bootstrap", bootstrap, "--topic", topic, "--csv", str(path), "--no-progress",
                 "--kafka-option", "linger_ms=20", "--kafka-option", "client_id=replay-test"]) == 0
    assert "published 120 records of 3 key(s)" in capsys.readouterr().out
    got = _consume(bootstrap, topic, 120)
    assert len(got) == 120
    expected = {(r.key, r.ts): r.values for r in read_csv(path)}
    seen = set()
    for m in got:
        rec = decode(m.value, key=m.key)
        assert m.key == rec.key.encode()
        assert rec.values == expected[(rec.key, rec.ts)] and "label" not in rec.values
        seen.add((rec.key, rec.ts))
    assert seen == set(expected)
    # records of a key stay in order: one partition per key
    for key in {m.key for m in got}:
        ts = [decode(m.value).ts for m in sorted(got, key=lambda m: m.offset) if m.key == key]
        assert len({m.partition for m in got if m.key == key}) == 1 and ts == sorted(ts)


def test_replay_synthetic_with_rate_and_limit(bootstrap):
    topic = _topic(bootstrap)
    expected = list(read_synthetic(n_keys=4, n_points=400, seed=3))
    assert len(expected) == 1600 and len({r.key for r in expected}) == 4
    with KafkaSink(bootstrap) as sink:
        stats = replay(read_synthetic(n_keys=4, n_points=400, seed=3), sink, topic, rate=1000, limit=150)
    assert stats.sent == 150 and stats.keys == 4
    assert 0.1 < stats.seconds < 2.0  # paced at ~1000/s, not as fast as possible
    got = _consume(bootstrap, topic, 150)
    assert sorted((r.key, r.ts, tuple(r.values.items())) for r in (decode(m.value, key=m.key) for m in got)) == \
        sorted((r.key, r.ts, tuple(r.values.items())) for r in expected[:150])


def test_replay_command_synthetic_and_npy(bootstrap, tmp_path):
    topic = _topic(bootstrap, 2)
    npy = tmp_path / "P-1.npy"
    np.save(npy, np.column_stack([np.sin(np.arange(30)), np.zeros(30)]))
    assert [r.values for r in read_npy(npy)][1] == {"value": float(np.sin(1)), "cmd_1": 0.0}
    for extra in (["--npy", str(npy)], ["--synthetic", "--keys", "2", "--points", "400", "--limit", "20", "--fast"]):
        out = subprocess.run([sys.executable, "-m", "streamad.cli", "replay", "--bootstrap", bootstrap,
                              "--topic", topic, *extra], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    got = _consume(bootstrap, topic, 50)
    keys = [decode(m.value, key=m.key).key for m in got]
    assert len(got) == 50 and keys.count("P-1") == 30 and len(set(keys)) == 3


@pytest.mark.parametrize("content, message", [
    ("", "empty file"),
    ("timestamp,value\n2024-01-01,abc\n", "column 'value' is not a number"),
    ("timestamp,value\nyesterday,1\n", "neither a number nor ISO-8601"),
    ("timestamp,label\n1,0\n", "no feature columns"),
])
def test_bad_files_are_one_line_data_errors(tmp_path, capsys, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        list(read_csv(path))
    # the CLI fails before connecting anywhere: port 9 is not a broker
    assert main(["replay", "--bootstrap", "127.0.0.1:9", "--topic", "t", "--csv", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_missing_file_is_a_data_error(capsys):
    assert main(["replay", "--bootstrap", "127.0.0.1:9", "--topic", "t", "--nab", "/nonexistent.csv"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_nab_and_yahoo_formats(tmp_path):
    nab = tmp_path / "machine_temperature.csv"
    nab.write_text("timestamp,value\n2013-12-02 21:15:00,73.96\n2013-12-02 21:20:00,74.93\n")
    a1 = tmp_path / "real_1.csv"
    a1.write_text("timestamp,value,is_anomaly\n1,0.5,0\n2,9.0,1\n")
    a3 = tmp_path / "A3Benchmark-TS1.csv"
    a3.write_text("timestamps,value,anomaly,changepoint,trend,noise,seasonality1,seasonality2\n"
                  "1416726000,13.9,0,0,0,0.1,10.2,3.6\n")
    assert list(read_nab(nab)) == [Record("machine_temperature", 1386018900.0, {"value": 73.96}),
                                   Record("machine_temperature", 1386019200.0, {"value": 74.93})]
    assert list(read_yahoo(a1, key="a1")) == [Record("a1", 1.0, {"value": 0.5}), Record("a1", 2.0, {"value": 9.0})]
    assert list(read_yahoo(a3)) == [Record("A3Benchmark-TS1", 1416726000.0, {"value": 13.9})]
    with pytest.raises(DataError, match="no column"):
        list(read_nab(_write(tmp_path / "x.csv", "timestamp,temp\n1,2\n")))


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("option, message", [
    ("sasl_mechansim=PLAIN", "unknown Kafka client option(s): sasl_mechansim"),
    ("linger", "--kafka-option must be NAME=VALUE"),
])
def test_bad_kafka_option_is_a_one_line_error(tmp_path, capsys, option, message):
    path = _csv(tmp_path, 3)
    assert main(["replay", "--bootstrap", "127.0.0.1:9", "--topic", "t", "--csv", str(path),
                 "--kafka-option", option]) == 2
    assert message in capsys.readouterr().err
