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
import csv
import fnmatch
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..base import ConfigError, DataError
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


def _epoch(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    dt = datetime.fromisoformat(text.split(".")[0] if "." in text and "T" not in text else text)
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def _read_table(path: Path, dataset: str, need: tuple[str, ...]) -> dict[str, list[str]]:
    try:
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError as e:
        raise _err(dataset, f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise _err(dataset, f"{path} is not a text CSV") from None
    if len(rows) < 2:
        raise _err(dataset, f"{path} has no data rows")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in need if c not in header]
    if missing:
        raise _err(dataset, f"{path} lacks column(s) {', '.join(missing)} (has {', '.join(header)})")
    cols: dict[str, list[str]] = {h: [] for h in header}
    for i, r in enumerate(rows[1:], 2):
        if len(r) != len(header):
            raise _err(dataset, f"{path}:{i} has {len(r)} fields, the header has {len(header)}")
        for h, v in zip(header, r, strict=True):
            cols[h].append(v)
    return cols


def _floats(values: list[str], path: Path, column: str, dataset: str) -> np.ndarray:
    try:
        return np.array([float(v) for v in values])
    except ValueError as e:
        raise _err(dataset, f"{path}: column {column} is not numeric ({e})") from None


def _times(values: list[str], path: Path, dataset: str) -> np.ndarray:
    try:
        return np.array([_epoch(v) for v in values])
    except ValueError as e:
        raise _err(dataset, f"{path}: bad timestamp ({e})") from None


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
        cols = _read_table(path, "nab", ("timestamp", "value"))
        ts = _times(cols["timestamp"], path, "nab")
        values = _floats(cols["value"], path, "value", "nab")[:, None]
        try:
            wins = [(_epoch(s), _epoch(e)) for s, e in windows[name]]
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
    cols = _read_table(table, "nasa", ("chan_id", "spacecraft", "anomaly_sequences", "class", "num_values"))
    rows = list(zip(cols["chan_id"], cols["spacecraft"], cols["anomaly_sequences"], cols["num_values"], strict=True))
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
            cols = _read_table(path, "yahoo", (ts_col, "value", label_col))
            ts = _floats(cols[ts_col], path, ts_col, "yahoo")
            values = _floats(cols["value"], path, "value", "yahoo")[:, None]
            labels = _floats(cols[label_col], path, label_col, "yahoo")
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
        cols = _read_table(path, "csv", ("timestamp", "value"))
        label = next((c for c in ("label", "is_anomaly", "anomaly") if c in cols), None)
        labels = _floats(cols[label], path, label, "csv") if label else np.zeros(len(cols["value"]))
        yield Signal(path.stem, "csv", _times(cols["timestamp"], path, "csv"),
                     _floats(cols["value"], path, "value", "csv")[:, None], label_intervals(labels > 0))


def load_orion(data_dir, signals: str | None = None) -> Iterator[Signal]:
    d = _dir(data_dir, "orion")
    table = d / "anomalies.csv"
    if not table.is_file():
        raise _err("orion", f"missing {table} (columns signal,events)")
    cols = _read_table(table, "orion", ("signal", "events"))
    events = {}
    for sig, ev in zip(cols["signal"], cols["events"], strict=True):
        try:
            events[sig] = [(float(s), float(e)) for s, e in ast.literal_eval(ev)]
        except (ValueError, SyntaxError, TypeError) as e:
            raise _err("orion", f"{table}: events of {sig} are not a list of [start, end]: {e}") from None
    for sig in _select(sorted(events), signals):
        path = d / f"{sig}.csv"
        if not path.is_file():
            raise _err("orion", f"missing {path} (listed in {table})")
        c = _read_table(path, "orion", ("timestamp", "value"))
        ts = _times(c["timestamp"], path, "orion")
        yield Signal(sig, "orion", ts, _floats(c["value"], path, "value", "orion")[:, None],
                     nab_windows_to_index(ts, events[sig]))


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
