import json

import numpy as np
import pytest

from streamad.cli import main


def _write_series(path, n=600, spike=400, label=True, iso=True):
    rng = np.random.default_rng(0)
    v = np.sin(np.arange(n) / 10) + rng.normal(0, 0.05, n)
    v[spike:spike + 3] += 6.0
    lines = ["timestamp,value" + (",label" if label else "")]
    for i in range(n):
        ts = np.datetime64("2024-01-01T00:00:00") + np.timedelta64(60 * i, "s") if iso else 1_700_000_000 + 60 * i
        lines.append(f"{ts},{float(v[i])!r}" + (f",{int(spike <= i < spike + 3)}" if label else ""))
    path.write_text("\n".join(lines) + "\n")
    return v


@pytest.mark.parametrize("threshold", ["spot", "quantile", "orion"])
def test_detect_finds_spike_and_writes_outputs(tmp_path, capsys, threshold):
    f = tmp_path / "s.csv"
    _write_series(f)
    out = tmp_path / "out"
    rc = main(["detect", str(f), "--detector", "zscore", "--params", '{"window": 50}',
               "--threshold", threshold, "--out", str(out)])
    assert rc == 0
    meta = json.loads((out / "intervals.json").read_text())
    assert meta["n_points"] == 600 and meta["threshold"] == threshold
    hits = [r for r in meta["intervals"] if r["start_index"] - 60 <= 400 <= r["end_index"] + 2]
    assert hits, meta["intervals"]
    assert len(meta["intervals"]) <= 5
    assert (out / "plot.png").stat().st_size > 1000
    scores = (out / "scores.csv").read_text().splitlines()
    assert len(scores) == 601 and scores[0].startswith("timestamp,value,score,threshold,is_anomaly,label")
    assert (out / "intervals.csv").read_text().count("\n") == len(meta["intervals"]) + 1
    printed = capsys.readouterr().out
    assert hits[0]["start"] in printed


def test_detect_numeric_timestamps_multiple_columns_no_plot(tmp_path):
    rng = np.random.default_rng(1)
    f = tmp_path / "m.csv"
    rows = ["ts,a,b,anomaly"] + [f"{1e9 + i},{rng.normal()},{rng.normal()},0" for i in range(300)]
    f.write_text("\n".join(rows) + "\n")
    out = tmp_path / "o"
    assert main(["detect", str(f), "--detector", "zscore", "--params", '{"window": 20}',
                 "--out", str(out), "--no-plot"]) == 0
    assert not (out / "plot.png").exists()
    assert (out / "scores.csv").read_text().splitlines()[0] == "timestamp,a,b,score,threshold,is_anomaly,label"


@pytest.mark.parametrize("content,args,needle", [
    (None, [], "no such file"),
    ("", [], "empty"),
    ("timestamp,value\n" + "".join(f"{i},x{i}\n" for i in range(30)), [], "not a number"),
    ("timestamp,value\n1,2\n2,3\n", [], "too short"),
    ("timestamp,value\n" + "".join(f"{i},{'nan' if i == 5 else i}\n" for i in range(30)), [], "NaN"),
    ("timestamp\n" + "".join(f"{i}\n" for i in range(30)), [], "value column"),
    ("timestamp,value\n" + "".join(f"day{i},{i}\n" for i in range(30)), [], "timestamp"),
    ("timestamp,value\n" + "".join(f"{i},{i}\n" for i in range(30)), ["--detector", "nope"], "unknown detector"),
    ("timestamp,value\n" + "".join(f"{i},{i}\n" for i in range(30)), ["--params", "{bad"], "--params"),
    ("timestamp,value\n" + "".join(f"{i},{i}\n" for i in range(30)), ["--label-column", "lbl"], "label column"),
])
def test_detect_errors_are_one_line(tmp_path, capsys, content, args, needle):
    f = tmp_path / "bad.csv"
    if content is not None:
        f.write_text(content)
    rc = main(["detect", str(f), "--out", str(tmp_path / "o"), "--no-plot", *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_detect_binary_file(tmp_path, capsys):
    f = tmp_path / "b.csv"
    f.write_bytes(bytes(range(256)) * 10)
    assert main(["detect", str(f), "--no-plot", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_detect_saves_the_trained_detector_for_serve(tmp_path):
    from streamad import _state, detectors

    f = tmp_path / "s.csv"
    v = _write_series(f, label=False)
    path = tmp_path / "model" / "zscore.npz"
    assert main(["detect", str(f), "--detector", "zscore", "--params", '{"window": 50}', "--no-plot",
                 "--out", str(tmp_path / "o"), "--save-state", str(path)]) == 0
    det = detectors.make("zscore", window=50)
    det.load_state_dict(_state.load(path))
    fresh = detectors.make("zscore", window=50)
    fresh.process_many(v[:, None])  # the saved detector has seen the whole series
    assert det.score_one({"value": 3.0}) == pytest.approx(fresh.score_one({"value": 3.0}))


def test_detect_never_thresholds_the_scores_given_before_the_model(tmp_path):
    # HypAD scores 0.0 until its warm-up (here 100 points) is in; SPOT calibrated on those
    # zeros would flag every later point
    from streamad.detectors import HypAD

    f = tmp_path / "s.csv"
    _write_series(f)
    out = tmp_path / "out"
    params = {**HypAD._unit_test_params(), "refit_every": None}
    rc = main(["detect", str(f), "--detector", "hypad", "--params", json.dumps(params), "--out", str(out)])
    assert rc == 0
    meta = json.loads((out / "intervals.json").read_text())
    assert meta["warmup"] >= params["warmup"]
    flagged = sum(r["end_index"] - r["start_index"] + 1 for r in meta["intervals"])
    assert flagged < 60, meta["intervals"]  # a few short intervals, not everything after the warm-up


def test_detect_intervals_are_the_incidents_the_service_would_publish(tmp_path):
    from streamad._detect import detect, read_csv
    from streamad.incidents import IncidentPolicy, track_series
    from streamad.service.config import ServiceConfig

    f = tmp_path / "s.csv"
    v = _write_series(f, n=900, label=False)
    v[[500, 520, 700]] += 6.0  # 500 and 520: one incident under the service's gap (100 records); 700: another
    lines = f.read_text().splitlines()
    f.write_text("\n".join([lines[0]] + [f"{row.split(',')[0]},{float(v[i])!r}" for i, row in enumerate(lines[1:])]) + "\n")
    series = read_csv(f)
    res = detect(series, "zscore", {"window": 50}, "spot")
    want = track_series(res["flags"], res["scores"], res["threshold"], ts=series.ts,
                        policy=ServiceConfig().incident_policy)
    assert [(s, e) for s, e, _ in res["intervals"]] == [(i.start, i.end) for i in want]
    assert any(s <= 500 and e >= 520 for s, e, _ in res["intervals"]), res["intervals"]
    runs = detect(series, "zscore", {"window": 50}, "spot", policy=IncidentPolicy.parse(gap=1))["intervals"]
    flags = res["flags"].astype(int)
    assert len(runs) == int(np.sum(np.diff(np.concatenate([[0], flags])) == 1)) > len(res["intervals"])


def test_detect_incident_gap_flag(tmp_path, capsys):
    f = tmp_path / "s.csv"
    _write_series(f)
    out = tmp_path / "o"
    assert main(["detect", str(f), "--detector", "zscore", "--params", '{"window": 50}', "--no-plot",
                 "--incident-gap", "10m", "--out", str(out)]) == 0
    assert json.loads((out / "intervals.json").read_text())["incident_gap"] == "600s"
    capsys.readouterr()
    assert main(["detect", str(f), "--no-plot", "--incident-gap", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "gap: must be more than 0" in err and len(err.strip().splitlines()) == 1


def test_the_score_panel_leaves_the_warm_up_out_of_its_scale(tmp_path):
    # NAB's nyc_taxi with pca: a warm-up score of 250,530 at row 2 flattened the panel
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from streamad._detect import _plot, read_csv

    f = tmp_path / "s.csv"
    _write_series(f, label=False)
    series = read_csv(f)
    scores = np.abs(np.sin(np.arange(600) / 7)) * 3
    scores[2] = 250_530.0
    th = np.full(600, 4.0)
    th[:60] = np.inf
    result = {"scores": scores, "threshold": th, "warmup": 50, "intervals": [(300, 302, 0.5), (450, 450, 0.1)]}
    figures = []
    real_savefig = plt.Figure.savefig

    def keep(fig, *a, **k):
        figures.append(fig)
        return real_savefig(fig, *a, **k)

    plt.Figure.savefig = keep
    try:
        _plot(series, result, tmp_path / "p.png", "t")
    finally:
        plt.Figure.savefig = real_savefig
    a1, a2 = figures[0].axes
    low, high = a2.get_ylim()
    assert high < 5.0 and low <= 0.0  # the scale of the scores after the warm-up and the threshold
    labels = a2.get_legend_handles_labels()[1]
    assert "incident opens" in labels and "warm-up (out of the score scale)" in labels
    assert len(a1.patches) >= 2 + 1  # two incidents and the warm-up shaded
    assert (tmp_path / "p.png").stat().st_size > 10_000
