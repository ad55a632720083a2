"""`streamad serve` survives a broker outage: the broker is stopped and started again on the
same port while the service runs; the service keeps running and scores what arrives afterwards.

The embedded broker keeps everything in memory, so the restarted broker has empty topics and
no committed offsets: the service's checkpointed offsets then lie beyond the new log ends and
the consumer's offset-reset policy takes over. Against a real Kafka cluster the log survives
the outage and the service simply resumes where it committed.
"""

import json
import sys
import time
import uuid
from pathlib import Path

import pytest

from connectors.broker import EmbeddedBroker
from connectors.kafka import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_serve import KEYS, _child, _produce, _read_all, _wait  # noqa: E402


def _create(bootstrap, names):
    ensure_topics(bootstrap, {names["input"]: 3, names["anomalies"]: 1, names["scores"]: 3, names["dlq"]: 1})


def test_service_rides_out_a_broker_restart_and_scores_records_sent_afterwards(tmp_path):
    run = uuid.uuid4().hex[:8]
    names = {"input": f"telemetry-{run}", "anomalies": f"anomalies-{run}", "scores": f"scores-{run}",
             "dlq": f"dlq-{run}"}
    group = f"g-{run}"
    broker = EmbeddedBroker().start()
    child = None
    try:
        _create(broker.bootstrap, names)
        sent = _produce(broker.bootstrap, names["input"], 100, seed=1)
        child = _child(names, broker.bootstrap, group, tmp_path)
        _wait(lambda: len(_read_all(broker.bootstrap, names["scores"], timeout_s=2)[0]) >= sent, 60,
              "scores before the outage")

        broker.stop()
        time.sleep(8)  # several poll/commit/flush attempts fail while the broker is away
        assert child.poll() is None, "the service exited during the broker outage"

        broker = EmbeddedBroker(port=broker.port).start()
        _create(broker.bootstrap, names)
        after = _produce(broker.bootstrap, names["input"], 60, seed=2)
        inputs, _ = _read_all(broker.bootstrap, names["input"], expect=after)
        want = {(m.partition, m.offset) for m in inputs}

        def scored():
            got = _read_all(broker.bootstrap, names["scores"], timeout_s=2)[0]
            return want <= {(s["partition"], s["offset"]) for s in map(json.loads, (m.value for m in got))}

        _wait(scored, 90, "scores of the records sent after the restart")
        assert child.poll() is None, "the service exited after the broker came back"
        scores = [json.loads(m.value) for m in _read_all(broker.bootstrap, names["scores"], timeout_s=2)[0]]
        assert {s["key"] for s in scores} == set(KEYS)
        child.terminate()
        out, _ = child.communicate(timeout=15)
        assert child.returncode == 0, out.decode()[-2000:]
        assert b"event=checkpoint_ahead_of_log" in out  # the memory broker's logs restarted empty
    finally:
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                out, _ = child.communicate(timeout=15)
            except Exception:
                child.kill()
                out, _ = child.communicate()
            print(out.decode()[-3000:])
        broker.stop()
