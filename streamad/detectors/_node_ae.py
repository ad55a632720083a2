"""A per-node autoencoder over many metrics (Borghesi et al., IAAI 2019)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from ..base import BaseDetector, ConfigError, NotFittedError, StateError

__all__ = ["NodeAutoencoder"]

_SCORES = ("max", "mean")


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread: for layers this small, more threads only add
    synchronisation (several times slower when the cores are busy). Restores the setting."""
    prev = torch.get_num_threads()
    if prev != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if prev != 1:
            torch.set_num_threads(prev)


class _Net(nn.Module):
    """n -> hidden (ReLU) -> n (linear)."""

    def __init__(self, n: int, hidden: int, generator: torch.Generator):
        super().__init__()
        # skip_init: the weights come from our own generator, not torch's global one
        self.enc = nn.utils.skip_init(nn.Linear, n, hidden)
        self.dec = nn.utils.skip_init(nn.Linear, hidden, n)
        for layer in (self.enc, self.dec):
            nn.init.xavier_uniform_(layer.weight, generator=generator)  # Keras' glorot_uniform
            nn.init.zeros_(layer.bias)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.enc(z))
        return self.dec(h), h


class NodeAutoencoder(BaseDetector):
    """Reconstruction error of an autoencoder trained on a node's healthy samples.

    The model of Borghesi et al. ("Anomaly Detection using Autoencoders in High Performance
    Computing Systems", IAAI 2019): each sample is the vector of a node's ``n`` metrics,
    standardised with the mean and spread of the training data; one dense layer of
    ``hidden_factor * n`` ReLU units with L1 activity regularisation, a linear output of
    ``n`` units; Adam on the mean absolute error, mini-batches of 64. The score is the
    largest (``score="max"``, their choice) or the mean absolute per-metric error, in
    training standard deviations; with ``error_q`` (our addition, ``None`` for the paper's
    score) each metric's error is further divided by its ``error_q`` quantile on the
    training samples, so a metric that is always hard to reconstruct does not decide the
    maximum. :meth:`explain` names the metrics with the largest errors.

    **Denoising** (our addition; ``input_noise=0`` is the paper's plain autoencoder): during
    training each standardised input gets Gaussian noise of standard deviation
    ``input_noise`` and the model reconstructs the clean sample. A hidden layer ten times
    wider than its input can otherwise drift towards copying its input, faults included.
    On the simulated fleets (benchmarks/results/hpc_sim.md) 0.05, picked on a development
    fleet, raised F1 and AUC-PR on the development fleet and on both reported ones.

    **Per-node or shared.** Used per key (the service and ``streamad bench --dataset
    hpc-sim`` keep one instance per node), each node gets its own model, as in the paper.
    One instance fed every node's samples is the shared model; it is cheaper, but must
    absorb node-to-node differences as "normal".

    **Learning.** :meth:`fit` trains from scratch on a batch (the paper's offline training)
    for ``epochs`` passes. Without input noise keep them few (the paper's 30): a layer this
    wide then learns to reconstruct faults too when trained long; with it, 100 epochs were
    better on every simulated fleet (benchmarks/results/hpc_sim.md).
    In a stream, ``learn_one``/``learn_many`` buffer samples; once ``warmup`` samples have
    arrived the model is fitted on them, and after that every ``finetune_every`` samples it
    is fine-tuned for ``finetune_epochs`` on the last ``memory`` samples whose score was at
    most ``threshold_``, so a fault does not become normal. ``learn_many`` is exactly
    ``learn_one`` row by row.

    **Threshold.** ``threshold_`` is the ``threshold_q`` quantile of the errors on the
    training samples (by default their maximum: above anything seen healthy), chosen
    without labels. The detector itself only uses it to keep
    flagged samples out of fine-tuning; streaming thresholds may be put on top.

    All randomness (initial weights, mini-batch order) comes from a private
    ``torch.Generator`` seeded with ``seed``, so equal seeds and data give equal scores,
    and torch's global random state is left alone. Training and scoring run on one torch
    thread, which is fastest for a model this small.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> load = rng.uniform(0, 1, (320, 1))
    >>> X = np.hstack([load, 2 * load + 0.01 * rng.normal(size=(320, 1)), 1 - load])
    >>> det = NodeAutoencoder(epochs=30, seed=0)
    >>> det.fit(X)
    >>> ok = det.score_one({"x0": 0.5, "x1": 1.0, "x2": 0.5})
    >>> bad = det.score_one({"x0": 0.5, "x1": 0.0, "x2": 0.5})
    >>> ok < det.threshold_ < bad, det.explain({"x0": 0.5, "x1": 0.0, "x2": 0.5}, top=1)[0][0]
    (True, 'x1')
    """

    name = "node-ae"

    def __init__(self, hidden_factor: float = 10, epochs: int = 100, batch_size: int = 64,
                 lr: float = 1e-3, l1: float = 1e-5, score: str = "max", warmup: int = 1000,
                 finetune_every: int = 288, finetune_epochs: int = 5, memory: int = 2016,
                 threshold_q: float = 1.0, error_q: float | None = None, input_noise: float = 0.1,
                 seed: int = 0):
        if score not in _SCORES:
            raise ConfigError(f"node-ae score must be one of {_SCORES}, got {score!r}")
        for pname, v, least in (("epochs", epochs, 1), ("batch_size", batch_size, 1),
                                ("warmup", warmup, 2), ("finetune_every", finetune_every, 1),
                                ("finetune_epochs", finetune_epochs, 0), ("memory", memory, 2)):
            if int(v) < least:
                raise ConfigError(f"node-ae {pname} must be at least {least}, got {v}")
        if float(hidden_factor) <= 0 or float(lr) <= 0 or float(l1) < 0:
            raise ConfigError("node-ae needs hidden_factor > 0, lr > 0 and l1 >= 0")
        if not 0 < float(threshold_q) <= 1:
            raise ConfigError(f"node-ae threshold_q must be in (0, 1], got {threshold_q}")
        if error_q is not None and not 0 < float(error_q) <= 1:
            raise ConfigError(f"node-ae error_q must be None or in (0, 1], got {error_q}")
        if not 0 <= float(input_noise) < 10:
            raise ConfigError(f"node-ae input_noise must be in [0, 10), got {input_noise}")
        self.hidden_factor = hidden_factor
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.l1 = l1
        self.score = score
        self.warmup = warmup
        self.finetune_every = finetune_every
        self.finetune_epochs = finetune_epochs
        self.memory = memory
        self.threshold_q = threshold_q
        self.error_q = error_q
        self.input_noise = input_noise
        self.seed = seed
        self._gen = torch.Generator().manual_seed(int(seed))
        self._net: _Net | None = None
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.threshold_: float | None = None
        self.error_scale_: np.ndarray | None = None

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"hidden_factor": 2, "epochs": 3, "warmup": 64, "finetune_every": 32,
                "finetune_epochs": 1, "memory": 64, "batch_size": 32}

    # -- buffers ------------------------------------------------------------------------
    def _on_features(self, d: int) -> None:
        self._cap = max(int(self.warmup), int(self.memory))
        self._recent = np.empty((0, d))
        self._since = 0  # samples learned since the last (fine-)tuning

    def _push(self, X: np.ndarray) -> None:
        self._recent = np.concatenate([self._recent, X])[-self._cap:]

    # -- training -------------------------------------------------------------------------
    def _standardise(self, X: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((X - self.mean_) / self.scale_).astype(np.float32))

    def _train(self, Z: torch.Tensor, epochs: int) -> None:
        net = self._net
        opt = torch.optim.Adam(net.parameters(), lr=float(self.lr))
        n, b, l1, noise = len(Z), int(self.batch_size), float(self.l1), float(self.input_noise)
        net.train()
        with _one_thread():
            for _ in range(int(epochs)):
                order = torch.randperm(n, generator=self._gen)
                for lo in range(0, n, b):
                    z = Z[order[lo:lo + b]]
                    # denoising: reconstruct the clean sample from a jittered one, so the wide
                    # layer cannot settle for copying its input (which would copy faults too)
                    out, h = net(z + noise * torch.randn(z.shape, generator=self._gen) if noise else z)
                    # L1 activity regularisation as Keras applies it: per sample, batch-averaged
                    loss = (out - z).abs().mean() + l1 * h.abs().sum(dim=1).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        net.eval()

    def fit(self, X: np.ndarray, features: list[str] | None = None) -> None:
        """Train from scratch on the rows of ``X`` (healthy samples): standardisation,
        ``epochs`` of training, and ``threshold_`` from the training errors.

        ``features`` names the columns (for ``*_one`` and :meth:`explain`); by default
        they keep the names already learned, else ``x0``, ``x1``, ...
        """
        if features is not None:
            if len(features) != np.shape(X)[-1]:
                raise ConfigError(f"{len(features)} feature names for {np.shape(X)[-1]} columns")
            self._set_features(list(features))
        X = self._mat(X)
        if len(X) < 2:
            raise ConfigError(f"node-ae needs at least 2 samples to fit, got {len(X)}")
        self.mean_ = X.mean(axis=0)
        sd = X.std(axis=0)
        # a metric that never moved in training (swap, a stuck counter) still gets a finite,
        # tight scale, so any later movement stands out
        self.scale_ = np.maximum(sd, 1e-3 * (1.0 + np.abs(self.mean_)))
        d = X.shape[1]
        self._net = _Net(d, max(1, round(float(self.hidden_factor) * d)), self._gen)
        self._train(self._standardise(X), int(self.epochs))
        self.error_scale_ = np.ones(d)
        if self.error_q is not None:
            # some metrics are harder to reconstruct than others (noisy sensors, per-core
            # loads); measuring each metric's error in units of its own usual training error
            # keeps the "max" score from being decided by the hardest healthy metric
            q = np.quantile(self._errors(X), float(self.error_q), axis=0)
            self.error_scale_ = np.maximum(q, max(1e-3, float(np.median(q))))
        self.threshold_ = float(np.quantile(self._scores(X), float(self.threshold_q)))
        self._recent = X[-self._cap:].copy()
        self._since = 0

    def _finetune(self) -> None:
        self._since = 0
        if int(self.finetune_epochs) == 0:
            return
        recent = self._recent[-int(self.memory):]
        keep = recent[self._scores(recent) <= self.threshold_]
        if len(keep):
            self._train(self._standardise(keep), int(self.finetune_epochs))

    def _learn(self, v: np.ndarray) -> None:
        self._learn_block(v[None, :])

    def learn_many(self, X: np.ndarray) -> None:
        X = self._mat(X)
        i = 0
        while i < len(X):
            if self._net is None:
                step = int(self.warmup) - len(self._recent)
            else:
                step = int(self.finetune_every) - self._since
            j = min(len(X), i + max(step, 1))
            self._learn_block(X[i:j])
            i = j

    def _learn_block(self, X: np.ndarray) -> None:
        """Learn rows that reach at most the next training point."""
        if self._net is None:
            self._push(X)
            if len(self._recent) >= int(self.warmup):
                self.fit(self._recent)
            return
        self._push(X)
        self._since += len(X)
        if self._since >= int(self.finetune_every):
            self._finetune()

    def process_many(self, X: np.ndarray, learn: bool = True) -> np.ndarray:
        X = self._mat(X)
        if not learn:
            return self.score_many(X)
        out = np.empty(len(X))
        i = 0
        while i < len(X):  # score a stretch with a fixed model, then learn it
            if self._net is None:
                step = int(self.warmup) - len(self._recent)
            else:
                step = int(self.finetune_every) - self._since
            j = min(len(X), i + max(step, 1))
            out[i:j] = self.score_many(X[i:j])
            self._learn_block(X[i:j])
            i = j
        return out

    # -- scoring --------------------------------------------------------------------------
    def _errors(self, X: np.ndarray) -> np.ndarray:
        Z = self._standardise(X)
        with torch.no_grad(), _one_thread():
            out, _ = self._net(Z)
        return (out - Z).abs().double().numpy() / self.error_scale_

    def _scores(self, X: np.ndarray) -> np.ndarray:
        e = self._errors(X)
        return e.max(axis=1) if self.score == "max" else e.mean(axis=1)

    def _score(self, v: np.ndarray) -> float:
        if self._net is None:
            self.warmup_scores_ += 1
            return 0.0
        return float(self._scores(v[None, :])[0])

    def score_many(self, X: np.ndarray) -> np.ndarray:
        X = self._mat(X)
        if self._net is None:
            self.warmup_scores_ += len(X)
            return np.zeros(len(X))
        return self._scores(X)

    def feature_errors(self, X: np.ndarray) -> np.ndarray:
        """Absolute reconstruction error per metric, (n, d): in training standard deviations,
        divided by the metric's ``error_q`` quantile of training errors unless it is None."""
        X = self._mat(X)
        if self._net is None:
            raise NotFittedError("node-ae has not been trained yet")
        return self._errors(X)

    def explain(self, x: Mapping[str, float], top: int = 3) -> list[tuple[str, float]]:
        """The ``top`` metrics with the largest reconstruction errors, largest first."""
        e = self.feature_errors(self._vec(x)[None, :])[0]
        order = np.argsort(-e, kind="stable")[:int(top)]
        return [(self.features_[j], float(e[j])) for j in order]

    # -- state ----------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rng": self._gen.get_state().numpy().copy()}
        if self.features_ is None:
            return state
        state.update(recent=self._recent.copy(), since=self._since)
        if self._net is not None:
            state.update(mean=self.mean_.copy(), scale=self.scale_.copy(),
                         threshold=self.threshold_, error_scale=self.error_scale_.copy(),
                         weights={k: v.detach().numpy().copy()
                                  for k, v in self._net.state_dict().items()})
        return state

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._gen = torch.Generator()
        self._gen.set_state(torch.from_numpy(np.asarray(state["rng"], dtype=np.uint8).copy()))
        self._net, self.mean_, self.scale_, self.threshold_ = None, None, None, None
        self.error_scale_ = None
        if self.features_ is None:
            return
        d = len(self.features_)
        self._recent = np.asarray(state["recent"], dtype=np.float64).reshape(-1, d).copy()
        self._since = int(state["since"])
        if "weights" in state:
            self.mean_ = np.asarray(state["mean"], dtype=np.float64).copy()
            self.scale_ = np.asarray(state["scale"], dtype=np.float64).copy()
            self.threshold_ = float(state["threshold"])
            self.error_scale_ = np.asarray(state["error_scale"], dtype=np.float64).copy()
            w = {k: torch.from_numpy(np.asarray(v, dtype=np.float32).copy())
                 for k, v in state["weights"].items()}
            hidden = w["enc.weight"].shape[0]
            if w["enc.weight"].shape[1] != d:
                raise StateError(f"node-ae weights are for {w['enc.weight'].shape[1]} metrics, "
                                 f"the state names {d}")
            self._net = _Net(d, hidden, torch.Generator())
            self._net.load_state_dict(w)
            self._net.eval()
