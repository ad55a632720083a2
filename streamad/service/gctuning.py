"""Garbage collection between batches: the pipeline's GC tuning (``streamad serve``, where
the process runs only the pipeline: ``Pipeline.manage_gc``).

Python's automatic collections are triggered by allocations, so they fall inside
batches: every object of the batch in flight is then scanned, survives and gets
promoted, and the promotions trigger full collections over all per-key state (measured
in a latency run: 37 full collections in 20 s, 83 ms each on average, up to 134 ms,
the records of the batch in flight waiting meanwhile). :class:`GcTuning` switches automatic
collection off; at the end of a batch, once more than 700 new objects survive (gc's default
threshold), the young generations are collected, when there is little to scan, and
the rest once per ``full_every_s``.

What survives a full collection is frozen (``gc.freeze``): it is mostly per-key state
(detectors, thresholds), which lives as long as its partition is assigned, and
scanning it again every minute is the pause that grows with the keys (Gaussian keys
with SPOT: 48 ms at 10,000 keys, 0.8 s at 100,000; benchmarks/gc_pause.py). Frozen
objects are still freed when nothing refers to them; only garbage in reference
cycles among them waits for a deep collection, which unfreezes everything first: the
first full collection after a rebalance (a revoked partition's state goes) and one
per ``deep_every_s``.
"""

from __future__ import annotations

import gc
import time

__all__ = ["GcTuning"]


class GcTuning:
    """Runs the cyclic garbage collector at batch boundaries (module doc)."""

    def __init__(self, full_every_s: float = 60.0, deep_every_s: float = 1800.0) -> None:
        #: seconds between full collections (of what is not frozen) ...
        self.full_every_s = full_every_s
        #: ... and between deep ones, which first unfreeze everything
        self.deep_every_s = deep_every_s
        self.was_enabled = False  # automatic collection was on before collect() switched it off
        self._full_at = self._deep_at = 0.0
        self.deep_due = False  # a rebalance released per-key state: scan everything next time

    def collect(self) -> None:
        """Between two batches: collect what is due, with automatic collection off."""
        now = time.monotonic()
        if gc.isenabled():
            gc.disable()
            self.was_enabled, self._full_at, self._deep_at = True, now, now
        if now - self._full_at >= self.full_every_s:
            if self.deep_due or now - self._deep_at >= self.deep_every_s:
                gc.unfreeze()
                self._deep_at, self.deep_due = now, False
            gc.collect()
            gc.freeze()
            self._full_at = now
        elif gc.get_count()[0] > 700:
            gc.collect(1)

    def release(self) -> None:
        """Give automatic collection back (if :meth:`collect` switched it off)."""
        if self.was_enabled:
            gc.enable()
            self.was_enabled = False
