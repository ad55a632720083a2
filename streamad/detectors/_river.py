"""Any ``river.anomaly`` detector behind streamad's detector protocol."""

from __future__ import annotations

import collections
import functools
import importlib
import inspect
import random
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..base import BaseDetector, ConfigError, StateError
from ..windows import RingBuffer

__all__ = ["RiverDetector"]


class RiverDetector(BaseDetector):
    """A River anomaly detector (HalfSpaceTrees by default) with min-max scaling in front.

    Parameters
    ----------
    detector
        Class name in ``river.anomaly`` (``HalfSpaceTrees``, ``OneClassSVM``, ...).
    params
        Its constructor parameters. ``seed`` is passed when the class takes one.
    window
        Feed the last ``window`` records as one feature vector (shingling), so a point
        detector sees the series' shape, not just its current level.
    scale
        Put River's online ``MinMaxScaler`` in front, as HalfSpaceTrees expects features in
        [0, 1].
    seed
        Random seed for the River model.

    State goes through a reflective encoder restricted to River's own classes: no pickle,
    and loading a state can only rebuild ``river.*`` objects.

    >>> det = RiverDetector(params={"n_trees": 5, "height": 6, "window_size": 50})
    >>> for i in range(300):
    ...     det.learn_one({"x": (i % 10) / 10})
    >>> det.score_one({"x": 0.5}) < det.score_one({"x": 25.0})
    True
    """

    name = "hst"

    def __init__(self, detector: str = "HalfSpaceTrees", params: dict[str, Any] | None = None,
                 window: int = 1, scale: bool = True, seed: int = 42):
        self.detector = detector
        self.params = params
        self.window = window
        self.scale = scale
        self.seed = seed
        if int(window) < 1:
            raise ConfigError(f"hst window must be at least 1, got {window}")
        self._model = self._build()
        self._scaler = None
        if scale:
            from river import preprocessing

            self._scaler = preprocessing.MinMaxScaler()

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"params": {"n_trees": 3, "height": 4, "window_size": 20}, "window": 2}

    def _build(self):
        from river import anomaly

        cls = getattr(anomaly, str(self.detector), None)
        if not inspect.isclass(cls):
            raise ConfigError(f"river.anomaly has no detector {self.detector!r}")
        kwargs = dict(self.params or {})
        if "seed" in inspect.signature(cls).parameters:
            kwargs.setdefault("seed", self.seed)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"bad parameters for river.anomaly.{self.detector}: {e}") from e

    def _on_features(self, d: int) -> None:
        w = int(self.window)
        self._names = [f"{f}@{lag}" if w > 1 else f for lag in range(w - 1, -1, -1) for f in self.features_]
        self._lags = RingBuffer(w - 1, d) if w > 1 else None

    def _x(self, v: np.ndarray) -> dict[str, float]:
        if self._lags is not None:
            w = int(self.window)
            past = self._lags.values()
            if len(past) < w - 1:  # pad the first records with the oldest one seen
                first = past[0] if len(past) else v
                past = np.vstack([np.repeat(first[None], w - 1 - len(past), axis=0), past])
            v = np.concatenate([past.ravel(), v])
        x = dict(zip(self._names, v.tolist(), strict=True))
        return self._scaler.transform_one(x) if self._scaler is not None else x

    def _learn(self, v: np.ndarray) -> None:
        if self._scaler is not None:
            raw = self._x_raw(v)
            self._scaler.learn_one(raw)
        self._model.learn_one(self._x(v))
        if self._lags is not None:
            self._lags.push(v)

    def _x_raw(self, v: np.ndarray) -> dict[str, float]:
        scaler, self._scaler = self._scaler, None
        try:
            return self._x(v)
        finally:
            self._scaler = scaler

    def _score(self, v: np.ndarray) -> float:
        return float(self._model.score_one(self._x(v)))

    def _observe(self, v: np.ndarray) -> None:
        if self._lags is not None:
            self._lags.push(v)

    def _get_state(self) -> dict[str, Any]:
        state = {"model": _encode_river(self._model),
                 "scaler": None if self._scaler is None else _encode_river(self._scaler)}
        if self.features_ is not None and self._lags is not None:
            state["lags"] = self._lags.values().copy()
        return state

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._model = _decode_river(state["model"])
        self._scaler = None if state["scaler"] is None else _decode_river(state["scaler"])
        if "lags" in state and self._lags is not None:
            for row in np.asarray(state["lags"], dtype=np.float64).reshape(-1, len(self.features_)):
                self._lags.push(row)


# -- a reflective, pickle-free encoding of River objects ---------------------------------
_ALLOWED_FACTORIES = {"builtins.float": float, "builtins.int": int, "builtins.list": list,
                      "builtins.dict": dict, "builtins.tuple": tuple}


def _qualname(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _river_class(ref: str) -> type:
    mod, _, qual = ref.partition(":")
    if not (mod == "river" or mod.startswith("river.")):
        raise StateError(f"state refers to {ref!r}; only river classes can be restored")
    obj: Any = importlib.import_module(mod)
    for part in qual.split("."):
        obj = getattr(obj, part)
    if not inspect.isclass(obj):
        raise StateError(f"state refers to {ref!r}, which is not a class")
    return obj


def _encode_river(root: Any) -> Any:
    """Encode an object graph as JSON values; shared objects are stored once and referenced."""
    memo: dict[int, int] = {}
    keep: list[Any] = []  # keep objects alive so ids stay unique during encoding

    def enc(o: Any) -> Any:
        if o is None or isinstance(o, bool | int | float | str):
            return o
        if isinstance(o, np.ndarray):
            return {"ndarray": o.tolist(), "dtype": str(o.dtype), "shape": list(o.shape)}
        if isinstance(o, np.generic):
            return o.item()
        if id(o) in memo:
            return {"ref": memo[id(o)]}
        ident = memo[id(o)] = len(memo)
        keep.append(o)
        if isinstance(o, tuple):
            return {"id": ident, "tuple": [enc(v) for v in o]}
        if isinstance(o, list):
            return {"id": ident, "list": [enc(v) for v in o]}
        if isinstance(o, random.Random):
            return {"id": ident, "random": enc(o.getstate())}
        if isinstance(o, collections.defaultdict):
            f = o.default_factory
            args = None
            if isinstance(f, functools.partial) and not f.keywords:
                f, args = f.func, [enc(a) for a in f.args]
            if f is None:
                ref = None
            elif inspect.isclass(f) and (f.__module__.startswith("river") or
                                         f"{f.__module__}.{f.__qualname__}" in _ALLOWED_FACTORIES):
                ref = _qualname(f)
            else:
                raise StateError(f"cannot store a defaultdict whose factory is {o.default_factory!r}")
            return {"id": ident, "defaultdict": ref, "args": args,
                    "items": [[enc(k), enc(v)] for k, v in o.items()]}
        if isinstance(o, dict):
            return {"id": ident, "dict": [[enc(k), enc(v)] for k, v in o.items()]}
        if type(o).__module__.startswith("river"):
            attrs = dict(vars(o)) if hasattr(o, "__dict__") else {}
            for cls in type(o).__mro__:
                for s in getattr(cls, "__slots__", ()):
                    if s not in ("__dict__", "__weakref__") and hasattr(o, s):
                        attrs[s] = getattr(o, s)
            return {"id": ident, "object": _qualname(type(o)), "attrs": {k: enc(v) for k, v in attrs.items()}}
        raise StateError(f"cannot store a {type(o).__name__} from a river model")

    return enc(root)


def _decode_river(tree: Any) -> Any:
    objs: dict[int, Any] = {}

    def dec(t: Any) -> Any:
        if not isinstance(t, dict):
            return t
        if "ndarray" in t:
            return np.asarray(t["ndarray"], dtype=t["dtype"]).reshape(t["shape"])
        if "ref" in t:
            return objs[t["ref"]]
        ident = t["id"]
        if "tuple" in t:
            out = objs[ident] = tuple(dec(v) for v in t["tuple"])
            return out
        if "list" in t:
            out = objs[ident] = []
            out.extend(dec(v) for v in t["list"])
            return out
        if "random" in t:
            r = objs[ident] = random.Random()
            r.setstate(_tuples(dec(t["random"])))
            return r
        if "defaultdict" in t:
            ref = t["defaultdict"]
            if ref is None:
                factory = None
            else:
                key = ref.replace(":", ".")
                factory = _ALLOWED_FACTORIES.get(key) or _river_class(ref)
                if t.get("args") is not None:
                    factory = functools.partial(factory, *[dec(a) for a in t["args"]])
            out = objs[ident] = collections.defaultdict(factory)
            for k, v in t["items"]:
                out[_hashable(dec(k))] = dec(v)
            return out
        if "dict" in t:
            out = objs[ident] = {}
            for k, v in t["dict"]:
                out[_hashable(dec(k))] = dec(v)
            return out
        if "object" in t:
            cls = _river_class(t["object"])
            o = objs[ident] = cls.__new__(cls)
            for k, v in t["attrs"].items():
                object.__setattr__(o, k, dec(v))
            return o
        raise StateError(f"unknown entry in a river state: {sorted(t)}")

    try:
        return dec(tree)
    except (KeyError, TypeError, ValueError, AttributeError, ImportError) as e:
        raise StateError(f"malformed river state: {e}") from e


def _tuples(o: Any) -> Any:
    return tuple(_tuples(v) for v in o) if isinstance(o, list | tuple) else o


def _hashable(k: Any) -> Any:
    return _tuples(k) if isinstance(k, list) else k
