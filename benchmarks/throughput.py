"""Throughput, latency and memory of streamad against the Kafka ceiling and River.

    python benchmarks/throughput.py            # full run: 1,000,000 records over 1,000 keys
    python benchmarks/throughput.py --quick    # smoke run: 50,000 records over 100 keys

One embedded broker and one pre-filled input topic serve every scenario; each scenario runs
in its own subprocess so that its peak RSS and CPU seconds are its own. All numbers of one
run are taken on the same machine in the same minutes, and the table reports them as ratios
to the ceiling (a bare consume -> produce loop with the same client), because absolute
records/s on a shared machine move from run to run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


# -- scenarios (run in a child process) --------------------------------------------------
def _run_scenario(args) -> dict:
    import _inprocess as inproc
    import _kafka_ceiling as ceiling
    import _serve_bench as serve

    if serve.PIN:
        serve.pin(os.getpid(), {1})

    table = {
        "ceiling-kafka-python": lambda: ceiling.kafka_python_loop(args.bootstrap, args.topic, args.out_topic, args.n, args.partitions),
        "ceiling-confluent": lambda: ceiling.confluent_loop(args.bootstrap, args.topic, args.out_topic, args.n, args.partitions),
    }
    table.update(inproc.scenarios(args))
    table.update(serve.scenarios(args))
    if args.scenario not in table:
        raise SystemExit(f"unknown scenario {args.scenario!r}")
    probe_before = speed_probe()
    cpu0 = time.process_time()
    res = table[args.scenario]()
    res["cpu_s"] = time.process_time() - cpu0
    res["probe_ms"] = [round(probe_before, 3), round(speed_probe(), 3)]
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def speed_probe(repeats: int = 7) -> float:
    """The machine's speed where this process runs, just before and after a scenario: the
    median thread CPU time (ms) of a fixed piece of Python work (dict, float and list
    operations, as the service's per-record code). The host is shared: when it is busy the
    same work takes longer, and rows of one run are only comparable when their probes agree."""
    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        d: dict = {}
        acc = 0.0
        for i in range(20_000):
            k = i & 1023
            acc += d.get(k, 0.5) * 1.0001
            d[k] = acc % 7.0
        times.append(time.thread_time() - t0)
    return 1000.0 * sorted(times)[len(times) // 2]


# -- orchestration -----------------------------------------------------------------------
# The latency rows' rate as a share of the maximum of the same service in the run (default
# 0.5, the target); STREAMAD_BENCH_LOAD=0.35 etc. traces latency against load.
LOAD = float(os.environ.get("STREAMAD_BENCH_LOAD", "0.5"))


def prefill(bootstrap: str, topic: str, n: int, keys: int, partitions: int) -> float:
    import random

    import _serve_bench as serve
    from kafka.admin import KafkaAdminClient, NewTopic

    from connectors.confluent import ConfluentSink

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    admin.close()
    sink = ConfluentSink(bootstrap, {"linger.ms": 20, "batch.size": 1_000_000})
    rnd = random.Random(7)
    t0 = time.perf_counter()
    base = 1_700_000_000.0
    for i in range(n):
        k = i % keys
        step = i // keys
        sink.send(topic, f"k{k:06d}".encode(), serve._message(k, base + 60 * step, serve._value(step, rnd)))
    sink.flush(120)
    return time.perf_counter() - t0


def child(scenario: str, common: list[str], timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--scenario", scenario, *common]
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"scenario": scenario, "error": f"timed out after {timeout:.0f} s"}
    if out.returncode != 0:
        return {"scenario": scenario, "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["scenario"] = scenario
    res["wall_s"] = time.perf_counter() - t0
    return res


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        info["mem_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (OSError, ValueError):
        pass
    return info


def fmt_table(rows: list[dict]) -> str:
    lines = ["| scenario | records/s | ratio (serve: to the ceiling; inproc: to River HST) | p50 ms | p99 ms | peak RSS MB | CPU s "
             "| speed probe ms, before / after |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['scenario']} | failed: {r['error']} | | | | | | |")
            continue
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else ""
        p50 = f"{r['p50_ms']:.1f}" if r.get("p50_ms") is not None else ""
        p99 = f"{r['p99_ms']:.1f}" if r.get("p99_ms") is not None else ""
        probe = " / ".join(f"{x:.1f}" for x in r["probe_ms"]) if r.get("probe_ms") else ""
        lines.append(f"| {r['scenario']} | {r['rps']:,.0f} | {ratio} | {p50} | {p99} | {r['peak_rss_mb']:.0f} | {r['cpu_s']:.1f} "
                     f"| {probe} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--records", type=int, default=None)
    ap.add_argument("--keys", type=int, default=None)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--only", default=None, help="comma-separated scenario names")
    ap.add_argument("--out", default=None)
    # child mode
    ap.add_argument("--scenario", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--topic", help=argparse.SUPPRESS)
    ap.add_argument("--out-topic", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = args.records or (50_000 if args.quick else 1_000_000)
    keys = args.keys or (100 if args.quick else 1_000)
    args.keys = keys
    if args.scenario:
        args.n = args.n or n
        print(json.dumps(_run_scenario(args)))
        return

    import tempfile

    import _inprocess as inproc
    import _serve_bench as serve

    from connectors.broker import EmbeddedBroker

    scen = ["ceiling-kafka-python", "ceiling-confluent", *serve.NAMES, *inproc.NAMES]
    if args.only:
        scen = [s for s in scen if s in args.only.split(",")]
    rows = []
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as work:
        if serve.PIN:
            serve.pin(broker.proc.pid, {0})
            serve.pin(os.getpid(), {0})
        fill_s = prefill(broker.bootstrap, "bench-in", n, keys, args.partitions)
        print(f"prefilled {n:,} records over {keys:,} keys in {fill_s:.1f} s", file=sys.stderr)
        for i, s in enumerate(scen):
            common = ["--bootstrap", broker.bootstrap, "--topic", "bench-in", "--out-topic", f"bench-out-{i}",
                      "--n", str(n), "--keys", str(keys), "--partitions", str(args.partitions), "--workdir", work]
            if s.startswith("latency-"):  # at half (LOAD) the maximum the same service reached in this run
                # latency-ceiling-*: the consumer alone at the rate of the events-only service
                same = s.replace("latency-ceiling-", "serve-gaussian-") + "-events" if "-ceiling-" in s else s.replace("latency-", "serve-")
                ref = next((x for x in rows if x["scenario"] == same and "error" not in x), None)
                common += ["--rate", str(round(LOAD * ref["rps"])) if ref else "5000"]
            r = child(s, common, timeout=1800)
            if "error" not in r:
                r["rps"] = r.get("rate") or r["records"] / r["seconds"]
            rows.append(r)
            print(f"{s}: " + (r.get("error") or f"{r['rps']:,.0f} records/s"), file=sys.stderr)
    by = {r["scenario"]: r for r in rows if "error" not in r}
    for r in rows:
        if "error" in r:
            continue
        if r["scenario"].startswith("inproc"):  # in-process rows compare with River's HST
            ref = by.get("inproc-river-hst")
        else:
            ref = by.get("ceiling-confluent" if "confluent" in r["scenario"] else "ceiling-kafka-python")
        r["ratio"] = r["rps"] / ref["rps"] if ref else None
    result = {"benchmark": "throughput", "records": n, "keys": keys, "partitions": args.partitions,
              "machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    out = Path(args.out or ROOT / "benchmarks" / "results" / ("throughput_quick.json" if args.quick else "throughput.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    table = fmt_table(rows)
    out.with_suffix(".md").write_text(f"# Throughput ({n:,} records, {keys:,} keys, {args.partitions} partitions)\n\n"
                                      f"Machine: {result['machine']}\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
