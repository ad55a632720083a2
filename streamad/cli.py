"""The ``streamad`` command line: the one place that wires the library to the connectors.

Every subcommand's arguments are declared in its ``_add_<name>`` function and run by its
``_cmd_<name>`` handler. Errors a user can cause (bad arguments, bad files, bad configs)
end as one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from . import __version__
from .base import NotBuiltError, StreamadError

Handler = Callable[[argparse.Namespace], int | None]


def _not_built(what: str, issue: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        raise NotBuiltError(f"'streamad {what}' is not built yet ({issue}).")

    return run


# -- detect ---------------------------------------------------------------------------
def _add_detect(sub) -> Handler:
    p = sub.add_parser("detect", help="score a CSV offline and report its incidents",
                       description="Score a CSV (timestamp,value[,more columns][,label]) offline, print the "
                                   "incidents the service would publish and write scores, intervals and a plot.")
    p.add_argument("file", help="CSV with a header: timestamp, one or more value columns, optional label column")
    p.add_argument("--detector", default="records", help="detector name (default: records)")
    p.add_argument("--params", default=None, help="detector parameters as a JSON object")
    p.add_argument("--threshold", default="auto",
                   choices=["auto", "spot", "quantile", "orion", "fixed", "likelihood", "dspot"],
                   help="thresholding rule (default: auto, the detector's own: fixed 0.07 for records, spot "
                        "for the others)")
    p.add_argument("--threshold-params", default=None, help="threshold parameters as a JSON object, "
                   "e.g. '{\"value\": 0.2}' for fixed or '{\"epsilon\": 1e-4}' for likelihood")
    p.add_argument("--incident-gap", dest="incident_gap", default=None,
                   help="spot/quantile: flags closer than this (records, or a duration: 10m) are one incident, "
                        "as in `streamad serve` (default: the service's, 100 records)")
    p.add_argument("--out", default="out", help="output directory (default: ./out)")
    p.add_argument("--label-column", default=None, help="name of the label column (default: auto: label/is_anomaly/anomaly)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    p.add_argument("--save-state", default=None, metavar="FILE",
                   help="save the trained detector (npz, no pickle) for `streamad serve --detector-state`")

    def run(args):
        from ._detect import run as impl

        return impl(args)

    return run


# -- serve / demo / broker / replay (the Kafka service) -----------------------------
def _add_serve(sub) -> Handler:
    p = sub.add_parser("serve", help="run the Kafka subscriber service",
                       description="Score every telemetry record with per-key detectors and publish incidents "
                                   "(open, update, close); at-least-once, checkpointed. Flags override the TOML "
                                   "config.")
    p.add_argument("--config", help="TOML config file (see examples/serve.toml)")
    from .service.config import ServiceConfig

    ServiceConfig.add_arguments(p)  # one flag per setting that has one, declared with the setting
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this long (default: run until signalled)")

    def run(args):
        import logging
        from contextlib import ExitStack

        from connectors.kafka import make_output_log, make_sink, make_source

        from .service.app import configure_logging, serve
        from .service.config import load_config
        from .service.deadletter import DeadLetterSink

        cfg = load_config(args.config, **ServiceConfig.flags(args))
        configure_logging(cfg.log_format, logging.DEBUG if args.verbose > 1 else logging.INFO)
        with ExitStack() as opened:  # when one fails to open, those opened before it are closed
            store = None
            if cfg.state_store == "kafka":
                from connectors.changelog import KafkaStateStore

                store = KafkaStateStore(cfg.bootstrap, cfg.group, cfg.kafka_settings, input_topics=cfg.input_topics,
                                        chunk_bytes=cfg.state_chunk_bytes)
                opened.callback(store.close)
            sink = make_sink(cfg.bootstrap, cfg.kafka_settings, client=cfg.client)
            opened.callback(sink.close)
            source = make_source(cfg.bootstrap, cfg.group, cfg.kafka_settings, client=cfg.client)
            opened.callback(source.close)
            # with checkpoints, a restart reads back what it published since (no repeated messages)
            outputs = make_output_log(cfg.bootstrap, cfg.kafka_settings, client=cfg.client) \
                if cfg.checkpoints else None
            opened.pop_all()  # all open: the pipeline owns them now
        dlq = DeadLetterSink(sink, cfg.dead_letter_topic)  # originals cut to fit a Kafka message
        pipeline = serve(cfg, source, sink, dead_letter=dlq.send, max_seconds=args.max_seconds, own_process=True,
                         state_store=store, outputs=outputs)
        # 1: stopped, but the outputs, checkpoints or final commit did not all go through (the
        # next start resumes from the checkpoints and the committed offsets; nothing is lost)
        return 0 if pipeline.clean_stop else 1

    return run


def _add_demo(sub) -> Handler:
    p = sub.add_parser("demo", help="end-to-end demo on an embedded broker with a synthetic stream",
                       description="Start the embedded broker, replay a synthetic multi-sensor stream with "
                                   "labelled anomalies, run the service, and judge its incidents against the "
                                   "labels; writes OUT/summary.json and OUT/demo.png.")
    p.add_argument("--keys", type=int, default=6, help="number of sensors (default: 6)")
    p.add_argument("--points", type=int, default=2000, help="points per sensor (default: 2000)")
    p.add_argument("--seed", type=int, default=7, help="random seed of the stream (default: 7)")
    p.add_argument("--detector", default=None,
                   help="base detector, wrapped in `spread` (default: gaussian)")
    p.add_argument("--no-spread", action="store_true", help="run the detector alone, without `spread`")
    p.add_argument("--threshold", default="spot", help="threshold name (default: spot)")
    p.add_argument("--max-seconds", type=float, default=45.0, help="stop scoring after this long (default: 45)")
    p.add_argument("--out", default="out", help="directory for summary.json and demo.png (default: out)")
    p.add_argument("--plot", default=None, help="PNG plot path ('' = none; default: OUT/demo.png)")

    def run(args):
        import connectors.kafka as kafka
        from connectors.broker import EmbeddedBroker

        from .base import ConfigError
        from .service.demo import demo_detector, run_demo

        if args.keys < 1 or args.points < 100:
            raise ConfigError("--keys must be at least 1 and --points at least 100")
        detector, params = demo_detector(args.detector, spread=not args.no_spread)
        from . import detectors

        detectors.make(detector, **params)  # an unknown detector fails before the broker starts
        run_demo(broker_factory=EmbeddedBroker, kafka=kafka, n_keys=args.keys, n_points=args.points,
                 seed=args.seed, detector=detector, detector_params=params, threshold=args.threshold,
                 max_seconds=args.max_seconds, out_dir=args.out, plot=args.plot)
        return 0

    return run


def _add_broker(sub) -> Handler:
    p = sub.add_parser("broker", help="run the embedded Kafka-protocol broker on 127.0.0.1",
                       description="Run the embedded Kafka-protocol broker (Tansu, memory storage) on "
                                   "127.0.0.1; prints the bootstrap address, Ctrl-C or SIGTERM stops it.")
    p.add_argument("--port", type=int, default=None, help="port to listen on (default: a free one)")

    def run(args):
        import signal
        import threading

        from connectors.broker import EmbeddedBroker

        from .base import ConfigError

        if args.port is not None and not 0 < args.port < 65536:
            raise ConfigError(f"--port must be between 1 and 65535, got {args.port}")
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        broker = EmbeddedBroker(port=args.port).start()
        try:
            print(broker.bootstrap, flush=True)
            print(f"streamad broker: listening on {broker.bootstrap} (memory storage); Ctrl-C stops it",
                  file=sys.stderr, flush=True)
            while not stop.wait(0.5):
                if not broker.running:
                    raise StreamadError(f"the embedded broker on {broker.bootstrap} exited unexpectedly")
        finally:
            broker.stop()
        return 0

    return run


def _add_replay(sub) -> Handler:
    p = sub.add_parser("replay", help="publish a dataset or synthetic stream to a Kafka topic",
                       description="Publish a data set to a Kafka topic as telemetry messages "
                                   '({"key","ts","values"}, Kafka key = record key), paced or as fast as possible.')
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers host:port[,host:port]")
    p.add_argument("--topic", required=True, help="topic to publish to")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--nab", metavar="FILE.csv", help="a NAB data file (timestamp,value)")
    src.add_argument("--yahoo", metavar="FILE.csv", help="a Yahoo S5 file (A1-A4); publishes 'value'")
    src.add_argument("--csv", metavar="FILE.csv", help="a CSV with a header: timestamp, [key], numeric columns")
    src.add_argument("--npy", metavar="FILE.npy", help="a NASA SMAP/MSL channel (.npy)")
    src.add_argument("--synthetic", nargs="?", const="multi", choices=("multi", "hpc"),
                     help="the synthetic multi-key generator (multi, the default) or the simulated HPC "
                          "node fleet (hpc: --keys nodes, --points days)")
    p.add_argument("--keys", type=int, default=4, help="--synthetic: number of keys (default: 4)")
    p.add_argument("--points", type=int, default=2000, help="--synthetic: points per key (default: 2000)")
    p.add_argument("--seed", type=int, default=0, help="--synthetic: random seed (default: 0)")
    p.add_argument("--key", default=None, help="record key for file sources (default: key column or file name)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, default=None, help="records per second (default: as fast as possible)")
    pace.add_argument("--fast", action="store_true", help="as fast as possible (the default)")
    p.add_argument("--limit", type=int, default=None, help="publish at most N records")
    p.add_argument("--kafka-client", default="kafka-python", choices=["kafka-python", "confluent"],
                   help="Kafka client library (default: kafka-python)")
    p.add_argument("--kafka-option", action="append", default=[], metavar="NAME=VALUE",
                   help="a Kafka client option, e.g. security_protocol=SASL_SSL (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run(args):

        from connectors import replay as rp
        from connectors.kafka import make_sink

        from .base import ConfigError, DataError

        if args.rate is not None and not args.rate > 0:
            raise ConfigError(f"--rate must be positive, got {args.rate:g}")
        if args.limit is not None and args.limit < 0:
            raise ConfigError(f"--limit must be >= 0, got {args.limit}")
        total = None
        if args.synthetic:
            if args.keys < 1 or args.points < 1:
                raise ConfigError("--keys and --points must be at least 1")
            if args.synthetic == "hpc":
                records = rp.read_synthetic_hpc(n_nodes=args.keys, days=args.points, seed=args.seed)
                total = args.keys * int(args.points * 288)
            else:
                records = rp.read_synthetic(n_keys=args.keys, n_points=args.points, seed=args.seed)
                total = args.keys * args.points
        elif args.npy:
            records = rp.read_npy(args.npy, args.key)
        else:
            read = rp.read_nab if args.nab else rp.read_yahoo if args.yahoo else rp.read_csv
            records = read(args.nab or args.yahoo or args.csv, args.key)
        # Read the first record before connecting, so a bad file fails fast and alone.
        import itertools

        first = next(records, None)
        if first is None:
            raise DataError("the data set has no records")
        sink = make_sink(args.bootstrap, _kafka_options(args.kafka_option), client=args.kafka_client)
        try:
            stats = rp.replay(itertools.chain([first], records), sink, args.topic, rate=args.rate,
                              limit=args.limit, progress=not args.no_progress, total=total)
        finally:
            sink.close()
        print(f"published {stats.sent} records of {stats.keys} key(s) to {args.topic} in {stats.seconds:.1f} s "
              f"({stats.rate:,.0f} records/s), all acknowledged")
        return 0

    return run


# -- bench ----------------------------------------------------------------------------
def _add_bench(sub) -> Handler:
    p = sub.add_parser("bench", help="run the NASA / Yahoo / NAB benchmarks",
                       description="Run a detector over a benchmark data set and score it with Orion's "
                                   "contextual F1, VUS-PR and the NAB score; `streamad bench report FILES... "
                                   "--out DIR` turns result files into a table and plots.")
    from .bench.runner import add_arguments

    add_arguments(p)
    p.add_argument("files", nargs="*", help=argparse.SUPPRESS)

    def run(args):
        from .base import ConfigError
        from .bench import runner

        if args.files:
            raise ConfigError(f"unexpected arguments {' '.join(args.files)!r} (did you mean `streamad bench report`?)")
        return runner.main(args)

    return run


def _add_bench_report(sub) -> Handler:
    p = sub.add_parser("bench-report", help="same as `streamad bench report FILES... --out DIR`",
                       description="Write report.md (tables with published anchors) and plots from bench results.")
    p.add_argument("files", nargs="+", help="result JSON files of `streamad bench`")
    p.add_argument("--out", required=True, help="output directory for report.md and plots")
    p.add_argument("--plots", type=int, default=2, help="plots per result file (default: 2; 0 for none)")
    p.add_argument("--peers", default=None, metavar="DIR",
                   help="NAB results layout (DIR/<detector>/<category>/<detector>_<file>.csv) of other detectors, "
                        "e.g. NAB's own results/ directory: NAB-protocol runs are compared with them per category "
                        "and file")

    def run(args):
        from .bench.report import write_report

        path = write_report(args.files, args.out, plots=args.plots, peers=args.peers)
        print(f"wrote {path}")
        return 0

    return run


# -- federated ------------------------------------------------------------------------
def _kafka_options(items: list[str]) -> dict:
    from .base import parse_options

    return parse_options(items, "--kafka-option")


def _fed_common(p) -> None:
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers host:port[,...]")
    p.add_argument("--key-file", required=True, help="JSON key file: {\"server\": hex, \"clients\": {id: hex}}")
    p.add_argument("--prefix", default="streamad.fed", help="topic prefix: PREFIX.updates, PREFIX.global "
                                                             "(default: streamad.fed)")
    p.add_argument("--k", type=int, default=2, help="dimension of the normal subspace (default: 2)")
    p.add_argument("--kafka-option", action="append", default=[], metavar="NAME=VALUE",
                   help="a Kafka client option, e.g. security_protocol=SASL_SSL (repeatable)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this long (default: until signalled)")


def _until_signalled(target) -> None:
    """Make SIGTERM/SIGINT set ``target.stopping``: its run loop ends cleanly (exit 0)."""
    import signal

    def on_signal(signum, frame):
        target.stopping = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)


def _add_fed_server(sub) -> Handler:
    p = sub.add_parser("fed-server", help="federated PCA aggregation server",
                       description="Open rounds, admit signed client subspace updates, aggregate them robustly "
                                   "on the Grassmann manifold and publish the signed global subspace.")
    _fed_common(p)
    p.add_argument("--dim", type=int, required=True, help="number of features d of the clients' records")
    p.add_argument("--min-clients", type=int, default=2, help="updates needed to close a round (default: 2)")
    p.add_argument("--round-timeout", type=float, default=10.0,
                   help="seconds to wait for every known client before closing with --min-clients (default: 10)")
    p.add_argument("--rounds", type=int, default=None, help="stop after this many rounds (default: run on)")
    p.add_argument("--checkpoint", default=None, help="state file, written atomically after every round; a "
                                                       "restart reads the updates sent since it")
    p.add_argument("--idle-tolerance", type=float, default=1e-3, metavar="DEG",
                   help="go idle (no rounds) once a round moves the subspace less than DEG degrees and no client "
                        "has new data; 0 = never (default: 0.001)")

    def run(args):
        from connectors.fedkafka import KafkaFedChannel

        from .base import ConfigError
        from .federated.protocol import KeyRing
        from .federated.server import FedServer, ServerConfig
        from .service.app import configure_logging

        if args.dim < 2 or not 1 <= args.k < args.dim:
            raise ConfigError(f"need --dim >= 2 and 1 <= --k < --dim, got --dim {args.dim} --k {args.k}")
        if args.min_clients < 1:
            raise ConfigError(f"--min-clients must be at least 1, got {args.min_clients}")
        if not args.idle_tolerance >= 0:
            raise ConfigError(f"--idle-tolerance must be >= 0, got {args.idle_tolerance}")
        ring = KeyRing.from_file(args.key_file)
        configure_logging("kv")
        channel = KafkaFedChannel(args.bootstrap, args.prefix, "server", _kafka_options(args.kafka_option))
        server = FedServer(ServerConfig(dim=args.dim, k=args.k, min_clients=args.min_clients,
                                        round_timeout_s=args.round_timeout, rounds=args.rounds,
                                        checkpoint=args.checkpoint, idle_tolerance_deg=args.idle_tolerance),
                           ring, channel)
        _until_signalled(server)
        try:
            server.run(max_seconds=args.max_seconds)
        finally:
            channel.close()
        return 0

    return run


def _add_fed_client(sub) -> Handler:
    p = sub.add_parser("fed-client", help="federated PCA client",
                       description="Learn from a local telemetry topic, take part in federated rounds (only "
                                   "subspaces leave the client) and publish anomaly events scored with the "
                                   "latest verified global subspace.")
    _fed_common(p)
    p.add_argument("--client-id", required=True, help="this client's id in the key file")
    p.add_argument("--topic", action="append", dest="input_topics", required=True,
                   help="local telemetry topic (repeatable)")
    p.add_argument("--anomalies-topic", required=True, help="topic for anomaly events")
    p.add_argument("--dead-letter-topic", default=None, help="topic for malformed records (default: TOPIC.dlq)")
    p.add_argument("--group", default=None, help="consumer group (default: streamad-fed-CLIENT_ID)")
    p.add_argument("--min-samples", type=int, default=200, help="records to learn before joining rounds")
    p.add_argument("--quantile", type=float, default=0.99,
                   help="threshold: this quantile of recent scores under the current model (default: 0.99)")
    p.add_argument("--checkpoint", default=None,
                   help="state file: the client's local model, rounds and offsets; a restart resumes from it")
    p.add_argument("--resend-after", type=float, default=15.0, metavar="SECONDS",
                   help="send the update for the current round again when no newer global model arrives "
                        "within this long (default: 15)")

    def run(args):
        from connectors.fedkafka import KafkaFedChannel
        from connectors.kafka import ensure_topics, make_sink, make_source

        from .base import ConfigError
        from .federated.client import ClientConfig, FedClient
        from .federated.protocol import KeyRing
        from .service.app import configure_logging
        from .service.deadletter import DeadLetterSink

        if not 0.5 <= args.quantile < 1.0:
            raise ConfigError(f"--quantile must be in [0.5, 1), got {args.quantile}")
        if not args.resend_after > 0:
            raise ConfigError(f"--resend-after must be positive, got {args.resend_after}")
        ring = KeyRing.from_file(args.key_file).for_client(args.client_id)
        options = _kafka_options(args.kafka_option)
        configure_logging("kv")
        dlq = args.dead_letter_topic or f"{args.input_topics[0]}.dlq"
        ensure_topics(args.bootstrap, {args.anomalies_topic: 1, dlq: 1}, options)
        channel = KafkaFedChannel(args.bootstrap, args.prefix, "client", options)
        sink = make_sink(args.bootstrap, options)
        source = make_source(args.bootstrap, args.group or f"streamad-fed-{args.client_id}", options)
        try:  # a bad checkpoint fails here: close what is open before the one-line error
            client = FedClient(ClientConfig(client_id=args.client_id, input_topics=args.input_topics,
                                            anomalies_topic=args.anomalies_topic, k=args.k,
                                            min_samples=args.min_samples, quantile=args.quantile,
                                            checkpoint=args.checkpoint, resend_after_s=args.resend_after),
                               ring, channel, source, sink, dead_letter=DeadLetterSink(sink, dlq).send)
            _until_signalled(client)
            client.run(max_seconds=args.max_seconds)
        finally:
            source.close()
            sink.close()
            channel.close()
        return 0

    return run


_COMMANDS = [
    ("detect", _add_detect),
    ("serve", _add_serve),
    ("bench", _add_bench),
    ("bench-report", _add_bench_report),
    ("replay", _add_replay),
    ("broker", _add_broker),
    ("demo", _add_demo),
    ("fed-server", _add_fed_server),
    ("fed-client", _add_fed_client),
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, as argparse does, but without the usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    parser = _Parser(prog="streamad", description="Streaming anomaly detection for time series and IoT telemetry.")
    parser.add_argument("--version", action="version", version=f"streamad {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    handlers = {name: add(sub) for name, add in _COMMANDS}
    return parser, handlers


def main(argv: list[str] | None = None) -> int:
    parser, handlers = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["bench", "report"]:  # `streamad bench report ...`
        argv = ["bench-report", *argv[2:]]
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    import logging

    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        rc = handlers[args.command](args)
    except StreamadError as e:
        print(f"streamad {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"streamad {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
