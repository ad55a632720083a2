"""Benchmark loaders on generated files of the published layouts (NAB, NASA telemanom, Yahoo
S5 A1-A4, generic CSV, Orion), their error paths, the runner and the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest

from streamad.base import DataError
from streamad.bench import runner
from streamad.bench.datasets import load
from streamad.cli import main

SHARED_NAB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nab"


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
     "lacks column.*anomaly_sequences"),
    ("nasa", lambda r: np.save(r / "test" / "P-1.npy", np.zeros((10, 2))), "num_values 600.*10 rows"),
    ("yahoo", lambda r: (r / "A1Benchmark" / "real_1.csv").write_text("timestamp,value\n1,2\n"), "lacks column.*is_anomaly"),
    ("yahoo", lambda r: (r / "A1Benchmark" / "real_1.csv").write_text("timestamp,value,is_anomaly\n1,x,0\n"),
     "not numeric"),
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


@pytest.mark.parametrize("protocol", ["orion", "streaming"])
def test_runner_scores_signals_and_aggregates(tmp_path, protocol):
    res = runner.run("nasa", _nasa(tmp_path), "gaussian", params={"window": 16}, protocol=protocol, progress=False)
    rows = res["signals"]
    assert len(rows) == 2 and all("error" not in r for r in rows)
    for r in rows:
        assert r["tp"] == 1 and r["fn"] == 0  # the spike is found
        assert r["auc_pr"] > 0.2 and r["vus_pr"] > 0.2 and r["fit_s"] >= 0 and r["detect_s"] > 0
    agg = res["aggregates"]
    assert set(agg["groups"]) == {"SMAP", "MSL"} and agg["overall"]["tp"] == 2
    assert res["meta"]["protocol"] == protocol and res["meta"]["versions"]["numpy"]


def test_runner_records_failures_and_time_limits(tmp_path):
    root = _nasa(tmp_path)
    np.save(root / "train" / "P-1.npy", np.full((500, 4), np.nan))  # this signal will fail to fit
    res = runner.run("nasa", root, "gaussian", params={"window": 16}, progress=False)
    errors = [r for r in res["signals"] if "error" in r]
    assert [r["signal"] for r in errors] == ["P-1"] and res["aggregates"]["failed"] == 1
    assert res["aggregates"]["overall"]["signals"] == 1
    slow = runner.run("nasa", root, "hst", progress=False, time_limit=0.01, workers=2)
    assert all("time limit" in r["error"] for r in slow["signals"])


def test_nab_scores_in_the_result(tmp_path):
    res = runner.run("nab", _nab(tmp_path), "zscore", progress=False)
    [row] = res["signals"]
    assert set(row["nab"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    assert res["aggregates"]["overall"]["nab_score"]["standard"] == pytest.approx(row["nab_score"])


def test_cli_bench_and_report(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["bench", "--dataset", "yahoo", "--data-dir", str(_yahoo(tmp_path / "y")), "--detector", "zscore",
                 "--no-progress", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert len(doc["signals"]) == 4 and set(doc["aggregates"]["groups"]) == {"A1", "A2", "A3", "A4"}
    assert main(["bench", "report", str(out), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| zscore (orion) |" in text and "tadgan (Orion 0.7.1, published)" in text
    assert list((tmp_path / "rep").glob("*.png"))


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "nab", "--data-dir", "/nonexistent", "--out", "x.json"], "does not exist"),
    (["--dataset", "nab", "--out", "x.json"], "--data-dir is required"),
    (["--dataset", "nope", "--data-dir", ".", "--out", "x.json"], "unknown dataset"),
    (["--dataset", "yahoo", "--data-dir", ".", "--detector", "nope", "--out", "x.json"], "unknown detector"),
    (["--dataset", "yahoo", "--data-dir", ".", "--params", "{bad", "--out", "x.json"], "--params is not JSON"),
])
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_report_refuses_other_files(tmp_path, capsys):
    (tmp_path / "x.json").write_text("{}")
    assert main(["bench", "report", str(tmp_path / "x.json"), "--out", str(tmp_path / "o")]) == 2
    assert "not a `streamad bench` result" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED_NAB.is_dir(), reason="../shared/data/nab is not beside the clone")
def test_real_nab_file_runs():
    res = runner.run("nab", SHARED_NAB, "gaussian", signals="realKnownCause/nyc_taxi*", progress=False)
    [row] = res["signals"]
    assert row["n_points"] == 10320 and row["n_anomalies"] == 5 and row["tp"] >= 1


def test_bench_dispatches_generated_and_federated_datasets(tmp_path):
    out = tmp_path / "hpc.json"
    assert main(["bench", "--dataset", "hpc-sim", "--option", "n_nodes=3", "--option", "days=10",
                 "--option", "epochs=2", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["params"]["n_nodes"] == 3 and doc["fleet"]["nodes"] == 3  # generation parameters recorded
    assert main(["bench", "--dataset", "hpc-sim", "--option", "nodes", "--out", str(out)]) == 2
