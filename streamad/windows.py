"""Per-key sliding windows and online standardisation, numpy-backed.

:class:`RingBuffer` keeps the last ``capacity`` vectors. It stores every row twice (at
``i`` and ``i + capacity``) so that the window, oldest to newest, is always one contiguous
slice: reading it costs no copy and no ``np.roll``, which matters on the per-record path.

>>> rb = RingBuffer(3, 1)
>>> for v in [1.0, 2.0, 3.0, 4.0]:
...     _ = rb.push([v])
>>> rb.values().ravel().tolist(), rb.full
([2.0, 3.0, 4.0], True)
>>> w = Welford(1)
>>> for v in [1.0, 2.0, 3.0, 4.0]:
...     w.update([v])
>>> float(w.mean[0]), round(float(w.var[0]), 4)
(2.5, 1.6667)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .base import DimensionError, StateError

__all__ = ["KeyedWindows", "RingBuffer", "Welford"]


class RingBuffer:
    """The last ``capacity`` vectors of dimension ``dim``."""

    __slots__ = ("capacity", "dim", "_data", "_head", "size")

    def __init__(self, capacity: int, dim: int = 1):
        if int(capacity) < 1 or int(dim) < 1:
            raise DimensionError(f"ring buffer needs capacity >= 1 and dim >= 1, got {capacity}, {dim}")
        self.capacity = int(capacity)
        self.dim = int(dim)
        self._data = np.zeros((2 * self.capacity, self.dim))
        self._head = 0  # index of the oldest row in the doubled array
        self.size = 0

    @property
    def full(self) -> bool:
        return self.size == self.capacity

    def push(self, v: Any) -> np.ndarray | None:
        """Append ``v``; return the vector that fell out (a copy) when the buffer was full."""
        c = self.capacity
        if self.size < c:
            i = self._head + self.size
            self._data[i] = v
            self._data[i + c if i < c else i - c] = v
            self.size += 1
            return None
        old = self._data[self._head].copy()
        self.replace_oldest(v)
        return old

    def replace_oldest(self, v: Any) -> None:
        """Append ``v`` to a full buffer, dropping the oldest row (``push`` without the copy
        of the dropped row: the per-key step of ``process_keys`` calls this for every key)."""
        c, hd = self.capacity, self._head
        self._data[hd] = v
        self._data[hd + c] = v
        self._head = hd + 1 if hd + 1 < c else 0

    def extend(self, rows: Any) -> None:
        """Push each row of ``rows`` (faster than a loop of :meth:`push` for long blocks)."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, self.dim)
        c = self.capacity
        if len(rows) >= c:
            self._data[:c] = rows[-c:]
            self._data[c:] = rows[-c:]
            self._head, self.size = 0, c
            return
        for row in rows:
            self.push(row)

    def values(self) -> np.ndarray:
        """The window, oldest row first, shape ``(size, dim)`` (a view; do not modify)."""
        return self._data[self._head:self._head + self.size]

    def last(self, n: int = 1) -> np.ndarray:
        """The newest ``n`` rows, oldest first."""
        n = min(n, self.size)
        end = self._head + self.size
        return self._data[end - n:end]

    def clear(self) -> None:
        self._head = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "dim": self.dim, "values": self.values().copy()}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> RingBuffer:
        rb = cls(int(state["capacity"]), int(state["dim"]))
        vals = np.asarray(state["values"], dtype=np.float64).reshape(-1, rb.dim)
        if len(vals) > rb.capacity:
            raise StateError(f"ring buffer state holds {len(vals)} rows, capacity is {rb.capacity}")
        for v in vals:
            rb.push(v)
        return rb


class Welford:
    """Running mean and variance (Welford's algorithm), optionally with exponential forgetting.

    With ``halflife`` set, old observations lose half their weight every ``halflife`` updates,
    so the statistics follow a drifting series.
    """

    __slots__ = ("dim", "halflife", "n", "mean", "_m2", "_decay")

    def __init__(self, dim: int = 1, halflife: float | None = None):
        self.dim = int(dim)
        self.halflife = halflife
        self._decay = 1.0 if halflife is None else 0.5 ** (1.0 / float(halflife))
        self.n = 0.0
        self.mean = np.zeros(self.dim)
        self._m2 = np.zeros(self.dim)

    def update(self, v: Any) -> None:
        v = np.asarray(v, dtype=np.float64)
        if self._decay != 1.0:
            self.n *= self._decay
            self._m2 *= self._decay
        self.n += 1.0
        delta = v - self.mean
        self.mean += delta / self.n
        self._m2 += delta * (v - self.mean)

    @property
    def var(self) -> np.ndarray:
        """Sample variance (zero until two observations)."""
        return self._m2 / (self.n - 1.0) if self.n > 1.0 else np.zeros(self.dim)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var)

    def standardize(self, v: Any, eps: float = 1e-12) -> np.ndarray:
        return (np.asarray(v, dtype=np.float64) - self.mean) / (self.std + eps)

    def state_dict(self) -> dict[str, Any]:
        return {"dim": self.dim, "halflife": self.halflife, "n": self.n,
                "mean": self.mean.copy(), "m2": self._m2.copy()}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Welford:
        w = cls(int(state["dim"]), state["halflife"])
        w.n = float(state["n"])
        w.mean = np.asarray(state["mean"], dtype=np.float64).copy()
        w._m2 = np.asarray(state["m2"], dtype=np.float64).copy()
        return w


class KeyedWindows:
    """One :class:`RingBuffer` per key, created on first use."""

    def __init__(self, capacity: int, dim: int = 1):
        self.capacity = capacity
        self.dim = dim
        self._buffers: dict[str, RingBuffer] = {}

    def push(self, key: str, v: Any) -> RingBuffer:
        rb = self._buffers.get(key)
        if rb is None:
            rb = self._buffers[key] = RingBuffer(self.capacity, self.dim)
        rb.push(v)
        return rb

    def get(self, key: str) -> RingBuffer | None:
        return self._buffers.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._buffers

    def __len__(self) -> int:
        return len(self._buffers)

    def __iter__(self) -> Iterator[str]:
        return iter(self._buffers)
