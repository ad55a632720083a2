"""The streaming service: records -> per-key detector -> threshold -> events, at-least-once."""

from .config import ServiceConfig, load_config
from .pipeline import Pipeline, ServiceError, dead_letter_json
from .transport import MemoryBroker, MemorySink, MemorySource, Message, Sink, Source

__all__ = ["MemoryBroker", "MemorySink", "MemorySource", "Message", "Pipeline", "ServiceConfig", "ServiceError",
           "Sink", "Source", "dead_letter_json", "load_config"]
