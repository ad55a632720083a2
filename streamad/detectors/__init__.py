"""Detectors. Each lives in a private module and is re-exported here.

Imports are lazy so that ``import streamad.detectors`` does not pull in torch for the
lightweight baselines. ``make(name, **params)`` builds a detector from its registry name
(as used in configs, ``--detector`` flags and result files).

>>> make("zscore").name
'zscore'
>>> make("nope")
Traceback (most recent call last):
...
streamad.base.ConfigError: unknown detector 'nope'; choose one of: ...
"""

from __future__ import annotations

import importlib
from typing import Any

from ..base import ConfigError

# class name -> private module
_CLASSES = {
    "AER": "._hypad",
    "Contextual": "._contextual",
    "FedPCA": "._fedpca",
    "Gaussian": "._gaussian",
    "HypAD": "._hypad",
    "NodeAutoencoder": "._node_ae",
    "PCAResidual": "._pca",
    "RecordExperts": "._records",
    "RiverDetector": "._river",
    "Spread": "._spread",
    "TadGAN": "._hypad",
    "ZScore": "._zscore",
}

# registry name -> (class name, default params)
REGISTRY: dict[str, tuple[str, dict[str, Any]]] = {
    "aer": ("AER", {}),
    "contextual": ("Contextual", {}),
    "fedpca": ("FedPCA", {}),
    "gaussian": ("Gaussian", {}),
    "hst": ("RiverDetector", {}),
    "hypad": ("HypAD", {}),
    "node-ae": ("NodeAutoencoder", {}),
    "pca": ("PCAResidual", {}),
    "records": ("RecordExperts", {}),
    "spread": ("Spread", {}),
    "tadgan": ("TadGAN", {}),
    "zscore": ("ZScore", {}),
}

__all__ = sorted([*_CLASSES, "REGISTRY", "available", "detector_class", "make"])


def __getattr__(name: str):
    if name in _CLASSES:
        mod = importlib.import_module(_CLASSES[name], __name__)
        return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def available() -> list[str]:
    """Registry names whose implementation is importable."""
    names = []
    for n, (cls, _) in sorted(REGISTRY.items()):
        try:
            importlib.import_module(_CLASSES[cls], __name__)
        except ModuleNotFoundError:
            continue
        names.append(n)
    return names


def detector_class(name: str) -> type:
    """The class registered as ``name``."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown detector {name!r}; choose one of: {', '.join(sorted(REGISTRY))}")
    try:
        return __getattr__(REGISTRY[name][0])
    except ModuleNotFoundError as e:
        raise ConfigError(f"detector {name!r} is not available: {e}") from e


def make(name: str, **params: Any):
    """Build the detector registered as ``name`` with ``params`` over its defaults."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown detector {name!r}; choose one of: {', '.join(sorted(REGISTRY))}")
    cls_name, defaults = REGISTRY[name]
    try:
        cls = __getattr__(cls_name)
    except ModuleNotFoundError as e:
        raise ConfigError(f"detector {name!r} is not available: {e}") from e
    try:
        return cls(**{**defaults, **params})
    except TypeError as e:
        raise ConfigError(f"bad parameters for detector {name!r}: {e}") from e
