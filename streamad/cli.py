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
    p = sub.add_parser("detect", help="score a CSV offline and report anomalous intervals",
                       description="Score a CSV (timestamp,value[,more columns][,label]) offline, print the "
                                   "detected intervals and write scores, intervals and a plot.")
    p.add_argument("file", help="CSV with a header: timestamp, one or more value columns, optional label column")
    p.add_argument("--detector", default="gaussian", help="detector name (default: gaussian)")
    p.add_argument("--params", default=None, help="detector parameters as a JSON object")
    p.add_argument("--threshold", default="spot", choices=["spot", "quantile", "orion"],
                   help="thresholding rule (default: spot)")
    p.add_argument("--out", default="out", help="output directory (default: ./out)")
    p.add_argument("--label-column", default=None, help="name of the label column (default: auto: label/is_anomaly/anomaly)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")

    def run(args):
        from ._detect import run as impl

        return impl(args)

    return run


# -- serve / demo / broker / replay (the Kafka service) -----------------------------
def _add_serve(sub) -> Handler:
    p = sub.add_parser("serve", help="run the Kafka subscriber service")
    p.add_argument("--config", help="TOML config file")
    return _not_built("serve", "the Kafka service, issue 3")


def _add_demo(sub) -> Handler:
    sub.add_parser("demo", help="end-to-end demo on an embedded broker with a synthetic stream")
    return _not_built("demo", "the Kafka service, issue 3")


def _add_broker(sub) -> Handler:
    sub.add_parser("broker", help="run the embedded Kafka-protocol broker on 127.0.0.1")
    return _not_built("broker", "the Kafka service, issue 3")


def _add_replay(sub) -> Handler:
    sub.add_parser("replay", help="publish a dataset or synthetic stream to a Kafka topic")
    return _not_built("replay", "the Kafka service, issue 3")


# -- bench ----------------------------------------------------------------------------
def _add_bench(sub) -> Handler:
    sub.add_parser("bench", help="run the NASA / Yahoo / NAB benchmarks")
    return _not_built("bench", "the benchmark CLI, issue 4")


# -- federated ------------------------------------------------------------------------
def _add_fed_server(sub) -> Handler:
    sub.add_parser("fed-server", help="federated PCA aggregation server")
    return _not_built("fed-server", "federated PCA, issue 7")


def _add_fed_client(sub) -> Handler:
    sub.add_parser("fed-client", help="federated PCA client")
    return _not_built("fed-client", "federated PCA, issue 7")


_COMMANDS = [
    ("detect", _add_detect),
    ("serve", _add_serve),
    ("bench", _add_bench),
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
