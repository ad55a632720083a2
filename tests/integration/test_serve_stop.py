"""`streamad serve` when the broker goes away: /healthz says so, with a reason, and is ready
again once the broker is back; SIGTERM during the outage ends the process within its
shutdown time, after writing its checkpoints, with a non-zero exit code (the final commit
failed); the next start loses nothing.

The broker is cut off by a proxy between it and every client (connection refused), so the
embedded broker keeps its data in memory through the outage, as a real cluster keeps its
logs; stopping it would lose everything (tests/integration/test_serve_outage.py).
"""

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from connectors.broker import MEMORY_WARNING, BrokerProxy, EmbeddedBroker, free_port
from connectors.kafka import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_serve import SERVE_TOML, TESTS, _Output, _produce, _read_all, _wait  # noqa: E402

SHUTDOWN_S = 4.0


def _healthz(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as r:
            return r.status, r.read().decode().strip()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode().strip()
    except OSError as e:  # not listening yet
        return None, str(e)


def _serve(names, bootstrap, group, ckpt, port):
    cfg = Path(ckpt) / "serve.toml"
    text = SERVE_TOML.format(bootstrap=bootstrap, group=group, ckpt=ckpt, commit_mode="wait", every_records=500, **names)
    cfg.write_text(text.replace("[service]\n", f"[service]\nhttp_port = {port}\nshutdown_timeout_s = {SHUTDOWN_S}\n"
                                                "broker_timeout_s = 4\n"))
    child = subprocess.Popen([sys.executable, "-m", "streamad.cli", "serve", "--config", str(cfg)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=TESTS.parent,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return child, _Output(child)


def test_healthz_and_sigterm_during_a_broker_outage(tmp_path, caplog):
    run = uuid.uuid4().hex[:8]
    names = {"input": f"telemetry-{run}", "anomalies": f"anomalies-{run}", "scores": f"scores-{run}",
             "dlq": f"dlq-{run}"}
    group = f"g-{run}"
    proxy = BrokerProxy()
    with caplog.at_level(logging.WARNING, logger="connectors.broker"):
        broker = EmbeddedBroker(advertised_port=proxy.port).start()
    assert MEMORY_WARNING in caplog.text  # the embedded broker says it forgets everything
    proxy.start(broker.port)
    bootstrap = proxy.bootstrap
    child = None
    try:
        ensure_topics(bootstrap, {names["input"]: 3, names["anomalies"]: 1, names["scores"]: 3, names["dlq"]: 1})
        sent = _produce(bootstrap, names["input"], 200, seed=1)
        port = free_port()
        child, out = _serve(names, bootstrap, group, tmp_path, port)
        _wait(lambda: len(_read_all(bootstrap, names["scores"], timeout_s=2)[0]) >= sent, 60, "the first scores")
        _wait(lambda: _healthz(port) == (200, "ok"), 20, "/healthz ok")

        proxy.cut()  # the broker is unreachable
        _wait(lambda: _healthz(port)[0] == 503, 15, "/healthz to report the outage")
        code, body = _healthz(port)
        assert body.startswith(f"unhealthy: broker unreachable: no answer from {bootstrap} for ")
        proxy.restore()
        _wait(lambda: _healthz(port) == (200, "ok"), 40, "/healthz ok after the broker came back")

        sent += _produce(bootstrap, names["input"], 40, seed=2)
        _wait(lambda: len(_read_all(bootstrap, names["scores"], timeout_s=2)[0]) >= sent, 60, "the new scores")
        proxy.cut()
        time.sleep(1)
        before = {p.name: p.stat().st_mtime for p in (tmp_path / group).glob("*.state")}
        child.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        log = out.wait(timeout_s=SHUTDOWN_S + 10)
        took = time.monotonic() - t0
        assert took < SHUTDOWN_S + 2.0, (took, log.decode()[-3000:])  # + the interpreter's own exit
        assert child.returncode == 1, log.decode()[-3000:]
        assert b"event=shutdown outputs_delivered=true checkpoints_written=true committed=false" in log
        after = {p.name: p.stat().st_mtime for p in (tmp_path / group).glob("*.state")}
        assert set(after) == set(before) and all(after[n] > before[n] for n in after)  # written at the stop

        proxy.restore()  # the next start resumes from the checkpoints: nothing lost
        sent += _produce(bootstrap, names["input"], 20, seed=3)
        child, out = _serve(names, bootstrap, group, tmp_path, free_port())
        inputs, _ = _read_all(bootstrap, names["input"], expect=sent)
        want = {(m.partition, m.offset) for m in inputs}
        _wait(lambda: out.has(b"event=restored"), 60, "the restart's restore")
        _wait(lambda: want <= {(s["partition"], s["offset"]) for s in map(
            json.loads, (m.value for m in _read_all(bootstrap, names["scores"], timeout_s=2)[0]))}, 60,
            "every record scored")
        child.send_signal(signal.SIGTERM)
        log = out.wait(timeout_s=SHUTDOWN_S + 10)
        assert child.returncode == 0, log.decode()[-3000:]
        assert b"event=restored" in log and b"checkpoint_ahead_of_log" not in log
        scores = {}
        for s in map(json.loads, (m.value for m in _read_all(bootstrap, names["scores"])[0])):
            scores.setdefault((s["partition"], s["offset"]), set()).add(s["score"])
        assert set(scores) == want and all(len(v) == 1 for v in scores.values())  # a duplicate scores the same
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        proxy.stop()
        broker.stop()
