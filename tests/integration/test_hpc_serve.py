"""A simulated HPC fleet through the real broker: `streamad replay --synthetic hpc` publishes
one record per node and sample (all metrics as values), the service trains one node
autoencoder per node after its warm-up, and events name the faulty node and its top metrics."""

import json
import sys
import time
import uuid
from pathlib import Path

import pytest

from connectors.kafka import ensure_topics, for_embedded_broker
from streamad.cli import main
from streamad.synthetic import node_fleet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_serve import _read_all  # noqa: E402

FLEET = {"n_nodes": 3, "n_metrics": 24, "days": 5, "seed": 6, "faults": ("dead_sensor",), "faults_per_node": 1,
         "healthy_days": 3}


def test_fleet_events_name_the_faulty_node_and_metric(bootstrap, monkeypatch):
    import connectors.replay as rp
    from connectors.kafka import make_sink, make_source
    from streamad.service import Pipeline, ServiceConfig
    from streamad.service.deadletter import DeadLetterSink

    run = uuid.uuid4().hex[:6]
    names = {"input": f"nodes-{run}", "anomalies": f"anomalies-{run}", "dlq": f"dlq-{run}"}
    ensure_topics(bootstrap, {names["input"]: 3, names["anomalies"]: 1, names["dlq"]: 1})
    real = rp.read_synthetic_hpc
    monkeypatch.setattr(rp, "read_synthetic_hpc", lambda n_nodes, days, seed: real(
        **{**FLEET, "n_nodes": n_nodes, "days": days, "seed": seed}))
    assert main(["replay", "--bootstrap", bootstrap, "--topic", names["input"], "--synthetic", "hpc",
                 "--keys", "3", "--points", "5", "--seed", "6", "--no-progress"]) == 0
    fleet = node_fleet(**FLEET)
    n = sum(len(v) for v in fleet.values.values())

    # node-ae scores are the largest per-metric error in training standard deviations; on this
    # fleet healthy samples stay below ~1.2 after training and the dead sensors score 1.5-2.5.
    cfg = ServiceConfig(bootstrap=bootstrap, group=f"g-{run}", input_topics=[names["input"]],
                        anomalies_topic=names["anomalies"], dead_letter_topic=names["dlq"], detector="node-ae",
                        detector_params={"epochs": 20, "warmup": 700, "finetune_every": 144, "seed": 0},
                        threshold="fixed", threshold_params={"value": 1.3}, kafka_settings=for_embedded_broker(),
                        poll_timeout_s=0.2, batch_size=500, publish="both")
    source, sink = make_source(bootstrap, cfg.group, cfg.kafka_settings), make_sink(bootstrap, cfg.kafka_settings)
    p = Pipeline(source, sink, cfg, dead_letter=DeadLetterSink(sink, cfg.dead_letter_topic).send)
    p.start()
    try:
        deadline = time.monotonic() + 180
        while p.records_in < n and time.monotonic() < deadline:
            p.run_once()
    finally:
        p.shutdown()
        source.close()
        sink.close()
    assert p.records_in == n and p.dead_letters == 0
    messages = [json.loads(m.value) for m in _read_all(bootstrap, names["anomalies"])[0]]
    events = [e for e in messages if e["type"] == "anomaly"]
    opens = [e for e in messages if e["type"] == "incident_open"]
    assert events and opens and all(e["top_features"] for e in events + opens)
    ts = fleet.timestamps
    for a in fleet.anomalies:
        inside = [e for e in events if e["key"] == a.key and ts[a.start] <= e["ts"] <= ts[a.end - 1]]
        assert inside, f"no event for the {a.kind} on {a.key}"
        named = [e for e in inside if e["top_features"][0][0] == a.features[0]]
        assert len(named) > 0.8 * len(inside), (a.key, a.features[0], [e["top_features"][0] for e in inside][:5])
        # the incident's open names the faulty metric first, as the per-record events do
        opened = [e for e in opens if e["key"] == a.key and ts[a.start] <= e["ts"] <= ts[a.end - 1]]
        assert opened and opened[0]["top_features"][0][0] == a.features[0], (a.key, a.features[0], opened)
