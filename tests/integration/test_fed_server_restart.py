"""The federated rounds over the real broker's topics (server and clients in this process,
each client's telemetry in memory): a fed-server restarted from its checkpoint in the middle
of a round reads the updates the clients sent while it was down and closes that round at
once; a converged federation without new data goes idle (no more messages on either topic)
and wakes up when a client has new records."""

import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from connectors.fedkafka import KafkaFedChannel
from connectors.kafka import for_embedded_broker
from streamad.federated.client import ClientConfig, FedClient
from streamad.federated.protocol import KeyRing
from streamad.federated.server import FedServer, ServerConfig
from streamad.service import MemoryBroker, MemorySink, MemorySource

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_fed_rounds import D, K, _fill  # noqa: E402

ROUND_TIMEOUT_S = 5.0


def _end_offsets(bootstrap, topics):
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(t, 0) for t in topics]
        return tuple(c.end_offsets(tps).values())
    finally:
        c.close()


def test_a_restarted_server_closes_the_open_round_and_an_idle_federation_is_quiet(bootstrap, tmp_path, caplog):
    prefix = f"fed-{uuid.uuid4().hex[:6]}"
    ring = KeyRing(server=b"S" * 32, clients={f"gw{i}": bytes([65 + i]) * 32 for i in range(2)})
    options = for_embedded_broker()
    rng = np.random.default_rng(0)
    clients = []
    for i in range(2):
        b = MemoryBroker()
        b.create_topic("telemetry", 1)
        b.create_topic("anomalies", 1)
        _fill(b, "telemetry", 400, rng)
        cfg = ClientConfig(client_id=f"gw{i}", input_topics=["telemetry"], anomalies_topic="anomalies", k=K,
                           min_samples=200, poll_timeout_s=0.0, batch_size=400, resend_after_s=3600.0)
        c = FedClient(cfg, ring.for_client(f"gw{i}"), KafkaFedChannel(bootstrap, prefix, "client", options),
                      MemorySource(b), MemorySink(b))
        c.source.subscribe(["telemetry"])
        clients.append((c, b))

    def server():
        return FedServer(ServerConfig(dim=D, k=K, min_clients=2, round_timeout_s=ROUND_TIMEOUT_S,
                                      checkpoint=str(tmp_path / "server.state")), ring,
                         KafkaFedChannel(bootstrap, prefix, "server", options))

    def tick(s=None):
        for c, _ in clients:
            c.run_once()
        return s.step(poll_s=0.05) if s is not None else False

    first = server()
    try:
        first.open()
        deadline = time.monotonic() + 60
        while first.round < 2 and time.monotonic() < deadline:
            tick(first)
        assert first.round == 2
        # the server goes down with round 2 open; both clients answer it meanwhile
        deadline = time.monotonic() + 30
        while not all(c.sent_round == 2 for c, _ in clients) and time.monotonic() < deadline:
            tick()
        assert all(c.sent_round == 2 for c, _ in clients)
    finally:
        first.channel.close()  # no stop checkpoint: as after SIGKILL

    again = server()
    try:
        assert again.round == 2
        again.open()
        t0 = time.monotonic()
        while again.round == 2 and time.monotonic() - t0 < 2 * ROUND_TIMEOUT_S:
            tick(again)
        assert again.round == 3, "the restarted server did not close the round it was restarted in"
        assert again.contributors == ["gw0", "gw1"]

        # no new data: the federation converges and goes idle; the topics stop growing
        deadline = time.monotonic() + 60
        while not again.idle and time.monotonic() < deadline:
            tick(again)
        assert again.idle
        topics = [f"{prefix}.updates", f"{prefix}.global"]
        for _ in range(20):
            tick(again)
        before = _end_offsets(bootstrap, topics)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:
            assert not tick(again)
        assert _end_offsets(bootstrap, topics) == before

        # new records on one client wake the rounds up
        _fill(clients[1][1], "telemetry", 50, rng)
        idle_round = again.round
        with caplog.at_level("INFO", logger="streamad.federated"):
            deadline = time.monotonic() + 30
            while again.round == idle_round and time.monotonic() < deadline:
                tick(again)
        assert again.round > idle_round
        assert f"event=fed_wake round={idle_round} client=gw1" in caplog.text
    finally:
        again.channel.close()
        for c, _ in clients:
            c.channel.close()
