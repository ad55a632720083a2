"""The federated PCA client: learns from its own telemetry stream, takes part in rounds with
signed subspace updates, and scores its stream with the latest verified global subspace.

Records never leave the client: an update carries only the basis ``U`` (``d x k``), the
sample count and per-feature mean and variance. Each round the client

1. verifies the server's signature on the global model ``G_r`` and adopts it for scoring;
2. if its update for round ``r - 1`` was counted (``G_r.clients``), updates its dual
   ``Y += s rho (U - Z_r)``, ``s`` its weight relative to its sample share (``G_r.dual_scale``);
3. takes ``local_steps`` Riemannian gradient steps (FedPG) on its local objective under the
   federation's standardisation, starting from its previous ``U`` (in its first round it
   sends its local principal subspace instead);
4. sends the signed update for round ``r``.

When no newer global model arrives within ``resend_after_s`` of its update, the client sends
the update for the round again (a fresh nonce; the server counts a client once per round):
a server that missed it, e.g. one restarted without it, then still closes the round. A
global model marked ``idle`` (the federation has converged and nobody had new data) is
answered only once the client has learned new records, which wakes the rounds up.

Anomaly threshold: the ``quantile`` of the scores of the client's most recent
``threshold_window`` records under the current model (recomputed when the model changes);
those records are assumed to be mostly normal. Events have the service's format.

State: with ``checkpoint`` set, the client's local state (its moments and covariance, the
global model it scores with, ``U``, ``Y``, its round bookkeeping, the threshold window) is
written atomically with the next offset of every partition, at most every
``checkpoint_every_s`` seconds, after every update it sends, and on stop. A restarted client
loads it and seeks its partitions back to those offsets, so no record is learned twice or
skipped (records after the checkpoint are scored again: events are at-least-once).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _state
from ..base import DecodeError, StateError, StreamadError
from ..detectors._fedpca import FedPCA
from ..records import decode
from .channel import FedChannel
from .grassmann import dual_update, fedpg_local
from .protocol import KeyRing, Rejected, Update, new_nonce, open_global, sign_update

__all__ = ["ClientConfig", "FedClient"]

log = logging.getLogger("streamad.federated")


@dataclass
class ClientConfig:
    client_id: str
    input_topics: list[str]
    anomalies_topic: str
    k: int = 2
    min_samples: int = 200
    quantile: float = 0.99
    threshold_window: int = 2000
    rho: float = 10.0
    step: float = 0.3
    local_steps: int = 30
    batch_size: int = 500
    poll_timeout_s: float = 0.2
    checkpoint: str | None = None
    checkpoint_every_s: float = 10.0
    resend_after_s: float = 15.0


class FedClient:
    def __init__(self, config: ClientConfig, ring: KeyRing, channel: FedChannel, source, sink, dead_letter=None):
        self.config, self.ring, self.channel = config, ring, channel
        self.source, self.sink, self.dead_letter = source, sink, dead_letter
        self.detector = FedPCA(n_components=config.k, min_samples=config.min_samples)
        self.recent: deque[np.ndarray] = deque(maxlen=config.threshold_window)
        self.threshold: float | None = None
        self.U: np.ndarray | None = None
        self.Y: np.ndarray | None = None
        self.prev_global: np.ndarray | None = None
        self.sent_round = -1
        self.seen_round = -1
        self.sent_samples = 0  # the sample count of the last update sent
        self._global = None  # the newest verified global model
        self._sent_at = time.monotonic()
        self._last_raw: bytes | None = None
        self.records = self.events = self.dead_letters = self.rounds = 0
        self.next_offsets: dict = {}
        self.stopping = False
        self._restored_offsets: dict = {}
        self._checkpointed_at = time.monotonic()
        if config.checkpoint and Path(config.checkpoint).exists():
            self._restore(config.checkpoint)

    # -- state -----------------------------------------------------------------------
    def _tree(self) -> dict:
        return {"format": 1, "client_id": self.config.client_id, "k": self.config.k,
                "detector": self.detector.state_dict(), "U": self.U, "Y": self.Y, "prev_global": self.prev_global,
                "sent_round": self.sent_round, "seen_round": self.seen_round, "threshold": self.threshold,
                "sent_samples": self.sent_samples,
                "recent": np.array(self.recent) if self.recent else None,
                "offsets": [[t, p, int(o)] for (t, p), o in sorted(self.next_offsets.items())]}

    def checkpoint(self) -> None:
        """Write the local state with the next offset of every partition (atomically)."""
        if self.config.checkpoint:
            _state.save_atomic(self.config.checkpoint, self._tree())
            self._checkpointed_at = time.monotonic()

    def _restore(self, path: str) -> None:
        tree = _state.load(path)
        if tree.get("client_id") != self.config.client_id or tree.get("k") != self.config.k:
            raise StateError(f"checkpoint {path} belongs to client {tree.get('client_id')!r} with k={tree.get('k')}; "
                             f"this is client {self.config.client_id!r} with k={self.config.k} "
                             "(remove it to start fresh)")
        self.detector.load_state_dict(tree["detector"])
        arr = lambda v: None if v is None else np.asarray(v, dtype=np.float64)  # noqa: E731
        self.U, self.Y, self.prev_global = arr(tree["U"]), arr(tree["Y"]), arr(tree["prev_global"])
        self.sent_round, self.seen_round = int(tree["sent_round"]), int(tree["seen_round"])
        self.sent_samples = int(tree.get("sent_samples", 0))
        self.threshold = None if tree["threshold"] is None else float(tree["threshold"])
        if tree["recent"] is not None:
            self.recent.extend(np.asarray(tree["recent"], dtype=np.float64))
        self._restored_offsets = {(str(t), int(p)): int(o) for t, p, o in tree["offsets"]}
        self.next_offsets = dict(self._restored_offsets)
        log.info("event=fed_client_restored client=%s round=%d records=%d checkpoint=%s", self.config.client_id,
                 self.sent_round, 0 if self.detector.moments_ is None else self.detector.moments_.n, path)

    def _on_assign(self, tps) -> None:
        for tp in tps:  # back to where the checkpointed state ends
            if tuple(tp) in self._restored_offsets:
                self.source.seek(tp, self._restored_offsets[tuple(tp)])

    # -- the stream ------------------------------------------------------------------
    def run_once(self) -> int:
        batch = self.source.poll(self.config.poll_timeout_s, self.config.batch_size)
        det = self.detector
        for m in batch:
            self.next_offsets[(m.topic, m.partition)] = m.offset + 1
            try:
                rec = decode(m.value, key=m.key)
                score = det.score_one(rec.values)
                det.learn_one(rec.values)
            except DecodeError as e:
                self._dead(m, e.reason)
                continue
            except StreamadError as e:  # e.g. a record with other features than the stream's
                self._dead(m, str(e))
                continue
            self.recent.append(det._vec(rec.values))
            self.records += 1
            if self.threshold is None and det.moments_ is not None and det.moments_.n >= self.config.min_samples:
                self._refresh_threshold()
            if self.threshold is not None and score > self.threshold:
                event = {"key": rec.key, "ts": rec.ts, "score": score, "threshold": self.threshold,
                         "is_anomaly": True, "detector": "fedpca", "client": self.config.client_id,
                         "round": det.global_round_, "topic": m.topic, "partition": m.partition,
                         "offset": m.offset}
                self.sink.send(self.config.anomalies_topic, rec.key.encode(),
                               json.dumps(event, separators=(",", ":")).encode())
                self.events += 1
        if batch:
            self.sink.flush()
            self.source.commit(dict(self.next_offsets))
        sent = self._take_part()
        if self.config.checkpoint and (sent or (batch and time.monotonic() - self._checkpointed_at
                                                >= self.config.checkpoint_every_s)):
            self.checkpoint()
        return len(batch)

    def _dead(self, m, reason: str) -> None:
        self.dead_letters += 1
        if self.dead_letter is not None:
            self.dead_letter(m, reason)
        else:
            log.warning("event=dead_letter topic=%s partition=%d offset=%d reason=%s", m.topic, m.partition,
                        m.offset, json.dumps(reason))

    def _refresh_threshold(self) -> None:
        if len(self.recent) < 10:
            return
        scores = self.detector.score_many(np.array(self.recent))
        self.threshold = float(np.quantile(scores, self.config.quantile))

    # -- rounds ----------------------------------------------------------------------
    def _take_part(self) -> bool:
        """Answer a new global model (or the current one again: :meth:`_follow_up`); True when
        an update was sent."""
        raw = self.channel.latest_global(0.0)
        if raw is None:
            return False
        if raw == self._last_raw:
            return self._follow_up()
        det = self.detector
        if det.moments_ is None or det.moments_.n < self.config.min_samples:
            return False  # not enough local data yet: look at this model again later
        self._last_raw = raw
        try:
            g = open_global(raw, self.ring)
        except Rejected as e:
            log.warning("event=fed_global_rejected reason=%s", json.dumps(e.reason))
            return False
        if g.round <= self.seen_round and self.sent_round >= g.round:
            if self.sent_round == g.round and self._global is None:
                self._global = g  # restarted after answering it: follow it up (_follow_up)
            return False
        d = len(det.features_)
        if g.basis.shape != (d, min(self.config.k, d)):
            log.warning("event=fed_global_rejected reason=%s", json.dumps(
                f"global basis has shape {g.basis.shape}, this client has {d} features and k={self.config.k}"))
            return False
        self.seen_round = g.round
        if g.mean is not None:
            det.set_global(g.basis, g.mean, g.scale, g.round)
            self._refresh_threshold()
        self._global = g
        if self.sent_round == g.round:
            return False  # already answered this round (the server re-published it)
        if g.idle and det.moments_.n <= self.sent_samples:
            log.info("event=fed_idle round=%d client=%s", g.round, self.config.client_id)
            return False  # answered once there are new records (_follow_up)
        return self._answer(g)

    def _follow_up(self) -> bool:
        """With no newer global model: answer an idle round once there are new records, or
        send the update for the current round again after ``resend_after_s``."""
        g, det = self._global, self.detector
        if g is None or det.moments_ is None:
            return False
        if self.sent_round < g.round:
            return g.idle and det.moments_.n > self.sent_samples and self._answer(g)
        if self.sent_round == g.round and time.monotonic() - self._sent_at >= self.config.resend_after_s:
            self._send_update(g.round)
            log.warning("event=fed_update_resent round=%d client=%s waited_s=%.0f", g.round, self.config.client_id,
                        self.config.resend_after_s)
            return True
        return False

    def _answer(self, g) -> bool:
        """Take the local steps towards global model ``g`` and send the signed update."""
        det = self.detector
        Z = g.basis
        if self.U is None:
            # First round: the local principal subspace itself, so the server's first mean
            # starts near the answer (FedPG from a random basis needs many more rounds, and
            # while honest clients are still far apart a poisoned one is hard to tell apart).
            self.U, self.Y = det.local_subspace()[0], np.zeros_like(Z)
        else:
            me = self.config.client_id
            if self.sent_round == g.round - 1 and self.prev_global is not None and me in g.clients:
                # only an update the server counted moves the dual, by as much as it counted
                self.Y = dual_update(self.Y, self.U, Z, self.config.rho, reference=self.prev_global,
                                     weight=g.dual_scale.get(me, 1.0))
            self.U = fedpg_local(self.U, det.local_covariance(), Z, self.Y, step=self.config.step,
                                 rho=self.config.rho, local_steps=self.config.local_steps)
        self._send_update(g.round)
        self.sent_round, self.prev_global = g.round, Z
        self.rounds += 1
        log.info("event=fed_update_sent round=%d client=%s n_samples=%d", g.round, self.config.client_id,
                 self.sent_samples)
        return True

    def _send_update(self, round_: int) -> None:
        """Sign and send the update for ``round_``: the local subspace and moments as they are
        now, under a fresh nonce (a resent update is a new message to the gate)."""
        mom = self.detector.moments_
        upd = Update(round_, self.config.client_id, new_nonce(), self.U, int(mom.n), mom.mean, mom.var)
        self.channel.send_update(sign_update(upd, self.ring))
        self._sent_at, self.sent_samples = time.monotonic(), int(mom.n)

    def run(self, max_seconds: float | None = None) -> None:
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self.source.subscribe(self.config.input_topics, on_assign=self._on_assign)
        try:
            while not self.stopping:
                self.run_once()
                if deadline is not None and time.monotonic() > deadline:
                    break
        finally:
            self.sink.flush()
            if self.next_offsets:
                self.source.commit(dict(self.next_offsets))
            self.checkpoint()
            log.info("event=fed_client_stopped client=%s records=%d events=%d rounds=%d", self.config.client_id,
                     self.records, self.events, self.rounds)
