"""Federated PCA evaluation: IoT-23 and NSL-KDD loaders (generated files of the published
layouts, error paths) and the evaluation on a synthetic split where the answer is known."""

from pathlib import Path

import numpy as np
import pytest

from streamad.base import ConfigError, DataError
from streamad.bench.fed import FedData, evaluate, federated_quantile, load_iot23, load_nsl_kdd, main

IOT_HEADER = ",duration,orig_bytes,resp_bytes,missed_bytes,orig_pkts,orig_ip_bytes,resp_pkts,resp_ip_bytes"


def _iot_rows(rng, n, attack=False):
    pkts = rng.integers(1, 20, n).astype(float)
    if attack:
        pkts *= 8
    dur = rng.exponential(3.0, n)
    ob = pkts * rng.integers(40, 60, n)
    rows = np.column_stack([dur, ob, ob * 0.8, np.zeros(n), pkts, ob + 20 * pkts, pkts * 0.9, ob * 0.8 + 18 * pkts])
    return rows


def _write_iot(d: Path, rng):
    d.mkdir(parents=True, exist_ok=True)
    for name, n, attack in (("train_normal", 1200, False), ("test_normal", 300, False), ("test_abnormal", 300, True)):
        rows = _iot_rows(rng, n, attack)
        lines = [IOT_HEADER] + [",".join([str(i)] + [repr(float(v)) for v in r]) for i, r in enumerate(rows)]
        (d / f"{name}.csv").write_text("\n".join(lines) + "\n")


def test_iot23_loader_and_errors(tmp_path):
    _write_iot(tmp_path / "iot", np.random.default_rng(0))
    data = load_iot23(tmp_path / "iot")
    assert data.train.shape == (1200, 8) and data.test.shape == (600, 8)
    assert data.features[0] == "duration" and data.test_labels.sum() == 300
    with pytest.raises(DataError, match="missing .*train_normal.csv.*FedPCA"):
        load_iot23(tmp_path / "nowhere")
    (tmp_path / "iot" / "test_normal.csv").write_text(IOT_HEADER + "\n0,1,2,x,4,5,6,7,8\n")
    with pytest.raises(DataError, match="test_normal.csv is not a numeric CSV"):
        load_iot23(tmp_path / "iot")


def _kdd_line(rng, label):
    nums = [repr(float(x)) for x in rng.random(41)]
    nums[1] = rng.choice(["tcp", "udp", "icmp"])
    nums[2] = rng.choice(["http", "smtp", "ftp"])
    nums[3] = rng.choice(["SF", "S0"])
    return ",".join(nums + [label, str(int(rng.integers(0, 22)))])


def test_nsl_kdd_loader_one_hot_and_normal_only(tmp_path):
    rng = np.random.default_rng(1)
    train = [_kdd_line(rng, "normal" if i % 3 else "neptune") for i in range(90)]
    test = [_kdd_line(rng, "normal" if i % 2 else "smurf") for i in range(40)]
    fields = test[0].split(",")
    fields[2] = "telnet"  # a service never seen in training
    test[0] = ",".join(fields)
    (tmp_path / "KDDTrain+.txt").write_text("\n".join(train) + "\n")
    (tmp_path / "KDDTest+.txt").write_text("\n".join(test) + "\n")
    data = load_nsl_kdd(tmp_path)
    assert data.train.shape[0] == 60  # normal records only
    assert data.train.shape[1] == 38 + 3 + 3 + 2  # numeric + one-hot protocol, service, flag
    one_hot = data.test[:, 38:]
    assert np.all(one_hot[1:].sum(1) == 3) and one_hot[0, 3:6].sum() == 0  # unseen category: zeros
    assert data.test_labels.sum() == 20
    (tmp_path / "KDDTest+.txt").write_text("1,tcp,http\n")
    with pytest.raises(DataError, match="expected 43 fields"):
        load_nsl_kdd(tmp_path)
    with pytest.raises(DataError, match="missing .*KDDTrain"):
        load_nsl_kdd(tmp_path / "none")


def test_federated_quantile_matches_the_pooled_quantile():
    rng = np.random.default_rng(2)
    parts = [rng.lognormal(m, 1.0, 500) for m in range(5)]
    for q in (0.5, 0.9, 0.99):
        assert federated_quantile(parts, q) == pytest.approx(np.quantile(np.concatenate(parts), q), rel=0.01)


def test_federated_matches_centralised_on_iid_clients_and_flags_the_attacks():
    rng = np.random.default_rng(3)
    B = np.linalg.qr(rng.normal(size=(6, 2)))[0]
    normal = np.exp(rng.normal(size=(3000, 2)) @ B.T * 0.5 + 0.05 * rng.normal(size=(3000, 6)))
    attack = np.exp(rng.normal(size=(400, 6)) * 0.5)  # off the normal subspace
    data = FedData("toy", normal[:2600], np.vstack([normal[2600:], attack]),
                   np.r_[np.zeros(400), np.ones(400)], [f"f{i}" for i in range(6)])
    r = evaluate(data, n_clients=10, k=2, quantile=0.95, rounds=60, fraction=0.3, seed=0)["methods"]
    central, fed, merge = r["centralised"], r["federated (FedPG)"], r["one-shot merge"]
    assert central["f1"] > 0.9
    assert abs(fed["f1"] - central["f1"]) < 0.02 and fed["angle_deg"] < 5
    assert abs(merge["f1"] - central["f1"]) < 0.02
    assert central["fpr"] < 0.1
    with pytest.raises(ConfigError, match="k must be"):
        evaluate(data, k=6)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["--dataset", "iot23", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: missing") and err.count("\n") == 1


def test_cli_writes_results(tmp_path):
    _write_iot(tmp_path / "iot", np.random.default_rng(4))
    out = tmp_path / "r.json"
    assert main(["--dataset", "iot23", "--data-dir", str(tmp_path / "iot"), "--out", str(out),
                 "--rounds", "5", "--seeds", "1", "--clients", "4"]) == 0
    assert out.exists() and "federated (FedPG)" in out.with_suffix(".md").read_text()
