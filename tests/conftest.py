import os

import pytest

# Keep torch from oversubscribing the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# tests/data/ holds the scripts that made the reference files; they import Orion, which the
# suite does not install (--doctest-modules would import them).
collect_ignore_glob = ["data/*.py"]


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
