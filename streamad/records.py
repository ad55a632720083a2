"""Telemetry records and the decoding of telemetry messages.

A message is a UTF-8 JSON object::

    {"key": "pump-7", "ts": 1700000000.0, "values": {"temp": 41.2, "rpm": 1210}}

``key`` may be left out when the Kafka message key carries it; when both are there they must
be the same (a record whose JSON key differs from its Kafka key sits in the partition of one
key but would be scored as the other, splitting that key's state between instances: it is a
:class:`KeyMismatch`, a dead letter). ``ts`` may be a number
(seconds since the epoch; numbers above 1e11 are taken as milliseconds, which is what
Kafka producers usually send) or an ISO-8601 string (naive times are UTC). A plain
``{"timestamp": ..., "value": ...}`` is a one-feature record named ``value``, so NAB-style
rows can be published as they are.

:func:`decode` never raises anything but a :class:`~streamad.base.DecodeError` subclass, whose
``reason`` says in plain words what is wrong; the service sends such messages to the
dead-letter topic and keeps going.

>>> r = decode(b'{"key": "a", "ts": "2024-01-01T00:00:00Z", "values": {"x": 1, "y": 2.5}}')
>>> r.key, r.ts, r.values
('a', 1704067200.0, {'x': 1.0, 'y': 2.5})
>>> decode(b'{"timestamp": 5, "value": 3}', key=b"k1")
Record(key='k1', ts=5.0, values={'value': 3.0})
>>> decode(b'{"ts": 1, "values": {"x": "hot"}}')
Traceback (most recent call last):
...
streamad.records.NonNumericValue: value of feature 'x' is not a number: 'hot'
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, NamedTuple

from .base import DecodeError

__all__ = [
    "BadKey",
    "BadTimestamp",
    "KeyMismatch",
    "MessageTooLarge",
    "NoValues",
    "NonFiniteValue",
    "NonNumericValue",
    "NotAnObject",
    "NotJson",
    "NotUtf8",
    "Record",
    "TooManyFeatures",
    "decode",
    "encode",
]

MAX_BYTES = 1 << 20
MAX_FEATURES = 1000
DEFAULT_KEY = "default"
_MS_CUTOFF = 1e11  # seconds since 1970 pass 1e11 only in the year 5138


class MessageTooLarge(DecodeError):
    """The message is bigger than the allowed size."""


class NotUtf8(DecodeError):
    """The message bytes are not UTF-8 text."""


class NotJson(DecodeError):
    """The message text is not JSON."""


class NotAnObject(DecodeError):
    """The JSON is not an object (a list, a number, ...)."""


class NoValues(DecodeError):
    """The object has no feature values."""


class NonNumericValue(DecodeError):
    """A feature value is not a number."""


class NonFiniteValue(DecodeError):
    """A feature value is NaN or infinite."""


class BadTimestamp(DecodeError):
    """The timestamp is missing or cannot be read."""


class BadKey(DecodeError):
    """The record key is not a string."""


class KeyMismatch(DecodeError):
    """The record's JSON key is not its Kafka message key."""


class TooManyFeatures(DecodeError):
    """The record has more features than allowed."""


class Record(NamedTuple):
    """One telemetry observation: which series (``key``), when (``ts``, epoch seconds), what.
    Immutable; a named tuple because one is decoded per message (3x cheaper to build than a
    frozen dataclass)."""

    key: str
    ts: float
    values: dict[str, float]


def _reject_constant(name: str) -> float:
    raise NonFiniteValue(f"JSON contains {name}, which is not a finite number")


# One decoder for every message (json.loads with options builds a new one per call).
_JSON = json.JSONDecoder(parse_constant=_reject_constant)

try:  # optional (pip install streamad[fast]): ~6x faster on telemetry-sized messages
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads = None


def _number(name: str, v: Any) -> float:
    if type(v) is float and v - v == 0.0:  # the common case: a finite float (inf - inf and nan are nan)
        return v
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise NonNumericValue(f"value of feature {name!r} is not a number: {_short(v)}")
    try:
        f = float(v)
    except OverflowError:
        raise NonFiniteValue(f"value of feature {name!r} is too large for a float") from None
    if not math.isfinite(f):
        raise NonFiniteValue(f"value of feature {name!r} is not finite")
    return f


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _timestamp(v: Any) -> float:
    if (type(v) is float and v - v == 0.0) or (type(v) is int and -1e300 < v < 1e300):
        return v / 1000.0 if abs(v) > _MS_CUTOFF else float(v)
    if isinstance(v, bool):
        raise BadTimestamp(f"timestamp is a boolean: {v}")
    if isinstance(v, int | float):
        try:
            t = float(v)
        except OverflowError:
            raise BadTimestamp("timestamp is too large") from None
        if not math.isfinite(t):
            raise BadTimestamp("timestamp is not finite")
        return t / 1000.0 if abs(t) > _MS_CUTOFF else t
    if isinstance(v, str):
        s = v.strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        try:
            d = datetime.fromisoformat(s)
        except ValueError:
            raise BadTimestamp(f"timestamp is not ISO-8601: {_short(v)}") from None
        if d.tzinfo is None:
            d = d.replace(tzinfo=UTC)
        try:
            return d.timestamp()
        except (OverflowError, OSError, ValueError):
            raise BadTimestamp(f"timestamp is out of range: {_short(v)}") from None
    raise BadTimestamp(f"timestamp must be a number or an ISO-8601 string, got {_short(v)}")


def _parse(data: bytes | bytearray | memoryview) -> Any:
    """The standard library's parse of a message, with a :class:`DecodeError` saying why not."""
    try:
        text = (data if type(data) is bytes else bytes(data)).decode("utf-8")
    except UnicodeDecodeError as e:
        raise NotUtf8(f"message is not UTF-8 (byte {e.start})") from None
    try:
        return _JSON.decode(text)
    except DecodeError:
        raise
    except RecursionError:
        raise NotJson("message JSON is nested too deeply") from None
    except ValueError as e:
        raise NotJson(f"message is not JSON: {e.msg} at character {e.pos}") from None


def decode(data: bytes, *, key: str | bytes | None = None, default_ts: float | None = None,
           max_bytes: int = MAX_BYTES, max_features: int = MAX_FEATURES) -> Record:
    """Turn one message into a :class:`Record`, or raise a :class:`DecodeError` saying why.

    ``key`` is the Kafka message key, used when the object has no ``key``; ``default_ts``
    (e.g. the Kafka message timestamp) is used when it has no ``ts``/``timestamp``.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise NotJson(f"message is {type(data).__name__}, not bytes")
    if len(data) > max_bytes:
        raise MessageTooLarge(f"message is {len(data)} bytes, over the {max_bytes}-byte limit")
    if _fast_loads is not None:
        # orjson accepts what the standard parser accepts, minus NaN/Infinity and lone
        # surrogates, and reads integers beyond 64 bits as floats. Anything it refuses, a
        # numeric key (whose text must keep every digit), and any message that fails the
        # checks below go through the standard parser, so records and error reasons are the
        # same with and without it (an out-of-range integer would otherwise be reported as a
        # float).
        try:
            obj = _fast_loads(data)
        except ValueError:
            pass
        else:
            if not (type(obj) is dict and type(obj.get("key")) is float):
                try:
                    return _record(obj, key, default_ts, max_features)
                except DecodeError:
                    pass
    return _record(_parse(data), key, default_ts, max_features)


def _record(obj: Any, key: str | bytes | None, default_ts: float | None, max_features: int) -> Record:
    """The record a parsed message describes, or a :class:`DecodeError` saying what is wrong."""
    if not isinstance(obj, dict):
        raise NotAnObject(f"message is a JSON {type(obj).__name__}, not an object")

    if "values" in obj:
        raw = obj["values"]
        if not isinstance(raw, dict):
            raise NoValues(f"'values' must be an object of feature -> number, got {type(raw).__name__}")
        if not raw:
            raise NoValues("'values' is empty")
        if len(raw) > max_features:
            raise TooManyFeatures(f"record has {len(raw)} features, over the limit of {max_features}")
        values = {name: _number(name, v) for name, v in raw.items()}
    elif "value" in obj:
        values = {"value": _number("value", obj["value"])}
    else:
        raise NoValues("message has neither 'values' nor 'value'")

    if "ts" in obj:
        ts = _timestamp(obj["ts"])
    elif "timestamp" in obj:
        ts = _timestamp(obj["timestamp"])
    elif default_ts is not None:
        ts = float(default_ts)
    else:
        raise BadTimestamp("message has no 'ts' or 'timestamp'")

    k = obj.get("key")
    if k is None:
        if isinstance(key, bytes | bytearray):
            try:
                k = bytes(key).decode("utf-8")
            except UnicodeDecodeError:
                raise BadKey("Kafka message key is not UTF-8") from None
        else:
            k = key if key is not None else DEFAULT_KEY
    else:
        if isinstance(k, int | float) and not isinstance(k, bool):
            k = str(k)
        elif not isinstance(k, str):
            raise BadKey(f"'key' must be a string, got {type(k).__name__}")
        if key is not None and key != (k if isinstance(key, str) else k.encode("utf-8", "surrogatepass")):
            shown = key if isinstance(key, str) else bytes(key).decode("utf-8", "replace")
            raise KeyMismatch(f"key mismatch: the record's key {_short(k)} is not its Kafka message key "
                              f"{_short(shown)}")
    return Record(k, ts, values)


def encode(record: Record) -> bytes:
    """The message for ``record`` (the inverse of :func:`decode`).

    >>> decode(encode(Record("a", 1.5, {"x": 2.0})))
    Record(key='a', ts=1.5, values={'x': 2.0})
    """
    return json.dumps({"key": record.key, "ts": record.ts, "values": record.values},
                      separators=(",", ":")).encode()
