"""`streamad serve` scenarios for benchmarks/throughput.py (each runs in its own child process).

``serve-<detector>-<client>``: the service's pipeline (decode, per-key detector and SPOT,
score and event messages, dead letters, commit after flush) reads the pre-filled topic with a
consumer group, exactly as `streamad serve` does; the clock starts at the first record (the
ceiling loops use manual assignment and have no group join either). ``-events`` variants
publish events only (no scores topic); ``-pipelined`` variants run commit mode "pipelined"
(the loop does not wait for acknowledgements; see ServiceConfig.commit_mode).

``latency-<detector>-<client>``: a producer thread writes fresh records at ``--rate`` records/s
(the orchestrator passes half the measured maximum) while the service runs; the latency of a
record is from its producer timestamp (and from the broker's acknowledgement of it) to the
moment the service commits its offset, which it does once the record's score and any event are
acknowledged by the broker: after the flush in commit mode "wait", when the acknowledgements
have arrived in mode "pipelined"; p50 / p99.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import uuid

import numpy as np

from streamad.service.app import settle_gc

COMMIT_INTERVAL_S = float(os.environ.get("STREAMAD_BENCH_COMMIT_S", "0"))
# Records per poll for every detector (default: BATCH below, else 5,000): a latency-tuned
# configuration reads smaller batches.
BATCH_OVERRIDE = os.environ.get("STREAMAD_BENCH_BATCH")
# How long the broker may hold a fetch for more data (consumer setting; default 200 ms).
FETCH_WAIT_MS = os.environ.get("STREAMAD_BENCH_FETCH_WAIT_MS")
# STREAMAD_BENCH_KAFKA='{"fetch.min.bytes": 16384}': more client settings for the service
# (JSON; the client's own names).
KAFKA_EXTRA = json.loads(os.environ.get("STREAMAD_BENCH_KAFKA", "{}"))
# Records per key the service consumes before the clock starts (0: none, the default): the
# serve scenarios then time the rest of the pre-filled topic, the latency scenarios fill this
# many per key before the timed traffic. With 1,200 every key has passed its detector's
# warm-up and SPOT's calibration (1,000 scores): the steady state.
WARM = int(os.environ.get("STREAMAD_BENCH_WARM", "0"))
# STREAMAD_BENCH_PIN=1: the scenario under test runs on CPU 1, the broker, the load generator
# and the orchestrator on CPU 0 (as when producers and brokers are other machines).
PIN = os.environ.get("STREAMAD_BENCH_PIN") == "1" and (os.cpu_count() or 1) >= 2


def pin(pid: int, cpus: set[int]) -> None:
    """Set the CPU affinity of every thread of process ``pid``."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:  # a thread that ended meanwhile
            pass


# The latency scenarios' load generator: "librdkafka" (the default, see _produce_librdkafka)
# or "kafka-python" (STREAMAD_BENCH_LOADGEN=kafka-python, as before 960ac0b).
LOADGEN = os.environ.get("STREAMAD_BENCH_LOADGEN", "librdkafka")
# STREAMAD_BENCH_GC=default leaves the garbage collector as Python sets it (to compare).
GC_SETTLE = os.environ.get("STREAMAD_BENCH_GC") != "default"
# node-ae serves a frozen model: with its default online fine-tuning (5 epochs over up to
# 2,016 recent samples, every 288 records of a key) 1,000 keys spend the run training, and a
# batch that fine-tunes many keys outlasts max_poll_interval (measured: the member was evicted).
DETECTORS = {"gaussian": {"window": 32}, "zscore": {"window": 100}, "hst": {}, "records": {},
             "node-ae": {"finetune_epochs": 0}, "hypad": {"threads": 1},
             "ceiling": {}}  # latency-ceiling-*: the consumer alone
# Slow detectors read smaller batches (a 5,000-record batch of 1,000 HalfSpaceTrees models
# outlasted max_poll_interval and got the member evicted) and are timed over fewer records.
# HypAD scores all keys of a batch in one model call (shared model): 500-record batches gave
# 1,191 records/s, 2,000 gave 4,032 and 5,000 gave 4,107.
BATCH = {"hst": 500, "node-ae": 500, "hypad": 2000}
LIMIT = {"hst": 200_000, "node-ae": 200_000, "hypad": 50_000}
# These serve a model trained beforehand (`streamad serve --detector-state`), as a user would:
# training 1,000 per-key models inside the run would measure training, not serving.
TRAINED = ("node-ae", "hypad")
NAMES = [
    "serve-gaussian-kafka-python", "serve-gaussian-kafka-python-events", "serve-zscore-kafka-python",
    "serve-hst-kafka-python", "serve-node-ae-kafka-python", "serve-hypad-kafka-python",
    "serve-records-kafka-python", "serve-records-kafka-python-events", "serve-records-confluent-events",
    "serve-gaussian-confluent", "serve-gaussian-confluent-events", "serve-zscore-confluent",
    "latency-gaussian-kafka-python", "latency-gaussian-kafka-python-events",
    "latency-gaussian-confluent", "latency-gaussian-confluent-events",
    "latency-ceiling-kafka-python", "latency-ceiling-confluent",
    "serve-gaussian-kafka-python-events-pipelined", "latency-gaussian-kafka-python-events-pipelined",
    "serve-gaussian-confluent-events-pipelined", "latency-gaussian-confluent-events-pipelined",
]


def _trained_state(detector: str) -> str:
    """Train one detector on the series a key of the pre-filled topic sees and save it."""
    import tempfile

    from streamad import _state, detectors

    det = detectors.make(detector, **DETECTORS[detector])
    # the shape of every key's series in the pre-filled topic (see throughput.prefill)
    rng = np.random.default_rng(7)
    step = np.arange(3000)
    series = (10 + 3 * np.sin(step / 24) + rng.normal(0, 0.5, len(step)))[:, None]
    t0 = time.perf_counter()
    det.learn_many(series)
    state = det.state_dict()  # lazy trainers train here
    path = tempfile.mkstemp(suffix=".npz", prefix=f"bench-{detector}-")[1]
    _state.save_atomic(path, state)
    print(f"{detector}: trained in {time.perf_counter() - t0:.1f} s", file=__import__("sys").stderr)
    return path


def _consumer_settings(client: str) -> dict:
    """Client settings of the service and of the bare consumer: the embedded broker's group
    timeouts, STREAMAD_BENCH_FETCH_WAIT_MS and STREAMAD_BENCH_KAFKA."""
    from connectors.kafka import for_embedded_broker

    settings = for_embedded_broker()
    if FETCH_WAIT_MS is not None:
        settings["fetch.wait.max.ms" if client == "confluent" else "fetch_max_wait_ms"] = int(FETCH_WAIT_MS)
    return {**settings, **KAFKA_EXTRA}


def _pipeline(args, detector: str, client: str, scores: bool, topic: str, commit_mode: str = "wait"):
    from connectors.kafka import make_sink, make_source
    from streamad.service import Pipeline, ServiceConfig
    from streamad.service.deadletter import DeadLetterSink

    run = uuid.uuid4().hex[:6]
    state = _trained_state(detector) if detector in TRAINED else ""
    settings = _consumer_settings(client)
    cfg = ServiceConfig(bootstrap=args.bootstrap, group=f"bench-{run}", client=client,
                        kafka_settings=settings, input_topics=[topic],
                        anomalies_topic=f"{args.out_topic}-anomalies", scores_topic=args.out_topic if scores else "",
                        dead_letter_topic=f"{args.out_topic}-dlq", detector=detector,
                        detector_params=DETECTORS[detector], detector_state=state,
                        batch_size=int(BATCH_OVERRIDE) if BATCH_OVERRIDE else BATCH.get(detector, 5000), poll_timeout_s=0.2,
                        commit_interval_s=COMMIT_INTERVAL_S, commit_mode=commit_mode)
    source = make_source(cfg.bootstrap, cfg.group, cfg.kafka_settings, client=client)
    sink = make_sink(cfg.bootstrap, cfg.kafka_settings, client=client)
    p = Pipeline(source, sink, cfg, dead_letter=DeadLetterSink(sink, cfg.dead_letter_topic).send)
    return p, source, sink


def throughput(args, detector: str, client: str, scores: bool = True, commit_mode: str = "wait") -> dict:
    p, source, sink = _pipeline(args, detector, client, scores, args.topic, commit_mode)
    n = min(args.n, LIMIT.get(detector, args.n))
    p.start()
    try:
        deadline = time.monotonic() + 120
        while p.records_in == 0:  # the group join is not part of the rate
            p.run_once()
            if time.monotonic() > deadline:
                raise SystemExit("no records within 120 s")
        if WARM:  # time the steady state: every key past its warm-up (needs --records > WARM x keys)
            if n <= WARM * args.keys:
                raise SystemExit(f"STREAMAD_BENCH_WARM={WARM} needs more than {WARM * args.keys} records")
            while p.records_in < WARM * args.keys:
                p.run_once()
        if GC_SETTLE:
            settle_gc(p)  # as `streamad serve` does
        t0, cpu0, proc0 = time.perf_counter(), time.thread_time(), time.process_time()
        first = p.records_in
        sizes = []  # records per cycle, to compare with the latency rows' batch_p50
        while p.records_in < n:
            before = p.records_in
            p.run_once()
            if p.records_in > before:
                sizes.append(p.records_in - before)
        p.shutdown()  # every output acknowledged and committed (pipelined mode holds some in flight)
        dt = time.perf_counter() - t0
        # the service thread's CPU per record, to compare with the latency rows' (same measure)
        thread_s = time.thread_time() - cpu0
        cpu_us = thread_s / max(1, p.records_in - first) * 1e6
        return {"records": p.records_in - first, "seconds": dt, "events": p.events_out,
                **_other_threads(time.process_time() - proc0, thread_s, dt),
                "dead_letters": p.dead_letters, "batch_size": p.config.batch_size, "thread_cpu_us_per_record": cpu_us,
                "batch_p50": float(np.median(sizes)) if sizes else 0.0}
    finally:
        p.shutdown()
        source.close()
        sink.close()


class _Bare:
    """The latency floor: the consumer alone (poll, nothing else), in the pipeline's place."""

    def __init__(self, source, topic: str):
        self.source, self.topic = source, topic
        self.records_in = 0

    def start(self) -> None:
        self.source.subscribe([self.topic])

    def run_once(self) -> None:
        self.records_in += len(self.source.poll(0.2, 5000))

    def shutdown(self) -> None:
        pass


def _bare_loop(args, client: str, topic: str):
    from connectors.kafka import for_embedded_broker, make_sink, make_source

    settings = _consumer_settings(client)  # the same consumer settings as the service's
    source = make_source(args.bootstrap, f"bench-{uuid.uuid4().hex[:6]}", settings, client=client)
    sink = make_sink(args.bootstrap, for_embedded_broker(), client=client)
    return _Bare(source, topic), source, sink


def latency(args, detector: str, client: str, scores: bool = True, commit_mode: str = "wait") -> dict:
    from kafka.admin import KafkaAdminClient, NewTopic

    rate = float(args.rate or 5000)
    topic = f"{args.out_topic}-in"
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=args.partitions, replication_factor=1)])
    admin.close()
    if detector == "ceiling":
        p, source, sink = _bare_loop(args, client, topic)
    else:
        p, source, sink = _pipeline(args, detector, client, scores, topic, commit_mode)
    batches: list = []
    batch_sizes: list[int] = []
    poll = source.poll

    def spy(timeout_s, max_records):
        got = poll(timeout_s, max_records)
        batches.append((time.time(), got))
        batch_sizes.append(len(got))
        return got

    source.poll = spy
    spent: dict[str, list[float]] = {"poll": [], "flush": [], "commit": [], "cycle": []}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[name].append(time.perf_counter() - t)
        return wrapper

    source.poll = timed("poll", source.poll)
    sink.flush = timed("flush", sink.flush)
    commits: list[tuple[float, dict]] = []  # (when, offsets) of every commit in the timed run
    recording = [False]

    def recorded(fn):
        def wrapper(offsets):
            if recording[0]:
                commits.append((time.time(), dict(offsets)))
            return fn(offsets)
        return wrapper

    source.commit = timed("commit", recorded(source.commit))
    if hasattr(source, "commit_async"):
        source.commit_async = timed("commit", recorded(source.commit_async))
    n = int(min(args.n, rate * 20))  # 20 s of traffic
    import multiprocessing as mp

    # The producer runs in its own process: a thread would compete with the service for the GIL.
    ack_path = f"{args.workdir}/{topic}-acks.npy"
    producer = mp.get_context("spawn").Process(target=_produce, args=(args.bootstrap, topic, n, rate, args.keys,
                                                                      ack_path), daemon=True)

    p.start()
    while not source.assignment():  # join the group before traffic starts
        p.run_once()
    if WARM:  # steady state: every key past its detector's and threshold's warm-up
        _fill(args.bootstrap, topic, WARM, args.keys)
        while p.records_in < WARM * args.keys:
            p.run_once()
        batches.clear()
        batch_sizes.clear()
        for v in spent.values():
            v.clear()
    if GC_SETTLE:
        settle_gc(p)  # as `streamad serve` does
    gc_pauses = _GcPauses()
    producer.start()
    # every poll's partitions, offsets and timestamps (_columns) with the time the poll returned
    # and the end of its cycle; expanded into per-record rows after the run
    polled: list[tuple[float, tuple, tuple, tuple, float]] = []
    got = 0
    trace: list[tuple[float, ...]] = []
    deadline = time.monotonic() + 20 + 60
    recording[0] = True
    t_run, thread0, proc0 = time.perf_counter(), time.thread_time(), time.process_time()
    prof = None
    if os.environ.get("STREAMAD_BENCH_PROFILE"):  # a cProfile of the timed part, to this path
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    try:
        while got < n and time.monotonic() < deadline:
            batches.clear()
            marks = {k: len(v) for k, v in spent.items()}
            t, cpu = time.perf_counter(), time.thread_time()
            p.run_once()
            spent["cycle"].append(time.perf_counter() - t)
            # per cycle: total, records, the time inside poll / flush / commit, and the CPU time
            # of this thread (ms; a cycle much longer than its CPU time waited), its start (s)
            trace.append((spent["cycle"][-1] * 1000, sum(len(b) for _, b in batches),
                          *(sum(spent[k][marks[k]:]) * 1000 for k in ("poll", "flush", "commit")),
                          (time.thread_time() - cpu) * 1000, t))
            now = time.time()
            for at, b in batches:
                if b:  # keep only partitions, offsets and timestamps, as plain tuples (see _columns)
                    polled.append((at, *_columns(b), now))
                got += len(b)
        recording[0] = False  # the shutdown's final commit would add the load generator's exit
        others = _other_threads(time.process_time() - proc0, time.thread_time() - thread0,
                                time.perf_counter() - t_run)
        if prof is not None:
            prof.disable()
            prof.dump_stats(os.environ["STREAMAD_BENCH_PROFILE"])
        if os.environ.get("STREAMAD_BENCH_TRACE"):  # every cycle's row of `trace`, to this .npy path
            np.save(os.environ["STREAMAD_BENCH_TRACE"], np.array(trace))
    finally:
        gc_pauses.stop()  # what follows (shutdown re-enables automatic collection, the analysis) is not traffic
        stop(producer, 30)
        p.shutdown()
        source.close()
        sink.close()
    fetched = [at - ts / 1000.0 for at, _, _, tss, _ in polled for ts in tss if ts]  # produce -> polled
    # partition, offset, producer timestamp, end of its cycle
    seen = [(q, o, (ts or 0) / 1000.0, now) for _, qs, os_, tss, now in polled for q, o, ts in zip(qs, os_, tss, strict=True)]
    done = _completed(seen, commits) if detector != "ceiling" else [(q, o, now) for q, o, _, now in seen]
    produced = {(q, o): ts for q, o, ts, _ in seen}
    a = np.array([now - produced[(q, o)] for q, o, now in done if produced[(q, o)] > 0]) * 1000
    f = np.array(fetched) * 1000
    # From the broker's acknowledgement to the producer instead of the producer's timestamp:
    # leaves out the time a record waits in the load generator's own client (a pure-Python
    # producer at 10-20k records/s on a shared core queues records before sending them).
    from_ack = {}
    try:
        d = since_ack_ms(ack_path, done)
        if len(d):
            from_ack = {"ack_p50_ms": float(np.percentile(d, 50)), "ack_p99_ms": float(np.percentile(d, 99)),
                        "ack_matched": int(len(d))}
    except OSError:
        pass
    return {"records": len(a), "seconds": n / rate, "rate": rate, **from_ack, **gc_pauses.summary(), **others,
            "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "fetch_p50_ms": float(np.percentile(f, 50)), "fetch_p99_ms": float(np.percentile(f, 99)),
            **{f"{k}_p50_ms": float(np.percentile(v, 50)) * 1000 for k, v in spent.items() if v},
            **{f"{k}_p99_ms": float(np.percentile(v, 99)) * 1000 for k, v in spent.items() if v},
            "batch_p50": float(np.median([b for b in batch_sizes if b])) if any(batch_sizes) else 0.0,
            # the slowest 1% of cycles: what they spent their time on (ms; records)
            "slow_cycles": _slowest(trace), **_busy(trace)}


def _columns(batch: list) -> tuple[tuple, tuple, tuple]:
    """A polled batch's partitions, offsets and producer timestamps (ms), as three tuples.

    The latency rows keep these for every record of the run. Keeping the records themselves
    (named tuples, which the cyclic garbage collector never stops tracking) put ~1.2 million
    tracked objects in the process by the end of a run, and the service's periodic full
    collection then scanned them: a 210-290 ms pause inside the timed traffic (measured), which
    ``streamad serve`` does not have (it keeps no record past its batch). Plain tuples of ints
    are untracked by the collector; ``zip`` builds them at C speed."""
    _, partitions, offsets, _, _, timestamps = zip(*batch, strict=True)
    return partitions, offsets, timestamps


def _other_threads(process_s: float, thread_s: float, wall_s: float) -> dict:
    """CPU of the process's other threads (the Kafka clients' own threads: librdkafka fetches,
    parses and delivers in the background) during the timed part, in cores: with the service
    pinned to one core, they compete with its thread for it."""
    return {"other_threads_cpu_s": process_s - thread_s, "other_threads_cores": (process_s - thread_s) / wall_s}


def _busy(trace: list[tuple[float, ...]]) -> dict:
    """The service thread's CPU per record and its share of the wall time, from the first
    cycle with records on."""
    t = np.array(trace)
    if not len(t) or not t[:, 1].any():
        return {}
    t = t[int(np.argmax(t[:, 1] > 0)):]
    return {"thread_cpu_us_per_record": float(t[:, 5].sum() / t[:, 1].sum() * 1000),
            "thread_busy_share": float(t[:, 5].sum() / t[:, 0].sum())}


def _slowest(trace: list[tuple[float, ...]], share: float = 0.01) -> dict:
    """Mean of the slowest ``share`` of cycles that had records (the empty polls before the
    load generator's first record are left out): total ms, records, poll / flush / commit ms,
    CPU ms of the service's thread."""
    t = np.array([row for row in trace if row[1]])
    if not len(t):
        return {}
    top = t[np.argsort(t[:, 0])[-max(1, int(len(t) * share)):], :6]
    return {"cycles": int(len(top)), **{k: float(v) for k, v in
            zip(("total_ms", "records", "poll_ms", "flush_ms", "commit_ms", "thread_cpu_ms"), top.mean(axis=0), strict=True)}}


def _completed(seen, commits) -> list[tuple[int, int, float]]:
    """``(partition, offset, time of the first commit past it)`` for each record of ``seen``
    that a commit covers (commit offsets are the next offset to read, and only grow)."""
    out = []
    for q in {q for q, *_ in seen}:
        times = np.array([t for t, offs in commits for (_, part), _o in offs.items() if part == q])
        upto = np.array([o for _, offs in commits for (_, part), o in offs.items() if part == q])
        if not len(upto):
            continue
        upto = np.maximum.accumulate(upto)
        for part, off, _, _ in (r for r in seen if r[0] == q):
            i = int(np.searchsorted(upto, off, side="right"))  # first commit with upto > off
            if i < len(upto):
                out.append((part, off, float(times[i])))
    return out


class _GcPauses:
    """Counts the cyclic garbage collector's pauses by generation (a gc callback) until
    :meth:`stop`."""

    def __init__(self) -> None:
        import gc

        self.count, self.total, self.longest, self._t = [0, 0, 0], [0.0] * 3, [0.0] * 3, 0.0
        gc.callbacks.append(self.callback)

    def callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t = time.perf_counter()
            return
        g, d = info["generation"], time.perf_counter() - self._t
        self.count[g] += 1
        self.total[g] += d
        self.longest[g] = max(self.longest[g], d)

    def stop(self) -> None:
        import gc

        gc.callbacks.remove(self.callback)

    def summary(self) -> dict:
        return {f"gc{g}_{k}": v for g in range(3) for k, v in
                (("count", self.count[g]), ("total_ms", self.total[g] * 1000), ("max_ms", self.longest[g] * 1000))}


def stop(process, timeout_s: float) -> None:
    """Wait for a load-generator process; kill it if it does not finish in time."""
    process.join(timeout_s)
    if process.is_alive():
        process.kill()


def since_ack_ms(ack_path: str, done: list[tuple[int, int, float]]) -> np.ndarray:
    """Milliseconds from each record's broker acknowledgement (written by :func:`_produce`)
    to ``done``'s time for it; ``done`` holds ``(partition, offset, time)``."""
    when = {(int(p), int(o)): t for p, o, t in np.load(ack_path) if t > 0}
    return np.array([now - when[(p, o)] for p, o, now in done if (p, o) in when]) * 1000


def _message(k: int, ts: float, value: float) -> bytes:
    """The telemetry message of key ``k`` (the load generators' format)."""
    return f'{{"key":"k{k:06d}","ts":{ts},"values":{{"value":{value:.4f}}}}}'.encode()


def _value(step: int, rnd) -> float:
    """A key's value at ``step`` (a daily-like sine plus noise): the signal of the pre-filled
    topic and of the latency runs' traffic alike, so both cost the detectors the same."""
    return 10 + 3 * math.sin(step / 24) + rnd.gauss(0, 0.5)


def _fill(bootstrap: str, topic: str, per_key: int, keys: int) -> None:
    """``per_key`` records for each key, timestamped before the load generator's, as fast as
    the broker takes them (librdkafka)."""
    from connectors.confluent import ConfluentSink

    sink = ConfluentSink(bootstrap, {"linger.ms": 20, "batch.size": 1_000_000})
    n = per_key * keys
    rnd = random.Random(3)
    for i in range(n):
        k = i % keys
        sink.send(topic, f"k{k:06d}".encode(), _message(k, 1.7e9 - 60 * (per_key - i // keys), _value(i // keys - per_key, rnd)))
    sink.flush(300)
    sink.close()


def _produce(bootstrap: str, topic: str, n: int, rate: float, keys: int, ack_path: str | None = None) -> None:
    from connectors.kafka import make_sink

    if PIN:
        pin(os.getpid(), {0})  # the load generator shares CPU 0 with the broker
    if LOADGEN == "librdkafka":
        return _produce_librdkafka(bootstrap, topic, n, rate, keys, ack_path)

    # kafka-python (STREAMAD_BENCH_LOADGEN=kafka-python; the default until 960ac0b): at
    # 30,000 records/s it needs more than a whole core, which starves the broker beside it.
    prod = make_sink(bootstrap, {"linger_ms": 1})
    rnd = random.Random(11)
    acked = np.zeros((n, 3))  # partition, offset, time the broker's acknowledgement arrived

    def on_ack(i, md):  # runs on the producer's IO thread
        acked[i] = (md.partition, md.offset, time.time())

    t0 = time.perf_counter()
    for i in range(n):
        k = i % keys
        wait = t0 + i / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        fut = prod._producer.send(topic, key=f"k{k:06d}".encode(), value=_message(k, 1.7e9 + 60 * (i // keys), _value(i // keys, rnd)))
        fut.add_callback(on_ack, i)
    prod.flush(60)
    prod.close()
    if ack_path:
        np.save(ack_path, acked)


def _produce_librdkafka(bootstrap: str, topic: str, n: int, rate: float, keys: int, ack_path: str | None) -> None:
    """The load generator on librdkafka: messages built before the clock starts, sent in
    bursts once a millisecond (the records due by then), batched by the client for 5 ms.

    At 30,000 records/s it costs ~0.4 of a core together with the broker, against more than a
    whole core for the kafka-python generator (which then starves the broker it shares CPU 0
    with). Acknowledgement times are taken when the delivery callback runs, at the next
    ``poll`` (up to ~1 ms after the acknowledgement arrives)."""
    from confluent_kafka import Producer

    prod = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    key_bytes = [f"k{k:06d}".encode() for k in range(keys)]
    rnd = random.Random(11)
    messages = [_message(i % keys, 1.7e9 + 60 * (i // keys), _value(i // keys, rnd)) for i in range(n)]
    acked: list[tuple[int, int, float]] = []
    add, now = acked.append, time.time

    def on_ack(err, msg):
        if err is None:
            add((msg.partition(), msg.offset(), now()))

    produce = prod.produce
    i, t0 = 0, time.perf_counter()
    while i < n:
        due = min(n, int((time.perf_counter() - t0) * rate) + 1)
        while i < due:
            try:
                produce(topic, messages[i], key_bytes[i % keys], on_delivery=on_ack)
            except BufferError:  # the client's queue is full (a stalled broker): let it drain
                prod.poll(0.01)
                continue
            i += 1
        prod.poll(0)
        time.sleep(0.001)
    if prod.flush(60):
        raise RuntimeError("load generator: messages not delivered within 60 s")
    if ack_path:
        np.save(ack_path, np.array(acked).reshape(-1, 3))


def scenarios(args) -> dict:
    out = {}
    for name in NAMES:
        kind, rest = name.split("-", 1)
        detector = next(d for d in sorted(DETECTORS, key=len, reverse=True) if rest.startswith(d + "-"))
        client = "confluent" if "confluent" in name else "kafka-python"
        mode = "pipelined" if name.endswith("-pipelined") else "wait"
        scores = not name.removesuffix("-pipelined").endswith("-events")
        run = throughput if kind == "serve" else latency
        out[name] = (lambda r=run, d=detector, c=client, s=scores, m=mode: r(args, d, c, s, m))
    return out
