"""How federated messages travel, as a protocol, and an in-memory channel for tests.

The server and client logic (:mod:`.server`, :mod:`.client`) only see :class:`FedChannel`;
``connectors.federated`` implements it over Kafka topics. Messages are opaque signed bytes.

>>> ch = MemoryChannel()
>>> ch.publish_global(b"g1"); ch.send_update(b"u1")
>>> ch.latest_global(0), ch.poll_updates(0), ch.bytes_down, ch.bytes_up
(b'g1', [b'u1'], 2, 2)
>>> ch.updates_position(), ch.seek_updates(0), ch.poll_updates(0)
(1, None, [b'u1'])
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

__all__ = ["FedChannel", "MemoryChannel"]


@runtime_checkable
class FedChannel(Protocol):
    def send_update(self, raw: bytes) -> None:
        """Client side: deliver one signed update to the server."""

    def poll_updates(self, timeout_s: float) -> list[bytes]:
        """Server side: updates that arrived since the last poll (waits up to ``timeout_s``)."""

    def updates_position(self) -> int | None:
        """Server side: where the next :meth:`poll_updates` starts reading (saved with the
        server's checkpoint), or None when the channel cannot say."""

    def seek_updates(self, position: int) -> None:
        """Server side: read updates from ``position`` on (a restarted server goes back to
        its checkpoint's position, so it sees what clients sent while it was down)."""

    def publish_global(self, raw: bytes) -> None:
        """Server side: publish the signed global model (the latest one wins)."""

    def latest_global(self, timeout_s: float) -> bytes | None:
        """Client side: the most recent global model published, or None if there is none yet."""

    def close(self) -> None: ...


class MemoryChannel:
    """All members in one process share one channel object. Counts bytes each way."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._updates: list[bytes] = []  # every update sent, in order
        self._read = 0  # the server's position in it
        self._global: bytes | None = None
        self.bytes_up = 0
        self.bytes_down = 0
        self.n_global = 0

    def send_update(self, raw: bytes) -> None:
        with self._lock:
            self._updates.append(bytes(raw))
            self.bytes_up += len(raw)

    def poll_updates(self, timeout_s: float) -> list[bytes]:
        with self._lock:
            out, self._read = self._updates[self._read:], len(self._updates)
        return out

    def updates_position(self) -> int | None:
        return self._read

    def seek_updates(self, position: int) -> None:
        with self._lock:
            self._read = max(0, min(int(position), len(self._updates)))

    def publish_global(self, raw: bytes) -> None:
        with self._lock:
            self._global = bytes(raw)
            self.n_global += 1
            self.bytes_down += len(raw)

    def latest_global(self, timeout_s: float) -> bytes | None:
        with self._lock:
            return self._global

    def close(self) -> None:
        pass
