"""Streaming thresholds and Orion's batch ``find_anomalies``. Higher score = more anomalous.

``make(name, **params)`` builds a streaming threshold from its registry name.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..base import ConfigError

_CLASSES = {
    "AnomalyLikelihood": "._likelihood",
    "DSPOT": "._spot",
    "Fixed": "._simple",
    "Quantile": "._simple",
    "SPOT": "._spot",
    "find_anomalies": "._orion",
}

REGISTRY: dict[str, str] = {"dspot": "DSPOT", "fixed": "Fixed", "likelihood": "AnomalyLikelihood",
                            "quantile": "Quantile", "spot": "SPOT"}

__all__ = sorted([*_CLASSES, "REGISTRY", "make", "resolve"])


def __getattr__(name: str):
    if name in _CLASSES:
        return getattr(importlib.import_module(_CLASSES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve(name: str, params: dict[str, Any] | None, detector: str) -> tuple[str, dict[str, Any]]:
    """The threshold to build: ``name`` and ``params`` as given, or for ``"auto"`` the
    detector's own default (``default_threshold`` of its class), ``params`` over its parameters.

    >>> resolve("auto", {}, "gaussian")
    ('spot', {})
    >>> resolve("auto", {"value": 0.5}, "records")
    ('fixed', {'value': 0.5})
    >>> resolve("quantile", {"q": 0.99}, "records")
    ('quantile', {'q': 0.99})
    """
    params = dict(params or {})
    if name != "auto":
        return name, params
    from .. import detectors

    try:
        cls = detectors.detector_class(detector)
    except ConfigError:
        return "spot", params
    default, defaults = cls.default_threshold
    return default, {**defaults, **params}


def make(name: str, **params: Any):
    if name not in REGISTRY:
        raise ConfigError(f"unknown threshold {name!r}; choose one of: auto, {', '.join(sorted(REGISTRY))}")
    try:
        return __getattr__(REGISTRY[name])(**params)
    except TypeError as e:
        raise ConfigError(f"bad parameters for threshold {name!r}: {e}") from e
