"""In-process scenarios (no Kafka): per-record and batched scoring, streamad vs River.

Every scenario scores the same synthetic multi-key stream (``args.n`` records over
``args.keys`` keys, one float feature per record) prequentially: score each record, then
learn it, with one detector per key, as the service does.

- ``inproc-river-hst``: River's own ``MinMaxScaler() | HalfSpaceTrees()`` per key, through
  River's API: the reference point users know.
- ``inproc-<name>``: streamad's detector per key, record by record (``score_one`` then
  ``learn_one`` on dicts, as in the service's per-record path).
- ``inproc-<name>-batched``: the same records grouped per key and passed to
  ``process_many`` in one call per key (the benchmark CLI's path and the service's path
  when a poll brings many records of one key).
- ``inproc-<name>-keys``: the records in arrival order, cut into batches of
  ``KEYS_BATCH`` (about 1.2 records per key with 1,000 keys, what the service polls at half
  its maximum rate); each batch is one ``process_keys`` call over its keys (the service's path).
"""

from __future__ import annotations

import time

import numpy as np

DETECTORS = {"zscore": {}, "gaussian": {}, "hst": {}, "records": {}, "contextual": {}}
KEYS_BATCH = 1200
NAMES: list[str] = ["inproc-river-hst"] + [f"inproc-{d}" for d in DETECTORS] + \
    [f"inproc-{d}-batched" for d in DETECTORS] + [f"inproc-{d}-keys" for d in DETECTORS]


def stream(n: int, keys: int, seed: int = 7) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    step = idx // keys
    values = 10 + 3 * np.sin(step / 24) + rng.normal(0, 0.5, size=n)
    names = [f"k{i % keys:06d}" for i in range(n)]
    return names, values


def _river_hst(names, values) -> dict:
    from river import anomaly, preprocessing

    models: dict = {}
    t0 = time.perf_counter()
    for k, v in zip(names, values.tolist(), strict=True):
        m = models.get(k)
        if m is None:
            m = models[k] = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=42)
        x = {"value": v}
        m.score_one(x)
        m.learn_one(x)
    return {"records": len(names), "seconds": time.perf_counter() - t0}


def _per_record(name: str, params: dict, names, values) -> dict:
    from streamad.detectors import make

    dets: dict = {}
    t0 = time.perf_counter()
    for k, v in zip(names, values.tolist(), strict=True):
        d = dets.get(k)
        if d is None:
            d = dets[k] = make(name, **params)
        x = {"value": v}
        d.score_one(x)
        d.learn_one(x)
    return {"records": len(names), "seconds": time.perf_counter() - t0}


def _batched(name: str, params: dict, names, values) -> dict:
    from streamad.detectors import make

    keys = np.array(names)
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1], True])
    t0 = time.perf_counter()
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        det = make(name, **params)
        det.process_many(values[order[a:b]][:, None])
    return {"records": len(names), "seconds": time.perf_counter() - t0}


def _across_keys(name: str, params: dict, names, values) -> dict:
    from streamad.detectors import make

    dets: dict = {}
    vals = values.tolist()
    t0 = time.perf_counter()
    for lo in range(0, len(names), KEYS_BATCH):
        groups: dict[str, list[float]] = {}
        for k, v in zip(names[lo:lo + KEYS_BATCH], vals[lo:lo + KEYS_BATCH], strict=True):
            groups.setdefault(k, []).append(v)
        jobs = []
        for k, vs in groups.items():
            d = dets.get(k)
            if d is None:
                d = dets[k] = make(name, **params)
            jobs.append((d, np.array(vs)[:, None]))
        type(jobs[0][0]).process_keys(jobs)
    return {"records": len(names), "seconds": time.perf_counter() - t0}


def scenarios(args) -> dict:
    n = min(args.n, 300_000)  # in-process rates are stable well before a million records
    out = {}

    def lazy(fn, *a):
        def run():
            names, values = stream(n, args.keys)
            return fn(*a, names, values)
        return run

    out["inproc-river-hst"] = lazy(_river_hst)
    for d, p in DETECTORS.items():
        out[f"inproc-{d}"] = lazy(_per_record, d, p)
        out[f"inproc-{d}-batched"] = lazy(_batched, d, p)
        out[f"inproc-{d}-keys"] = lazy(_across_keys, d, p)
    return out
