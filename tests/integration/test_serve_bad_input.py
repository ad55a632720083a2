"""Bad input on a real broker: 1,000 valid records mixed with 200 malformed ones give 200
dead letters with reasons and 1,000 scores, and the service keeps running."""

import json
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from connectors.kafka import ensure_topics, for_embedded_broker, make_sink
from streamad.records import Record, encode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_serve import KEYS, _config, _pipeline, _read_all  # noqa: E402

OVERSIZE = 1 << 20  # decode's default limit: 1 MiB


def _malformed(i: int, rng: np.random.Generator) -> tuple[str, bytes]:
    kinds = [
        ("wrong type", b'{"key": "pump-1", "ts": 1, "values": {"temp": "hot"}}'),
        ("nan", b'{"key": "pump-1", "ts": 1, "values": {"temp": NaN}}'),
        ("infinity", b'{"key": "pump-1", "ts": 1, "values": {"temp": 1e999}}'),
        ("truncated", encode(Record("pump-1", 1.7e9, {"temp": 1.0}))[: int(rng.integers(1, 30))]),
        ("binary", rng.integers(128, 256, size=int(rng.integers(1, 64)), dtype=np.uint8).tobytes()),
        ("not an object", b"[1, 2, 3]"),
        ("no values", b'{"key": "pump-1", "ts": 1}'),
        ("bad timestamp", b'{"key": "pump-1", "ts": "yesterday", "values": {"temp": 1}}'),
        ("oversize", b'{"key": "pump-1", "values": {"temp": 1}, "pad": "' + b"x" * OVERSIZE + b'"}'),
    ]
    return kinds[i % len(kinds)]


def test_200_malformed_among_1000_valid_give_200_dead_letters_and_1000_scores(bootstrap):
    run = uuid.uuid4().hex[:8]
    names = {"input": f"telemetry-{run}", "anomalies": f"anomalies-{run}", "scores": f"scores-{run}",
             "dlq": f"dlq-{run}"}
    ensure_topics(bootstrap, {names["input"]: 3, names["anomalies"]: 1, names["scores"]: 3, names["dlq"]: 1})
    rng = np.random.default_rng(11)
    sink = make_sink(bootstrap, {**for_embedded_broker(), "max_request_size": 4 << 20})
    bad_kinds = []
    valid = 0
    for i in range(1200):
        if i % 6 == 5:  # 200 malformed, spread through the stream
            kind, raw = _malformed(len(bad_kinds), rng)
            bad_kinds.append(kind)
            sink.send(names["input"], b"junk", raw)
        else:
            k = KEYS[valid % 4]
            sink.send(names["input"], k.encode(),
                      encode(Record(k, 1.7e9 + 60 * valid, {"temp": float(rng.normal(20, 2)), "rpm": 1.0})))
            valid += 1
    sink.flush()
    sink.close()
    assert valid == 1000 and len(bad_kinds) == 200

    p, source, out_sink = _pipeline(_config(names, bootstrap, f"g-{run}"))
    p.start()
    try:
        deadline = time.monotonic() + 60
        while p.records_in < 1200 and time.monotonic() < deadline:
            p.run_once()
        assert p.records_in == 1200
        assert p.run_once() is not None  # still running: malformed input never stops the service
    finally:
        p.shutdown()
        source.close()
        out_sink.close()

    scores = [json.loads(m.value) for m in _read_all(bootstrap, names["scores"], expect=1000)[0]]
    assert len({(s["partition"], s["offset"]) for s in scores}) == 1000
    dead = [json.loads(m.value) for m in _read_all(bootstrap, names["dlq"], expect=200)[0]]
    assert len({(d["source"]["partition"], d["source"]["offset"]) for d in dead}) == 200
    assert all(d["reason"] for d in dead)
    reasons = " | ".join(sorted({d["reason"] for d in dead}))
    for word in ("UTF-8", "JSON", "number", "finite", "object", "values", "timestamp", "byte limit"):
        assert word.lower() in reasons.lower(), (word, reasons)
    oversize = [d for d in dead if "byte limit" in d["reason"]]
    assert len(oversize) == bad_kinds.count("oversize")
    assert all(d["value_truncated"] for d in oversize)  # the dead letter itself stays under the size cap
