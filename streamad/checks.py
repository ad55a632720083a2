"""The conformance suite every detector must pass.

Each check takes a zero-argument factory that builds a fresh detector (same parameters, same
seed every time) and raises ``AssertionError`` with a sentence when the detector breaks the
contract of :class:`streamad.base.BaseDetector`: the protocol (learning, scoring, state) and
each optional capability the service and the benchmark use (``features_``, ``window``,
``warmup_scores_``, ``default_threshold``, ``unit_score``, ``explain``, ``process_keys``,
``share_model``, ``fit`` / ``score_series``). :func:`check_detector` runs them all;
``tests/test_conformance.py`` runs each check for every registered detector, with the
small parameters its class returns from ``_unit_test_params()``.

>>> from streamad.detectors import ZScore
>>> check_detector(lambda: ZScore(window=10))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import _state
from .base import StreamadError

__all__ = ["CHECKS", "check_detector", "sample_stream"]

Factory = Callable[[], Any]


def sample_stream(n: int = 240, d: int = 3, seed: int = 7) -> np.ndarray:
    """A small multivariate stream: correlated seasonal features, noise, a flat stretch, a spike."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    base = np.sin(2 * np.pi * t / 24)
    X = np.stack([base * (1 + j) + 0.1 * j * t / n for j in range(d)], axis=1)
    X += 0.1 * rng.normal(size=X.shape)
    X[n // 2:n // 2 + 10] = X[n // 2]  # flatline
    X[3 * n // 4] += 6.0               # spike
    return X


def _rows(X: np.ndarray, names: list[str]) -> list[dict[str, float]]:
    return [dict(zip(names, map(float, r), strict=True)) for r in X]


def _names(d: int) -> list[str]:
    return [f"x{i}" for i in range(d)] if d > 1 else ["value"]


def _learned(factory: Factory, X: np.ndarray):
    det = factory()
    det.learn_many(X)
    return det


def check_state_round_trip(factory: Factory) -> None:
    """A detector rebuilt from its saved state scores (and goes on learning) identically."""
    X = sample_stream()
    train, test = X[:160], X[160:]
    det = _learned(factory, train)
    blob = _state.dumps(det.state_dict())  # must be storable without pickle
    twin = factory()
    twin.load_state_dict(_state.loads(blob))
    a, b = det.score_many(test), twin.score_many(test)
    assert np.array_equal(a, b), f"scores differ after a state round trip: {a[:5]} vs {b[:5]}"
    det.learn_many(test[:40])
    twin.learn_many(test[:40])
    a, b = det.score_many(test), twin.score_many(test)
    assert np.array_equal(a, b), "scores differ after learning more on a restored detector"


def check_score_does_not_learn(factory: Factory) -> None:
    """``score_one`` and ``score_many`` leave the state untouched."""
    X = sample_stream()
    det = _learned(factory, X[:160])
    before = det.state_dict()
    det.score_one(_rows(X[160:161], det.features_)[0])
    det.score_many(X[160:])
    assert _state.trees_equal(before, det.state_dict()), "scoring changed the detector's state"


def check_same_seed_same_scores(factory: Factory) -> None:
    """Two detectors built with the same parameters give the same scores."""
    X = sample_stream()
    a = _learned(factory, X[:160]).score_many(X[160:])
    b = _learned(factory, X[:160]).score_many(X[160:])
    assert np.array_equal(a, b), "two identically built detectors give different scores"


def check_finite_scores(factory: Factory) -> None:
    """Scores are finite floats, also on constant stretches, spikes and at the very start."""
    X = sample_stream()
    det = factory()
    s = det.process_many(X, learn=True)
    assert s.shape == (len(X),), f"process_many returned shape {s.shape}, expected ({len(X)},)"
    assert np.all(np.isfinite(s)), f"non-finite scores at rows {np.flatnonzero(~np.isfinite(s))[:5]}"
    one = det.score_one(_rows(X[:1], det.features_)[0])
    assert isinstance(one, float) and np.isfinite(one), f"score_one returned {one!r}"


def check_many_equals_one(factory: Factory) -> None:
    """``learn_many``/``score_many`` match ``learn_one``/``score_one`` over the rows."""
    X = sample_stream()
    names = _names(X.shape[1])
    batch = factory()
    batch.learn_one(_rows(X[:1], names)[0])  # fix feature names the same way for both
    batch.learn_many(X[1:160])
    single = factory()
    for x in _rows(X[:160], names):
        single.learn_one(x)
    a = batch.score_many(X[160:])
    b = np.array([single.score_one(x) for x in _rows(X[160:], names)])
    assert np.allclose(a, b, rtol=1e-5, atol=1e-8), f"score_many {a[:4]} != score_one {b[:4]}"
    c = batch.process_many(X[160:], learn=True)
    d = []
    for x in _rows(X[160:], names):
        d.append(single.score_one(x))
        single.learn_one(x)
    assert np.allclose(c, d, rtol=1e-5, atol=1e-8), "process_many differs from score_one + learn_one"


def check_keys_equal_many(factory: Factory) -> None:
    """``process_keys`` over several detectors, a few rows per key and call as in the service's
    batches, equals one ``process_many`` call over each key's rows, whatever the keys'
    histories (fresh, warming up, long)."""
    rng = np.random.default_rng(3)
    for d in (1, 3):
        X = sample_stream(d=d)
        starts = [0, 0, 5, 40, 150]  # key j has learned X[:starts[j]] before the batches
        keyed, alone = [factory() for _ in starts], [factory() for _ in starts]
        for det, twin, s in zip(keyed, alone, starts, strict=True):
            if s:
                det.learn_many(X[:s])
                twin.learn_many(X[:s])
        pos = list(starts)
        got: list[list[float]] = [[] for _ in starts]
        for _ in range(30):
            jobs, who = [], []
            for j, det in enumerate(keyed):
                rows = X[pos[j]:pos[j] + int(rng.choice([0, 1, 1, 1, 2, 3, 12]))]
                pos[j] += len(rows)
                if len(rows):
                    jobs.append((det, rows))
                    who.append(j)
            res = type(keyed[0]).process_keys(jobs) if jobs else []
            assert len(res) == len(jobs), f"process_keys returned {len(res)} results for {len(jobs)} jobs"
            for j, r, (_, rows) in zip(who, res, jobs, strict=True):
                assert len(r) == len(rows), f"process_keys returned {len(r)} scores for {len(rows)} rows"
                got[j].extend(np.asarray(r, dtype=np.float64).tolist())
        for j, (det, twin) in enumerate(zip(keyed, alone, strict=True)):
            want = twin.process_many(X[starts[j]:pos[j]])
            bad = np.flatnonzero(~np.isclose(got[j], want, rtol=1e-5, atol=1e-8))
            assert not len(bad), f"row {bad[0]} of key {j} (d={d}): process_keys gives {got[j][bad[0]]:.6g}, " \
                                 f"one process_many call {want[bad[0]]:.6g}"
            tail = X[-20:]
            assert np.allclose(det.score_many(tail), twin.score_many(tail), rtol=1e-5, atol=1e-8), \
                f"key {j} learned differently through process_keys (d={d})"


def check_wrong_dimension(factory: Factory) -> None:
    """Input of another dimension than the one learned raises a StreamadError."""
    X = sample_stream()
    det = _learned(factory, X[:100])
    bad = {f"x{i}": 0.0 for i in range(X.shape[1] + 1)}
    for call in (lambda: det.score_one(bad), lambda: det.learn_one(bad),
                 lambda: det.score_many(np.zeros((3, X.shape[1] + 1)))):
        try:
            call()
        except StreamadError as e:
            assert str(e), "the error has no message"
        else:
            raise AssertionError("input with one feature too many was accepted")


def check_causal(factory: Factory) -> None:
    """Scores are causal: changing the rows after ``t`` changes no score at rows up to ``t``
    (each row is scored before it is learned, with no look-ahead)."""
    X = sample_stream()
    rng = np.random.default_rng(11)
    for t in (60, 170):
        Y = X.copy()
        Y[t + 1:] = rng.normal(size=Y[t + 1:].shape) * 5.0 + 3.0
        a = factory().process_many(X, learn=True)
        b = factory().process_many(Y, learn=True)
        bad = np.flatnonzero(a[:t + 1] != b[:t + 1])
        assert not len(bad), f"the score of row {bad[0]} changed when rows after {t} changed"


# -- the optional capabilities ----------------------------------------------------------
def check_features(factory: Factory) -> None:
    """``features_`` is None until the first record, then its keys sorted (or, from an array,
    ``x0``, ``x1``, ... and ``value`` for one column); ``window`` is a whole number >= 0."""
    det = factory()
    assert det.features_ is None, f"features_ is {det.features_!r} before any record"
    window = det.window
    assert isinstance(window, int) and not isinstance(window, bool) and window >= 0, \
        f"window must be a whole number >= 0, got {window!r}"
    X = sample_stream(n=20)
    det.learn_one(_rows(X[:1], ["temp", "rpm", "amps"])[0])
    assert det.features_ == ["amps", "rpm", "temp"], f"features_ after a record: {det.features_!r}"
    for d, names in ((3, ["x0", "x1", "x2"]), (1, ["value"])):
        det = factory()
        det.learn_many(sample_stream(n=20, d=d))
        assert det.features_ == names, f"features_ after a {d}-column array: {det.features_!r}"


def check_warmup_scores(factory: Factory) -> None:
    """``warmup_scores_`` counts a prefix of the stream: after each record it is
    ``min(records scored, W)`` for one ``W``; scoring row by row or all at once gives the same."""
    X = sample_stream()
    det = factory()
    seen = []
    for i in range(len(X)):
        det.process_many(X[i:i + 1], learn=True)
        seen.append(det.warmup_scores_)
    w = seen[-1]
    assert isinstance(w, int | np.integer) and 0 <= w <= len(X), f"warmup_scores_ is {w!r}"
    want = [min(i + 1, w) for i in range(len(X))]
    bad = next((i for i, (a, b) in enumerate(zip(seen, want, strict=True)) if a != b), None)
    assert bad is None, f"warmup_scores_ is {seen[bad]} after {bad + 1} records: not a prefix count (ends at {w})"
    whole = factory()
    whole.process_many(X, learn=True)
    assert whole.warmup_scores_ == w, \
        f"warmup_scores_ {whole.warmup_scores_} after process_many, {w} after the same rows one by one"


def check_default_threshold(factory: Factory) -> None:
    """``default_threshold`` names a registered streaming threshold with parameters it takes."""
    from . import thresholds

    det = factory()
    spec = det.default_threshold
    assert isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], dict), \
        f"default_threshold must be (name, parameters), got {spec!r}"
    name, params = spec
    assert name in thresholds.REGISTRY, f"default_threshold names {name!r}, not a registered threshold"
    rule = thresholds.make(name, **params)
    decision = rule.update(1.0)
    assert isinstance(decision.is_anomaly, bool | np.bool_), f"{name} decided {decision!r}"


def check_unit_score(factory: Factory) -> None:
    """``unit_score`` maps scores into [0, 1] by one increasing map, the same before and after
    learning (NAB's result files take scores in [0, 1])."""
    X = sample_stream()
    fresh, det = factory(), factory()
    own = det.process_many(X, learn=True)
    s = np.sort(np.concatenate([own, [-1.0, 0.0, 0.5, 1.0, 2.0, 10.0, 1e3, 1e9]]))
    u = np.asarray(det.unit_score(s), dtype=np.float64)
    assert u.shape == s.shape, f"unit_score returned shape {u.shape} for {s.shape}"
    assert np.all((u >= 0.0) & (u <= 1.0)), f"unit_score outside [0, 1]: {u[(u < 0) | (u > 1) | np.isnan(u)][:3]}"
    drop = np.flatnonzero(np.diff(u) < 0)
    assert not len(drop), f"unit_score decreases: {s[drop[0]]:.6g} -> {u[drop[0]]:.6g}, " \
                          f"{s[drop[0] + 1]:.6g} -> {u[drop[0] + 1]:.6g}"
    assert np.array_equal(u, np.asarray(fresh.unit_score(s), dtype=np.float64)), \
        "unit_score changed with learning: it must be one fixed map"


def check_explain(factory: Factory) -> None:
    """``explain(x)`` is a list of ``(part, contribution)``: a part names a feature (or
    ``feature:aspect``), contributions are finite floats, largest first; it changes nothing."""
    X = sample_stream()
    spike = 3 * len(X) // 4
    det = _learned(factory, X[:spike - 5])
    names = det.features_
    for x in _rows(X[[spike, spike - 4]], names):  # the spike, not learned yet; an ordinary record
        before = det.state_dict()
        parts = det.explain(x)
        assert _state.trees_equal(before, det.state_dict()), "explain changed the detector's state"
        assert isinstance(parts, list), f"explain returned {type(parts).__name__}, not a list"
        for part in parts:
            assert isinstance(part, tuple) and len(part) == 2 and isinstance(part[0], str) \
                and isinstance(part[1], float) and np.isfinite(part[1]), f"explain gave {part!r}"
            assert part[0].partition(":")[0] in names, f"explain names {part[0]!r}, not one of {names}"
        values = [v for _, v in parts]
        assert values == sorted(values, reverse=True), f"explain is not largest first: {parts}"


def check_share_model(factory: Factory) -> None:
    """``share_model`` changes no score: sharing an identically trained detector's model, or
    (``only_if_equal``) declining another's; and the shared model is never changed in place
    when its owner goes on learning."""
    X = sample_stream()
    train, test = X[:160], X[160:]
    a, b, twin = (_learned(factory, train) for _ in range(3))
    want = twin.score_many(test)
    a.share_model(b, only_if_equal=True)
    assert np.array_equal(a.score_many(test), want), "sharing an identical model changed the scores"
    b.learn_many(3.0 * test + 1.0)
    assert np.array_equal(a.score_many(test), want), "the owner's learning changed a shared model"
    a.learn_many(test[:40])
    twin.learn_many(test[:40])
    assert np.array_equal(a.score_many(test), twin.score_many(test)), "a detector learns differently after sharing"
    other = _learned(factory, 2.0 * train + 5.0)
    c = _learned(factory, train)
    c.share_model(other, only_if_equal=True)
    assert np.array_equal(c.score_many(test), want), "only_if_equal took a model with other weights"


def check_series_protocol(factory: Factory) -> None:
    """``fit`` then ``score_series`` (``streamad bench --protocol orion``) gives a finite score
    per row: the prequential scores (``process_many``) unless the detector is ``whole_series``,
    which scores the series with its model and learns nothing."""
    X = sample_stream()
    train, test = X[:160], X[160:]
    det = factory()
    det.fit(train)
    twin = factory()
    twin.fit(train)
    if det.whole_series:
        before = det.state_dict()
        s = np.asarray(det.score_series(test), dtype=np.float64)
        assert _state.trees_equal(before, det.state_dict()), "score_series of a whole_series detector learned"
        want = np.asarray(twin.score_series(test), dtype=np.float64)
    else:
        s = np.asarray(det.score_series(test), dtype=np.float64)
        want = twin.process_many(test, learn=True)
    assert s.shape == (len(test),), f"score_series returned shape {s.shape}, expected ({len(test)},)"
    assert np.all(np.isfinite(s)), f"non-finite series scores at rows {np.flatnonzero(~np.isfinite(s))[:5]}"
    assert np.allclose(s, want, rtol=1e-5, atol=1e-8), f"score_series {s[:4]} != {want[:4]}"


CHECKS = [check_state_round_trip, check_score_does_not_learn, check_same_seed_same_scores,
          check_finite_scores, check_many_equals_one, check_keys_equal_many, check_wrong_dimension,
          check_causal, check_features, check_warmup_scores, check_default_threshold, check_unit_score,
          check_explain, check_share_model, check_series_protocol]


def check_detector(factory: Factory) -> None:
    """Run every check in :data:`CHECKS`."""
    for check in CHECKS:
        check(factory)
