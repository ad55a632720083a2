"""streamad: streaming anomaly detection for time series and IoT telemetry.

The top level holds what a Python user needs, as River's and scikit-learn's do: every
detector (``streamad.Gaussian``, ``streamad.RecordExperts``, ...; the registry of
:mod:`streamad.detectors` lists them, so a new detector appears here without an edit),
``make(name, **params)`` to build one by its registry name, the streaming thresholds
(``streamad.SPOT``, ``streamad.Fixed``, ...) with ``make_threshold(name, **params)`` and Orion's
batch ``find_anomalies``, the record type ``Record`` and the root of every error,
``StreamadError``. Each name is imported when first used: ``import streamad`` loads neither
numpy nor torch, and only the deep detectors load torch.

>>> import streamad
>>> detector = streamad.make("zscore", window=20)
>>> type(detector) is streamad.ZScore, "Gaussian" in streamad.__all__
(True, True)
"""

from __future__ import annotations

import functools
import importlib

__version__ = "0.1.0"


@functools.cache
def _exports() -> dict[str, tuple[str, str]]:
    """Top-level name -> (module, name in it)."""
    # import_module, not ``from . import``: that asks this module's __getattr__ first
    detectors = importlib.import_module("streamad.detectors")
    thresholds = importlib.import_module("streamad.thresholds")

    out = {name: ("streamad.detectors", name) for name in detectors._CLASSES}
    out.update({name: ("streamad.thresholds", name) for name in thresholds._CLASSES})
    out.update(make=("streamad.detectors", "make"), make_threshold=("streamad.thresholds", "make"),
               Record=("streamad.records", "Record"), StreamadError=("streamad.base", "StreamadError"))
    return out


def __getattr__(name: str):
    if name == "__all__":
        return sorted([*_exports(), "__version__"])
    if name.startswith("__") or name not in _exports():
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _exports()[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_exports()})
