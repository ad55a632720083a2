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

Anomaly threshold: the ``quantile`` of the scores of the client's most recent
``threshold_window`` records under the current model (recomputed when the model changes);
those records are assumed to be mostly normal. Events have the service's format.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..base import DecodeError, StreamadError
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
        self._last_raw: bytes | None = None
        self.records = self.events = self.dead_letters = self.rounds = 0
        self.next_offsets: dict = {}
        self.stopping = False

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
        self._take_part()
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
    def _take_part(self) -> None:
        raw = self.channel.latest_global(0.0)
        if raw is None or raw == self._last_raw:
            return
        det = self.detector
        if det.moments_ is None or det.moments_.n < self.config.min_samples:
            return  # not enough local data yet: look at this model again later
        self._last_raw = raw
        try:
            g = open_global(raw, self.ring)
        except Rejected as e:
            log.warning("event=fed_global_rejected reason=%s", json.dumps(e.reason))
            return
        if g.round <= self.seen_round and self.sent_round >= g.round:
            return
        d = len(det.features_)
        if g.basis.shape != (d, min(self.config.k, d)):
            log.warning("event=fed_global_rejected reason=%s", json.dumps(
                f"global basis has shape {g.basis.shape}, this client has {d} features and k={self.config.k}"))
            return
        self.seen_round = g.round
        if g.mean is not None:
            det.set_global(g.basis, g.mean, g.scale, g.round)
            self._refresh_threshold()
        if self.sent_round == g.round:
            return  # already answered this round (the server re-published it)
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
        mom = det.moments_
        upd = Update(g.round, self.config.client_id, new_nonce(), self.U, int(mom.n), mom.mean, mom.var)
        self.channel.send_update(sign_update(upd, self.ring))
        self.sent_round, self.prev_global = g.round, Z
        self.rounds += 1
        log.info("event=fed_update_sent round=%d client=%s n_samples=%d", g.round, self.config.client_id, mom.n)

    def run(self, max_seconds: float | None = None) -> None:
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self.source.subscribe(self.config.input_topics)
        try:
            while not self.stopping:
                self.run_once()
                if deadline is not None and time.monotonic() > deadline:
                    break
        finally:
            self.sink.flush()
            if self.next_offsets:
                self.source.commit(dict(self.next_offsets))
            log.info("event=fed_client_stopped client=%s records=%d events=%d rounds=%d", self.config.client_id,
                     self.records, self.events, self.rounds)
