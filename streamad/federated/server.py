"""The federated PCA server: opens rounds, admits signed client updates, aggregates them
into one global subspace and publishes it, signed. Transport-agnostic (a :class:`FedChannel`).

One round ``r``:

1. the server publishes the global model ``G_r`` (basis ``Z_r``, pooled standardisation,
   round id ``r``), signed with its key — this also opens round ``r``;
2. clients answer with signed :class:`~.protocol.Update` messages for round ``r``;
3. the :class:`~.protocol.UpdateGate` refuses anything malformed, unknown, forged, replayed,
   for another round, mis-shaped, non-finite or non-orthonormal (each refusal is logged with
   its reason); a client counts once per round (its latest update);
4. once ``min_clients`` updates arrived and either every known client answered or
   ``round_timeout_s`` passed, the server aggregates (robust, rotation-invariant:
   :func:`~.grassmann.aggregate`), pools the clients' moments, checkpoints and publishes
   ``G_{r+1}``. Without enough clients by the timeout the round stays open and ``G_r`` is
   re-published (late and dropped clients never block the federation for good).

Idle. With no new data the rounds would go on 2-3 times a second for ever, each adding
messages to both topics. When a round moved the subspace less than ``idle_tolerance_deg``
(the largest principal angle) and no client reported new records (its sample count is the
one of its previous update), the next round opens idle: ``G_{r+1}`` is published once,
marked ``idle``, and neither re-published nor waited on. A client answers it only once it
has learned new records; the first such update wakes the round up (re-published without the
mark, so every client answers), and rounds go on until the subspace settles again.

Restarts. The checkpoint holds the round state and the position in the updates topic after
the updates it reflects; a restarted server reads from there, so the updates clients sent
for the open round while it was down still count.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import _state
from .channel import FedChannel
from .grassmann import aggregate, medoid, pool_moments, principal_angles, random_basis
from .protocol import GlobalModel, KeyRing, Rejected, Update, UpdateGate, sign_global

__all__ = ["FedServer", "ServerConfig"]

log = logging.getLogger("streamad.federated")


@dataclass
class ServerConfig:
    dim: int
    k: int = 2
    min_clients: int = 2
    round_timeout_s: float = 10.0
    rounds: int | None = None  # stop after this many rounds (None: run until stopped)
    checkpoint: str | None = None
    seed: int = 0
    robust: bool = True
    republish_s: float = 2.0  # re-send the open round's model this often (late joiners)
    known_clients: list[str] = field(default_factory=list)
    # go idle after a round that moved the subspace less than this (degrees) without new data
    idle_tolerance_deg: float = 1e-3


class FedServer:
    def __init__(self, config: ServerConfig, ring: KeyRing, channel: FedChannel):
        self.config, self.ring, self.channel = config, ring, channel
        self.gate = UpdateGate(ring, config.dim, config.k)
        self.round = 0
        self.basis = random_basis(config.dim, config.k, config.seed)
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.contributors: list[str] = []
        self.n_samples = 0
        self.dual_scale: dict[str, float] = {}
        self.pending: dict[str, Update] = {}
        self.rejected = 0
        self.history: list[np.ndarray] = []
        self.samples_seen: dict[str, int] = {}  # each client's sample count in its last counted update
        self.idle = False
        self._opened_at = 0.0
        self._published_at = 0.0
        self.stopping = False
        if config.checkpoint and Path(config.checkpoint).exists():
            self._restore(config.checkpoint)
        self._mark()

    # -- state -----------------------------------------------------------------------
    def _mark(self) -> None:
        """Remember where the open round starts: the position in the updates topic and the
        nonces seen so far. A checkpoint holds these, not the ones of updates admitted since
        (a restart reads those updates again and must not refuse them as replays)."""
        self._position_at_open = self.channel.updates_position()
        self._gate_at_open = {c: list(n) for c, n in self.gate.state().items()}

    def _tree(self) -> dict:
        return {"format": 1, "round": self.round, "basis": self.basis, "mean": self.mean, "scale": self.scale,
                "contributors": list(self.contributors), "n_samples": self.n_samples, "gate": self._gate_at_open,
                "dual_scale": dict(self.dual_scale), "samples_seen": dict(self.samples_seen), "idle": self.idle,
                "updates_position": self._position_at_open}

    def _restore(self, path: str) -> None:
        tree = _state.load(path)
        self.round = int(tree["round"])
        self.basis = np.asarray(tree["basis"], dtype=np.float64)
        self.mean = None if tree["mean"] is None else np.asarray(tree["mean"], dtype=np.float64)
        self.scale = None if tree["scale"] is None else np.asarray(tree["scale"], dtype=np.float64)
        self.contributors = list(tree["contributors"])
        self.n_samples = int(tree["n_samples"])
        self.dual_scale = {str(c): float(v) for c, v in (tree.get("dual_scale") or {}).items()}
        self.gate.load(tree["gate"])
        self.samples_seen = {str(c): int(v) for c, v in (tree.get("samples_seen") or {}).items()}
        self.idle = bool(tree.get("idle", False))
        position = tree.get("updates_position")
        if position is not None:  # read what clients sent while this server was down
            self.channel.seek_updates(int(position))
        log.info("event=fed_restored round=%d updates_position=%s idle=%s checkpoint=%s", self.round, position,
                 str(self.idle).lower(), path)

    def _checkpoint(self) -> None:
        if self.config.checkpoint:
            _state.save_atomic(self.config.checkpoint, self._tree())

    # -- rounds ----------------------------------------------------------------------
    def publish(self) -> None:
        msg = GlobalModel(self.round, self.basis, self.mean, self.scale, self.contributors, self.n_samples,
                          self.dual_scale, self.idle)
        self.channel.publish_global(sign_global(msg, self.ring))
        self._published_at = time.monotonic()

    def open(self) -> None:
        self.pending = {}
        self._opened_at = time.monotonic()
        self.publish()
        log.info("event=fed_round_open round=%d idle=%s", self.round, str(self.idle).lower())

    def step(self, poll_s: float = 0.2) -> bool:
        """Admit what arrived; close the round when it can be closed. True when a round closed."""
        for raw in self.channel.poll_updates(poll_s):
            try:
                upd = self.gate.check(raw, expected_round=self.round)
            except Rejected as e:
                self.rejected += 1
                log.warning("event=fed_update_rejected round=%d reason=%s", self.round, _quote(e.reason))
                continue
            self.pending[upd.client] = upd
            log.info("event=fed_update_admitted round=%d client=%s n_samples=%d", self.round, upd.client,
                     upd.n_samples)
            if self.idle:  # a client has new data: every client answers this round now
                self.idle = False
                self._opened_at = time.monotonic()
                self.publish()
                log.info("event=fed_wake round=%d client=%s", self.round, upd.client)
        if self.idle:
            return False
        now = time.monotonic()
        everyone = set(self.ring.clients) | set(self.config.known_clients)
        enough = len(self.pending) >= self.config.min_clients
        if enough and (set(self.pending) >= everyone or now - self._opened_at >= self.config.round_timeout_s):
            self._close()
            return True
        if now - self._published_at >= self.config.republish_s:
            if now - self._opened_at >= self.config.round_timeout_s:
                log.warning("event=fed_round_waiting round=%d clients=%d min_clients=%d", self.round,
                            len(self.pending), self.config.min_clients)
                self._opened_at = now
            self.publish()
        return False

    def _close(self) -> None:
        ups = list(self.pending.values())
        bases = [u.basis for u in ups]
        before = self.basis
        # Before any round closed the current basis is random: judge updates against their
        # medoid instead, so a poisoned first update cannot pass for a normal one.
        first = not (self.history or self.round > 0)
        reference = medoid(bases) if first else self.basis
        agg = aggregate(reference, bases, [u.n_samples for u in ups], robust=self.config.robust)
        mom = pool_moments([(u.n_samples, u.mean, u.var) for u in ups])
        self.basis, self.mean, self.scale = agg.basis, mom.mean, mom.scale
        self.contributors = sorted(u.client for u in ups)
        self.n_samples = int(sum(u.n_samples for u in ups))
        # A round judged against the medoid is the initialisation (clients sent their local
        # subspaces), not an ADMM step, and clients could not align to the medoid as the server
        # did: a dual step there would leave the duals unbalanced for good (measured: 0.27 deg
        # off the pooled PCA at consensus on a non-IID split). So no client moves its dual.
        self.dual_scale = {u.client: 0.0 if first else float(f) for u, f in zip(ups, agg.dual_scale, strict=True)}
        weights = " ".join(f"{u.client}:{w:.3f}" for u, w in zip(ups, agg.weights, strict=True))
        moved = float(np.degrees(principal_angles(before, self.basis).max()))
        fresh = [u.client for u in ups if self.samples_seen.get(u.client) != u.n_samples]
        self.samples_seen.update({u.client: int(u.n_samples) for u in ups})
        log.info("event=fed_round_closed round=%d clients=%d weights=%s moved_deg=%.3g new_data=%s", self.round,
                 len(ups), _quote(weights), moved, _quote(",".join(fresh)))
        self.history.append(self.basis.copy())
        self.round += 1
        self.idle = not first and not fresh and moved < self.config.idle_tolerance_deg
        if self.idle:
            log.info("event=fed_idle round=%d moved_deg=%.3g tolerance_deg=%g", self.round, moved,
                     self.config.idle_tolerance_deg)
        self._mark()
        self._checkpoint()
        self.open()

    def run(self, max_seconds: float | None = None) -> None:
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self.open()
        closed = 0
        while not self.stopping:
            closed += self.step()
            if self.config.rounds is not None and closed >= self.config.rounds:
                break
            if deadline is not None and time.monotonic() > deadline:
                break
        self._checkpoint()
        log.info("event=fed_server_stopped round=%d rejected=%d", self.round, self.rejected)


def _quote(text: str) -> str:
    import json
    return json.dumps(text)
