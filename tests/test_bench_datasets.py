"""Benchmark loaders on generated files of the published layouts (NAB, NASA telemanom, Yahoo
S5 A1-A4, generic CSV, Orion) and their error paths. The generators are reused by
test_bench_runner.py."""

import json
from pathlib import Path

import numpy as np
import pytest

from streamad.base import DataError
from streamad.bench.datasets import load


def _series(n=600, spikes=(400,), seed=0):
    rng = np.random.default_rng(seed)
    x = np.sin(np.arange(n) * 2 * np.pi / 50) + 0.05 * rng.normal(size=n)
    for s in spikes:
        x[s:s + 3] += 4.0
    return x


def _write(path: Path, header: list[str], rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")


def _nab(root: Path) -> Path:
    x = _series()
    ts = [f"2020-01-01 {h:02d}:{m:02d}:00" for h in range(10) for m in range(60)][: len(x)]
    _write(root / "data" / "realX" / "sig.csv", ["timestamp", "value"], zip(ts, x, strict=True))
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "combined_windows.json").write_text(json.dumps(
        {"realX/sig.csv": [[ts[380] + ".000000", ts[420] + ".000000"]]}))
    return root


def _nasa(root: Path) -> Path:
    for part in ("train", "test"):
        (root / part).mkdir(parents=True)
    rng = np.random.default_rng(1)
    for chan in ("P-1", "M-2"):
        np.save(root / "train" / f"{chan}.npy", np.column_stack([_series(500, ()), rng.integers(0, 2, (500, 3))]))
        np.save(root / "test" / f"{chan}.npy", np.column_stack([_series(600), rng.integers(0, 2, (600, 3))]))
    _write(root / "labeled_anomalies.csv", ["chan_id", "spacecraft", "anomaly_sequences", "class", "num_values"],
           [("P-1", "SMAP", '"[[395, 410]]"', '"[point]"', 600), ("M-2", "MSL", '"[[395, 410]]"', '"[point]"', 600)])
    return root


def _yahoo(root: Path) -> Path:
    x = _series()
    lab = np.zeros(len(x), int)
    lab[400:403] = 1
    _write(root / "A1Benchmark" / "real_1.csv", ["timestamp", "value", "is_anomaly"],
           zip(range(1, 601), x, lab, strict=True))
    _write(root / "A2Benchmark" / "synthetic_1.csv", ["timestamp", "value", "is_anomaly"],
           zip(range(1, 601), x, lab, strict=True))
    for a in ("A3", "A4"):
        _write(root / f"{a}Benchmark" / f"{a}Benchmark-TS1.csv",
               ["timestamps", "value", "anomaly", "changepoint", "trend", "noise", "seasonality"],
               [(t, v, lab_, 0, 0, 0, 0) for t, v, lab_ in zip(range(1, 601), x, lab, strict=True)])
    return root


def test_nab_loader_maps_windows_to_indices(tmp_path):
    [sig] = load("nab", _nab(tmp_path))
    assert sig.name == "realX/sig" and sig.group == "realX" and sig.anomalies == [(380, 420)]
    assert sig.values.shape == (600, 1) and sig.meta["nab"]


def test_nasa_loader_univariate_and_multivariate(tmp_path):
    root = _nasa(tmp_path)
    uni = load("nasa", root)
    assert [s.name for s in uni] == ["M-2", "P-1"] and {s.group for s in uni} == {"SMAP", "MSL"}
    assert uni[0].values.shape == (600, 1) and uni[0].train.shape == (500, 1)
    assert uni[0].anomalies == [(395, 410)]
    multi = load("nasa", root, mode="multivariate")
    assert multi[0].values.shape == (600, 4) and multi[0].train.shape == (500, 4)
    assert [s.name for s in load("nasa", root, "P-*")] == ["P-1"]


def test_yahoo_loader_all_four_layouts(tmp_path):
    sigs = load("yahoo", _yahoo(tmp_path))
    assert [s.name for s in sigs] == ["A1/real_1", "A2/synthetic_1", "A3/A3Benchmark-TS1", "A4/A4Benchmark-TS1"]
    assert all(s.anomalies == [(400, 402)] for s in sigs)


def test_csv_and_orion_loaders(tmp_path):
    x = _series()
    lab = np.zeros(len(x), int)
    lab[400:403] = 1
    _write(tmp_path / "c" / "one.csv", ["timestamp", "value", "label"], zip(range(600), x, lab, strict=True))
    [c] = load("csv", tmp_path / "c")
    assert c.anomalies == [(400, 402)]
    _write(tmp_path / "o" / "S-1.csv", ["timestamp", "value"], zip(range(1000, 1600), x, strict=True))
    _write(tmp_path / "o" / "anomalies.csv", ["signal", "events"], [("S-1", '"[[1400, 1402]]"')])
    [o] = load("orion", tmp_path / "o")
    assert o.anomalies == [(400, 402)]


@pytest.mark.parametrize("dataset, breaks, message", [
    ("nab", lambda r: (r / "labels" / "combined_windows.json").unlink(), "missing .*combined_windows.json.*numenta"),
    ("nab", lambda r: (r / "data" / "realX" / "sig.csv").write_text("timestamp,value\nnot a date,1\n"), "bad timestamp"),
    ("nasa", lambda r: (r / "test" / "P-1.npy").unlink(), "missing .*P-1.npy.*telemanom"),
    ("nasa", lambda r: (r / "labeled_anomalies.csv").write_text("chan_id,spacecraft\nP-1,SMAP\n"),
     "no column.*anomaly_sequences"),
    ("nasa", lambda r: np.save(r / "test" / "P-1.npy", np.zeros((10, 2))), "num_values 600.*10 rows"),
    ("yahoo", lambda r: (r / "A1Benchmark" / "real_1.csv").write_text("timestamp,value\n1,2\n"), "no column.*is_anomaly"),
    ("yahoo", lambda r: (r / "A1Benchmark" / "real_1.csv").write_text("timestamp,value,is_anomaly\n1,x,0\n"),
     "not a number"),
])
def test_loader_errors_are_one_line_data_errors(tmp_path, dataset, breaks, message):
    root = {"nab": _nab, "nasa": _nasa, "yahoo": _yahoo}[dataset](tmp_path / dataset)
    breaks(root)
    with pytest.raises(DataError, match=message) as e:
        load(dataset, root)
    assert "\n" not in str(e.value)


def test_empty_yahoo_dir_says_what_is_expected(tmp_path):
    with pytest.raises(DataError, match="A1Benchmark/real_.*webscope"):
        load("yahoo", tmp_path)
