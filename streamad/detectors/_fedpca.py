"""Federated PCA detector: residual distance from a (global) principal subspace."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..base import BaseDetector, DimensionError
from ..federated.grassmann import StreamingMoments, top_subspace

__all__ = ["FedPCA"]


class FedPCA(BaseDetector):
    """Scores ``||x - Z Z^T x||^2`` on standardised ``x``: the squared distance of a record from
    the subspace ``Z`` of normal behaviour.

    Learning keeps exact streaming moments of the stream (mean, co-moment matrix). Until a
    global model arrives (:meth:`set_global`, called by the federated client each round) the
    subspace and standardisation are the detector's own (local PCA); afterwards they are the
    federation's. Only the subspace and the pooled moments ever come from outside.

    Parameters
    ----------
    n_components
        Dimension ``k`` of the normal subspace.
    min_samples
        Records to learn before scoring with a local subspace (scores are 0 before).

    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 2)) @ np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    >>> det = FedPCA(n_components=2)
    >>> det.learn_many(X)
    >>> bool(det.score_one({"x0": 1, "x1": 2, "x2": 1}) < 0.01 < det.score_one({"x0": 1, "x1": -1, "x2": 1}))
    True
    """

    name = "fedpca"

    def __init__(self, n_components: int = 2, min_samples: int = 2):
        self.n_components = n_components
        self.min_samples = min_samples
        self.moments_: StreamingMoments | None = None
        self.global_basis_: np.ndarray | None = None
        self.global_mean_: np.ndarray | None = None
        self.global_scale_: np.ndarray | None = None
        self.global_round_: int = -1
        self._cache: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"n_components": 1, "min_samples": 2}

    def _on_features(self, d: int) -> None:
        self.moments_ = StreamingMoments(d)
        self._cache = None

    # -- learning ---------------------------------------------------------------------
    def _learn(self, v: np.ndarray) -> None:
        self.moments_.update(v)
        self._cache = None

    def learn_many(self, X: np.ndarray) -> None:
        X = self._mat(X)
        for v in X:  # sequential Welford keeps learn_many bit-identical to learn_one
            self.moments_.update(v)
        self._cache = None

    # -- the model in use ---------------------------------------------------------------
    def standardisation(self) -> tuple[np.ndarray, np.ndarray]:
        """The (mean, scale) records are standardised with: the federation's, else local."""
        if self.global_mean_ is not None:
            return self.global_mean_, self.global_scale_
        m = self.moments_
        s = np.sqrt(m.var)
        return m.mean, np.where(s > 1e-12, s, 1.0)

    def local_covariance(self) -> np.ndarray:
        """Covariance of this detector's stream under the standardisation in use."""
        mean, scale = self.standardisation()
        return self.moments_.covariance(mean, scale)

    def local_subspace(self) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n_components`` principal subspace of the local stream and its singular values."""
        return top_subspace(self.local_covariance(), self._k())

    def _k(self) -> int:
        return min(self.n_components, len(self.features_))

    def _model(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        if self.global_basis_ is not None:
            return self.global_basis_, self.global_mean_, self.global_scale_
        m = self.moments_
        if m is None or m.n < self.min_samples:
            return None
        if self._cache is None or self._cache[0] != m.n:
            mean, scale = self.standardisation()
            self._cache = (m.n, self.local_subspace()[0], mean.copy(), scale.copy())
        return self._cache[1:]

    def set_global(self, basis: np.ndarray, mean: np.ndarray | None = None, scale: np.ndarray | None = None,
                   round: int = 0) -> None:
        """Score with the federation's subspace (and standardisation) from now on."""
        basis = np.asarray(basis, dtype=np.float64)
        if self.features_ is None:
            self._set_features([f"x{i}" for i in range(basis.shape[0])])
        d = len(self.features_)
        if basis.shape != (d, self._k()):
            raise DimensionError(f"global basis has shape {basis.shape}, this detector needs ({d}, {self._k()})")
        if mean is None:
            mean, scale = self.standardisation()
        self.global_basis_ = basis.copy()
        self.global_mean_ = np.asarray(mean, dtype=np.float64).copy()
        self.global_scale_ = np.asarray(scale, dtype=np.float64).copy()
        self.global_round_ = int(round)

    # -- scoring ------------------------------------------------------------------------
    def _score(self, v: np.ndarray) -> float:
        model = self._model()
        if model is None:
            return 0.0
        Z, mean, scale = model
        z = (v - mean) / scale
        r = z - Z @ (Z.T @ z)
        return float(r @ r)

    def score_many(self, X: np.ndarray) -> np.ndarray:
        X = self._mat(X)
        model = self._model()
        if model is None:
            return np.zeros(len(X))
        Z, mean, scale = model
        W = (X - mean) / scale
        R = W - (W @ Z) @ Z.T
        return np.einsum("ij,ij->i", R, R)

    # -- state --------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        return {
            "moments": None if self.moments_ is None else self.moments_.state(),
            "global_basis": self.global_basis_,
            "global_mean": self.global_mean_,
            "global_scale": self.global_scale_,
            "global_round": self.global_round_,
        }

    def _set_state(self, state: Mapping[str, Any]) -> None:
        mom = state["moments"]
        self.moments_ = None if mom is None else StreamingMoments.from_state(mom)
        for name in ("global_basis", "global_mean", "global_scale"):
            val = state[name]
            setattr(self, name + "_", None if val is None else np.asarray(val, dtype=np.float64).copy())
        self.global_round_ = int(state["global_round"])
        self._cache = None
