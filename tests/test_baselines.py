"""Detection quality of the baseline detectors on labelled synthetic series."""

import numpy as np
import pytest

from streamad.base import ConfigError
from streamad.detectors import Gaussian, RiverDetector, ZScore, make


def _auc_roc(labels, scores):
    """Probability that a random anomalous point outscores a random normal one."""
    from scipy.stats import rankdata

    r = rankdata(scores)
    pos = labels.astype(bool)
    n1, n0 = pos.sum(), (~pos).sum()
    return (r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)


def _seasonal_with_anomalies(seed=0, n=3000):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    x = 10 + 3 * np.sin(2 * np.pi * t / 48) + 0.3 * rng.normal(size=n)
    y = np.zeros(n, dtype=int)
    for s in rng.choice(np.arange(600, n - 10, 97), size=12, replace=False):
        x[s] += rng.choice([-1, 1]) * rng.uniform(2.5, 4)  # spikes: within the seasonal range
        y[s] = 1
    return x[:, None], y


@pytest.mark.parametrize("name, params, floor", [
    ("zscore", {"window": 48}, 0.6),
    ("gaussian", {"window": 48}, 0.97),
    ("hst", {"window": 4, "params": {"n_trees": 15, "height": 8, "window_size": 250}}, 0.8),
])
def test_baselines_find_spikes_in_a_seasonal_series(name, params, floor):
    x, y = _seasonal_with_anomalies()
    scores = make(name, **params).process_many(x, learn=True)
    warm = 600
    auc = _auc_roc(y[warm:], scores[warm:])
    assert auc > floor, f"{name}: AUC-ROC {auc:.3f} <= {floor}"


def test_gaussian_uses_the_series_context_where_zscore_cannot():
    # A spike inside the seasonal range is invisible to a point z-score but not to a
    # model of the window: the Gaussian must clearly beat the z-score here.
    x, y = _seasonal_with_anomalies(seed=3)
    z = ZScore(window=48).process_many(x)
    g = Gaussian(window=48).process_many(x)
    assert _auc_roc(y[600:], g[600:]) > _auc_roc(y[600:], z[600:]) + 0.1


def test_gaussian_multivariate_flags_a_broken_correlation():
    rng = np.random.default_rng(1)
    a = rng.normal(size=2000)
    X = np.stack([a, a + 0.05 * rng.normal(size=2000)], axis=1)
    X[1500, 1] = -X[1500, 0]  # each value is normal on its own; the pair is not
    det = Gaussian(window=1)
    det.learn_many(X[:1000])
    s = det.score_many(X[1000:])
    assert np.argmax(s) == 500


def test_gaussian_learns_the_autoregression():
    rng = np.random.default_rng(0)
    y = np.zeros(20000)
    for t in range(2, len(y)):
        y[t] = 0.6 * y[t - 1] - 0.3 * y[t - 2] + rng.normal()
    det = Gaussian(window=4)
    det.learn_many(y[:, None])
    np.testing.assert_allclose(det._coef.ravel(), [0.6, -0.3, 0.0], atol=0.03)



def test_gaussian_keys_share_one_store_yet_keep_their_own_state():
    # Univariate Gaussians keep their buffers in rows of one store per window length (the
    # cross-key step gathers from it). Copies must get rows of their own, and keys must keep
    # their state while new keys make the store grow.
    import copy
    import pickle

    rng = np.random.default_rng(3)
    series = [np.sin(np.arange(400) / 9 + k) + rng.normal(0, 0.2, 400) for k in range(6)]
    keys = [Gaussian(window=8, refit_every=16) for _ in series]
    for t in range(200):  # one row per key per batch: the cross-key step
        Gaussian.process_keys([(d, s[t:t + 1, None]) for d, s in zip(keys, series, strict=True)])
    twins = [copy.deepcopy(keys[0]), pickle.loads(pickle.dumps(keys[1]))]
    crowd = [Gaussian(window=8, refit_every=16) for _ in range(300)]  # the store grows under the keys
    for d in crowd:
        d.learn_many(rng.normal(size=(12, 1)))
    got = [[] for _ in keys]
    for t in range(200, 400):
        out = Gaussian.process_keys([(d, s[t:t + 1, None]) for d, s in zip(keys, series, strict=True)]
                                    + [(tw, -s[t:t + 1, None]) for tw, s in zip(twins, series[:2], strict=True)])
        for g, o in zip(got, out, strict=False):
            g.append(o[0])
    for k, s in enumerate(series):
        ref = Gaussian(window=8, refit_every=16).process_many(s[:, None])[200:]
        np.testing.assert_allclose(got[k], ref, rtol=1e-9, atol=1e-12)
    for d in crowd:  # the other keys were not disturbed either
        assert d._hist.size == 8 and np.isfinite(d.score_one({"value": 0.0}))

def test_bad_parameters_are_config_errors():
    for build in (lambda: ZScore(window=1), lambda: Gaussian(window=0),
                  lambda: Gaussian(halflife=-1), lambda: RiverDetector(detector="Nope"),
                  lambda: RiverDetector(params={"bogus": 1}), lambda: make("gaussian", wrong=1)):
        with pytest.raises(ConfigError):
            build()


def test_gaussian_cross_key_step_scores_long_runs_as_each_key_alone():
    # A backlog's batches bring many rows of many keys: keys with more rows than keys_step_max
    # share the cross-key step when enough keys have as many rows, and a key with a run longer
    # than that is scored on its own. Either way, the scores are those of each key alone.
    rng = np.random.default_rng(4)
    n_keys = Gaussian.keys_step_share + 4
    series = [np.cos(np.arange(600) / 7 + k) + rng.normal(0, 0.1, 600) for k in range(n_keys)]
    keys = [Gaussian(window=8, refit_every=16) for _ in series]
    pos, got = [0] * n_keys, [[] for _ in series]
    for rows in (20, 12, 12, 30, 12, 100):  # warm-up (each key alone), then shared steps of 12
        run = [rows + (50 if k == 0 and rows == 12 else 0) for k in range(n_keys)]  # key 0: longer
        jobs = [(d, s[p:p + r, None]) for d, s, p, r in zip(keys, series, pos, run, strict=True)]
        for g, scores in zip(got, Gaussian.process_keys(jobs), strict=True):
            g.extend(scores)
        pos = [p + r for p, r in zip(pos, run, strict=True)]
    for d, s, p, g in zip(keys, series, pos, got, strict=True):
        ref = Gaussian(window=8, refit_every=16)
        np.testing.assert_allclose(g, ref.process_many(s[:p, None]), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(d._cross, ref._cross, rtol=1e-9)  # and the next rows alike
        np.testing.assert_allclose(d.score_many(s[p:p + 5, None]), ref.score_many(s[p:p + 5, None]), rtol=1e-9)
