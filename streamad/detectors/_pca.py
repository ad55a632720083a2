"""PCA reconstruction residual of standardised feature vectors (a multi-metric baseline)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..base import BaseDetector, ConfigError

__all__ = ["PCAResidual"]


class PCAResidual(BaseDetector):
    """How far a record lies off the principal subspace of normal records.

    Each record's features are standardised with the running mean and standard deviation
    (the "Gaussian" part: a per-feature normal model), projected on the top ``k``
    principal components of their correlation matrix, and scored by the size of what the
    projection leaves out: the squared prediction error (SPE, the Q statistic of process
    monitoring) divided by its expected value under the model (the sum of the discarded
    eigenvalues), square-rooted. A normal record scores about 1; a record that breaks the
    correlations between features scores high even when each feature alone looks normal.

    The sums behind the mean and covariance are updated online; the subspace is refitted
    after 1, 2, 4, ... records and then every ``refit_every`` records. :meth:`fit` learns a
    batch at once and refits at its end. With a single feature the score is the absolute
    z-score.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> load = rng.normal(size=(500, 1))
    >>> X = np.hstack([load, 2 * load, -load]) + 0.05 * rng.normal(size=(500, 3))
    >>> det = PCAResidual(k=1)
    >>> det.fit(X)
    >>> normal = det.score_one({"x0": 1.0, "x1": 2.0, "x2": -1.0})
    >>> broken = det.score_one({"x0": 1.0, "x1": -2.0, "x2": -1.0})  # each value is usual
    >>> normal < 4 < broken
    True
    """

    name = "pca"

    def __init__(self, k: int = 3, refit_every: int = 100, min_std: float = 1e-3):
        if int(k) < 1:
            raise ConfigError(f"pca k must be at least 1, got {k}")
        if int(refit_every) < 1:
            raise ConfigError(f"pca refit_every must be at least 1, got {refit_every}")
        self.k = k
        self.refit_every = refit_every
        self.min_std = min_std

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"k": 1, "refit_every": 16}

    def _on_features(self, d: int) -> None:
        self._d = d
        self._shift: np.ndarray | None = None
        self._n = 0
        self._sum = np.zeros(d)
        self._outer = np.zeros((d, d))
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.components_: np.ndarray | None = None  # (d, k)
        self._spe = 1.0  # expected SPE of a normal record

    def _refit_due(self, c: int) -> bool:
        r = int(self.refit_every)
        return c % r == 0 or (c < r and c & (c - 1) == 0)

    # -- learning ------------------------------------------------------------------------
    def _learn(self, v: np.ndarray) -> None:
        self._add(v[None, :])
        if self._refit_due(self._n):
            self._refit()

    def learn_many(self, X: np.ndarray) -> None:
        X = self._mat(X)
        i = 0
        while i < len(X):
            c, r = self._n, int(self.refit_every)
            nxt = c + 1
            while not self._refit_due(nxt):
                nxt = (nxt // r + 1) * r if nxt >= r else nxt + 1
            j = min(len(X), i + (nxt - c))
            self._add(X[i:j])
            i = j
            if self._refit_due(self._n):
                self._refit()

    def fit(self, X: np.ndarray) -> None:
        """Learn the rows of ``X`` at once (discarding what was learned) and refit."""
        X = self._mat(X)
        self._on_features(X.shape[1])
        self._add(X)
        self._refit()

    def _add(self, X: np.ndarray) -> None:
        if self._shift is None:
            self._shift = X[0].copy()  # sums of values near zero do not lose precision
        Y = X - self._shift
        self._n += len(X)
        self._sum += Y.sum(axis=0)
        self._outer += Y.T @ Y

    def _refit(self) -> None:
        n = self._n
        mu = self._sum / n
        cov = self._outer / n - np.outer(mu, mu)
        mean = mu + self._shift
        sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
        self.scale_ = np.maximum(sd, float(self.min_std) * (1.0 + np.abs(mean)))
        self.mean_ = mean
        corr = cov / np.outer(self.scale_, self.scale_)
        eig, vec = np.linalg.eigh((corr + corr.T) / 2)  # ascending
        k = min(int(self.k), self._d - 1)
        self.components_ = vec[:, self._d - k:] if k > 0 else np.zeros((self._d, 0))
        rest = float(np.maximum(eig[:self._d - k], 0.0).sum())
        # the floor keeps a near-perfect fit (few records, collinear features) finite
        self._spe = max(rest, 1e-6 * self._d)

    # -- scoring -------------------------------------------------------------------------
    def score_many(self, X: np.ndarray) -> np.ndarray:
        X = self._mat(X)
        if self.components_ is None:
            return np.zeros(len(X))
        Z = (X - self.mean_) / self.scale_
        R = Z - (Z @ self.components_) @ self.components_.T
        return np.sqrt(np.einsum("ij,ij->i", R, R) / self._spe)

    def _score(self, v: np.ndarray) -> float:
        return float(self.score_many(v[None, :])[0])

    def feature_errors(self, X: np.ndarray) -> np.ndarray:
        """Absolute residual per feature, in standard deviations, shape (n, d)."""
        X = self._mat(X)
        if self.components_ is None:
            return np.zeros_like(X)
        Z = (X - self.mean_) / self.scale_
        return np.abs(Z - (Z @ self.components_) @ self.components_.T)

    # -- state ---------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        if self.features_ is None:
            return {}
        state: dict[str, Any] = {"n": self._n, "sum": self._sum.copy(),
                                 "outer": self._outer.copy(), "shift": self._shift}
        if self.components_ is not None:
            state.update(mean=self.mean_.copy(), scale=self.scale_.copy(),
                         components=self.components_.copy(), spe=self._spe)
        return state

    def _set_state(self, state: Mapping[str, Any]) -> None:
        if self.features_ is None:
            return
        d = self._d
        self._n = int(state["n"])
        self._sum = np.asarray(state["sum"], dtype=np.float64).reshape(d).copy()
        self._outer = np.asarray(state["outer"], dtype=np.float64).reshape(d, d).copy()
        shift = state["shift"]
        self._shift = None if shift is None else np.asarray(shift, dtype=np.float64).copy()
        if "components" in state:
            self.mean_ = np.asarray(state["mean"], dtype=np.float64).copy()
            self.scale_ = np.asarray(state["scale"], dtype=np.float64).copy()
            self.components_ = np.asarray(state["components"], dtype=np.float64).reshape(d, -1).copy()
            self._spe = float(state["spe"])
