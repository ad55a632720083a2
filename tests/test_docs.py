"""The Python example of README.md and the examples in the docstrings of the public modules
run as written."""

import doctest
import importlib
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _run(test: doctest.DocTest) -> None:
    out: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test, out=out.append)
    assert runner.failures == 0, "".join(out)


def test_the_readme_python_example_runs():
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)
    assert blocks, "README.md has no Python example"
    for i, block in enumerate(blocks):
        test = doctest.DocTestParser().get_doctest(block, {}, f"README.md, Python block {i + 1}", str(README), 0)
        assert len(test.examples) >= 3
        _run(test)


@pytest.mark.parametrize("module", ["streamad", "streamad.base", "streamad.io", "streamad.detectors",
                                    "streamad.thresholds", "streamad.checks"])
def test_the_public_modules_examples_run(module):
    tests = [t for t in doctest.DocTestFinder().find(importlib.import_module(module)) if t.examples]
    assert tests, f"{module} has no examples"
    for test in tests:
        _run(test)


def test_the_top_level_exports_every_detector_and_threshold_lazily():
    import subprocess
    import sys

    code = ("import sys, streamad; assert 'numpy' not in sys.modules; names = streamad.__all__; "
            "assert names == sorted(names) and len(set(names)) == len(names); "
            "from streamad import detectors, thresholds; "
            "assert set(detectors._CLASSES) | set(thresholds._CLASSES) | {'make', 'make_threshold', 'Record', "
            "'StreamadError', '__version__'} == set(names); "
            "assert streamad.make is detectors.make and streamad.make_threshold is thresholds.make; "
            "from streamad import Gaussian, SPOT, Record; assert 'torch' not in sys.modules; "
            "assert streamad.HypAD.name == 'hypad' and 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
