"""The streaming service: records -> per-key detector -> threshold -> events, at-least-once."""

from ..base import ServiceError
from .config import ServiceConfig, load_config
from .deadletter import DeadLetterSink, dead_letter_record, read_dead_letter
from .pipeline import Pipeline
from .transport import MemoryBroker, MemorySink, MemorySource, Message, Sink, Source

__all__ = ["DeadLetterSink", "MemoryBroker", "MemorySink", "MemorySource", "Message", "Pipeline", "ServiceConfig",
           "ServiceError", "Sink", "Source", "dead_letter_record", "load_config", "read_dead_letter"]
