"""The dead-letter format: input the service cannot score, with why and where it came from.

One JSON object per rejected message, on the dead-letter topic, keyed like the original:

- ``reason`` (plain words) and ``kind`` (``"decode"`` for every rejection the service
  makes: a message that is not a telemetry record, or a record whose features do not fit
  its key);
- ``source``: ``topic``, ``partition``, ``offset`` of the original, and its ``timestamp_ms``
  when the message has one;
- the original bytes: ``key`` (as text), ``key_b64``, ``value_b64``, with ``value_size``,
  ``value_sha256`` and ``value_truncated``: a value over ``max_original_bytes`` is cut (on
  Kafka, :data:`DLQ_MAX_ORIGINAL_BYTES`, so a dead letter always fits a default 1 MB
  message), and the coordinates point to the full original;
- ``dead_lettered_at``: when it was rejected (ISO-8601, UTC).

:class:`DeadLetterSink` sends them through any :class:`~streamad.service.transport.Sink`,
with the reason, kind and coordinates also as message headers; :func:`read_dead_letter`
reads one back.

>>> from streamad.service.transport import Message
>>> m = Message("telemetry", 2, 41, b"pump-7", b"\\xff{not json")
>>> rec = read_dead_letter(dead_letter_record(m, "not UTF-8 JSON"))
>>> rec["reason"], rec["source"], rec["key"], rec["value"]
('not UTF-8 JSON', {'topic': 'telemetry', 'partition': 2, 'offset': 41}, 'pump-7', b'\\xff{not json')
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from .transport import Message, Sink

__all__ = ["DLQ_MAX_ORIGINAL_BYTES", "DeadLetterSink", "dead_letter_record", "read_dead_letter"]

#: Original values above this size are cut in the dead letter (with their size and SHA-256),
#: so a dead letter always fits a default 1 MB Kafka message.
DLQ_MAX_ORIGINAL_BYTES = 256 * 1024


def _b64(b: bytes | None) -> str | None:
    return None if b is None else base64.b64encode(b).decode("ascii")


def dead_letter_record(message: Message, reason: str, kind: str = "decode",
                       max_original_bytes: int | None = DLQ_MAX_ORIGINAL_BYTES) -> bytes:
    """The dead-letter JSON for ``message``: why it failed, where it came from, its bytes
    (cut to ``max_original_bytes``; None: whole)."""
    value = message.value
    size = None if value is None else len(value)
    truncated = size is not None and max_original_bytes is not None and size > max_original_bytes
    source: dict[str, Any] = {"topic": message.topic, "partition": message.partition, "offset": message.offset}
    if message.timestamp_ms is not None:
        source["timestamp_ms"] = message.timestamp_ms
    doc = {
        "reason": reason,
        "kind": kind,
        "source": source,
        "key": None if message.key is None else message.key.decode("utf-8", "replace"),
        "key_b64": _b64(message.key),
        "value_b64": _b64(value[:max_original_bytes] if truncated else value),
        "value_size": size,
        "value_truncated": truncated,
        "value_sha256": None if value is None else hashlib.sha256(value).hexdigest(),
        "dead_lettered_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def read_dead_letter(data: bytes) -> dict[str, Any]:
    """Parse a dead letter; adds ``key_bytes`` and ``value`` (the original bytes)."""
    doc = json.loads(data)
    doc["key_bytes"] = None if doc.get("key_b64") is None else base64.b64decode(doc["key_b64"])
    doc["value"] = None if doc.get("value_b64") is None else base64.b64decode(doc["value_b64"])
    return doc


class DeadLetterSink:
    """Routes rejected input to ``topic`` through ``sink``, keyed like the original, with the
    reason, kind and source coordinates also as message headers (``streamad.reason``,
    ``streamad.kind``, ``streamad.source``), so a consumer can filter without parsing.
    ``max_original_bytes``: the largest original value kept whole (None: no limit, for a
    message system without one, such as the in-memory one)."""

    def __init__(self, sink: Sink, topic: str, max_original_bytes: int | None = DLQ_MAX_ORIGINAL_BYTES):
        self.sink, self.topic, self.max_original_bytes = sink, topic, max_original_bytes
        self.count = 0

    def send(self, message: Message, reason: str, kind: str = "decode") -> None:
        value = dead_letter_record(message, reason, kind, self.max_original_bytes)
        headers = [("streamad.reason", reason.encode()[:1024]), ("streamad.kind", kind.encode()),
                   ("streamad.source", f"{message.topic}/{message.partition}/{message.offset}".encode())]
        self.sink.send(self.topic, message.key, value, headers)
        self.count += 1

    def flush(self, timeout_s: float = 30.0) -> None:
        self.sink.flush(timeout_s)
