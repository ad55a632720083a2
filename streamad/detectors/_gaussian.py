"""Gaussian anomaly detection on windows of a stream: Mahalanobis distance with shrinkage."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import linalg

from ..base import BaseDetector, ConfigError
from ..windows import RingBuffer

__all__ = ["Gaussian"]

_F64 = np.dtype(np.float64)


class Gaussian(BaseDetector):
    """Mahalanobis distance of the newest window to one Gaussian fitted online to normal data.

    "Gaussian AD" (Rippel et al., 2020-21) models normal data with a single multivariate
    Gaussian whose covariance is shrunk towards a scaled identity, and scores by Mahalanobis
    distance. Here the feature vector is the window of the last ``window`` records (each
    with ``d`` features), so the Gaussian lives in ``window * d`` dimensions.

    Two adaptations make this a streaming detector that costs O(window * d^2) memory per
    key instead of O((window * d)^2):

    - The series is taken as (locally) stationary, so the window's covariance is block
      Toeplitz: it is fixed by the ``window`` lagged covariances ``Gamma(k)`` (``d x d`` each),
      accumulated online with optional exponential forgetting (``halflife``).
    - The score is the part of the window's squared Mahalanobis distance that the newest
      record adds: the Mahalanobis norm of its innovation, ``x_t`` minus its conditional
      mean given the previous ``window - 1`` records. An anomaly is flagged when it arrives
      instead of for the ``window`` steps it stays inside the window. With ``window=1``
      this is the plain Mahalanobis distance of the record's values.

    The covariance is shrunk towards ``(tr S / p) I`` with the oracle-approximating shrinkage
    intensity (Chen et al., 2010), a refinement of Ledoit-Wolf's that needs only ``S`` and
    the sample count, so it is available online. The conditional model is refitted after
    1, 2, 4, ... records and then every ``refit_every`` records.

    >>> import numpy as np
    >>> t = np.arange(600)
    >>> x = np.sin(2 * np.pi * t / 25) + 0.05 * np.random.default_rng(0).normal(size=600)
    >>> det = Gaussian(window=30)
    >>> det.learn_many(x[:, None])
    >>> normal = det.score_one({"value": float(np.sin(2 * np.pi * 600 / 25))})
    >>> spike = det.score_one({"value": 3.0})
    >>> normal < 4 < spike
    True
    """

    name = "gaussian"

    def __init__(self, window: int = 32, halflife: float | None = None, refit_every: int = 100,
                 max_dim: int = 2000):
        if int(window) < 1:
            raise ConfigError(f"gaussian window must be at least 1, got {window}")
        if halflife is not None and float(halflife) <= 0:
            raise ConfigError(f"gaussian halflife must be positive, got {halflife}")
        if int(refit_every) < 1:
            raise ConfigError(f"gaussian refit_every must be at least 1, got {refit_every}")
        self.window = window
        self.halflife = halflife
        self.refit_every = refit_every
        self.max_dim = max_dim

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"window": 8, "refit_every": 16}

    # -- allocation ------------------------------------------------------------------
    def _on_features(self, d: int) -> None:
        w = int(self.window)
        if (w - 1) * d > int(self.max_dim):
            raise ConfigError(f"gaussian window={w} with {d} features needs a {(w - 1) * d}-dim "
                              f"conditional model, over max_dim={self.max_dim}; use a shorter window")
        self._d = d
        self._decay = 1.0 if self.halflife is None else 0.5 ** (1.0 / float(self.halflife))
        self._hist = RingBuffer(w, d)      # the last w shifted records, current one included
        self._shift: np.ndarray | None = None
        self._n = 0.0                      # (discounted) number of records learned
        self._sum = np.zeros(d)            # sum of shifted records
        self._cross = np.zeros((w, d, d))  # cross[k] = sum_t x_t x_{t-k}^T
        self._count = 0
        self._mu = np.zeros(d)
        self._coef = np.zeros((w - 1, d, d))  # conditional mean: sum_k coef[k-1] @ lag_k
        self._prec = np.eye(d)                # inverse innovation covariance
        self._fitted = False
        self._refit_n = int(self.refit_every)
        release = getattr(self, "_release", None)
        if release is not None:  # set up again: give the old row of the store back
            release()
            self._release = None
        if d == 1:  # the buffers live in a row of the store of this window length
            self._slab, self._slot = _Slab.take(w, self)
            self._release = weakref.finalize(self, self._slab.release, self._slot)
            self._bind()
        # the keys that take a cross-key step together in process_keys (None: never, each key
        # runs on its own); univariate keys share a step only within one store
        self._step_group = None if w == 1 or self._decay != 1.0 else self._slab if d == 1 else (w, d)

    def _bind(self) -> None:
        """Point the univariate buffers at this detector's row of its ``_Slab`` (again after
        the store grows). The arrays are views: every in-place update is one of the row."""
        slab, i, w = self._slab, self._slot, int(self.window)
        self._hist._data = slab.hist[i].reshape(2 * w, 1)
        self._cross = slab.cross[i].reshape(w, 1, 1)
        self._sum = slab.sum[i:i + 1]

    def __reduce__(self):
        # copies (copy, deepcopy, pickle) go through the state: a copy of the views would
        # share this detector's row of the store
        return _from_state, (self.state_dict(),)

    def _refit_due(self, c: int) -> bool:
        r = self._refit_n
        return c % r == 0 or (c < r and c & (c - 1) == 0)

    # -- learning --------------------------------------------------------------------
    def _learn(self, v: np.ndarray) -> None:
        if self._shift is None:
            self._shift = v.copy()  # sums of values near zero do not lose precision
            self._univariate_cache()
        x = v - self._shift
        if self._decay != 1.0:
            self._n *= self._decay
            self._sum *= self._decay
            self._cross *= self._decay
        self._n += 1.0
        self._sum += x
        self._hist.push(x)
        recent = self._hist.values()[::-1]  # lag 0 (this record) first
        m = len(recent)
        if self._d == 1:
            self._cross[:m, 0, 0] += x[0] * recent[:, 0]
        else:
            self._cross[:m] += x[None, :, None] * recent[:, None, :]
        self._count += 1
        if self._refit_due(self._count):
            self._refit()

    def learn_many(self, X: np.ndarray) -> None:
        self._run(self._mat(X), score=False)

    def process_many(self, X: np.ndarray, learn: bool = True) -> np.ndarray:
        X = self._mat(X)
        if not learn:
            out = np.empty(len(X))
            for i, v in enumerate(X):
                out[i] = self._score(v)
                self._observe(v)
            return out
        return self._run(X, score=True)

    def _run(self, X: np.ndarray, score: bool) -> np.ndarray:
        """Score-then-learn over the rows of X, vectorised between refits.

        Between two refits the conditional model is fixed, so a stretch of records can be
        scored and folded into the lag sums with a few array operations instead of a
        Python loop; the results equal the record-by-record path up to rounding.
        """
        out = np.empty(len(X))
        w, i, n = int(self.window), 0, len(X)
        while i < n:
            if self._shift is None or self._hist.size < w or self._decay != 1.0:
                if score:
                    out[i] = self._score(X[i])
                self._learn(X[i])
                i += 1
                continue
            c, r = self._count, self._refit_n
            nxt = c + 1
            while not self._refit_due(nxt):  # the next refit point
                nxt = (nxt // r + 1) * r if nxt >= r else nxt + 1
            j = min(n, i + (nxt - c))
            seg = X[i:j] - self._shift
            hist = np.concatenate([self._hist.values()[1:], seg])  # w-1 lags, then the stretch
            L = j - i
            lagview = np.lib.stride_tricks.sliding_window_view(hist, L, axis=0)  # (w, d, L)
            if score:
                out[i:j] = self._score_stretch(hist, lagview, L)
            self._n += L
            self._sum += seg.sum(axis=0)
            # cross[k] += sum_t x_t x_{t-k}^T; lag k of the stretch is lagview[w-1-k]
            self._cross += np.einsum("ti,kjt->kij", seg, lagview[::-1])
            self._hist.extend(seg[-w:])
            self._count += L
            i = j
            if self._refit_due(self._count):
                self._refit()
        return out

    #: Keys with at most this many rows in a batch take the cross-key step in
    #: :meth:`process_keys`; longer runs are vectorised within the key (:meth:`_run`)...
    keys_step_max = 8
    #: ...unless they are univariate and at least this many keys of the batch have as many
    #: rows: a step costs a fixed ~20 numpy calls plus little per key, so it pays while enough
    #: keys share it (a backlog's batches hold ~15 rows of each of hundreds of keys).
    keys_step_share = 16

    @classmethod
    def process_keys(cls, jobs: list[tuple[Gaussian, np.ndarray]]) -> list[np.ndarray]:
        """``process_many`` for many keys at once, for the service's batches.

        A batch from many keys holds about one record per key, and one ``_run`` per key then
        costs more in numpy call overhead than the arithmetic. Keys with a full window take
        one vectorised step per row position across keys instead: gather each key's lags and
        model constants, score and compute the lag-sum updates in one array operation each,
        then write back; refits due in a step are one batched solve (multivariate keys alike,
        refitting one by one). Same results as ``process_many`` up to rounding.
        """
        out: list[np.ndarray | None] = [None] * len(jobs)
        checked = []
        groups: dict[Any, list[int]] = {}
        for i, (det, X) in enumerate(jobs):
            if not (type(X) is np.ndarray and X.dtype is _F64 and X.ndim == 2  # det._mat(X), skipped
                    and det.features_ is not None and X.shape[1] == det._d):  # for the service's rows
                X = det._mat(X)
            checked.append((det, X))
            g, hist = det._step_group, det._hist
            if g is not None and hist.size == hist.capacity and len(X):
                groups.setdefault(g, []).append(i)
            else:
                out[i] = det._run(X, score=True)
        step_max, share = cls.keys_step_max, cls.keys_step_share
        for g, members in groups.items():
            lens = [len(checked[i][1]) for i in members]
            depth = step_max
            if type(g) is _Slab and len(lens) >= share and max(lens) > step_max:
                depth = max(step_max, sorted(lens, reverse=True)[share - 1])
            if max(lens) > depth:
                for i, n in zip(members, lens, strict=True):
                    if n > depth:
                        det, X = checked[i]
                        out[i] = det._run(X, score=True)
                members = [i for i, n in zip(members, lens, strict=True) if n <= depth]
                if not members:
                    continue
            group = [checked[i] for i in members]
            results = _univariate_steps(g, group) if type(g) is _Slab else _multivariate_steps(*g, group)
            for i, scores in zip(members, results, strict=True):
                out[i] = scores
        return out  # type: ignore[return-value]

    def _score_stretch(self, hist: np.ndarray, lagview: np.ndarray, L: int) -> np.ndarray:
        if not self._fitted:
            return np.zeros(L)
        w = int(self.window)
        mu = self._mu
        e = hist[w - 1:] - mu
        if w > 1:
            pred = np.einsum("kij,kjt->ti", self._coef, lagview[w - 2::-1]) - self._coef.sum(axis=0) @ mu
            e = e - pred
        return np.sqrt(np.maximum(np.einsum("ti,ij,tj->t", e, self._prec, e), 0.0))

    def score_many(self, X: np.ndarray) -> np.ndarray:
        X = self._mat(X)
        if not self._fitted:
            return np.zeros(len(X))
        e = X - self._shift - self._mu - self._context()
        return np.sqrt(np.maximum(np.einsum("ti,ij,tj->t", e, self._prec, e), 0.0))

    def _context(self) -> np.ndarray:
        """Conditional mean of the next record given the window, minus mu (shifted units)."""
        lags = self._hist.values()[::-1][:int(self.window) - 1] - self._mu  # lag 1 first
        m = len(lags)
        if m == 0:
            return np.zeros(self._d)
        if self._d == 1:
            return self._coef[:m, 0, 0] @ lags[:, 0:1]
        return np.einsum("kij,kj->i", self._coef[:m], lags)

    def _refit(self) -> None:
        if self._n < 2:
            return
        d, w = self._d, int(self.window)
        mu = self._sum / self._n
        gam = self._cross / self._n - np.outer(mu, mu)[None]  # biased lag covariances
        gam[0] = 0.5 * (gam[0] + gam[0].T)
        scale = float(_shrink(gam[None], np.array([self._n]))[0])
        if w > 1:
            coef = self._solve(gam, d, w)
        else:
            coef = np.zeros((0, d, d))
        innov = gam[0] - np.einsum("kij,klj->il", coef, gam[1:]) if w > 1 else gam[0]
        innov = 0.5 * (innov + innov.T) + 1e-9 * scale * np.eye(d)
        try:
            prec = linalg.inv(innov)
        except linalg.LinAlgError:
            prec = np.linalg.pinv(innov)
        self._install(mu, coef, prec)

    def _install(self, mu: np.ndarray, coef: np.ndarray, prec: np.ndarray) -> None:
        """Adopt a fitted model, unless it is not finite (then the previous one stays)."""
        if not (np.all(np.isfinite(coef)) and np.all(np.isfinite(prec))):
            return
        # contiguous copies: a restored state must give bit-identical products
        self._mu, self._fitted = mu, True
        self._coef, self._prec = np.ascontiguousarray(coef), np.ascontiguousarray(prec)
        self._univariate_cache()

    def _univariate_cache(self) -> None:
        """Scalar constants of a univariate model for the per-record score, and its row of the
        store for the cross-key step: (shift, mu, sum(coef) * mu, sqrt(precision)) and the
        coefficients oldest lag first; zeros (score 0) while unfitted."""
        if self._d != 1 or self._shift is None:
            return
        slab, i = self._slab, self._slot
        if not self._fitted:
            slab.consts[i] = (float(self._shift[0]), 0.0, 0.0, 0.0)
            slab.coef_rev[i] = 0.0
            return
        self._coef1 = np.ascontiguousarray(self._coef[:, 0, 0])
        self._mu0 = float(self._mu[0])
        self._shift0 = float(self._shift[0])
        self._coef_mu = float(self._coef1.sum()) * self._mu0
        self._prec_sqrt = float(np.sqrt(max(self._prec[0, 0], 0.0)))
        slab.consts[i] = (self._shift0, self._mu0, self._coef_mu, self._prec_sqrt)
        slab.coef_rev[i] = self._coef1[::-1]  # oldest lag first, as the window is stored

    @staticmethod
    def _solve(gam: np.ndarray, d: int, w: int) -> np.ndarray:
        """Coefficients of the best linear predictor of x_t from its w-1 predecessors."""
        try:
            if d == 1:
                c = gam[:w - 1, 0, 0]
                phi = linalg.solve_toeplitz(c, gam[1:w, 0, 0], check_finite=False)
                return phi.reshape(w - 1, 1, 1)
            m = w - 1
            blocks = np.empty((m, m, d, d))
            for i in range(m):
                for j in range(m):
                    blocks[i, j] = gam[j - i] if j >= i else gam[i - j].T
            big = blocks.transpose(0, 2, 1, 3).reshape(m * d, m * d)
            rhs = np.concatenate([gam[k].T for k in range(1, w)], axis=0)
            sol = linalg.solve(big, rhs, assume_a="sym", check_finite=False)
            return sol.reshape(m, d, d).transpose(0, 2, 1)
        except (linalg.LinAlgError, ValueError):
            return np.zeros((w - 1, d, d))

    # -- scoring ---------------------------------------------------------------------
    def _score(self, v: np.ndarray) -> float:
        if not self._fitted:
            return 0.0
        if self._d == 1 and self._hist.size == self._hist.capacity:  # the hot univariate path
            lags = self._hist.values()[:0:-1, 0]  # lag 1 first
            e = float(v[0]) - self._shift0 - self._mu0 - (float(self._coef1 @ lags) - self._coef_mu)
            return abs(e) * self._prec_sqrt
        e = v - self._shift - self._mu - self._context()
        return float(np.sqrt(max(float(e @ self._prec @ e), 0.0)))

    # -- state -----------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        if self.features_ is None:
            return {}
        return {
            "history": self._hist.values().copy(),
            "shift": self._shift, "n": self._n, "sum": self._sum.copy(), "cross": self._cross.copy(),
            "count": self._count, "mu": self._mu.copy(), "coef": self._coef.copy(),
            "prec": self._prec.copy(), "fitted": self._fitted,
        }

    def _set_state(self, state: Mapping[str, Any]) -> None:
        if self.features_ is None:
            return
        d = self._d
        for row in np.asarray(state["history"], dtype=np.float64).reshape(-1, d):
            self._hist.push(row)
        self._shift = None if state["shift"] is None else np.asarray(state["shift"], dtype=np.float64)
        self._n = float(state["n"])
        self._sum[...] = np.asarray(state["sum"], dtype=np.float64)  # in place: may be a row of the store
        self._cross[...] = np.asarray(state["cross"], dtype=np.float64)
        self._count = int(state["count"])
        self._mu = np.asarray(state["mu"], dtype=np.float64).copy()
        self._coef = np.asarray(state["coef"], dtype=np.float64).copy()
        self._prec = np.asarray(state["prec"], dtype=np.float64).copy()
        self._fitted = bool(state["fitted"])
        self._univariate_cache()


def _univariate_steps(slab: _Slab, jobs: list[tuple[Gaussian, np.ndarray]]) -> list[np.ndarray]:
    """Score-then-learn the rows of univariate Gaussian detectors with full windows of
    length ``w``, one row position at a time across all of them (see ``process_keys``).

    A service batch holds about one row per key, so the cost per key of this step is most of
    the cost of a small batch. The detectors' windows, lag sums and model constants are rows
    of one store (``_Slab``), so each step gathers, scores and writes back with one array
    operation over all keys; the loop per key moves only the counters."""
    w = slab.w
    dets = [det for det, _ in jobs]
    slots = np.array([det._slot for det in dets])
    lens = [len(X) for _, X in jobs]
    steps = max(lens)
    values = [X[:, 0] for _, X in jobs] if steps > 1 else [np.concatenate([X for _, X in jobs])[:, 0]]
    scores = np.empty((steps, len(jobs)))
    hist, cross, consts_all, coef_all, sums = slab.hist, slab.cross, slab.consts, slab.coef_rev, slab.sum
    span = np.arange(1, w)
    all_hists, shortest = [det._hist for det in dets], min(lens)
    for s in range(steps):
        if s < shortest:  # every key has a row at this position
            act = slice(None)
            act_dets, hists, rows = dets, all_hists, slots
            xa = np.array([v[s] for v in values]) if steps > 1 else values[0]
        else:
            idx = [j for j, n in enumerate(lens) if n > s]
            act = np.array(idx)
            act_dets = [dets[j] for j in idx]
            hists = [det._hist for det in act_dets]
            rows = slots[act]
            xa = np.array([values[j][s] for j in idx])
        heads = np.array([h._head for h in hists])
        # the window without its oldest row (lags w-1 .. 1), shifted, oldest first
        lags = hist[rows[:, None], heads[:, None] + span]
        consts = consts_all[rows]  # (shift, mu, sum(coef) * mu, sqrt(precision)); 0 while unfitted
        sa = consts[:, 0]
        e = xa - sa - consts[:, 1] - (np.einsum("kl,kl->k", coef_all[rows], lags) - consts[:, 2])
        scores[s, act] = np.abs(e) * consts[:, 3]
        xs = xa - sa
        # cross[k] += x_t * x_{t-k}: lag 0 is the new record, then the window newest first
        cross[rows] += xs[:, None] * np.concatenate([xs[:, None], lags[:, ::-1]], axis=1)
        sums[rows] += xs
        hist[rows, heads] = xs  # RingBuffer.replace_oldest of every window (all are full)
        hist[rows, heads + w] = xs
        heads += 1
        heads[heads == w] = 0
        due = []
        for det, h, hd in zip(act_dets, hists, heads.tolist(), strict=True):
            det._n += 1.0
            h._head = hd
            c = det._count = det._count + 1
            r = det._refit_n
            if c % r == 0 or (c < r and c & (c - 1) == 0):  # _refit_due, inlined
                due.append(det)
        if due:
            _refit_univariate(w, due)
    if steps == 1:  # one row per key (the usual service batch): views of the step's scores
        row = scores[0]
        return [row[r:r + 1] for r in range(len(jobs))]
    return [scores[:n, j].copy() for j, n in enumerate(lens)]


class _Slab:
    """The buffers of every univariate ``Gaussian`` with one window length ``w``, as rows of
    shared arrays (structure of arrays), so that the cross-key step of a service batch is a few
    array operations over all its keys instead of a few per key.

    Each detector takes a row when its dimension becomes known and holds views of it (its ring
    buffer's storage, lag sums and sum); the model constants of the cross-key step are written
    to the row at each refit. A row is given back when its detector is garbage; when the
    arrays grow, the live detectors are pointed at the new ones.

    Each thread has its own stores, so detectors made and used in one thread never see a store
    grow under them while another thread makes detectors (a detector made in one thread and
    used in another while the first makes more is not safe).
    """

    _local = threading.local()
    _lock = threading.RLock()  # re-entrant: a row's release may run in a collection inside take

    def __init__(self, w: int):
        self.w = w
        self.hist = np.zeros((0, 2 * w))       # RingBuffer storage: the window, twice
        self.cross = np.zeros((0, w))          # lag sums
        self.sum = np.zeros(0)                 # sum of shifted records
        self.consts = np.zeros((0, 4))         # see Gaussian._univariate_cache
        self.coef_rev = np.zeros((0, w - 1))   # conditional-mean coefficients, oldest lag first
        self.owners: list[weakref.ref | None] = []
        self.free: list[int] = []

    @classmethod
    def take(cls, w: int, det: Gaussian) -> tuple[_Slab, int]:
        """This thread's store for window length ``w`` and a zeroed row of it for ``det``
        (which then calls its ``_bind``)."""
        stores = cls._local.__dict__.setdefault("by_window", {})
        slab = stores.get(w) or stores.setdefault(w, cls(w))
        with cls._lock:
            if not slab.free:
                slab._grow()
            i = slab.free.pop()
            for a in (slab.hist, slab.cross, slab.sum, slab.consts, slab.coef_rev):
                a[i] = 0.0
            slab.owners[i] = weakref.ref(det)
        return slab, i

    def release(self, i: int) -> None:
        with self._lock:
            self.owners[i] = None
            self.free.append(i)

    def _grow(self) -> None:
        n = len(self.owners)
        cap = max(64, 2 * n)
        for name in ("hist", "cross", "sum", "consts", "coef_rev"):
            old = getattr(self, name)
            new = np.zeros((cap, *old.shape[1:]))
            new[:n] = old
            setattr(self, name, new)
        self.owners.extend([None] * (cap - n))
        self.free.extend(range(cap - 1, n - 1, -1))  # the lowest row is taken first
        for ref in self.owners[:n]:
            det = ref() if ref is not None else None
            if det is not None:
                det._bind()


def _from_state(state: Mapping[str, Any]) -> Gaussian:
    return Gaussian.from_state_dict(state)


def _refit_univariate(w: int, dets: list[Gaussian]) -> None:
    """``_refit`` of many univariate detectors with windows of length ``w`` in a few array
    operations: one batched solve of their Toeplitz systems instead of one solve per key.
    Keys that start together reach their refit counts in the same batch, so a service's
    refits come in storms of one per key."""
    dets = [d for d in dets if d._n >= 2]
    if not dets:
        return
    n = np.array([d._n for d in dets])
    mu = np.array([d._sum[0] for d in dets]) / n
    gam = np.stack([d._cross[:, 0, 0] for d in dets]) / n[:, None] - (mu * mu)[:, None]
    scale = _shrink(gam[:, :, None, None], n)  # in place, through the view
    m = w - 1
    lag = np.abs(np.arange(m)[:, None] - np.arange(m)[None, :])
    try:
        coef = np.linalg.solve(gam[:, lag], gam[:, 1:w, None])[:, :, 0]  # (k, w-1), lag 1 first
    except np.linalg.LinAlgError:
        for d in dets:  # a singular system: each key on its own, as before
            d._refit()
        return
    innov = gam[:, 0] - np.einsum("kl,kl->k", coef, gam[:, 1:w]) + 1e-9 * scale
    with np.errstate(divide="ignore"):
        prec = 1.0 / innov
    for r, d in enumerate(dets):
        d._install(mu[r:r + 1].copy(), coef[r].reshape(m, 1, 1), np.array([[prec[r]]]))


def _shrink(gam: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Shrink the block-Toeplitz covariances of ``K`` windows towards a scaled identity, in
    place, with the oracle-approximating intensity (Chen et al., 2010); ``gam`` is ``(K, w,
    d, d)`` (lag covariances), ``n`` the ``K`` sample counts. Returns the scales ``tr S / p``."""
    w, d = gam.shape[1], gam.shape[2]
    p = w * d
    tr_s = w * np.trace(gam[:, 0], axis1=1, axis2=2)
    weights = 2.0 * (w - np.arange(w, dtype=np.float64))
    weights[0] = w
    tr_s2 = np.einsum("kmij,kmij->km", gam, gam) @ weights
    num = (1.0 - 2.0 / p) * tr_s2 + tr_s ** 2
    den = (n + 1.0 - 2.0 / p) * (tr_s2 - tr_s ** 2 / p)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(den <= 0, 1.0, np.clip(num / den, 0.0, 1.0))
    scale = np.maximum(tr_s / p, 1e-12)
    gam *= (1.0 - rho)[:, None, None, None]
    gam[:, 0] += (rho * scale)[:, None, None] * np.eye(d)
    return scale


def _multivariate_steps(w: int, d: int, jobs: list[tuple[Gaussian, np.ndarray]]) -> list[np.ndarray]:
    """``_univariate_steps`` for keys with ``d`` > 1 features: the same step across keys with
    vectors and matrices (a key's refit, a block-Toeplitz solve, stays its own)."""
    out = [np.empty(len(X)) for _, X in jobs]
    for s in range(max(len(X) for _, X in jobs)):
        act = [j for j, (_, X) in enumerate(jobs) if len(X) > s]
        k = len(act)
        x, shift, mu = np.empty((k, d)), np.empty((k, d)), np.zeros((k, d))
        lags = np.empty((k, w - 1, d))      # shifted, oldest first
        coef = np.zeros((k, w - 1, d, d))   # the same order; zero while unfitted
        prec = np.zeros((k, d, d))          # zero (score 0) while unfitted
        for r, j in enumerate(act):
            det, X = jobs[j]
            x[r] = X[s]
            lags[r] = det._hist.last(w - 1)
            shift[r] = det._shift
            if det._fitted:
                coef[r] = det._coef[::-1]
                mu[r] = det._mu
                prec[r] = det._prec
        e = x - shift - mu - np.einsum("klij,klj->ki", coef, lags - mu[:, None, :])
        scores = np.sqrt(np.maximum(np.einsum("ki,kij,kj->k", e, prec, e), 0.0)).tolist()
        xs = x - shift
        # cross[m] += x_t x_{t-m}^T: lag 0 is the new record, then the window newest first
        incr = np.einsum("ki,kmj->kmij", xs, np.concatenate([xs[:, None, :], lags[:, ::-1]], axis=1))
        for r, j in enumerate(act):
            det = jobs[j][0]
            out[j][s] = scores[r]
            det._n += 1.0
            det._sum += xs[r]
            det._hist.replace_oldest(xs[r])
            det._cross += incr[r]
            det._count += 1
            if det._refit_due(det._count):
                det._refit()
    return out
