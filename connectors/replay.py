"""Publish a data set to a Kafka topic as telemetry, keyed, at a given rate.

Readers turn NAB / Yahoo / generic CSV files, NASA ``.npy`` channels or the synthetic
multi-key generator into :class:`~streamad.records.Record` streams; :func:`replay` sends them
through any :class:`~streamad.service.transport.Sink` in the message format of DESIGN.md
(``{"key", "ts", "values"}``, Kafka message key = record key), paced by a token bucket.

>>> import io
>>> recs = list(read_csv(io.StringIO("timestamp,temp,label\\n2024-01-01T00:00:00Z,21.5,0\\n"), key="room"))
>>> recs
[Record(key='room', ts=1704067200.0, values={'temp': 21.5})]
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from streamad import io as sio
from streamad.base import ConfigError, DataError
from streamad.records import Record, encode

__all__ = ["ReplayStats", "TokenBucket", "read_csv", "read_nab", "read_npy", "read_synthetic", "read_synthetic_hpc", "read_yahoo",
           "replay"]

#: Column names taken as labels or generator components, never published as features.
LABEL_COLUMNS = frozenset({*sio.LABEL_COLUMNS, "labels", "changepoint", "trend", "noise"})
KEY_COLUMNS = ("key", "id", "sensor", "device")


def read_csv(path: str | Path | TextIO, key: str | None = None, *,
             columns: Iterable[str] | None = None) -> Iterator[Record]:
    """Records from a CSV with a header (:mod:`streamad.io`'s rules, read row by row): a
    timestamp column (one of :data:`streamad.io.TIMESTAMP_COLUMNS`, else the first column), an
    optional key column, numeric feature columns. Label columns (``label``, ``is_anomaly``, ...)
    are left out. ``key`` defaults to the key column, else the file name. ``columns`` restricts
    the features published."""
    with sio.CsvFile(path) as f:
        header = f.header
        ts_col = f.column(*sio.TIMESTAMP_COLUMNS)
        ts_col = 0 if ts_col is None else ts_col
        key_col = f.column(*KEY_COLUMNS)
        wanted = set(columns) if columns is not None else None
        feats = [i for i, h in enumerate(header)
                 if i not in (ts_col, key_col) and h.lower() not in LABEL_COLUMNS
                 and (wanted is None or h in wanted)]
        if wanted is not None and (missing := wanted - {header[i] for i in feats}):
            raise DataError(f"{f.where}: no column(s) {', '.join(sorted(missing))} to publish "
                            f"(columns: {', '.join(header)})")
        if not feats:
            raise DataError(f"{f.where}: no feature columns besides the timestamp (header: {','.join(header)})")
        for line, row in f.rows():
            values = {header[i]: f.number(row[i], line, i) for i in feats}
            k = key or (row[key_col] if key_col is not None else f.stem)
            yield Record(k, f.timestamp(row[ts_col], line)[0], values)


def read_nab(path: str | Path | TextIO, key: str | None = None) -> Iterator[Record]:
    """A NAB data file (``timestamp,value``); key = file name unless given."""
    return read_csv(path, key, columns=["value"])


def read_yahoo(path: str | Path | TextIO, key: str | None = None) -> Iterator[Record]:
    """A Yahoo S5 file (A1: ``timestamp,value,is_anomaly``; A2-A4: ``timestamps,value,anomaly,
    changepoint,trend,noise,seasonality...``): only ``value`` is published, the rest are
    labels or generator components. A1's integer timestamps are hours: kept as given."""
    return read_csv(path, key, columns=["value"])


def read_npy(path: str | Path, key: str | None = None, *, start_ts: float = 1_400_000_000.0,
             step_s: float = 60.0) -> Iterator[Record]:
    """A NASA SMAP/MSL channel (``.npy``, shape ``(n,)`` or ``(n, d)``): column 0 is the
    telemetry ``value``, the others the command columns ``cmd_1``...; the files carry no
    times, so ``ts`` runs from ``start_ts`` in steps of ``step_s`` (one minute, as NASA's)."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:
        X = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{p}: not a numpy .npy array: {e}") from None
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[1] == 0 or not np.issubdtype(X.dtype, np.number):
        raise DataError(f"{p}: expected a numeric array of shape (n,) or (n, d), got {X.dtype} {X.shape}")
    if not np.isfinite(X).all():
        row = int(np.argwhere(~np.isfinite(X))[0][0])
        raise DataError(f"{p}: row {row} is not finite")
    names = ["value", *(f"cmd_{j}" for j in range(1, X.shape[1]))]
    k = key or p.stem
    for i, row in enumerate(X.tolist()):
        yield Record(k, start_ts + i * step_s, dict(zip(names, row, strict=True)))


def read_synthetic(n_keys: int = 4, n_points: int = 2000, seed: int = 0, **params) -> Iterator[Record]:
    """The synthetic multi-key generator of :mod:`streamad.synthetic`, keys interleaved in
    time order (labels stay in the generator; regenerate with the same seed to score)."""
    from streamad import synthetic

    yield from _generated(synthetic.generate, "synthetic generator", n_keys=n_keys, n_points=n_points, seed=seed,
                          **params)


def _generated(make, what: str, **params) -> Iterator[Record]:
    from streamad import synthetic

    try:
        data = make(**params)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad {what} parameters: {e}") from None
    for r in synthetic.iter_records(data):
        yield Record(r.key, r.ts, r.values)


def read_synthetic_hpc(n_nodes: int = 16, days: float = 14, seed: int = 0, **params) -> Iterator[Record]:
    """The simulated HPC node fleet of :func:`streamad.synthetic.node_fleet`: one record per
    node and 5-minute sample, keyed by node, with all its metrics as values."""
    from streamad import synthetic

    yield from _generated(synthetic.node_fleet, "node fleet", n_nodes=n_nodes, days=days, seed=seed, **params)


class TokenBucket:
    """Pace to ``rate`` events/s with bursts of at most ``burst`` (default: 1/10 s of rate).

    >>> tb = TokenBucket(1000.0)
    >>> t0 = time.monotonic(); _ = [tb.take() for _ in range(300)]; 0.15 < time.monotonic() - t0 < 1.0
    True
    """

    def __init__(self, rate: float, burst: float | None = None):
        if not rate > 0:
            raise ConfigError(f"rate must be positive, got {rate}")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(1.0, rate / 10)
        self._tokens = 0.0
        self._at = time.monotonic()

    def take(self, n: float = 1.0) -> None:
        """Block until ``n`` tokens are available, then spend them."""
        while True:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= n:
                self._tokens -= n
                return
            time.sleep(min(0.05, (n - self._tokens) / self.rate))


@dataclass
class ReplayStats:
    sent: int
    keys: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else float("inf")


def replay(records: Iterable[Record], sink, topic: str, *, rate: float | None = None,
           limit: int | None = None, progress: bool = False, total: int | None = None,
           flush_every: int = 10_000, flush_timeout_s: float = 60.0) -> ReplayStats:
    """Send ``records`` to ``topic`` (Kafka key = record key), ``rate`` records/s or as fast
    as the sink takes them (``None``), at most ``limit``; flushes every ``flush_every``
    records and at the end, so it returns only once every record is acknowledged (the
    sink's flush raises otherwise)."""
    bucket = TokenBucket(rate) if rate else None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=min(x for x in (total, limit) if x is not None) if (total or limit) else None,
                   unit="rec", desc=f"replay -> {topic}", mininterval=0.5)
    sent, keys = 0, set()
    t0 = time.monotonic()
    try:
        for rec in records:
            if limit is not None and sent >= limit:
                break
            if bucket is not None:
                bucket.take()
            sink.send(topic, rec.key.encode(), encode(rec))
            keys.add(rec.key)
            sent += 1
            if bar is not None and sent % 256 == 0:
                bar.update(256)
            if sent % flush_every == 0:
                sink.flush(flush_timeout_s)
        sink.flush(flush_timeout_s)
    finally:
        if bar is not None:
            bar.update(sent - bar.n)
            bar.close()
    return ReplayStats(sent, len(keys), time.monotonic() - t0)
