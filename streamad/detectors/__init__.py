"""Detectors. Each lives in a private module and is re-exported here.

Registering a detector is one edit: give its class a ``name`` (the registry name used in
configs, ``--detector`` flags and result files) in a private module ``_<something>.py`` of
this package. The registry reads those modules' source for their public classes' ``name =
"..."`` lines instead of importing them, so ``import streamad.detectors`` and
``make("zscore")`` do not pull in torch for the lightweight baselines; a class is imported
when it is first used. ``tests/test_registry.py`` checks that what the source says is what
the imported classes are.

``make(name, **params)`` builds a detector from its registry name.

>>> make("zscore").name
'zscore'
>>> make("nope")
Traceback (most recent call last):
...
streamad.base.ConfigError: unknown detector 'nope'; choose one of: ...
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from typing import Any

from ..base import ConfigError

# A public class at the top of a module, and a line that may assign ``name`` in a class's body.
_CLASS = re.compile(r"^class ([A-Za-z]\w*)\b", re.M)
_NAME = re.compile(r"^    name\b[^=\n]*=[^\n]*", re.M)


def _scan(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """``(class name -> private module, registry name -> class name)`` from the source of the
    private modules in ``folder``. A public class is a detector when its own body assigns
    ``name`` a string. Only the head of each class, up to that assignment, is parsed (parsing
    whole modules took 65 ms; this takes about 3)."""
    modules: dict[str, str] = {}
    names: dict[str, str] = {}
    for path in sorted(folder.glob("_*.py")):
        text = path.read_text(encoding="utf-8")
        heads = list(_CLASS.finditer(text))
        for i, head in enumerate(heads):
            end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
            cls, name = head.group(1), _class_name(text[head.start():end])
            if name is None:
                continue
            if name in names:
                raise ImportError(f"detectors {names[name]} and {cls} are both named {name!r}")
            modules[cls], names[name] = f".{path.stem}", cls
    return modules, names


def _class_name(source: str) -> str | None:
    """The string a class statement (``source``: it and what follows, up to the next class)
    assigns to ``name`` in its own body, if any: a candidate line inside a docstring does not
    parse, one in a function after the class is not in the class's body."""
    for line in _NAME.finditer(source):
        try:
            tree = ast.parse(source[:line.end()])
        except SyntaxError:
            continue
        for stmt in tree.body[0].body:  # type: ignore[attr-defined]
            target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
                else stmt.target if isinstance(stmt, ast.AnnAssign) else None
            if isinstance(target, ast.Name) and target.id == "name" and isinstance(stmt.value, ast.Constant) \
                    and isinstance(stmt.value.value, str):
                return stmt.value.value
        return None
    return None


# class name -> private module; registry name -> class name
_CLASSES, _NAMES = _scan(Path(__file__).parent)

#: registry name -> (class name, default parameters: none besides the class's own)
REGISTRY: dict[str, tuple[str, dict[str, Any]]] = {n: (c, {}) for n, c in sorted(_NAMES.items())}

__all__ = sorted([*_CLASSES, "REGISTRY", "available", "detector_class", "make"])


def __getattr__(name: str):
    if name in _CLASSES:
        mod = importlib.import_module(_CLASSES[name], __name__)
        return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_CLASSES})


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
    cls = detector_class(name)
    try:
        return cls(**{**REGISTRY[name][1], **params})
    except TypeError as e:
        raise ConfigError(f"bad parameters for detector {name!r}: {e}") from e
