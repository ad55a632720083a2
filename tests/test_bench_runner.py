"""The benchmark runner (both protocols, failures, time limits, NAB scores), the
`streamad bench` / `streamad bench report` CLI and its dispatch to other benchmark modules."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_bench_datasets import _nab, _nasa, _yahoo

from streamad.bench import runner
from streamad.cli import main


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
    machine = res["meta"]["machine"]  # what decides the CPU kernels, so a rerun can be matched
    assert machine["cpus"] >= 1 and "processor" in machine
    assert machine["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()


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


def test_streaming_protocol_leaves_out_the_scores_given_before_the_model(tmp_path):
    from streamad.detectors import HypAD

    params = {**HypAD._unit_test_params(), "warmup": 300, "history": 400, "refit_every": None}
    res = runner.run("nasa", _nasa(tmp_path), "hypad", params=params, protocol="streaming", progress=False)
    for r in res["signals"]:  # the generic warm-up here would be 60 points (10% of the series)
        assert r["warmup"] == 300 and all(s >= 300 for s, _ in r["detected"]), r


def test_saved_scores_evaluate_as_the_run_did(tmp_path):
    # benchmarks re-score saved score series (e.g. seed ensembles) with evaluate(); it must
    # give the row run_signal gave for the same scores
    from streamad.bench.datasets import load

    [sig] = load("nab", _nab(tmp_path))
    row = runner.run_signal(sig, "zscore", {}, "orion")
    again = runner.evaluate(sig, row["_scores"], runner.orion_intervals(row["_scores"]))
    assert row["tp"] + row["fp"] > 0  # something was detected, so the comparison means something
    for key in ("tp", "fp", "fn", "f1", "vus_pr", "detected", "nab_score"):
        assert again[key] == row[key], key
    shifted = runner.evaluate(sig, row["_scores"], [(0, 5)])
    assert shifted["detected"] == [[0, 5]] and shifted["tp"] + shifted["fp"] == 1


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
    # runs of the same detector with another seed or parameters get rows of their own
    out2 = tmp_path / "r2.json"
    assert main(["bench", "--dataset", "yahoo", "--data-dir", str(tmp_path / "y"), "--detector", "zscore",
                 "--seed", "3", "--params", '{"window": 20}', "--no-progress", "--out", str(out2)]) == 0
    assert main(["bench", "report", str(out), str(out2), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| zscore (orion) |" in text and '| zscore (orion, seed 3, {"window": 20}) |' in text
    plots = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert any("_seed3_" in p for p in plots) and any("_seed3_" not in p for p in plots)


def test_report_tells_runs_apart_by_mode_seed_and_params():
    from streamad.bench import report

    base = {"dataset": "nasa", "detector": "hypad", "protocol": "orion", "seed": 0, "params": {},
            "nasa_mode": "univariate"}
    variants = [base, {**base, "nasa_mode": "multivariate"}, {**base, "seed": 2},
                {**base, "params": {"epochs": 3}}, {**base, "params": {"epochs": 4}}]
    labels = [report._label(m) for m in variants]
    stems = [report._file_stem(m) for m in variants]
    assert len(set(labels)) == len(set(stems)) == len(variants)  # no two runs share a row name or a plot
    assert labels[0] == "hypad (orion)" and labels[1] == "hypad (orion, multivariate)"
    assert stems[0] == "nasa_hypad_orion" and stems[2] == "nasa_hypad_orion_seed2"


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "nab", "--data-dir", "/nonexistent", "--out", "x.json"], "does not exist"),
    (["--dataset", "nab", "--out", "x.json"], "--data-dir is required"),
    (["--dataset", "nope", "--data-dir", ".", "--out", "x.json"], "unknown dataset"),
    (["--dataset", "yahoo", "--data-dir", ".", "--detector", "nope", "--out", "x.json"], "unknown detector"),
    (["--dataset", "yahoo", "--data-dir", ".", "--params", "{bad", "--out", "x.json"], "--params is not valid JSON"),
])
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_report_refuses_other_files(tmp_path, capsys):
    (tmp_path / "x.json").write_text("{}")
    assert main(["bench", "report", str(tmp_path / "x.json"), "--out", str(tmp_path / "o")]) == 2
    assert "not a `streamad bench` result" in capsys.readouterr().err


def test_real_nab_file_runs():
    # one real NAB file in NAB's layout, committed with the tests (tests/data/README.md)
    nab = Path(__file__).parent / "data" / "nab"
    res = runner.run("nab", nab, "gaussian", signals="realKnownCause/nyc_taxi*", progress=False)
    [row] = res["signals"]
    assert row["n_points"] == 10320 and row["n_anomalies"] == 5 and row["tp"] >= 1


def test_bench_dispatches_generated_and_federated_datasets(tmp_path):
    out = tmp_path / "hpc.json"
    assert main(["bench", "--dataset", "hpc-sim", "--option", "n_nodes=3", "--option", "days=10",
                 "--option", "epochs=2", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["params"]["n_nodes"] == 3 and doc["fleet"]["nodes"] == 3  # generation parameters recorded
    assert main(["bench", "--dataset", "hpc-sim", "--option", "nodes", "--out", str(out)]) == 2


def test_orion_protocol_uses_a_series_level_path(tmp_path, monkeypatch):
    from streamad import detectors
    from streamad.base import BaseDetector
    from streamad.bench.datasets import load

    class SeriesStandIn(BaseDetector):  # fit + score_series, like a batch model (HypAD, TadGAN)
        whole_series = True
        fitted = None

        def fit(self, X):
            self.fitted = len(X)

        def learn_many(self, X):
            raise AssertionError("the batch path must be used")

        def score_series(self, X):
            return np.abs(X[:, 0] - np.median(X[:, 0]))

    stand_in = SeriesStandIn()
    monkeypatch.setattr(detectors, "make", lambda name, **kw: stand_in)
    sig = next(s for s in load("nasa", _nasa(tmp_path)) if s.name == "P-1")
    row = runner.run_signal(sig, "zscore", {}, "orion")
    assert stand_in.fitted == 500  # NASA: fit on the training part only
    assert row["tp"] == 1 and row["fn"] == 0


def _nasa_broken_correlation(root: Path) -> Path:
    """NASA layout, 5 columns per channel: four copies of one oscillation (two inverted) and a
    command bit. The anomaly flips the sign of one copy: every value stays in its normal range,
    only the relation between the channels breaks."""
    for part in ("train", "test"):
        (root / part).mkdir(parents=True)
    rng = np.random.default_rng(0)

    def series(n, anomaly=None):
        base = np.sin(2 * np.pi * np.arange(n) / 50) + 0.05 * rng.normal(size=n)
        X = np.column_stack([base, 0.8 * base, -base, 0.5 * base, np.zeros(n)]) + 0.05 * rng.normal(size=(n, 5))
        X[:, 4] = rng.integers(0, 2, n)
        if anomaly:
            X[anomaly[0]:anomaly[1], 1] *= -1
        return X

    rows = ["chan_id,spacecraft,anomaly_sequences,class,num_values"]
    for chan, craft in (("P-1", "SMAP"), ("M-2", "MSL")):
        np.save(root / "train" / f"{chan}.npy", series(1500))
        np.save(root / "test" / f"{chan}.npy", series(2000, (1200, 1260)))
        rows.append(f'{chan},{craft},"[[1200, 1259]]","[contextual]",2000')
    (root / "labeled_anomalies.csv").write_text("\n".join(rows) + "\n")
    return root


def test_nasa_multivariate_mode_lets_multivariate_detectors_see_a_broken_correlation(tmp_path):
    root = _nasa_broken_correlation(tmp_path)
    found = {}
    for det in ("node-ae", "gaussian", "pca", "zscore"):
        res = runner.run("nasa", root, det, nasa_mode="multivariate", progress=False)
        assert all("error" not in r for r in res["signals"]), res["signals"]
        found[det] = res["aggregates"]["overall"]["tp"]
    assert found["node-ae"] == found["gaussian"] == found["pca"] == 2, found  # both channels' events
    assert found["zscore"] == 0, found  # per-column z-scores: no single value is unusual


def test_streaming_intervals_are_the_services_incidents_and_gap_1_is_the_old_rule():
    from streamad import thresholds
    from streamad.bench import metrics as M
    from streamad.bench.runner import streaming_intervals
    from streamad.incidents import IncidentPolicy

    rng = np.random.default_rng(5)
    scores = rng.gamma(2.0, 1.0, 3000)
    scores[[1000, 1010, 1200]] += 40.0
    skip = 50
    rule = thresholds.SPOT(q=1e-3, level=0.98, init=max(10, min(1000, max(20, (3000 - skip) // 5))))
    flags = np.zeros(3000, dtype=bool)
    for i in range(skip, 3000):
        flags[i] = rule.update(scores[i]).is_anomaly
    assert streaming_intervals(scores, skip, policy=IncidentPolicy.parse(gap=1)) == M.label_intervals(flags)
    grouped = streaming_intervals(scores, skip)  # the service's default gap (100 records)
    def holding(i):
        return [iv for iv in grouped if iv[0] <= i <= iv[1]]

    assert holding(1000) == holding(1010) and holding(1000)[0][1] < 1200 and holding(1200)  # 10 apart: one; 190: two
    assert len(grouped) < len(M.label_intervals(flags))


def test_aggregates_count_incidents_per_anomaly_found_and_false_incidents():
    rows = [{"signal": "a", "group": "g", "n_points": 1000, "tp": 2, "fp": 1, "fn": 0, "incidents": 4,
             "auc_pr": 0.5, "vus_pr": 0.5, "fit_s": 0, "detect_s": 0},
            {"signal": "b", "group": "g", "n_points": 3000, "tp": 1, "fp": 3, "fn": 1, "incidents": 4,
             "auc_pr": 0.5, "vus_pr": 0.5, "fit_s": 0, "detect_s": 0}]
    o = runner.aggregate(rows)["overall"]
    assert o["incidents"] == 8 and o["false_incidents"] == 4
    assert o["incidents_per_found"] == pytest.approx((8 - 4) / 3)
    assert o["false_per_10k"] == pytest.approx(1e4 * 4 / 4000)
