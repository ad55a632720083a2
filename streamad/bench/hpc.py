"""The HPC node-fleet benchmark: per-node vs shared autoencoders vs Gaussian vs PCA residual.

Protocol (after Borghesi et al., IAAI 2019), on :func:`streamad.synthetic.node_fleet`:

- Only samples where the node runs a job count (idle samples are left out of training and
  test, as in the paper).
- The first ``healthy_days`` of the fleet have no faults. A random ``train_fraction`` (70%)
  of their non-idle samples trains the models; the other 30% are healthy test samples.
  Every non-idle sample after that period is a test sample, labelled by the injected faults.
- Each detector's threshold comes from its training scores alone (per node for per-node
  models), by the rule ``threshold``: ``"max"`` (the largest training score: above
  anything seen healthy), ``"quantile"`` (the ``threshold_q`` quantile) or ``"spot"``
  (:class:`streamad.thresholds.SPOT` fitted to the training scores, risk
  ``1 - threshold_q``). No label is used to pick it; the result gives F1 under every rule.
  For comparison it also gives the label-tuned optimum (the best F1 over a grid of
  training-score percentiles and multiples of the training maximum), which is how the
  paper chose its threshold.
- Metrics are per sample, pooled over nodes: accuracy, precision, recall, F1, and recall
  per fault kind.
- The default fleet spans 8 weeks, so models train on 4 healthy weeks. Per-node models
  need that much history: with 2 weeks some nodes have not yet run every application of
  the fleet, and flag the first run of a new one (the shared model has seen it elsewhere).

Detectors (names in ``detectors``):

``node-ae``         one :class:`~streamad.detectors.NodeAutoencoder` per node (the paper)
``node-ae-shared``  one autoencoder trained on every node's training samples
``gaussian``        one :class:`~streamad.detectors.Gaussian` (``window=1``: Mahalanobis
                    distance of the record with shrinkage covariance) per node, on metrics
                    standardised with the node's training mean and spread (its shrinkage
                    target assumes comparable scales; fan rpm would drown core loads)
``pca``             one :class:`~streamad.detectors.PCAResidual` per node
"""

from __future__ import annotations

import platform
import time
from typing import Any

import numpy as np

from ..base import ConfigError
from ..synthetic import FAULT_KINDS, SyntheticData, node_fleet

__all__ = ["DEFAULT_PARAMS", "DETECTORS", "bench_main", "run_hpc_sim", "to_markdown"]

#: Default benchmark parameters: the simulator's, then the protocol's, then the models'.
DEFAULT_PARAMS: dict[str, Any] = {
    "n_nodes": 16, "n_metrics": 40, "days": 56, "step_s": 300.0, "seed": 0,
    "faults": list(FAULT_KINDS), "faults_per_node": 2, "healthy_days": None,
    "train_fraction": 0.7, "split_seed": 0, "threshold": "max", "threshold_q": 0.995,
    "epochs": 100, "hidden_factor": 10, "batch_size": 64, "score": "max", "error_q": None,
    "input_noise": 0.1,
    "pca_k": 5,
}

DETECTORS = ("node-ae", "node-ae-shared", "gaussian", "pca")

_FLEET_KEYS = ("n_nodes", "n_metrics", "days", "step_s", "seed", "faults", "faults_per_node",
               "healthy_days")


def _factory(name: str, p: dict[str, Any]):
    from ..detectors import make

    if name in ("node-ae", "node-ae-shared"):
        return lambda: make("node-ae", epochs=int(p["epochs"]), hidden_factor=p["hidden_factor"],
                            batch_size=int(p["batch_size"]), score=p["score"],
                            threshold_q=p["threshold_q"], error_q=p["error_q"],
                            input_noise=float(p["input_noise"]), seed=int(p["seed"]))
    if name == "gaussian":
        return lambda: make("gaussian", window=1)
    if name == "pca":
        return lambda: make("pca", k=int(p["pca_k"]))
    raise ConfigError(f"unknown hpc-sim detector {name!r}; choose from {', '.join(DETECTORS)}")


def _scaler(name: str, Xtr: np.ndarray):
    """The input transform a detector gets, learned on its training rows."""
    if name != "gaussian":
        return lambda X: X
    mean = Xtr.mean(axis=0)
    sd = np.maximum(Xtr.std(axis=0), 1e-3 * (1.0 + np.abs(mean)))
    return lambda X: (X - mean) / sd


def _split(data: SyntheticData, p: dict[str, Any]):
    """Per node: training rows, test rows and the test labels / fault kinds."""
    rng = np.random.default_rng(int(p["split_seed"]))
    healthy_n = int(np.ceil(data.params["healthy_days"] * 86_400 / data.params["step_s"]))
    out = {}
    for key in data.keys:
        busy = ~data.idle[key]
        early = np.flatnonzero(busy[:healthy_n] & ~data.labels[key][:healthy_n])
        pick = rng.random(len(early)) < float(p["train_fraction"])
        train = early[pick]
        late = np.flatnonzero(busy)
        test = np.concatenate([early[~pick], late[late >= healthy_n]])
        out[key] = (train, test)
    return out


def _prf(y: np.ndarray, flag: np.ndarray) -> dict[str, float]:
    tp = int(np.sum(flag & y))
    fp = int(np.sum(flag & ~y))
    fn = int(np.sum(~flag & y))
    tn = int(np.sum(~flag & ~y))
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"accuracy": (tp + tn) / max(len(y), 1), "precision": prec, "recall": rec, "f1": f1,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}


# the label-tuned search: percentiles of the training scores, then multiples of their maximum
_PERCENTILES = [*np.arange(80.0, 99.0, 1.0), *np.arange(99.0, 100.0, 0.1), 100.0]
_MULTIPLES = [1.05, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0]


def _thresholds(train_scores: list[np.ndarray], setting: tuple[str, float]) -> list[float]:
    kind, v = setting
    if kind == "percentile":
        return [float(np.percentile(s, v)) for s in train_scores]
    if kind == "spot":
        from ..thresholds import SPOT

        out = []
        for s in train_scores:
            spot = SPOT(q=v)
            spot.fit(np.asarray(s, dtype=np.float64))
            out.append(float(spot.threshold_))
        return out
    return [float(np.max(s) * v) for s in train_scores]


def _rules(p: dict[str, Any]) -> dict[str, tuple[str, float]]:
    rules = {"max": ("max_multiple", 1.0),
             "quantile": ("percentile", 100.0 * float(p["threshold_q"]))}
    try:
        from ..thresholds import SPOT  # noqa: F401
    except (ImportError, AttributeError):
        pass
    else:
        rules["spot"] = ("spot", 1.0 - float(p["threshold_q"]))
    return rules


def _evaluate(groups, p) -> dict[str, Any]:
    """groups: list of (train_scores, test_scores, test_labels, test_kinds), one per model."""
    y = np.concatenate([g[2] for g in groups])
    kinds = np.concatenate([g[3] for g in groups])
    scores = [g[1] for g in groups]
    trains = [g[0] for g in groups]

    def flags(setting):
        th = _thresholds(trains, setting)
        return np.concatenate([s > t for s, t in zip(scores, th, strict=True)]), th

    rules = _rules(p)
    if p["threshold"] not in rules:
        raise ConfigError(f"unknown or unavailable threshold rule {p['threshold']!r}; "
                          f"choose from {', '.join(rules)}")
    flag, th = flags(rules[p["threshold"]])
    res = _prf(y, flag)
    res["recall_per_fault"] = {k: float(flag[kinds == k].mean()) for k in FAULT_KINDS
                               if np.any(kinds == k)}
    res["threshold"] = {"rule": p["threshold"], "median_over_models": float(np.median(th))}
    res["f1_per_rule"] = {}
    for r, setting in rules.items():
        try:
            res["f1_per_rule"][r] = _prf(y, flags(setting)[0])["f1"]
        except Exception as e:  # a secondary rule must not sink the whole run
            res["f1_per_rule"][r] = None
            res.setdefault("rule_errors", {})[r] = f"{type(e).__name__}: {e}"
    best, best_setting = -1.0, None
    for setting in [*(("percentile", v) for v in _PERCENTILES),
                    *(("max_multiple", v) for v in _MULTIPLES)]:
        f = _prf(y, flags(setting)[0])["f1"]
        if f > best + 1e-12:
            best, best_setting = f, setting
    res["label_tuned"] = {"f1": best, "setting": best_setting[0],
                          "value": round(float(best_setting[1]), 3),
                          "f1_gap": best - res["f1"]}
    # a threshold-free view: how well the scores rank faulty above healthy samples
    res["auc_pr"] = _auc_pr(y, np.concatenate(
        [s / max(np.max(t), 1e-12) for s, t in zip(scores, trains, strict=True)]))
    return res


def _auc_pr(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve, step-wise)."""
    if not y.any():
        return 0.0
    order = np.argsort(-s, kind="stable")
    yy = y[order]
    tp = np.cumsum(yy)
    prec = tp / np.arange(1, len(yy) + 1)
    return float(np.sum(prec[yy]) / yy.sum())


def run_hpc_sim(params: dict[str, Any] | None = None,
                detectors: list[str] | tuple[str, ...] = DETECTORS) -> dict[str, Any]:
    """Generate a node fleet, train and score every detector, return the result dict.

    ``params`` overrides :data:`DEFAULT_PARAMS`; the result holds them all, the fleet's
    size, and per detector its metrics (see the module docstring), ``fit_s`` and ``score_s``.
    """
    unknown = set(params or {}) - set(DEFAULT_PARAMS)
    if unknown:
        raise ConfigError(f"unknown hpc-sim parameter(s) {sorted(unknown)}; known: "
                          f"{', '.join(DEFAULT_PARAMS)}")
    p = {**DEFAULT_PARAMS, **(params or {})}
    for name in detectors:
        _factory(name, p)  # unknown names fail before the long part
    t0 = time.perf_counter()
    fleet = node_fleet(**{k: p[k] for k in _FLEET_KEYS})
    gen_s = time.perf_counter() - t0
    split = _split(fleet, p)
    kinds = {k: fleet.kinds(k) for k in fleet.keys}
    n_train = sum(len(tr) for tr, _ in split.values())
    n_test = sum(len(te) for _, te in split.values())
    out: dict[str, Any] = {
        "dataset": "hpc-sim",
        "params": {**p, "healthy_days": fleet.params["healthy_days"]},
        "fleet": {"nodes": len(fleet.keys), "metrics": len(fleet.features),
                  "samples_per_node": fleet.n_points, "faults": len(fleet.anomalies),
                  "train_samples": n_train, "test_samples": n_test,
                  "test_faulty_samples": int(sum(
                      fleet.labels[k][te].sum() for k, (_, te) in split.items())),
                  "generate_s": round(gen_s, 3)},
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "detectors": {},
    }
    for name in detectors:
        make = _factory(name, p)
        fit_s = score_s = 0.0
        groups = []
        if name.endswith("-shared"):
            det = make()
            Xtr = np.concatenate([fleet.values[k][tr] for k, (tr, _) in split.items()])
            t = time.perf_counter()
            det.fit(Xtr)
            fit_s += time.perf_counter() - t
            t = time.perf_counter()
            train_scores = det.score_many(Xtr)
            for k, (_, te) in split.items():
                groups.append((train_scores, det.score_many(fleet.values[k][te]),
                               fleet.labels[k][te], kinds[k][te]))
            score_s += time.perf_counter() - t
            # one model, one threshold: evaluate the pooled test set against it
            groups = [(train_scores, np.concatenate([g[1] for g in groups]),
                       np.concatenate([g[2] for g in groups]),
                       np.concatenate([g[3] for g in groups]))]
        else:
            for k, (tr, te) in split.items():
                det = make()
                t = time.perf_counter()
                prep = _scaler(name, fleet.values[k][tr])
                Xtr = prep(fleet.values[k][tr])
                det.fit(Xtr)
                fit_s += time.perf_counter() - t
                t = time.perf_counter()
                groups.append((det.score_many(Xtr), det.score_many(prep(fleet.values[k][te])),
                               fleet.labels[k][te], kinds[k][te]))
                score_s += time.perf_counter() - t
        res = _evaluate(groups, p)
        res.update(fit_s=round(fit_s, 3), score_s=round(score_s, 3))
        out["detectors"][name] = res
    # a detector with random scores, as the floor every model must clear
    rng = np.random.default_rng(0)
    rand = [(rng.random(len(tr)), rng.random(len(te)), fleet.labels[k][te], kinds[k][te])
            for k, (tr, te) in split.items()]
    out["random_baseline"] = {k: v for k, v in _evaluate(rand, p).items()
                              if k in ("f1", "precision", "recall", "accuracy")}
    # and the trivial detector that flags every sample (recall 1, precision = fault share)
    y_all = np.concatenate([fleet.labels[k][te] for k, (_, te) in split.items()])
    out["flag_all_baseline"] = {k: v for k, v in _prf(y_all, np.ones_like(y_all)).items()
                                if k in ("f1", "precision", "recall", "accuracy")}
    return out


def to_markdown(result: dict[str, Any]) -> str:
    """A short report: the table, recall per fault kind, label-free vs label-tuned F1."""
    p, f = result["params"], result["fleet"]
    lines = [
        "# HPC node fleet (hpc-sim)",
        "",
        f"{f['nodes']} nodes x {f['metrics']} metrics, {p['days']} days of {p['step_s']:g} s "
        f"samples, {f['faults']} injected faults (seed {p['seed']}). Trained on a random "
        f"{100 * p['train_fraction']:g}% of the non-idle samples of the first "
        f"{p['healthy_days']:g} healthy days ({f['train_samples']} samples); tested on "
        f"{f['test_samples']} non-idle samples ({f['test_faulty_samples']} faulty). "
        f"Label-free threshold rule: {p['threshold']!r} of each model's training scores "
        "(F1 under each rule below).",
        "",
        "| detector | accuracy | precision | recall | F1 | AUC-PR | label-tuned F1 (setting) | fit s | score s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["detectors"].items():
        lt = r["label_tuned"]
        lines.append(
            f"| {name} | {r['accuracy']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | "
            f"**{r['f1']:.3f}** | {r['auc_pr']:.3f} | {lt['f1']:.3f} ({lt['setting']} "
            f"{lt['value']:g}) | {r['fit_s']:.1f} | {r['score_s']:.2f} |")
    rules = list(next(iter(result["detectors"].values()))["f1_per_rule"])
    lines += ["", "F1 per label-free threshold rule:", "",
              "| detector | " + " | ".join(rules) + " |", "|---|" + "---|" * len(rules)]
    for name, r in result["detectors"].items():
        lines.append(f"| {name} | " + " | ".join(
            "-" if r["f1_per_rule"][k] is None else f"{r['f1_per_rule'][k]:.3f}" for k in rules) + " |")
    lines += [""]
    rb = result["random_baseline"]
    fa = result["flag_all_baseline"]
    lines += [f"Trivial baselines: random scores (same rule) F1 {rb['f1']:.3f}; flagging every "
              f"sample F1 {fa['f1']:.3f} (precision {fa['precision']:.3f}).", "",
              "Recall per fault kind (label-free threshold):", "",
              "| detector | " + " | ".join(FAULT_KINDS) + " |",
              "|---|" + "---|" * len(FAULT_KINDS)]
    for name, r in result["detectors"].items():
        rec = r["recall_per_fault"]
        lines.append(f"| {name} | " + " | ".join(
            f"{rec[k]:.2f}" if k in rec else "-" for k in FAULT_KINDS) + " |")
    return "\n".join(lines) + "\n"


def bench_main(args) -> int:
    """``streamad bench --dataset hpc-sim [--seed S] [--option KEY=VALUE ...] --out FILE.json``:
    generate the fleet, run every detector, write the result JSON and a markdown table beside it.
    Options are :data:`DEFAULT_PARAMS` keys (values parsed as JSON when they are JSON:
    :func:`streamad.base.parse_options`)."""
    import json
    from pathlib import Path

    params: dict[str, Any] = dict(args.option)  # parsed by the runner: JSON values, else strings
    if getattr(args, "seed", None) is not None and "seed" in DEFAULT_PARAMS:
        params.setdefault("seed", args.seed)
    result = run_hpc_sim(params)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    md = to_markdown(result)
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0
