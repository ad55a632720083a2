"""The service's full garbage collections as the number of keys grows.

    python benchmarks/gc_pause.py                 # 1k, 10k and 100k keys
    python benchmarks/gc_pause.py --keys 1000     # one size

`streamad serve` runs the cyclic garbage collector itself, between batches, with a full
collection once a minute (``streamad/service/gctuning.py``). A full collection scans every
tracked object, and most of them are per-key state (detectors and thresholds), so its pause
grows with the keys. Since 2db0d39 (2026-11-24) what survives a full collection is frozen, and the next
one scans only what is new; a deep collection (after a rebalance, and every 30 minutes)
unfreezes and scans everything.

Each size runs in a fresh subprocess: the pipeline (memory transport, Gaussian detector with
32-point windows, SPOT, events only) reads records of every key until each key has
``--per-key`` of them (windows full), then we time, each at a batch boundary as in the
service:

- ``first``: the first full collection, over everything made since start-up: what every
  once-a-minute full collection paid before 2db0d39;
- ``frozen``: the next full collections, a batch of records later each (median of 5);
- ``deep``: a deep collection (after a rebalance, and every 30 minutes): ``first`` plus the
  start-up objects that ``settle_gc`` froze.

Writes benchmarks/results/gc_pause.json and .md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamad.service.transport import MemoryBroker, MemorySink, MemorySource, Message  # noqa: E402


class _Generated(MemorySource):
    """The memory source, its records made on the fly: ``keys`` keys on one partition (no
    broker holding millions of messages beside the state being measured)."""

    def __init__(self, keys: int) -> None:
        broker = MemoryBroker()
        broker.create_topic("in", partitions=1)
        super().__init__(broker)
        self.keys, self.i = keys, 0

    def poll(self, timeout_s: float, max_records: int) -> list:
        out = []
        for i in range(self.i, self.i + max_records):
            k, step = i % self.keys, i // self.keys
            value = 10 + (step % 24) / 8 + (i * 7919 % 101) / 200  # a daily-like shape with noise
            out.append(Message("in", 0, i, f"k{k:06d}".encode(),
                               f'{{"ts":{1.7e9 + 60 * step},"values":{{"value":{value:.4f}}}}}'.encode()))
        self.i += max_records
        return out


def point(keys: int, per_key: int) -> dict:
    import gc

    from streamad.service import Pipeline, ServiceConfig
    from streamad.service.app import settle_gc

    cfg = ServiceConfig(input_topics=["in"], anomalies_topic="events", scores_topic="", dead_letter_topic="dlq",
                        detector="gaussian", detector_params={"window": 32}, batch_size=5000)
    p = Pipeline(_Generated(keys), MemorySink(MemoryBroker()), cfg)
    p.start()
    settle_gc(p)  # as `streamad serve` does: start-up objects frozen, collections between batches
    never = float("inf")
    p.full_gc_every_s = p.deep_gc_every_s = never  # this script says when
    t0 = time.perf_counter()
    while p.records_in < keys * per_key:
        p.run_once()
    fill_s = time.perf_counter() - t0

    def full(deep: bool = False) -> float:
        p.run_once()  # a batch of records, then a full collection at its boundary, timed
        p.full_gc_every_s, p.deep_gc_every_s = 0.0, 0.0 if deep else never
        t = time.perf_counter()
        p._collect_garbage()
        dt = time.perf_counter() - t
        p.full_gc_every_s = p.deep_gc_every_s = never
        return dt * 1000

    first = full()
    frozen = sorted(full() for _ in range(5))[2]
    deep = full(deep=True)
    tracked = len(gc.get_objects()) + gc.get_freeze_count()
    p.shutdown()
    return {"keys": keys, "per_key": per_key, "records": p.records_in, "fill_s": fill_s,
            "tracked_objects": tracked, "first_ms": first, "frozen_ms": frozen, "deep_ms": deep}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    ap.add_argument("--per-key", type=int, default=40, help="records per key before timing (>= the window)")
    ap.add_argument("--out", default=None, help="result path stem (default benchmarks/results/gc_pause)")
    ap.add_argument("--point", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.point:
        print(json.dumps(point(args.point, args.per_key)))
        return
    rows = []
    for keys in args.keys:
        cmd = [sys.executable, __file__, "--point", str(keys), "--per-key", str(args.per_key)]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
        row = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else \
            {"keys": keys, "error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    stem = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / "gc_pause"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({"benchmark": "gc_pause", "rows": rows}, indent=2))
    lines = ["| keys | tracked objects | first full collection ms | next ones (frozen) ms | deep ms |",
             "|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['keys']:,} | failed: {r['error']} | | | |")
        else:
            lines.append(f"| {r['keys']:,} | {r['tracked_objects']:,} | {r['first_ms']:.1f} | "
                         f"{r['frozen_ms']:.1f} | {r['deep_ms']:.1f} |")
    stem.with_suffix(".md").write_text("# Full garbage collections of `streamad serve` by number of keys\n\n"
                                       "Gaussian (window 32) + SPOT per key; see benchmarks/gc_pause.py.\n\n"
                                       + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
