"""The conformance suite of streamad.checks, run over every registered detector."""

import pytest
import torch

from streamad import checks
from streamad.detectors import available, detector_class, make

torch.set_num_threads(1)


def _factory(name):
    params = detector_class(name)._unit_test_params()
    return lambda: make(name, **params)


@pytest.mark.parametrize("check", checks.CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", available())
def test_conformance(name, check):
    check(_factory(name))


def test_the_baselines_are_registered():
    assert {"zscore", "gaussian", "hst"} <= set(available())
