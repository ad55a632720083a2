"""The detector registry: one edit (a class's ``name``) registers a detector, and what the
registry reads from the private modules' source is what the imported classes say."""

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import streamad.detectors as detectors
from streamad.base import BaseDetector, ConfigError


def test_the_registry_is_what_the_classes_say():
    assert list(detectors.REGISTRY) == sorted(detectors.REGISTRY)
    for name, (cls_name, defaults) in detectors.REGISTRY.items():
        cls = detectors.detector_class(name)
        assert cls.__name__ == cls_name and cls.name == name and defaults == {}
        assert issubclass(cls, BaseDetector) and "name" in vars(cls), name
        assert cls.__module__ == f"streamad.detectors{detectors._CLASSES[cls_name]}"
        assert getattr(detectors, cls_name) is cls
    assert {"tadgan": "TadGAN", "aer": "AER", "hypad": "HypAD"}.items() <= \
        {n: c for n, (c, _) in detectors.REGISTRY.items()}.items()
    assert detectors._CLASSES["TadGAN"] == "._tadgan" and detectors._CLASSES["AER"] == "._aer"


def test_every_named_detector_class_is_registered():
    """A detector class the source scan missed would be usable by import but not by name."""
    folder = Path(detectors.__file__).parent
    named = {}
    for path in folder.glob("_*.py"):
        mod = importlib.import_module(f"streamad.detectors.{path.stem}")
        for cls_name, cls in vars(mod).items():
            if inspect.isclass(cls) and issubclass(cls, BaseDetector) and cls.__module__ == mod.__name__ \
                    and not cls_name.startswith("_") and "name" in vars(cls):
                named[cls.name] = cls_name
    assert named == {n: c for n, (c, _) in detectors.REGISTRY.items()}


def test_a_class_with_a_name_in_a_private_module_is_registered(tmp_path):
    (tmp_path / "_mine.py").write_text(
        'from ..base import BaseDetector\n\n\n'
        'class Mine(BaseDetector):\n    """Scores records my way.\n\n    name = "not this"\nname = "nor this"\n    """\n\n'
        '    #: its registry name\n    name: str = "mine"  # one edit\n\n    def _score(self, v):\n        return 0.0\n\n\n'
        'class Helper:\n    pass\n\n\nclass _Private(BaseDetector):\n    name = "private"\n\n\n'
        'class Derived(Mine):\n    def _learn(self, v):\n        name = "local"\n')
    (tmp_path / "public.py").write_text('class NotScanned:\n    name = "public"\n')
    assert detectors._scan(tmp_path) == ({"Mine": "._mine"}, {"mine": "Mine"})
    (tmp_path / "_twin.py").write_text('class Twin:\n    name = "mine"\n')
    with pytest.raises(ImportError, match="Mine and Twin are both named 'mine'"):
        detectors._scan(tmp_path)


def test_the_registry_does_not_import_torch():
    code = ("import sys, streamad.detectors as d; assert 'torch' not in sys.modules; d.make('zscore'); "
            "d.available; d.REGISTRY['hypad']; assert 'torch' not in sys.modules; d.make('aer'); "
            "assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="unknown detector 'nope'"):
        detectors.detector_class("nope")
    with pytest.raises(ConfigError, match="bad parameters for detector 'zscore'"):
        detectors.make("zscore", windw=3)
