"""Federated rounds that survive a server restart and go quiet when there is nothing to learn
(in one process, on the in-memory channel): a restarted server reads the updates sent while
it was down, clients resend an update no newer global model answered, and the server goes
idle once the subspace has converged and no client has new data."""

import sys
from pathlib import Path

import numpy as np

from streamad.federated.server import FedServer, ServerConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_fed_rounds import D, K, _federation, _fill  # noqa: E402


def _tick(server, clients, n=1):
    closed = 0
    for _ in range(n):
        for c, _ in clients:
            c.run_once()
        closed += server.step(poll_s=0.0)
    return closed


def test_a_restarted_server_counts_the_updates_sent_while_it_was_down(tmp_path):
    ring, channel, server, clients, _ = _federation(tmp_path=tmp_path)
    server.open()
    while server.round < 3:
        _tick(server, clients)
    # the server dies with round 3 open; every client answers it meanwhile
    for c, _ in clients:
        c.run_once()
    assert all(c.sent_round == 3 for c, _ in clients)
    channel.seek_updates(len(channel._updates))  # a new process starts at the end of the topic
    again = FedServer(ServerConfig(dim=D, k=K, min_clients=3, round_timeout_s=0.0, idle_tolerance_deg=0.0,
                                   checkpoint=str(tmp_path / "server.state")), ring, channel)
    assert again.round == 3
    again.open()
    assert again.step(poll_s=0.0)  # closed at once, with the three updates sent while it was down
    assert again.round == 4 and again.contributors == ["gw0", "gw1", "gw2"]


def test_a_client_resends_its_update_when_no_newer_global_model_arrives(caplog):
    ring, channel, server, clients, _ = _federation()
    server.open()
    while server.round < 2:
        _tick(server, clients)
    for c, _ in clients:
        c.run_once()  # answer round 2 ...
    channel.poll_updates(0.0)  # ... and the server never sees those updates
    for c, _ in clients:
        c.config.resend_after_s = 3600.0
    assert _tick(server, clients, 5) == 0  # stuck: everyone waits for everyone
    for c, _ in clients:
        c.config.resend_after_s = 0.0
    with caplog.at_level("WARNING", logger="streamad.federated"):
        assert _tick(server, clients) == 1  # the resent updates close the round
    assert caplog.text.count("event=fed_update_resent round=2") == 3
    assert server.round == 3


def test_the_server_goes_idle_once_converged_without_new_data_and_wakes_up_on_new_data(caplog):
    ring, channel, server, clients, rng = _federation(idle=1e-3)
    server.open()
    for _ in range(200):
        _tick(server, clients)
        if server.idle:
            break
    assert server.idle and 3 < server.round < 40
    messages = (channel.n_global, len(channel._updates))
    assert _tick(server, clients, 50) == 0
    assert (channel.n_global, len(channel._updates)) == messages  # nothing published, nothing sent
    # new records on one client: its update wakes the round up, every client answers it
    c0, b0 = clients[0]
    _fill(b0, "telemetry", 100, rng)
    idle_round = server.round
    with caplog.at_level("INFO", logger="streamad.federated"):
        assert _tick(server, clients, 5) >= 1
    assert f"event=fed_wake round={idle_round} client=gw0" in caplog.text
    assert server.round > idle_round and server.contributors == ["gw0", "gw1", "gw2"]
    for _ in range(200):  # and it settles again
        _tick(server, clients)
        if server.idle:
            break
    assert server.idle
    assert np.isfinite(server.basis).all()
