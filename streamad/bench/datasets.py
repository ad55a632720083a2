"""Benchmark data sets, each read from a directory given on the command line.

Every loader yields :class:`Signal` objects and raises a one-line :class:`~streamad.base.DataError`
naming the missing or malformed file and where the data can be obtained.

============  ===============================================================================
``nab``       ``data/<category>/<name>.csv`` (timestamp,value) + ``labels/combined_windows.json``
``nasa``      telemanom layout: ``train/<chan>.npy``, ``test/<chan>.npy``, ``labeled_anomalies.csv``
              (chan_id, spacecraft, anomaly_sequences, class, num_values); ``mode="univariate"``
              uses the first column (as Orion's benchmark), ``"multivariate"`` all columns
``yahoo``     ``A1Benchmark/real_*.csv``, ``A2Benchmark/synthetic_*.csv`` (timestamp,value,is_anomaly),
              ``A3Benchmark/A3Benchmark-TS*.csv``, ``A4Benchmark/A4Benchmark-TS*.csv``
              (timestamps,value,anomaly,changepoint,trend,noise,seasonality)
``csv``       ``*.csv`` files (timestamp,value[,label]) in a directory, or one file
``orion``     ``<signal>.csv`` (timestamp,value) files + ``anomalies.csv`` (signal,events) where
              events is a list of ``[start, end]`` timestamps, as Orion's benchmark stores labels
============  ===============================================================================
"""

from __future__ import annotations

import ast
import fnmatch
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..base import ConfigError, DataError
from ..io import LABEL_COLUMNS, Table, parse_timestamp, read_table
from .metrics import label_intervals, nab_windows_to_index

__all__ = ["DATASETS", "Signal", "load"]

SOURCES = {
    "nab": "https://github.com/numenta/NAB (data/ and labels/)",
    "nasa": "https://github.com/khundman/telemanom (data.zip and labeled_anomalies.csv)",
    "yahoo": "https://webscope.sandbox.yahoo.com (dataset S5, licence from Yahoo)",
    "csv": "your own files: a header, timestamp,value[,label]",
    "orion": "https://github.com/sintel-dev/Orion (benchmark signals and anomalies.csv)",
}


@dataclass
class Signal:
    """One benchmark series: values ``(n, d)``, optional training part, labelled anomalies
    as inclusive index ranges, and NAB's windows when the data set defines them."""

    name: str
    group: str
    timestamps: np.ndarray
    values: np.ndarray
    anomalies: list[tuple[int, int]]
    train: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.values)


def _err(dataset: str, text: str) -> DataError:
    return DataError(f"{text} (the {dataset} data set: {SOURCES[dataset]})")


def _table(path: Path, dataset: str, need: tuple[str, ...]) -> Table:
    """``path`` read by the one CSV reader, with at least one data row and the columns ``need``;
    its errors name the data set's source."""
    with _about(dataset):
        table = read_table(path)
        table.require(*need)
        if not len(table):
            raise DataError(f"{path}: no data rows")
    return table


def _timestamp_value(t: Table, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``timestamp`` column in seconds since the epoch and the ``value`` column, (n, 1)."""
    ts_col, value_col = t.require("timestamp", "value")
    with _about(dataset):
        return t.timestamps(ts_col)[0], t.numbers(value_col)[:, None]


@contextmanager
def _about(dataset: str):
    """A DataError of the CSV reader inside says where the data set comes from."""
    try:
        yield
    except DataError as e:
        raise _err(dataset, str(e)) from None


def _select(names: list[str], signals: str | None) -> list[str]:
    if not signals:
        return names
    pats = [p.strip() for p in signals.split(",") if p.strip()]
    return [n for n in names if any(fnmatch.fnmatch(n, p) or fnmatch.fnmatch(Path(n).name, p) for p in pats)]


def _dir(path, dataset: str) -> Path:
    d = Path(path)
    if not d.exists():
        raise _err(dataset, f"{d} does not exist")
    return d


# -- NAB --------------------------------------------------------------------------------
def load_nab(data_dir, signals: str | None = None) -> Iterator[Signal]:
    d = _dir(data_dir, "nab")
    labels_path = d / "labels" / "combined_windows.json"
    if not labels_path.is_file():
        raise _err("nab", f"missing {labels_path}")
    try:
        windows = json.loads(labels_path.read_text())
    except json.JSONDecodeError as e:
        raise _err("nab", f"{labels_path} is not JSON: {e}") from None
    names = sorted(windows)
    if not names:
        raise _err("nab", f"{labels_path} lists no files")
    for name in _select(names, signals):
        path = d / "data" / name
        if not path.is_file():
            raise _err("nab", f"missing {path} (listed in {labels_path})")
        ts, values = _timestamp_value(_table(path, "nab", ("timestamp", "value")), "nab")
        try:
            wins = [(parse_timestamp(s)[0], parse_timestamp(e)[0]) for s, e in windows[name]]
        except (ValueError, TypeError) as e:
            raise _err("nab", f"{labels_path}: bad window for {name}: {e}") from None
        yield Signal(name.removesuffix(".csv"), name.split("/")[0], ts, values, nab_windows_to_index(ts, wins),
                     meta={"nab": True})


# -- NASA --------------------------------------------------------------------------------
def load_nasa(data_dir, signals: str | None = None, mode: str = "univariate") -> Iterator[Signal]:
    if mode not in ("univariate", "multivariate"):
        raise ConfigError(f"NASA mode must be 'univariate' or 'multivariate', not {mode!r}")
    d = _dir(data_dir, "nasa")
    table = d / "labeled_anomalies.csv"
    if not table.is_file():
        raise _err("nasa", f"missing {table}")
    t = _table(table, "nasa", ("chan_id", "spacecraft", "anomaly_sequences", "class", "num_values"))
    rows = list(zip(*(t.texts(c) for c in t.require("chan_id", "spacecraft", "anomaly_sequences", "num_values")),
                    strict=True))
    for chan, craft, seqs, num in sorted(rows):
        if _select([chan], signals) == []:
            continue
        arrays = {}
        for part in ("train", "test"):
            path = d / part / f"{chan}.npy"
            if not path.is_file():
                raise _err("nasa", f"missing {path}")
            try:
                a = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as e:
                raise _err("nasa", f"{path} is not a numeric .npy array: {e}") from None
            if a.ndim != 2 or not np.issubdtype(a.dtype, np.number):
                raise _err("nasa", f"{path} must be a 2-d numeric array, got shape {a.shape}")
            arrays[part] = a.astype(np.float64)
        try:
            anomalies = [(int(s), int(e)) for s, e in ast.literal_eval(seqs)]
            n_expected = int(num)
        except (ValueError, SyntaxError, TypeError) as e:
            raise _err("nasa", f"{table}: bad anomaly_sequences or num_values for {chan}: {e}") from None
        test = arrays["test"]
        if n_expected != len(test):
            raise _err("nasa", f"{table}: {chan} has num_values {n_expected}, test/{chan}.npy has {len(test)} rows")
        keep = slice(0, 1) if mode == "univariate" else slice(None)
        yield Signal(chan, craft, np.arange(len(test), dtype=float), test[:, keep], anomalies,
                     train=arrays["train"][:, keep], meta={"mode": mode})


# -- Yahoo S5 ------------------------------------------------------------------------------
_YAHOO = {"A1": ("A1Benchmark", "real_*.csv", "timestamp", "is_anomaly"),
          "A2": ("A2Benchmark", "synthetic_*.csv", "timestamp", "is_anomaly"),
          "A3": ("A3Benchmark", "A3Benchmark-TS*.csv", "timestamps", "anomaly"),
          "A4": ("A4Benchmark", "A4Benchmark-TS*.csv", "timestamps", "anomaly")}


def _natural(p: Path):
    import re
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def load_yahoo(data_dir, signals: str | None = None) -> Iterator[Signal]:
    d = _dir(data_dir, "yahoo")
    found = False
    for group, (sub, pattern, ts_col, label_col) in _YAHOO.items():
        folder = d / sub
        if not folder.is_dir():
            continue
        files = sorted(folder.glob(pattern), key=_natural)
        for path in files:
            name = f"{group}/{path.stem}"
            if _select([name], signals) == []:
                continue
            found = True
            t = _table(path, "yahoo", (ts_col, "value", label_col))
            with _about("yahoo"):  # A1's integer timestamps are hours: kept as numbers
                ts, values, labels = (t.numbers(c) for c in t.require(ts_col, "value", label_col))
            values = values[:, None]
            if not np.isin(labels, (0, 1)).all():
                raise _err("yahoo", f"{path}: column {label_col} must be 0 or 1")
            yield Signal(name, group, ts, values, label_intervals(labels > 0))
    if not found:
        raise _err("yahoo", f"no A1Benchmark/real_*.csv, A2Benchmark/synthetic_*.csv, A3Benchmark/A3Benchmark-TS*.csv "
                            f"or A4Benchmark/A4Benchmark-TS*.csv files{' matching ' + signals if signals else ''} "
                            f"under {d}")


# -- generic CSV and Orion ------------------------------------------------------------------
def load_csv(data_dir, signals: str | None = None) -> Iterator[Signal]:
    d = _dir(data_dir, "csv")
    files = [d] if d.is_file() else sorted(d.glob("*.csv"))
    files = [f for f in files if _select([f.stem], signals)]
    if not files:
        raise _err("csv", f"no .csv files{' matching ' + signals if signals else ''} in {d}")
    for path in files:
        t = _table(path, "csv", ("timestamp", "value"))
        label = t.column(*LABEL_COLUMNS)
        with _about("csv"):
            labels = t.numbers(label) if label is not None else np.zeros(len(t))
        ts, values = _timestamp_value(t, "csv")
        yield Signal(path.stem, "csv", ts, values, label_intervals(labels > 0))


def load_orion(data_dir, signals: str | None = None) -> Iterator[Signal]:
    d = _dir(data_dir, "orion")
    table = d / "anomalies.csv"
    if not table.is_file():
        raise _err("orion", f"missing {table} (columns signal,events)")
    t = _table(table, "orion", ("signal", "events"))
    events = {}
    for sig, ev in zip(*(t.texts(c) for c in t.require("signal", "events")), strict=True):
        try:
            events[sig] = [(float(s), float(e)) for s, e in ast.literal_eval(ev)]
        except (ValueError, SyntaxError, TypeError) as e:
            raise _err("orion", f"{table}: events of {sig} are not a list of [start, end]: {e}") from None
    for sig in _select(sorted(events), signals):
        path = d / f"{sig}.csv"
        if not path.is_file():
            raise _err("orion", f"missing {path} (listed in {table})")
        ts, values = _timestamp_value(_table(path, "orion", ("timestamp", "value")), "orion")
        yield Signal(sig, "orion", ts, values, nab_windows_to_index(ts, events[sig]))


DATASETS = {"nab": load_nab, "nasa": load_nasa, "yahoo": load_yahoo, "csv": load_csv, "orion": load_orion}


def load(dataset: str, data_dir, signals: str | None = None, **kw) -> list[Signal]:
    """All signals of ``dataset`` under ``data_dir`` (optionally only those matching the
    comma-separated glob patterns ``signals``)."""
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of: {', '.join(sorted(DATASETS))}")
    out = list(DATASETS[dataset](data_dir, signals, **kw))
    if not out:
        raise ConfigError(f"no {dataset} signals match {signals!r}")
    return out
