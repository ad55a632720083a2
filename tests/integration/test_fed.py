"""`streamad fed-server` and three `streamad fed-client` processes on the embedded broker:
rounds complete, a client killed with SIGKILL does not stop them and rejoins from its
checkpoint when restarted, forged / replayed / NaN
updates are refused with logged reasons, and a poisoned client cannot drag the subspace."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from connectors.kafka import ensure_topics, for_embedded_broker, make_sink
from streamad.federated.grassmann import local_pca, orthonormalize, principal_angles, random_basis
from streamad.federated.protocol import (
    KeyRing,
    Update,
    new_nonce,
    open_global,
    sign_update,
    write_key_file,
)
from streamad.records import Record, encode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

D, K = 5, 2
TRUE = orthonormalize(np.array([[1, 1, 0, 0, 0], [0, 0, 1, 1, 1]], dtype=float).T)
ROOT = Path(__file__).resolve().parents[2]


def _data(rng, n, anomalies=()):
    X = (rng.normal(size=(n, K)) * [3.0, 2.0]) @ TRUE.T + 0.1 * rng.normal(size=(n, D))
    for i in anomalies:
        X[i] += 4.0 * np.array([1, -1, 1, -1, 0])
    return X


def _kafka_args():
    return [a for name, value in for_embedded_broker().items() for a in ("--kafka-option", f"{name}={value}")]


def _start(args, log_path):
    out = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "streamad.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc.log_file = out
    return proc


def _log(path) -> str:
    return Path(path).read_text(errors="replace") if Path(path).exists() else ""


def _wait(cond, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _rounds_closed(path) -> int:
    return _log(path).count("event=fed_round_closed")


def _latest_global(bootstrap, topic, ring):
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        last = None
        for _ in range(5):
            for msgs in c.poll(timeout_ms=300).values():
                if msgs:
                    last = msgs[-1].value
        return None if last is None else open_global(last, ring)
    finally:
        c.close()


def _updates(bootstrap, topic):
    """Every message value of partition 0 of ``topic``."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        out = []
        for _ in range(5):
            out += [m.value for msgs in c.poll(timeout_ms=300).values() for m in msgs]
        return out
    finally:
        c.close()


def test_server_and_three_client_processes(bootstrap, tmp_path):
    run = uuid.uuid4().hex[:6]
    prefix = f"fed-{run}"
    clients = ["gw0", "gw1", "gw2"]
    ring = write_key_file(tmp_path / "keys.json", [*clients, "evil"])
    rng = np.random.default_rng(0)
    pooled = []
    sink = make_sink(bootstrap, for_embedded_broker())
    ensure_topics(bootstrap, {f"tel-{run}-{c}": 1 for c in clients} | {f"anom-{run}": 1})
    for c in clients:
        X = _data(rng, 800, anomalies=(700, 750) if c == "gw0" else ())
        pooled.append(np.delete(X, [700, 750], axis=0) if c == "gw0" else X)
        for i, x in enumerate(X):
            sink.send(f"tel-{run}-{c}", b"dev", encode(Record("dev", 1e9 + i, {f"m{j}": float(v) for j, v in enumerate(x)})))
    sink.send(f"tel-{run}-gw1", b"dev", b"{not json")  # malformed: dead-lettered, not fatal
    sink.flush()
    P = np.vstack(pooled)
    central = local_pca((P - P.mean(0)) / P.std(0), K)[0]

    common = ["--bootstrap", bootstrap, "--key-file", str(tmp_path / "keys.json"), "--prefix", prefix,
              "--k", str(K), *_kafka_args()]
    server_log = tmp_path / "server.log"
    # --idle-tolerance 0: rounds go on without new data, as this test counts them
    procs = {"server": _start(["fed-server", *common, "--dim", str(D), "--min-clients", "2", "--round-timeout", "2",
                               "--checkpoint", str(tmp_path / "server.state"), "--idle-tolerance", "0"], server_log)}
    try:
        def client_args(c):
            return ["fed-client", *common, "--client-id", c, "--topic", f"tel-{run}-{c}", "--anomalies-topic",
                    f"anom-{run}", "--group", f"g-{run}-{c}", "--checkpoint", str(tmp_path / f"{c}.state")]

        for c in clients:
            procs[c] = _start(client_args(c), tmp_path / f"{c}.log")
        # all three take part (a client whose group join is slow misses the first rounds)
        _wait(lambda: re.search(r"event=fed_round_closed round=\d+ clients=3 ", _log(server_log)), 90,
              "a round closed with all three clients")

        procs["gw2"].send_signal(signal.SIGKILL)  # mid-round
        procs["gw2"].wait(10)
        before = _rounds_closed(server_log)
        _wait(lambda: _rounds_closed(server_log) >= before + 2, 60, "two more rounds without gw2")
        procs["gw2"].log_file.close()
        # restarted, gw2 resumes from its checkpoint (not from scratch) and rejoins the rounds
        procs["gw2"] = _start(client_args("gw2"), tmp_path / "gw2-restarted.log")
        _wait(lambda: "event=fed_update_sent" in _log(tmp_path / "gw2-restarted.log"), 60, "gw2 to rejoin")
        assert "event=fed_client_restored client=gw2" in _log(tmp_path / "gw2-restarted.log")

        # Attacks on the update topic: forged, replayed, NaN, and a poisoned client.
        updates_topic = f"{prefix}.updates"
        real = _updates(bootstrap, updates_topic)
        assert real, "clients' updates should be on the topic"
        attacker = make_sink(bootstrap, for_embedded_broker())
        g = _latest_global(bootstrap, f"{prefix}.global", ring)
        forged = sign_update(Update(g.round, "gw0", new_nonce(), random_basis(D, K, 1), 800, np.zeros(D), np.ones(D)),
                             KeyRing(ring.server, {"gw0": b"f" * 32}))
        nan = random_basis(D, K, 2)
        nan[1, 1] = np.nan
        evil = ring.for_client("evil")
        attacker.send(updates_topic, None, forged)
        attacker.send(updates_topic, None, real[-1])  # replay of a real client's update
        attacker.send(updates_topic, None, sign_update(Update(g.round, "evil", new_nonce(), nan, 800, np.zeros(D),
                                                              np.ones(D)), evil))
        attacker.flush()
        worst = 0.0
        for _ in range(4):  # a poisoned client: a random basis every round, claiming 50x the data
            g = _latest_global(bootstrap, f"{prefix}.global", ring)
            attacker.send(updates_topic, None, sign_update(
                Update(g.round, "evil", new_nonce(), random_basis(D, K, rng), 40_000, np.zeros(D), np.ones(D)), evil))
            attacker.flush()
            _wait(lambda r=g.round: (_latest_global(bootstrap, f"{prefix}.global", ring).round > r), 30,
                  "the next round")
            g = _latest_global(bootstrap, f"{prefix}.global", ring)
            worst = max(worst, float(np.degrees(principal_angles(g.basis, central).max())))
        attacker.close()
        log = _log(server_log)
        assert "event=fed_update_rejected" in log
        assert "bad signature from client" in log
        assert "replayed nonce" in log or "not the open round" in log
        assert "non-finite values" in log
        assert "evil" in log  # the poisoned updates were admitted, and down-weighted
        assert worst < 5.0, worst  # the stated bound: under 5 degrees with 1 poisoned of 3 clients

        for name in ("server", "gw0", "gw1", "gw2"):
            procs[name].send_signal(signal.SIGTERM)
        for name in ("server", "gw0", "gw1", "gw2"):
            assert procs[name].wait(20) == 0, _log(tmp_path / f"{name}.log")[-2000:]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
            p.log_file.close()
        sink.close()
    events = [json.loads(v) for v in _updates(bootstrap, f"anom-{run}")]
    flagged = {e["offset"] for e in events if e["client"] == "gw0"}
    assert {700, 750} <= flagged  # the off-subspace records of gw0's stream
    assert "event=fed_client_stopped client=gw1" in _log(tmp_path / "gw1.log")
    dead = [json.loads(v) for v in _updates(bootstrap, f"tel-{run}-gw1.dlq")]
    assert len(dead) == 1 and dead[0]["reason"]  # the malformed record, not lost


def test_fed_client_refuses_another_clients_checkpoint_with_a_one_line_error(bootstrap, tmp_path):
    from streamad.federated.channel import MemoryChannel
    from streamad.federated.client import ClientConfig, FedClient
    from streamad.service import MemoryBroker, MemorySink, MemorySource

    run = uuid.uuid4().hex[:6]
    ring = write_key_file(tmp_path / "keys.json", ["gw0", "gw1"])
    state = tmp_path / "gw0.state"
    mem = MemoryBroker()
    FedClient(ClientConfig(client_id="gw0", input_topics=["t"], anomalies_topic="a", k=K, checkpoint=str(state)),
              ring.for_client("gw0"), MemoryChannel(), MemorySource(mem), MemorySink(mem)).checkpoint()
    out = subprocess.run([sys.executable, "-m", "streamad.cli", "fed-client", "--bootstrap", bootstrap, "--key-file",
                          str(tmp_path / "keys.json"), "--client-id", "gw1", "--k", str(K), "--topic", f"tel-{run}",
                          "--anomalies-topic", f"anom-{run}", "--checkpoint", str(state), *_kafka_args()],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2
    assert "belongs to client 'gw0'" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
