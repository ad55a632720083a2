"""Shared plumbing of the benchmark scripts that run every NAB signal once per seed, keep the
scores in a cache directory (a rerun reuses them, so an interrupted run resumes) and then
score them offline: ``aer_seed_ensemble.py`` and ``streaming_thresholds.py``
(``streaming_scores.py`` uses the worker set-up and the NAB check)."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path


def seeds(text: str) -> list[int]:
    """``"0-8"``, ``"0,1,2"`` or ``"0-2,5"`` -> the seeds."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    return out


def init_worker(threads: int) -> None:
    # as streamad bench's workers: one share of the cores each, set before torch loads
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The NAB directory, ``--cache``, ``--signals``, ``--workers`` and ``--out``."""
    ap.add_argument("data_dir", type=Path, help="NAB checkout: data/<category>/*.csv and labels/combined_windows.json")
    ap.add_argument("--cache", type=Path, required=True, help="directory for the per-signal scores")
    ap.add_argument("--signals", default=None, help="only signals matching these comma-separated glob patterns")
    ap.add_argument("--workers", type=int, default=2, help="signals run in parallel (default: 2)")
    ap.add_argument("--out", type=Path, required=True, help="result JSON")


def missing_labels(data_dir: Path) -> bool:
    """Print a one-line error and return True when ``data_dir`` is not a NAB checkout."""
    if (data_dir / "labels" / "combined_windows.json").exists():
        return False
    print(f"error: {data_dir}/labels/combined_windows.json not found", file=sys.stderr)
    return True


def run_all(fn: Callable, jobs: list[tuple], workers: int, what: str = "runs") -> None:
    """``fn(*job)`` for every job in ``workers`` spawned processes, with progress on stderr."""
    t0 = time.perf_counter()
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, initializer=init_worker, initargs=(threads,),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(fn, *job) for job in jobs]
        for k, fut in enumerate(as_completed(futures), 1):
            fut.result()
            if k % 58 == 0 or k == len(futures):
                print(f"{k}/{len(futures)} {what}, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
