"""The one CSV reader: series and tables from CSV files with a header row.

``streamad detect``, the benchmark's data sets and NAB-format result files (``streamad
bench``) and ``streamad replay`` read CSV through :class:`CsvFile`, so they agree on what a
CSV file is: UTF-8 text, a header row (names stripped), blank lines skipped, every row as many
fields as the header, numbers finite, timestamps in seconds since the epoch or ISO-8601 (naive
times are UTC; ``Z`` is UTC). Every problem is a one-line :class:`~streamad.base.DataError`
naming the file and line. Callers decide which column is what (:data:`TIMESTAMP_COLUMNS`,
:data:`LABEL_COLUMNS`) and add their own context (a data set's source).

>>> import io
>>> t = read_table(io.StringIO("timestamp,value\\n2024-01-01T00:00:00Z,1.5\\n\\n60,2\\n"))
>>> t.header, t.lines
(['timestamp', 'value'], [2, 4])
>>> t.timestamps(0)
(array([1.7040672e+09, 6.0000000e+01]), True)
>>> read_table(io.StringIO("timestamp,value\\n1,abc\\n")).numbers(1)
Traceback (most recent call last):
...
streamad.base.DataError: <stream>:2: column 'value' is not a number: 'abc'
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .base import DataError

__all__ = ["LABEL_COLUMNS", "TIMESTAMP_COLUMNS", "CsvFile", "Table", "parse_timestamp", "read_table"]

#: Column names taken as the timestamp, in order of preference (any case).
TIMESTAMP_COLUMNS = ("timestamp", "timestamps", "ts", "time", "datetime", "date")
#: Column names taken as the label (anomalous or not), in order of preference (any case).
LABEL_COLUMNS = ("label", "is_anomaly", "anomaly")


def parse_timestamp(text: Any) -> tuple[float, bool]:
    """Seconds since the epoch of a number or an ISO-8601 date, and whether it was a date;
    ``ValueError`` for anything else (also NaN and infinities).

    >>> parse_timestamp("2014-04-10 07:15:00.000000"), parse_timestamp(" 12.5 ")
    ((1397114100.0, True), (12.5, False))
    """
    s = str(text).strip()
    try:
        t = float(s)
    except ValueError:
        pass
    else:
        if math.isfinite(t):
            return t, False
        raise ValueError(f"timestamp {s!r} is not finite")
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    d = datetime.fromisoformat(s)
    return (d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp(), True


def _number(text: str, where: str, column: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise DataError(f"{where}: column {column!r} is not a number: {text!r}") from None
    if not math.isfinite(v):
        raise DataError(f"{where}: column {column!r} is {text!r}: NaN and infinities are not allowed")
    return v


def _timestamp(text: str, where: str) -> tuple[float, bool]:
    try:
        return parse_timestamp(text)
    except ValueError:
        raise DataError(f"{where}: bad timestamp {text!r}: neither a number nor ISO-8601") from None


class _Columns:
    """Finding columns by name, for :class:`CsvFile` and :class:`Table`."""

    where: str
    header: list[str]

    def column(self, *names: str) -> int | None:
        """The position of the first of ``names`` that the header has (any case), or None."""
        lower = [h.lower() for h in self.header]
        return next((lower.index(n.lower()) for n in names if n.lower() in lower), None)

    def require(self, *names: str) -> list[int]:
        """The positions of the columns named exactly ``names``; a DataError names the missing."""
        missing = [n for n in names if n not in self.header]
        if missing:
            raise DataError(f"{self.where}: no column(s) {', '.join(missing)} (columns: {', '.join(self.header)})")
        return [self.header.index(n) for n in names]


class CsvFile(_Columns):
    """A CSV file (a path, or an open text stream the caller closes) with a header row, read
    row by row: for files too large to hold, as ``streamad replay`` publishes them. Opening
    reads the header; a missing, empty or binary file is a DataError right then.

    >>> import io
    >>> with CsvFile(io.StringIO("Time,temp,label\\n1,20.5,0\\n")) as f:
    ...     ts, temp = f.column(*TIMESTAMP_COLUMNS), f.column("temp")
    ...     [(f.timestamp(row[ts], line), f.number(row[temp], line, temp)) for line, row in f.rows()]
    [((1.0, False), 20.5)]
    """

    def __init__(self, source: str | Path | TextIO):
        if isinstance(source, str | Path):
            path = Path(source)
            if not path.exists():
                raise DataError(f"{path}: no such file")
            if path.is_dir():
                raise DataError(f"{path}: is a directory, not a CSV file")
            try:
                self._file = path.open(newline="", encoding="utf-8")
            except OSError as e:
                raise DataError(f"{path}: cannot read: {e.strerror}") from None
            #: The name messages give the file by, and the file's name without its suffix.
            self.where, self.stem, self._owned = str(path), path.stem, True
        else:
            self._file, self.where, self.stem, self._owned = source, "<stream>", "series", False
        self._reader = csv.reader(self._file)
        try:
            first = next(self._lines(), None)
            if first is None:
                raise DataError(f"{self.where}: empty file")
        except DataError:
            self.close()
            raise
        #: Column names, stripped.
        self.header = [h.strip() for h in first[1]]

    def __enter__(self) -> CsvFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self._file.close()

    def _lines(self) -> Iterator[tuple[int, list[str]]]:
        try:
            for row in self._reader:
                if any(c.strip() for c in row):
                    yield self._reader.line_num, row
        except UnicodeDecodeError:
            raise DataError(f"{self.where}: not a text CSV file (not UTF-8)") from None
        except csv.Error as e:
            raise DataError(f"{self.where}: not a valid CSV file ({e})") from None

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """``(line number, fields)`` of each data row; blank lines are skipped, a row with
        another number of fields than the header is a DataError."""
        n = len(self.header)
        for line, row in self._lines():
            if len(row) != n:
                raise DataError(f"{self.where}:{line}: {len(row)} fields, the header has {n}")
            yield line, row

    def number(self, text: str, line: int, col: int) -> float:
        """Field ``text`` of column ``col`` on ``line`` as a finite float."""
        return _number(text, f"{self.where}:{line}", self.header[col])

    def timestamp(self, text: str, line: int) -> tuple[float, bool]:
        """A timestamp field on ``line``: :func:`parse_timestamp`, or a DataError naming it."""
        return _timestamp(text, f"{self.where}:{line}")


@dataclass
class Table(_Columns):
    """A whole CSV file: its header, its data rows as text and their line numbers; columns
    convert as wholes (:meth:`numbers`, :meth:`timestamps`), naming the first bad field."""

    where: str
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def __len__(self) -> int:
        return len(self.rows)

    def texts(self, col: int) -> list[str]:
        """Column ``col`` as written."""
        return [r[col] for r in self.rows]

    def numbers(self, col: int) -> np.ndarray:
        """Column ``col`` as finite floats."""
        try:
            out = np.array([float(r[col]) for r in self.rows], dtype=np.float64)
            if np.isfinite(out).all():
                return out
        except ValueError:
            pass
        for line, r in zip(self.lines, self.rows, strict=True):  # name the first bad field
            _number(r[col], f"{self.where}:{line}", self.header[col])
        raise AssertionError("unreachable: a bad field was not found")  # pragma: no cover

    def timestamps(self, col: int) -> tuple[np.ndarray, bool]:
        """Column ``col`` as seconds since the epoch, and whether any field was an ISO date."""
        out = np.empty(len(self.rows))
        iso = False
        for i, (line, r) in enumerate(zip(self.lines, self.rows, strict=True)):
            out[i], is_iso = _timestamp(r[col], f"{self.where}:{line}")
            iso = iso or is_iso
        return out, iso


def read_table(source: str | Path | TextIO) -> Table:
    """All of a CSV file (:class:`CsvFile`'s rules) as a :class:`Table`."""
    with CsvFile(source) as f:
        lines, rows = [], []
        for line, row in f.rows():
            lines.append(line)
            rows.append(row)
        return Table(f.where, f.header, rows, lines)
