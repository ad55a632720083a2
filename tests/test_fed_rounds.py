"""Federated rounds in one process: a server and clients over the in-memory channel and
transport. The federation finds the clients' common subspace, tolerates a dropped client,
refuses a poisoned one's pull, resumes from its checkpoint, and clients flag off-subspace
records."""

import json
import logging

import numpy as np
import pytest

from streamad.federated.channel import MemoryChannel
from streamad.federated.client import ClientConfig, FedClient
from streamad.federated.grassmann import orthonormalize, principal_angles, random_basis
from streamad.federated.protocol import KeyRing, Update, new_nonce, sign_update
from streamad.federated.server import FedServer, ServerConfig
from streamad.records import Record, encode
from streamad.service import MemoryBroker, MemorySink, MemorySource

D, K = 5, 2
TRUE = orthonormalize(np.array([[1, 1, 0, 0, 0], [0, 0, 1, 1, 1]], dtype=float).T)


def _fill(broker, topic, n, rng, anomalies=()):
    for i in range(n):
        z = rng.normal(size=K) * [3.0, 2.0]
        x = TRUE @ z + 0.1 * rng.normal(size=D)
        if i in anomalies:
            x = x + 4.0 * np.array([1, -1, 1, -1, 0])  # off the normal subspace
        values = {f"m{j}": float(v) for j, v in enumerate(x)}
        broker.produce(topic, b"dev", encode(Record("dev", 1e9 + i, values)))


def _federation(n_clients=3, tmp_path=None, min_clients=3, seed=0, idle=0.0):
    rng = np.random.default_rng(seed)
    ring = KeyRing(server=b"S" * 32, clients={f"gw{i}": bytes([65 + i]) * 32 for i in range(n_clients + 1)})
    channel = MemoryChannel()
    # idle_tolerance_deg=0: rounds go on without new data, as these tests count them
    server = FedServer(ServerConfig(dim=D, k=K, min_clients=min_clients, round_timeout_s=0.0, idle_tolerance_deg=idle,
                                    checkpoint=str(tmp_path / "server.state") if tmp_path else None),
                       ring, channel)
    clients = []
    for i in range(n_clients):
        b = MemoryBroker()
        b.create_topic("telemetry", 1)
        b.create_topic("anomalies", 1)
        _fill(b, "telemetry", 600, rng)
        cfg = ClientConfig(client_id=f"gw{i}", input_topics=["telemetry"], anomalies_topic="anomalies", k=K,
                           min_samples=200, poll_timeout_s=0.0, batch_size=300)
        c = FedClient(cfg, ring.for_client(f"gw{i}"), channel, MemorySource(b), MemorySink(b))
        c.source.subscribe(["telemetry"])
        clients.append((c, b))
    return ring, channel, server, clients, rng


def _central(clients):
    """Centralised PCA of all clients' records, standardised with the pooled moments."""
    from streamad.federated.grassmann import local_pca
    from streamad.records import decode
    X = np.array([[v for _, v in sorted(decode(m.value).values.items())] for _, b in clients
                  for m in b.all("telemetry")])
    return local_pca((X - X.mean(0)) / X.std(0), K)[0]


def _rounds(server, clients, n, skip=()):
    closed = 0
    server.open()
    for _ in range(50 * n):
        for i, (c, _) in enumerate(clients):
            if i not in skip:
                c.run_once()
        closed += server.step(poll_s=0.0)
        if closed >= n:
            return closed
    return closed


def test_rounds_converge_to_the_common_subspace_and_clients_flag_off_subspace_records(tmp_path):
    ring, channel, server, clients, rng = _federation(tmp_path=tmp_path)
    assert _rounds(server, clients, 20) == 20
    assert np.degrees(principal_angles(server.basis, _central(clients)).max()) < 3.0
    assert server.contributors == ["gw0", "gw1", "gw2"] and server.rejected == 0
    c, b = clients[0]
    assert c.detector.global_round_ >= 19 and c.threshold is not None
    _fill(b, "telemetry", 300, rng, anomalies={100, 200})
    for _ in range(3):
        c.run_once()
    events = [json.loads(m.value) for m in b.all("anomalies")]
    flagged = {e["offset"] - 600 for e in events if e["offset"] >= 600}
    assert {100, 200} <= flagged and len(flagged) <= 8  # threshold: 0.99 quantile of recent scores
    assert channel.bytes_up < 200_000  # only subspaces travel: 60 updates of a 5x2 basis


def test_a_dropped_client_does_not_stop_the_rounds_and_the_server_resumes_from_its_checkpoint(tmp_path):
    ring, channel, server, clients, _ = _federation(tmp_path=tmp_path, min_clients=2)
    assert _rounds(server, clients, 3) == 3
    assert _rounds(server, clients, 3, skip={2}) == 3  # gw2 is gone
    assert server.contributors == ["gw0", "gw1"]
    again = FedServer(ServerConfig(dim=D, k=K, checkpoint=str(tmp_path / "server.state")), ring, channel)
    assert again.round == server.round and np.allclose(again.basis, server.basis)


def test_a_poisoned_client_cannot_drag_the_global_subspace(tmp_path, caplog):
    ring, channel, server, clients, rng = _federation(tmp_path=tmp_path)
    evil = ring.for_client("gw3")
    central = _central(clients)
    server.open()
    worst = 0.0
    with caplog.at_level(logging.WARNING, logger="streamad.federated"):
        for _ in range(12):
            for c, _ in clients:
                c.run_once()
            # Every round gw3 sends a random basis and claims 100x the samples.
            upd = Update(server.round, "gw3", new_nonce(), random_basis(D, K, rng), 60_000, np.zeros(D), np.ones(D))
            channel.send_update(sign_update(upd, evil))
            nan = random_basis(D, K, rng)
            nan[0, 0] = np.nan
            channel.send_update(sign_update(Update(server.round, "gw3", new_nonce(), nan, 10, np.zeros(D),
                                                   np.ones(D)), evil))
            if server.step(poll_s=0.0) and server.round > 4:
                worst = max(worst, np.degrees(principal_angles(server.basis, central).max()))
    assert server.round > 6
    assert worst < 2.0  # the bound we state: under 2 degrees with 1 poisoned client of 4 (measured 0.24)
    assert "non-finite" in caplog.text


@pytest.mark.parametrize("bad", ["wrong key", "unknown client"])
def test_clients_ignore_a_global_model_the_server_did_not_sign(bad, caplog):
    ring, channel, server, clients, _ = _federation()
    from streamad.federated.protocol import GlobalModel, sign_global
    impostor = KeyRing(server=b"X" * 32, clients={})
    channel.publish_global(sign_global(GlobalModel(5, random_basis(D, K, 1), np.zeros(D), np.ones(D)), impostor))
    c, _ = clients[0]
    with caplog.at_level(logging.WARNING, logger="streamad.federated"):
        for _ in range(3):
            c.run_once()
    assert c.detector.global_basis_ is None and c.sent_round == -1
    assert "bad server signature" in caplog.text


@pytest.mark.parametrize("counted, scale", [(False, 1.0), (True, 1.0), (True, 0.25)])
def test_a_clients_dual_moves_only_as_far_as_the_server_counted_its_update(counted, scale):
    """The global model lists the updates it counted and each one's dual scale (its robust
    weight relative to its sample share); a client's dual step follows it, so the federation's
    duals keep balancing when the server leaves out or down-weights an update."""
    from streamad.federated.grassmann import dual_update
    from streamad.federated.protocol import GlobalModel, sign_global
    ring, channel, server, clients, _ = _federation()
    assert _rounds(server, clients, 3) == 3
    for c, _ in clients:
        c.run_once()  # everyone answers the open round; the server has not closed it
    c = clients[0][0]
    assert c.sent_round == server.round
    Y, U, prev = c.Y.copy(), c.U.copy(), c.prev_global
    Z = random_basis(D, K, 3)
    others = ["gw1", "gw2"]
    g = GlobalModel(server.round + 1, Z, server.mean, server.scale, ["gw0", *others] if counted else others, 1800,
                    {"gw0": scale} if counted else {})
    channel.publish_global(sign_global(g, ring))
    c.run_once()
    assert c.sent_round == server.round + 1
    want = dual_update(Y, U, Z, c.config.rho, reference=prev, weight=scale) if counted else Y
    assert np.allclose(c.Y, want)
    assert not np.allclose(want, dual_update(Y, U, Z, c.config.rho, reference=prev, weight=0.5))


def test_a_restarted_client_resumes_from_its_checkpoint_without_learning_a_record_twice(tmp_path):
    from streamad.base import StateError
    ring, channel, server, clients, rng = _federation()
    c, b = clients[0]
    c.config.checkpoint, c.config.checkpoint_every_s = str(tmp_path / "gw0.state"), 3600.0
    assert _rounds(server, clients, 4) == 4
    c.run_once()  # answers the open round: sending an update writes a checkpoint
    assert (tmp_path / "gw0.state").exists()
    saved = (c.detector.moments_.n, c.U.copy(), c.Y.copy(), c.threshold, c.sent_round)
    _fill(b, "telemetry", 300, rng)
    c.run_once()  # learns and commits 300 more records, then "crashes" before its next checkpoint
    assert c.detector.moments_.n == saved[0] + 300 and MemorySource(b).committed(("telemetry", 0)) == 900

    again = FedClient(c.config, ring.for_client("gw0"), channel, MemorySource(b), MemorySink(b))
    assert again.detector.moments_.n == saved[0] and again.sent_round == saved[4]
    assert np.array_equal(again.U, saved[1]) and np.array_equal(again.Y, saved[2]) and again.threshold == saved[3]
    again.source.subscribe(["telemetry"], on_assign=again._on_assign)  # seeks back to offset 600
    again.run_once()
    assert again.detector.moments_.n == c.detector.moments_.n  # the 300 records learned once, not twice
    assert np.allclose(again.detector.local_covariance(), c.detector.local_covariance())

    other = ClientConfig(client_id="gw1", input_topics=["telemetry"], anomalies_topic="anomalies", k=K,
                         checkpoint=c.config.checkpoint)
    with pytest.raises(StateError, match="belongs to client 'gw0'"):
        FedClient(other, ring.for_client("gw1"), channel, MemorySource(b), MemorySink(b))


def test_non_iid_clients_reach_the_pooled_pca_through_the_protocol():
    """Four clients each see one range of the first metric (their own subspaces are up to 33
    degrees off the pooled one). Through the signed rounds (first round: local subspaces,
    medoid reference; then FedPG with robust weights and scaled duals) the global subspace
    must reach the PCA of the pooled records, standardised with the pooled moments."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(D, D)) * np.linspace(2.0, 0.3, D)
    X = rng.standard_t(5, size=(4000, D)) @ A.T
    parts = np.array_split(X[np.argsort(X[:, 0])], 4)
    ring = KeyRing(server=b"S" * 32, clients={f"gw{i}": bytes([65 + i]) * 32 for i in range(4)})
    channel = MemoryChannel()
    server = FedServer(ServerConfig(dim=D, k=K, min_clients=4, round_timeout_s=0.0, idle_tolerance_deg=0.0),
                       ring, channel)
    clients = []
    for i, P in enumerate(parts):
        b = MemoryBroker()
        b.create_topic("telemetry", 1)
        b.create_topic("anomalies", 1)
        for j, x in enumerate(P):
            b.produce("telemetry", b"dev", encode(Record("dev", 1e9 + j, {f"m{q}": float(v) for q, v in enumerate(x)})))
        cfg = ClientConfig(client_id=f"gw{i}", input_topics=["telemetry"], anomalies_topic="anomalies", k=K,
                           min_samples=200, poll_timeout_s=0.0, batch_size=2000)
        c = FedClient(cfg, ring.for_client(f"gw{i}"), channel, MemorySource(b), MemorySink(b))
        c.source.subscribe(["telemetry"])
        clients.append((c, b))
    from streamad.federated.grassmann import local_pca
    central = local_pca((X - X.mean(0)) / X.std(0), K)[0]
    assert max(np.degrees(principal_angles(local_pca((P - X.mean(0)) / X.std(0), K)[0], central).max())
               for P in parts) > 20
    assert _rounds(server, clients, 40) == 40
    assert np.degrees(principal_angles(server.basis, central).max()) < 0.05
