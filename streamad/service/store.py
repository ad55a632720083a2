"""Where the service keeps each partition's checkpoint: the state store.

A checkpoint is one state tree per input partition (every key's detector and threshold, and
whatever else the pipeline keeps per key, with the offset they reflect). The store does not
look inside it: it saves and loads whole trees, so new per-key state needs no change here.

- :class:`FileStateStore` (the default): one file per partition under
  ``<dir>/<group>/``, written atomically. One machine, or a shared directory.
- ``connectors.changelog.KafkaStateStore`` (``--state-store kafka``): a compacted changelog
  topic per consumer group, so instances on different machines need no shared disk.
- :class:`MemoryStateStore`: a dict, for tests.

>>> store = MemoryStateStore()
>>> store.save(("telemetry", 0), {"offset": 5, "keys": {}})
>>> store.load(("telemetry", 0))["offset"], store.load(("telemetry", 1))
(5, None)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .. import _state
from .transport import TopicPartition

__all__ = ["FileStateStore", "MemoryStateStore", "StateStore"]


@runtime_checkable
class StateStore(Protocol):
    def save(self, tp: TopicPartition, tree: dict[str, Any], timeout_s: float | None = None) -> None:
        """Store ``tree`` as the newest checkpoint of ``tp``; when this returns, a later
        :meth:`load` (by any instance of the group) finds it. Raise on failure (a retriable
        :class:`~streamad.base.StreamadError` when trying later may work), leaving the
        previous checkpoint in place. ``timeout_s`` bounds a wait for a remote store."""

    def load(self, tp: TopicPartition) -> dict[str, Any] | None:
        """The newest complete checkpoint of ``tp``, or None when there is none."""

    def where(self, tp: TopicPartition) -> str:
        """Where ``tp``'s checkpoint lives, for messages."""

    def close(self) -> None: ...


class FileStateStore:
    """Checkpoints as files ``<dir>/<group>/<topic>-<partition>.state`` (npz, no pickle),
    replaced atomically, so a crash leaves the old checkpoint or the new one, never half."""

    def __init__(self, directory: str | Path, group: str) -> None:
        self.directory = Path(directory) / group

    def path(self, tp: TopicPartition) -> Path:
        return self.directory / f"{tp[0]}-{tp[1]}.state"

    def save(self, tp: TopicPartition, tree: dict[str, Any], timeout_s: float | None = None) -> None:
        _state.save_atomic(self.path(tp), tree)

    def load(self, tp: TopicPartition) -> dict[str, Any] | None:
        path = self.path(tp)
        return _state.load(path) if path.exists() else None

    def where(self, tp: TopicPartition) -> str:
        return str(self.path(tp))

    def close(self) -> None:
        pass


class MemoryStateStore:
    """Checkpoints in a dict, serialised as the other stores do (a saved tree is a copy)."""

    def __init__(self) -> None:
        self.blobs: dict[TopicPartition, bytes] = {}

    def save(self, tp: TopicPartition, tree: dict[str, Any], timeout_s: float | None = None) -> None:
        self.blobs[tuple(tp)] = _state.dumps(tree)

    def load(self, tp: TopicPartition) -> dict[str, Any] | None:
        blob = self.blobs.get(tuple(tp))
        return None if blob is None else _state.loads(blob)

    def where(self, tp: TopicPartition) -> str:
        return f"memory {tp[0]}-{tp[1]}"

    def close(self) -> None:
        pass
