"""NAB's own protocol: the corpus threshold optimiser, NAB's result layout, the CLI, causality."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamad.bench import metrics as M
from streamad.bench import nab
from streamad.bench.datasets import load

DATA = Path(__file__).parent / "data"
NAB_DIR = DATA / "nab"


def _runs_from_reduced(files: dict) -> list[nab.NabRun]:
    """Runs from a reduced oracle: rows not listed score 0 (they lie below every optimum)."""
    runs = []
    for name, f in sorted(files.items()):
        scores = np.zeros(f["rows"])
        for i, s in f["scores"]:
            scores[i] = s
        runs.append(nab.NabRun(name.removesuffix(".csv"), np.arange(f["rows"], dtype=float),
                               np.zeros(f["rows"]), scores, [tuple(w) for w in f["windows"]]))
    return runs


def test_sweep_equals_brute_force_over_every_threshold():
    rng = np.random.default_rng(0)
    runs = []
    for k in range(6):
        n = int(rng.integers(300, 900))
        starts = sorted(rng.choice(np.arange(150, n - 60), size=int(rng.integers(0, 3)), replace=False))
        wins = [(int(s), int(s) + 40) for s in starts if all(abs(s - t) > 50 for t in starts if t != s)]
        scores = np.round(rng.random(n) ** 6, 3)  # many ties, as real detectors give
        for s, _ in wins:
            scores[s + int(rng.integers(0, 40))] = 0.9 + 0.1 * rng.random()
        runs.append(nab.NabRun(f"c{k % 2}/f{k}", np.arange(n, dtype=float), np.zeros(n), scores, wins))
    for profile in nab.PROFILES:
        thresholds, scores = nab.sweep(runs, profile)
        for t, got in zip(thresholds[::7], scores[::7], strict=True):
            want = M.nab_normalized([M.nab_file_score(r.n, M.nab_detections(r.scores, t), r.windows, profile)
                                     for r in runs])
            assert got == pytest.approx(want, abs=1e-9), (profile, t)
        best = nab.optimise(runs, [profile])[profile]
        brute = max(M.nab_normalized([M.nab_file_score(r.n, M.nab_detections(r.scores, t), r.windows, profile)
                                      for r in runs]) for t in np.unique(np.concatenate([r.scores for r in runs])))
        assert best["score"] == pytest.approx(max(brute, 0.0), abs=1e-9)


def test_optimiser_reproduces_nabs_published_windowed_gaussian_without_its_thresholds():
    oracle = json.loads((DATA / "nab_windowed_gaussian.json").read_text())
    files = {name: {"rows": f["rows"], "windows": f["windows"], "scores": f["scores_at_or_above_lowest_threshold"]}
             for name, f in oracle["files"].items()}
    got = nab.optimise(_runs_from_reduced(files))
    assert {p: round(v["score"], 1) for p, v in got.items()} == pytest.approx(
        {"standard": 39.6, "reward_low_FP_rate": 20.9, "reward_low_FN_rate": 47.4}, abs=0.1)


@pytest.mark.parametrize("detector, published", [
    ("contextOSE", {"standard": 69.9, "reward_low_FP_rate": 67.0, "reward_low_FN_rate": 73.2}),
    ("ARTime", {"standard": 74.9, "reward_low_FP_rate": 65.1, "reward_low_FN_rate": 80.4}),
])
def test_optimiser_reproduces_the_streaming_leaders_scoreboard(detector, published):
    peers = json.loads((DATA / "nab_peers.json").read_text())
    got = nab.optimise(_runs_from_reduced(peers["detectors"][detector]["files"]))
    for profile, want in published.items():
        assert got[profile]["score"] == pytest.approx(want, abs=0.1), profile


def test_results_layout_round_trip_and_compare(tmp_path):
    sigs = load("nab", NAB_DIR)
    rng = np.random.default_rng(1)
    runs = [nab.NabRun(s.name, s.timestamps, s.values, np.round(rng.random(s.n), 6), s.anomalies) for s in sigs]
    [path] = nab.write_results(tmp_path, "mine", runs)
    assert path == tmp_path / "mine" / "realKnownCause" / "mine_nyc_taxi.csv"
    head = path.read_text().splitlines()[:2]
    assert head[0] == "timestamp,value,anomaly_score,label"
    assert head[1].startswith("2014-07-01 00:00:00,10844,")
    back = nab.read_results(tmp_path, "mine", sigs)
    assert np.array_equal(back[0].scores, runs[0].scores)
    assert back[0].windows == runs[0].windows
    table = nab.compare({"mine": back, "twin": runs})
    row = table["files"]["realKnownCause/nyc_taxi"]
    assert row["mine"] == row["twin"] and row["mine"]["windows"] == len(sigs[0].anomalies)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("anomaly_score", "score"), "needs the columns timestamp and anomaly_score"),
    (lambda t: t.replace(",0.5,", ",1.5,", 1), "outside [0, 1]"),
    (lambda t: t.replace(",0.5,", ",nan,", 1), "NaN"),
    (lambda t: t.replace(",0.5,", ",high,", 1), "is not a number"),
    (lambda t: "\n".join(t.splitlines()[:-3]) + "\n", "rows, but the data file"),
])
def test_scores_from_bad_files_are_one_line_errors(tmp_path, edit, message):
    sigs = load("nab", NAB_DIR)
    s = sigs[0]
    runs = [nab.NabRun(s.name, s.timestamps, s.values, np.full(s.n, 0.5), s.anomalies)]
    [path] = nab.write_results(tmp_path, "mine", runs)
    path.write_text(edit(path.read_text()))
    out = subprocess.run([sys.executable, "-m", "streamad.cli", "bench", "--dataset", "nab", "--data-dir",
                          str(NAB_DIR), "--protocol", "nab", "--scores-from", str(tmp_path), "--detector", "mine",
                          "--out", str(tmp_path / "r.json")], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_scores_from_a_missing_results_file_is_a_one_line_error(tmp_path):
    (tmp_path / "mine" / "realKnownCause").mkdir(parents=True)
    out = subprocess.run([sys.executable, "-m", "streamad.cli", "bench", "--dataset", "nab", "--data-dir",
                          str(NAB_DIR), "--protocol", "nab", "--scores-from", str(tmp_path), "--detector", "mine",
                          "--out", str(tmp_path / "r.json")], capture_output=True, text=True)
    assert out.returncode == 2 and "missing results file" in out.stderr and "Traceback" not in out.stderr


def test_bench_nab_protocol_end_to_end(tmp_path):
    out = subprocess.run([sys.executable, "-m", "streamad.cli", "bench", "--dataset", "nab", "--data-dir",
                          str(NAB_DIR), "--protocol", "nab", "--detector", "records", "--results-dir",
                          str(tmp_path / "res"), "--out", str(tmp_path / "r.json"), "--no-progress"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    overall = doc["aggregates"]["overall"]["nab_protocol"]
    assert set(overall) == set(nab.PROFILES)
    assert 0 < overall["standard"]["threshold"] <= 1
    # the result files score the same through --scores-from, by NAB's own layout
    again = subprocess.run([sys.executable, "-m", "streamad.cli", "bench", "--dataset", "nab", "--data-dir",
                            str(NAB_DIR), "--protocol", "nab", "--detector", "records", "--scores-from",
                            str(tmp_path / "res"), "--out", str(tmp_path / "r2.json")], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    doc2 = json.loads((tmp_path / "r2.json").read_text())
    for p in nab.PROFILES:
        assert doc2["aggregates"]["overall"]["nab_protocol"][p]["score"] == pytest.approx(overall[p]["score"], abs=1e-9)
    [row] = doc["signals"]
    assert row["nab_score"] == pytest.approx(overall["standard"]["score"], abs=1e-9)  # one file: the corpus


def test_protocol_nab_needs_nab_data(tmp_path):
    out = subprocess.run([sys.executable, "-m", "streamad.cli", "bench", "--dataset", "csv", "--data-dir",
                          str(tmp_path), "--protocol", "nab", "--out", str(tmp_path / "r.json")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "--protocol nab needs NAB" in out.stderr


def test_report_sets_a_nab_protocol_run_beside_the_published_board_and_peers(tmp_path):
    out = subprocess.run([sys.executable, "-m", "streamad.cli", "bench", "--dataset", "nab", "--data-dir",
                          str(NAB_DIR), "--protocol", "nab", "--detector", "records", "--out", str(tmp_path / "r.json"),
                          "--no-progress"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    sigs = load("nab", NAB_DIR)
    s = sigs[0]
    found = np.zeros(s.n)
    for a, _ in s.anomalies:
        found[a] = 1.0  # a peer that finds every window at its first row
    nab.write_results(tmp_path / "peers", "oracle", [nab.NabRun(s.name, s.timestamps, s.values, found, s.anomalies)])
    rep = subprocess.run([sys.executable, "-m", "streamad.cli", "bench", "report", str(tmp_path / "r.json"), "--out",
                          str(tmp_path / "rep"), "--plots", "0", "--peers", str(tmp_path / "peers")],
                         capture_output=True, text=True)
    assert rep.returncode == 0, rep.stderr
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "## NAB protocol" in text and "| ARTime (NAB scoreboard, published) | 74.9 | 65.1 | 80.4 |" in text
    doc = json.loads((tmp_path / "r.json").read_text())
    fs = doc["signals"][0]["nab"]["standard"]
    assert "| realKnownCause | " in text and "5/5, 0" in text  # the peer's windows, beside ours
    if fs["tp"] < 5:  # the per-file table lists the file where the peer finds more
        assert "| realKnownCause/nyc_taxi |" in text
