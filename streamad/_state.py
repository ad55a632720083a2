"""Pickle-free serialisation of state trees (nested dicts/lists of JSON values and arrays).

A state tree is what ``state_dict()`` returns: dicts with string keys, lists, str, int,
float, bool, None, numpy arrays (and torch tensors, stored as numpy). ``dumps`` packs it
into one ``.npz`` byte string: the arrays as npz members and the rest as JSON that refers
to them. ``loads`` reverses it with ``allow_pickle=False``, so loading a checkpoint can never
execute code.

>>> import numpy as np
>>> tree = {"a": np.arange(3.0), "b": [1, "x", {"c": np.eye(2)}], "f": 0.1}
>>> back = loads(dumps(tree))
>>> back["a"].tolist(), back["b"][2]["c"].tolist(), back["f"]
([0.0, 1.0, 2.0], [[1.0, 0.0], [0.0, 1.0]], 0.1)
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .base import StateError

__all__ = ["dumps", "loads", "save_atomic", "load", "trees_equal"]

_ARRAY = "__ndarray__"
_FLOAT = "__float__"


def _encode(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise StateError(f"state keys must be strings, got {k!r}")
            out[k] = _encode(v, arrays)
        return out
    if isinstance(obj, (list, tuple)):
        return [_encode(v, arrays) for v in obj]
    if hasattr(obj, "detach") and hasattr(obj, "cpu"):  # torch tensor, without importing torch
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise StateError("object arrays are not allowed in state")
        name = f"a{len(arrays)}"
        arrays[name] = obj
        return {_ARRAY: name}
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return {_FLOAT: repr(obj)}
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise StateError(f"cannot store a {type(obj).__name__} in state")


def _decode(obj: Any, arrays) -> Any:
    if isinstance(obj, dict):
        if len(obj) == 1 and _ARRAY in obj:
            return np.array(arrays[obj[_ARRAY]])
        if len(obj) == 1 and _FLOAT in obj:
            return float(obj[_FLOAT])
        return {k: _decode(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    return obj


def dumps(tree: Any) -> bytes:
    arrays: dict[str, np.ndarray] = {}
    meta = json.dumps(_encode(tree, arrays)).encode()
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.frombuffer(meta, dtype=np.uint8), **arrays)
    return buf.getvalue()


def loads(data: bytes) -> Any:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(bytes(z["__meta__"]).decode())
            return _decode(meta, z)
    except StateError:
        raise
    except Exception as e:  # zipfile/json/np errors all mean the same thing here
        raise StateError(f"not a streamad state file: {e}") from e


def save_atomic(path: str | os.PathLike, tree: Any) -> None:
    """Write ``tree`` to ``path`` so a crash leaves either the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dumps(tree)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike) -> Any:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise StateError(f"cannot read state file {path}: {e.strerror}") from e
    return loads(data)


def trees_equal(a: Any, b: Any) -> bool:
    """Exact equality of two state trees (arrays compared elementwise, NaN == NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(trees_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(trees_equal(x, y) for x, y in zip(a, b, strict=True))
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    if hasattr(b, "detach"):
        b = b.detach().cpu().numpy()
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b
