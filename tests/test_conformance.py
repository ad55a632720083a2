"""The conformance suite of streamad.checks, run over every registered detector."""

import pytest
import torch

from streamad import checks
from streamad.detectors import REGISTRY, available, make

torch.set_num_threads(1)


def _factory(name):
    cls_name, _ = REGISTRY[name]
    import streamad.detectors as d

    cls = getattr(d, cls_name)
    params = cls._unit_test_params() if hasattr(cls, "_unit_test_params") else {}
    return lambda: make(name, **params)


@pytest.mark.parametrize("check", checks.CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", available())
def test_conformance(name, check):
    check(_factory(name))


def test_the_baselines_are_registered():
    assert {"zscore", "gaussian", "hst"} <= set(available())
