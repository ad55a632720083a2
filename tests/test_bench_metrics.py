"""Benchmark metrics on worked examples and against the reference implementations' outputs
(../shared/data/oracles: Orion's own confusion counts, NAB's published windowedGaussian run)."""

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from streamad.bench.metrics import (
    NAB_PROFILES,
    auc_pr,
    auc_roc,
    contextual_confusion,
    contextual_scores,
    label_intervals,
    micro_average,
    nab_detections,
    nab_file_score,
    nab_normalized,
    point_labels,
    range_auc,
    vus_pr,
    vus_roc,
)


# -- contextual ----------------------------------------------------------------------------
def test_overlap_segment_worked_example():
    truth = [(10, 20), (40, 45), (80, 90)]
    found = [(0, 5), (18, 30), (44, 44), (46, 50), (60, 61)]
    # (18,30) hits (10,20); (44,44) hits (40,45); (46,50) touches (40,45) only after its end
    # is extended by one: (40,46) vs (46,51) share a single point, which is not an overlap.
    assert contextual_confusion(truth, found) == (2, 3, 1)
    assert contextual_confusion(truth, []) == (0, 0, 3)
    assert contextual_confusion([], found) == (0, 5, 0)


def test_adjacent_intervals_overlap_after_padding():
    # (10, 19) and (20, 25): as closed ranges they are adjacent; Orion's +1 padding makes
    # (10, 20) and (20, 26) which share only the point 20 -> no overlap.
    assert contextual_confusion([(10, 19)], [(20, 25)]) == (0, 1, 1)
    assert contextual_confusion([(10, 20)], [(20, 25)]) == (1, 0, 0)


def test_weighted_segment_counts_lengths_and_bounds():
    tp, fp, fn = contextual_confusion([(10, 19)], [(15, 24)], start=0, end=99, weighted=True)
    assert (tp, fp, fn) == (5, 5, 5)
    assert contextual_confusion([(10, 19)], [(10, 19)], start=0, end=99, weighted=True) == (10, 0, 0)


def test_scores_and_micro_average():
    assert contextual_scores(0, 0, 0) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    rows = [{"tp": 2, "fp": 1, "fn": 0}, {"tp": 0, "fp": 0, "fn": 2}]
    m = micro_average(rows)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 2)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    # Micro is not the mean of per-signal F1 (which would be (0.8 + 0) / 2).
    assert m["f1"] != pytest.approx(0.4)


def test_all_300_orion_cases_both_variants():
    # Orion's own counts for 300 random cases, committed with the tests (tests/data/README.md)
    cases = json.loads((Path(__file__).parent / "data" / "orion_contextual.json").read_text())
    assert len(cases) == 300
    for i, c in enumerate(cases):
        truth, found = [tuple(x) for x in c["truth"]], [tuple(x) for x in c["detected"]]
        tp, fp, fn = contextual_confusion(truth, found)
        o = c["overlap"]
        assert (tp, fp, fn) == (o["tp"], o["fp"], o["fn"]), i
        tp, fp, fn = contextual_confusion(truth, found, start=c["start"], end=c["end"], weighted=True)
        w = c["weighted"]
        assert (tp, fp, fn) == (w["tp"], w["fp"], w["fn"]), i


def test_point_labels_and_intervals_round_trip():
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.1
    assert np.array_equal(point_labels(500, label_intervals(y)), y)
    assert label_intervals([]) == [] and label_intervals([1, 1]) == [(0, 1)]


# -- NAB -----------------------------------------------------------------------------------
def test_nab_null_is_zero_and_perfect_is_hundred():
    n, wins = 2000, [(400, 499), (1200, 1299)]
    null = nab_file_score(n, np.zeros(n, bool), wins)
    perfect_det = np.zeros(n, bool)
    perfect_det[[400, 1200]] = True
    perfect = nab_file_score(n, perfect_det, wins)
    for profile in NAB_PROFILES:
        assert nab_normalized([nab_file_score(n, np.zeros(n, bool), wins, profile)]) == 0.0
        assert nab_normalized([nab_file_score(n, perfect_det, wins, profile)]) == pytest.approx(100.0)
    assert (null.tp, null.fn, perfect.tp, perfect.fp) == (0, 2, 2, 0)


def test_nab_rules_worked_example():
    n, wins = 1000, [(300, 399)]
    det = np.zeros(n, bool)
    det[[10, 200, 350, 360, 450]] = True
    s = nab_file_score(n, det, wins)
    sigma = lambda x: 2 / (1 + math.exp(5 * x)) - 1  # noqa: E731
    expect = (-0.11                                        # 200: before any window
              + sigma(-(399 - 350 + 1) / 100) / sigma(-1)  # 350: first in window; 360 ignored
              + 0.11 * sigma((450 - 399) / 99))             # 450: after the window
    assert s.raw == pytest.approx(expect)                  # 10 is in the probationary period
    assert (s.tp, s.fp, s.fn) == (1, 2, 0)
    late = np.zeros(n, bool)
    late[399] = True  # a detection at the window's last row still earns a little
    assert 0 < nab_file_score(n, late, wins).raw < s.raw + 0.11 + 0.5


def test_nab_windowed_gaussian_reproduces_published_scores():
    # NAB's own windowedGaussian outputs for all 58 files, reduced to the rows at or above the
    # lowest profile threshold (the others cannot be detections) and NAB's per-file raw score
    # (the sum of its per-row S(t)); see tests/data/README.md
    oracle = json.loads((Path(__file__).parent / "data" / "nab_windowed_gaussian.json").read_text())
    assert len(oracle["files"]) == 58
    per_profile = defaultdict(list)
    for name, f in oracle["files"].items():
        scores = np.zeros(f["rows"])
        for i, v in f["scores_at_or_above_lowest_threshold"]:
            scores[i] = v
        wins = [tuple(w) for w in f["windows"]]
        for profile in NAB_PROFILES:
            det = nab_detections(scores, oracle["thresholds"][profile])
            fs = nab_file_score(f["rows"], det, wins, profile)
            assert fs.raw == pytest.approx(f["raw"][profile], abs=1e-6), (name, profile)
            per_profile[profile].append(fs)
    for profile, want in oracle["published"].items():
        assert nab_normalized(per_profile[profile]) == pytest.approx(want, abs=0.05)
    assert round(nab_normalized(per_profile["standard"]), 1) == 39.6


# -- threshold-free --------------------------------------------------------------------------
def test_auc_perfect_random_inverted():
    rng = np.random.default_rng(1)
    y = np.zeros(2000, bool)
    y[rng.choice(2000, 100, replace=False)] = True
    assert auc_roc(y, y.astype(float)) == 1.0 and auc_pr(y, y.astype(float)) == 1.0
    assert auc_roc(y, -y.astype(float)) == 0.0
    noise = rng.random(2000)
    assert abs(auc_roc(y, noise) - 0.5) < 0.1
    assert abs(auc_pr(y, noise) - y.mean()) < 0.05  # a random ranking's AP is the positive rate
    assert math.isnan(auc_roc(np.zeros(5), np.arange(5)))


def test_auc_pr_matches_hand_computed_average_precision():
    y = [1, 0, 1, 0, 0]
    s = [0.9, 0.8, 0.7, 0.2, 0.1]
    # thresholds: 0.9 -> P=1, R=.5 ; 0.7 -> P=2/3, R=1
    assert auc_pr(y, s) == pytest.approx(0.5 * 1 + 0.5 * (2 / 3))


def test_vus_rewards_near_misses_that_point_auc_punishes():
    y = point_labels(2000, [(1000, 1019)])
    early = np.zeros(2000)
    early[990:1000] = 1.0  # fires just before the labelled interval
    assert auc_pr(y, early) < 0.1
    assert vus_pr(y, early) > auc_pr(y, early) + 0.1
    bump = np.exp(-((np.arange(2000) - 1010) / 30.0) ** 2)  # rises and falls around the interval
    assert vus_pr(y, bump) > 0.95 and vus_roc(y, bump) > 0.95
    assert vus_pr(y, y.astype(float)) < vus_pr(y, bump)  # the buffer rewards scores around the edges
    assert vus_roc(y, -y.astype(float)) < 0.5
    roc0, pr0 = range_auc(y, y.astype(float), window=0)
    assert roc0 == pytest.approx(1.0, abs=0.01) and pr0 == pytest.approx(1.0, abs=0.01)
