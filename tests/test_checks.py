"""The capability checks of streamad.checks catch a detector that breaks their contract (and
pass a sound one): each broken detector here breaks one capability of BaseDetector."""

import numpy as np
import pytest

from streamad import checks
from streamad.detectors import ZScore


class _Stateless(ZScore):
    """z-scores, learned record by record (so that a check sees every _learn)."""

    def process_many(self, X, learn=True):
        return super(ZScore, self).process_many(X, learn=learn)


class _NegativeWindow(_Stateless):
    window = property(lambda self: -1, lambda self, v: None)


class _EveryOtherWarmup(_Stateless):
    def _learn(self, v):
        super()._learn(v)
        self.warmup_scores_ += self._pushes % 2  # counts every other record: not a prefix


class _UnknownThreshold(_Stateless):
    default_threshold = ("no-such-threshold", {})


class _DecreasingUnit(_Stateless):
    def unit_score(self, scores):
        return 1.0 / (1.0 + np.maximum(np.asarray(scores, dtype=np.float64), 0.0))


class _ForeignExplanation(_Stateless):
    def explain(self, x):
        return [("voltage", 1.0)]


class _TakesAnyModel(_Stateless):
    def share_model(self, other, only_if_equal=False):
        self.load_state_dict(other.state_dict())  # even a model with other weights


class _ShortSeries(_Stateless):
    def score_series(self, X):
        return super().score_series(X)[:-1]


@pytest.mark.parametrize("broken, check", [
    (_NegativeWindow, checks.check_features),
    (_EveryOtherWarmup, checks.check_warmup_scores),
    (_UnknownThreshold, checks.check_default_threshold),
    (_DecreasingUnit, checks.check_unit_score),
    (_ForeignExplanation, checks.check_explain),
    (_TakesAnyModel, checks.check_share_model),
    (_ShortSeries, checks.check_series_protocol),
], ids=lambda v: getattr(v, "__name__", "").removeprefix("check_").lstrip("_"))
def test_a_broken_capability_fails_its_check(broken, check):
    check(lambda: _Stateless(window=20))  # the sound detector passes
    with pytest.raises(AssertionError):
        check(lambda: broken(window=20))
