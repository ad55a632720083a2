"""One error tree: every error streamad or its connectors raise on purpose is a StreamadError,
and whether trying again may work is an attribute of it, not something callers probe for."""

import importlib
import inspect

import pytest

from streamad import base
from streamad.base import (
    CommitError,
    ConfigError,
    DecodeError,
    DeliveryError,
    FailedSend,
    Rejected,
    ServiceError,
    StreamadError,
    TransportError,
)

LIBRARY = ["streamad.base", "streamad.records", "streamad.incidents", "streamad.service.config",
           "streamad.service.deadletter", "streamad.service.delivery", "streamad.service.partitions",
           "streamad.service.pipeline", "streamad.service.scoring", "streamad.service.transport",
           "streamad.federated.protocol", "streamad.federated.server", "streamad.federated.client"]
CONNECTORS = ["connectors.kafka", "connectors.confluent", "connectors.changelog", "connectors.fedkafka",
              "connectors.broker", "connectors.replay"]


def _exceptions(module_name):
    module = importlib.import_module(module_name)
    return [cls for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, BaseException) and cls.__module__ == module_name]


@pytest.mark.parametrize("module", LIBRARY)
def test_every_library_error_is_a_streamad_error(module):
    assert all(issubclass(cls, StreamadError) for cls in _exceptions(module)), module


@pytest.mark.parametrize("module", CONNECTORS)
def test_the_connectors_define_no_errors_of_their_own(module):
    assert _exceptions(module) == []


def test_the_service_and_federation_errors_sit_under_streamad_error_in_base():
    for cls in (TransportError, CommitError, DeliveryError, ServiceError, Rejected):
        assert issubclass(cls, StreamadError) and cls.__module__ == "streamad.base"
        assert cls.__name__ in base.__all__ and cls.__name__ in base.__doc__
    assert issubclass(CommitError, TransportError) and issubclass(DeliveryError, TransportError)


def test_retriable_is_an_attribute_of_every_error():
    assert StreamadError("x").retriable is False
    assert ConfigError("bad flag").retriable is False and DecodeError("not JSON").retriable is False
    assert Rejected("replayed nonce").retriable is False
    assert TransportError("broker away").retriable is True
    assert TransportError("bad credentials", retriable=False).retriable is False
    assert CommitError("group rebalanced", retriable=False).retriable is False
    assert ServiceError("stop").retriable is False and ServiceError("later", retriable=True).retriable is True
    failed = [FailedSend("t", b"k", b"v", "MessageSizeTooLargeError", retriable=False)]
    e = DeliveryError("1 message not delivered", failed, retriable=False)
    assert e.failed == failed and e.retriable is False
