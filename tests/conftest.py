import os

import pytest

# Keep torch from oversubscribing the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def broker():
    """A real Kafka-protocol broker (embedded Tansu) for the whole test session."""
    from connectors.broker import EmbeddedBroker

    b = EmbeddedBroker().start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def bootstrap(broker):
    return broker.bootstrap
