"""Federated PCA evaluation on IoT-23 and NSL-KDD: FedPG vs centralised, local-only and
one-shot-merge PCA, with IID and non-IID client splits.

    python -m streamad.bench.fed --dataset iot23 --data-dir ../shared/data/iot23 --out fed.json
    streamad bench --dataset iot23 --data-dir ../shared/data/iot23 --out fed.json

Protocol (no labels until the final scoring):

- Features are ``log1p``-transformed (bytes and packet counts span six orders of magnitude)
  and standardised with moments pooled exactly from the clients' ``(n, mean, var)``.
- The normal training records are split over ``clients`` clients: IID (a random shuffle)
  or non-IID (sorted by one feature, so each client sees a different range of it).
- Each method yields a ``d x k`` subspace; a record's score is its squared residual
  ``||x - Z Z^T x||^2``. The threshold is the ``quantile`` of scores on normal *training*
  data: of the pooled scores for the centralised model; for the federated ones, of the
  clients' scores pooled through histograms on a shared grid (:func:`federated_quantile`,
  counts only); each client's own for local-only.
- FedPG (Nguyen et al., INFOCOM 2023): each round a ``fraction`` of the clients (default
  all of them, as ``streamad fed-server`` waits for every known client) takes ``local_steps``
  Riemannian gradient steps on its ADMM-augmented objective, the server aggregates the
  returned bases rotation-invariantly (Procrustes-aligned, projected back to the Stiefel
  manifold, robust weights) and the new global basis goes to the clients of the *current*
  round; dual variables follow ``Y += s rho (U - Z)`` with ``s`` the client's robust weight
  relative to its sample share. Our step is relative to the largest eigenvalue of the local
  covariance (plus ``rho``), so the paper's constants do not carry over: with ``rho = 0.01``
  the clients of a non-IID split never reach consensus; ``rho = 10`` (default) does. The
  paper's rho and its 10% of clients per round are reported as their own rows.
- Differential privacy (optional rows, ``--dp-epsilon``): each client's standardised
  covariance released once with the Gaussian mechanism (:func:`~streamad.federated.grassmann.dp_covariance`);
  FedPG on the released matrices shows the accuracy cost per privacy budget.

Reported per method and split: precision, recall, F1, accuracy, FPR on test_normal +
test_abnormal, the subspace's largest principal angle to the centralised one, rounds to
converge, bytes per round (signed protocol messages) and wall time.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..base import ConfigError, DataError
from ..federated.grassmann import (
    aggregate,
    chordal_distance,
    clip_rows,
    dp_covariance,
    dual_update,
    fedpg_local,
    local_pca,
    one_shot_merge,
    pool_moments,
    principal_angles,
    random_basis,
)
from ..federated.protocol import GlobalModel, KeyRing, Update, new_nonce, sign_global, sign_update
from .metrics import auc_roc

__all__ = ["FedData", "bench_main", "evaluate", "load_iot23", "federated_quantile", "load_nsl_kdd", "main"]

IOT23_FILES = ("train_normal.csv", "test_normal.csv", "test_abnormal.csv")
IOT23_SOURCE = "https://github.com/dual-grp/FedPCA_AnomalyDetection (abnormal_detection_data/)"
NSL_KDD_SOURCE = "https://www.unb.ca/cic/datasets/nsl.html (KDDTrain+.txt, KDDTest+.txt)"


@dataclass
class FedData:
    """Normal training rows, test rows and test labels (1 = attack), and feature names."""

    name: str
    train: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray
    features: list[str]


# -- loaders ---------------------------------------------------------------------------
def _read_numeric_csv(path: Path) -> tuple[list[str], np.ndarray]:
    if not path.is_file():
        raise DataError(f"missing {path}; IoT-23 flows as used by FedPCA: {IOT23_SOURCE}")
    try:
        with path.open() as fh:
            header = fh.readline().strip().split(",")
        X = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not a numeric CSV: {e}") from None
    if X.shape[1] != len(header) or X.shape[0] == 0:
        raise DataError(f"{path}: expected {len(header)} numeric columns per row and at least one row")
    return header, X


def load_iot23(data_dir: str | Path) -> FedData:
    """IoT-23 flows (8 Zeek conn features; the first, unnamed column is a row index)."""
    d = Path(data_dir)
    parts = {}
    names: list[str] = []
    for f in IOT23_FILES:
        header, X = _read_numeric_csv(d / f)
        if header[0] == "":  # the index column
            header, X = header[1:], X[:, 1:]
        if names and header != names:
            raise DataError(f"{d / f} has columns {header}, other files have {names}")
        names = header
        parts[f] = X
    test = np.vstack([parts["test_normal.csv"], parts["test_abnormal.csv"]])
    labels = np.r_[np.zeros(len(parts["test_normal.csv"])), np.ones(len(parts["test_abnormal.csv"]))]
    if np.any(parts["train_normal.csv"] < 0) or np.any(test < 0):
        raise DataError(f"{d}: IoT-23 features are counts and durations; negative values found")
    return FedData("iot23", parts["train_normal.csv"], test, labels, names)


NSL_KDD_CATEGORICAL = (1, 2, 3)  # protocol_type, service, flag


def _read_kdd(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise DataError(f"missing {path}; NSL-KDD is at {NSL_KDD_SOURCE}")
    rows = [line.strip().split(",") for line in path.read_text().splitlines() if line.strip()]
    for i, r in enumerate(rows, 1):
        if len(r) != 43:
            raise DataError(f"{path}:{i}: expected 43 fields (41 features, label, difficulty), got {len(r)}")
    return rows


def load_nsl_kdd(data_dir: str | Path) -> FedData:
    """NSL-KDD (``KDDTrain+.txt`` / ``KDDTest+.txt``): 41 features, label, difficulty.
    Categorical columns are one-hot encoded with the training set's categories (an unseen
    test category encodes as all zeros); training keeps normal records only."""
    d = Path(data_dir)
    train_rows, test_rows = _read_kdd(d / "KDDTrain+.txt"), _read_kdd(d / "KDDTest+.txt")
    cats = {c: sorted({r[c] for r in train_rows}) for c in NSL_KDD_CATEGORICAL}
    names = [f"f{j}" for j in range(41) if j not in NSL_KDD_CATEGORICAL]
    names += [f"f{c}={v}" for c in NSL_KDD_CATEGORICAL for v in cats[c]]

    def encode(rows, path):
        out = np.zeros((len(rows), len(names)))
        numeric = [j for j in range(41) if j not in NSL_KDD_CATEGORICAL]
        for i, r in enumerate(rows):
            try:
                out[i, : len(numeric)] = [float(r[j]) for j in numeric]
            except ValueError as e:
                raise DataError(f"{path}:{i + 1}: non-numeric feature ({e})") from None
            col = len(numeric)
            for c in NSL_KDD_CATEGORICAL:
                if r[c] in cats[c]:
                    out[i, col + cats[c].index(r[c])] = 1.0
                col += len(cats[c])
        return out

    train = encode(train_rows, d / "KDDTrain+.txt")
    normal = np.array([r[41] == "normal" for r in train_rows])
    if not normal.any():
        raise DataError(f"{d / 'KDDTrain+.txt'} has no 'normal' records")
    test = encode(test_rows, d / "KDDTest+.txt")
    labels = np.array([r[41] != "normal" for r in test_rows], dtype=float)
    return FedData("nsl-kdd", train[normal], test, labels, names)


# -- the evaluation ----------------------------------------------------------------------
#: The paper's settings, reported as their own rows when the run uses others.
PAPER_FRACTION, PAPER_RHO = 0.1, 0.01

def _split(X: np.ndarray, n_clients: int, iid: bool, rng: np.random.Generator, feature: int) -> list[np.ndarray]:
    order = rng.permutation(len(X)) if iid else np.argsort(X[:, feature], kind="stable")
    return [X[idx] for idx in np.array_split(order, n_clients)]


def _residual(Xs: np.ndarray, Z: np.ndarray) -> np.ndarray:
    R = Xs - (Xs @ Z) @ Z.T
    return np.einsum("ij,ij->i", R, R)


def _scores(y: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    tp = int(np.sum(flagged & (y == 1)))
    fp = int(np.sum(flagged & (y == 0)))
    fn = int(np.sum(~flagged & (y == 1)))
    tn = int(np.sum(~flagged & (y == 0)))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "accuracy": (tp + tn) / len(y), "fpr": fp / (fp + tn) if fp + tn else 0.0}


#: Shared grid for federated quantiles: log10(score) from -8 to 8 in 2**14 bins (0.1% wide).
_GRID = np.linspace(-8.0, 8.0, 2**14 + 1)


def federated_quantile(client_scores: list[np.ndarray], q: float) -> float:
    """The ``q``-quantile of all clients' scores pooled, from per-client histograms on a
    shared log grid: each client sends counts per bin (no scores, no records); the server sums
    them. Exact up to the bin width (0.1% of the score).

    >>> rng = np.random.default_rng(0)
    >>> parts = [rng.exponential(s, 1000) for s in (1.0, 10.0)]
    >>> est, exact = federated_quantile(parts, 0.9), np.quantile(np.concatenate(parts), 0.9)
    >>> bool(abs(est / exact - 1) < 0.005)
    True
    """
    hist = sum(np.histogram(np.log10(np.clip(s, 1e-8, 1e8)), bins=_GRID)[0] for s in client_scores)
    cum = np.cumsum(hist)
    i = int(np.searchsorted(cum, q * cum[-1]))
    return float(10 ** _GRID[min(i + 1, len(_GRID) - 1)])


def _message_bytes(d: int, k: int) -> tuple[int, int]:
    ring = KeyRing(server=b"s" * 32, clients={"client-00": b"c" * 32})
    rng = np.random.default_rng(0)
    upd = sign_update(Update(1, "client-00", new_nonce(), random_basis(d, k, rng), 1000, rng.normal(size=d),
                             rng.random(d)), ring)
    glob = sign_global(GlobalModel(1, random_basis(d, k, rng), rng.normal(size=d), rng.random(d),
                                   [f"client-{i:02d}" for i in range(2)], 2000), ring)
    return len(upd), len(glob)


def evaluate(data: FedData, *, n_clients: int = 20, k: int = 4, quantile: float = 0.9, iid: bool = True,
             rounds: int = 100, fraction: float = 1.0, local_steps: int = 30, step: float = 0.3,
             rho: float = 10.0, robust: bool = True, split_feature: int = 0, seed: int = 0,
             dp_epsilons: tuple[float, ...] = (), dp_delta: float = 1e-5, dp_clip: float = 5.0) -> dict:
    """Run every method on one client split; returns ``{"methods": {...}, ...}``."""
    if not 1 <= k < data.train.shape[1]:
        raise ConfigError(f"k must be between 1 and {data.train.shape[1] - 1}, got {k}")
    if not 0.0 < quantile < 1.0:
        raise ConfigError(f"quantile must be in (0, 1), got {quantile}")
    rng = np.random.default_rng(seed)
    train, test = np.log1p(np.clip(data.train, 0, None)), np.log1p(np.clip(data.test, 0, None))
    parts = _split(train, n_clients, iid, rng, split_feature)
    counts = np.array([len(p) for p in parts])
    mom = pool_moments([(len(p), p.mean(0), p.var(0)) for p in parts])
    std = [(p - mom.mean) / mom.scale for p in parts]
    test_s = (test - mom.mean) / mom.scale
    y = data.test_labels
    out: dict[str, dict] = {}

    def report(name, Z, threshold, t0, **extra):
        scores = _residual(test_s, Z)
        out[name] = {**_scores(y, scores > threshold), "auc_roc": auc_roc(y, scores), "threshold": float(threshold),
                     "wall_s": time.perf_counter() - t0, **extra}

    def fed_threshold(Z):  # clients share score histograms on a common grid, never scores
        return federated_quantile([_residual(S, Z) for S in std], quantile)

    t0 = time.perf_counter()
    pooled = np.vstack(std)
    central, _ = local_pca(pooled, k)
    report("centralised", central, np.quantile(_residual(pooled, central), quantile), t0)

    t0 = time.perf_counter()
    local_rows = []
    for i in range(n_clients):  # each client alone: its own moments, subspace and threshold
        p = parts[i]
        mu, sd = p.mean(0), np.where(p.std(0) > 1e-12, p.std(0), 1.0)
        S = (p - mu) / sd
        U, _ = local_pca(S, k)
        scores = _residual((test - mu) / sd, U)
        local_rows.append({**_scores(y, scores > np.quantile(_residual(S, U), quantile)),
                           "auc_roc": auc_roc(y, scores)})
    out["local-only"] = {m: float(np.mean([r[m] for r in local_rows])) for m in local_rows[0]}
    out["local-only"]["wall_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    locals_ = [local_pca(S, k) for S in std]
    merged = one_shot_merge([u for u, _ in locals_], [s for _, s in locals_], k, n_samples=counts)
    report("one-shot merge", merged, fed_threshold(merged), t0,
           angle_deg=float(np.degrees(principal_angles(merged, central).max())))

    covs = [S.T @ S / len(S) for S in std]
    upd_bytes, glob_bytes = _message_bytes(train.shape[1], k)
    variants = [("federated (FedPG)", rho, fraction, covs)]
    if fraction != PAPER_FRACTION:
        variants.append((f"FedPG, {PAPER_FRACTION:.0%} of clients per round (paper)", rho, PAPER_FRACTION, covs))
    if rho != PAPER_RHO:
        variants.append((f"FedPG, rho = {PAPER_RHO} (paper)", PAPER_RHO, fraction, covs))
    if dp_epsilons:  # clipping alone, to tell its bias from the noise's effect
        clipped = [clip_rows(S, dp_clip) for S in std]
        variants.append((f"FedPG, rows clipped to norm {dp_clip:g}, no noise", rho, fraction,
                         [C.T @ C / len(C) for C in clipped]))
    for eps in dp_epsilons:  # each client releases its covariance once, privately; the rest is post-processing
        drng = np.random.default_rng(seed + 2)
        variants.append((f"FedPG, DP epsilon = {eps:g}", rho, fraction,
                         [dp_covariance(S, epsilon=eps, delta=dp_delta, clip=dp_clip, rng=drng) for S in std]))
    for label, r, frac, covs_used in variants:
        t0 = time.perf_counter()
        frng = np.random.default_rng(seed + 1)
        per_round = max(1, int(round(frac * n_clients)))
        Z = random_basis(train.shape[1], k, frng)
        U = [Z.copy() for _ in range(n_clients)]
        Y = [np.zeros_like(Z) for _ in range(n_clients)]
        history = []
        for _ in range(rounds):
            chosen = np.sort(frng.choice(n_clients, per_round, replace=False))
            for i in chosen:
                U[i] = fedpg_local(U[i], covs_used[i], Z, Y[i], step=step, rho=r, local_steps=local_steps)
            prev = Z
            agg = aggregate(prev, [U[i] for i in chosen], counts[chosen], robust=robust)
            Z = agg.basis
            for i, scale in zip(chosen, agg.dual_scale, strict=True):  # Z goes to this round's clients
                Y[i] = dual_update(Y[i], U[i], Z, r, reference=prev, weight=scale)
            history.append(Z)
        dist_final = [chordal_distance(h, Z) for h in history]
        converged = next((j + 1 for j in range(rounds) if max(dist_final[j:]) < 0.05), rounds)
        report(label, Z, fed_threshold(Z), t0, angle_deg=float(np.degrees(principal_angles(Z, central).max())),
               rounds=rounds, rounds_to_converge=converged, clients_per_round=per_round,
               bytes_per_round=per_round * (upd_bytes + glob_bytes))
    out["flag everything"] = {**_scores(y, np.ones(len(y), bool)), "auc_roc": 0.5, "wall_s": 0.0}
    return {"split": "iid" if iid else f"non-iid (sorted by {data.features[split_feature]})",
            "n_clients": n_clients, "k": k, "quantile": quantile, "methods": out}


def _summarise(runs: list[dict]) -> dict:
    """Mean of every metric over seeds, with the F1 range: a PCA residual threshold can sit on
    a cliff (IoT-23's attack flows form tight clusters), so one seed can mislead."""
    out = {}
    for name in runs[0]["methods"]:
        rows = [r["methods"][name] for r in runs]
        keys = [k for k, v in rows[0].items() if isinstance(v, (int, float))]
        out[name] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
        out[name]["f1_min"] = min(r["f1"] for r in rows)
        out[name]["f1_max"] = max(r["f1"] for r in rows)
    return out


def run(data: FedData, seeds: int = 5, **kw) -> dict:
    t0 = time.perf_counter()
    kw.pop("seed", None)
    splits = []
    for iid in (True, False):
        runs = [evaluate(data, iid=iid, seed=s, **kw) for s in range(seeds)]
        splits.append({**{k: v for k, v in runs[0].items() if k != "methods"}, "seeds": seeds,
                       "methods": _summarise(runs), "per_seed": [r["methods"] for r in runs]})
    import numpy
    return {"meta": {"dataset": data.name, "train_rows": len(data.train), "test_rows": len(data.test),
                     "features": data.features, "params": {**kw, "seeds": seeds},
                     "python": platform.python_version(), "numpy": numpy.__version__,
                     "machine": platform.machine(), "wall_s": time.perf_counter() - t0},
            "splits": splits}


def to_markdown(result: dict) -> str:
    m = result["meta"]
    s0 = result["splits"][0]
    lines = [f"# Federated PCA on {m['dataset']}", "",
             f"{m['train_rows']} normal training rows split over {s0['n_clients']} clients; "
             f"{m['test_rows']} test rows; k = {s0['k']}; threshold = {s0['quantile']:.2f} quantile of normal "
             f"training scores (no labels). Mean over {s0['seeds']} seeds (client split, FedPG client sampling "
             "and initialisation); F1 range over seeds in brackets. Command: "
             f"`python -m streamad.bench.fed --dataset {m['dataset']} --data-dir DIR --out FILE.json`.", "",
             "| split | method | precision | recall | F1 (min-max) | accuracy | FPR | AUC-ROC | angle to centralised (deg) "
             "| rounds to converge | bytes/round | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in result["splits"]:
        for name, r in s["methods"].items():
            def opt(key, fmt, r=r):
                return format(r[key], fmt) if key in r and not np.isnan(r[key]) else ""
            lines.append(f"| {s['split']} | {name} | {r['precision']:.3f} | {r['recall']:.3f} | "
                         f"{r['f1']:.3f} ({r['f1_min']:.2f}-{r['f1_max']:.2f}) | {r['accuracy']:.3f} | "
                         f"{r['fpr']:.3f} | {opt('auc_roc', '.3f')} | {opt('angle_deg', '.2f')} | "
                         f"{opt('rounds_to_converge', '.0f')} | {opt('bytes_per_round', '.0f')} | {r['wall_s']:.2f} |")
    lines += ["", "Local-only: mean over clients, each with its own standardisation, subspace and threshold. "
              "Rounds to converge: first round after which the global basis stays within chordal distance "
              "0.05 of its final value. DP rows: each client releases its standardised covariance once with "
              "(epsilon, 1e-5)-differential privacy for replacing one record (rows clipped to L2 norm 5, "
              "Gaussian noise; `grassmann.dp_covariance`), and FedPG runs on the released matrices; the "
              "moments and threshold histograms the clients also share are not privatised."]
    return "\n".join(lines) + "\n"


LOADERS = {"iot23": load_iot23, "nsl-kdd": load_nsl_kdd}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m streamad.bench.fed", description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(LOADERS), required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True, help="result JSON (a .md table is written beside it)")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--quantile", type=float, default=0.9)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--fraction", type=float, default=1.0,
                    help="share of the clients in each round (default: all, as fed-server waits for every "
                         "known client; the paper's 10%% is reported as its own row)")
    ap.add_argument("--seeds", type=int, default=5, help="repetitions with different seeds")
    ap.add_argument("--dp-epsilon", default="0.5,2,8",
                    help="comma-separated privacy budgets for the differentially private FedPG rows "
                         "('' for none; delta 1e-5, rows clipped to norm 5)")
    return ap


def bench_main(args: argparse.Namespace) -> int:
    """Entry point for ``streamad bench --dataset iot23|nsl-kdd`` (and ``main``)."""
    options = dict(getattr(args, "option", None) or {})  # streamad bench's --option (parse_options)
    data = LOADERS[args.dataset](args.data_dir)
    kw = {"n_clients": int(options.get("clients", getattr(args, "clients", 20))),
          "k": int(options.get("k", getattr(args, "k", 4))),
          "quantile": float(options.get("quantile", getattr(args, "quantile", 0.9))),
          "rounds": int(options.get("rounds", getattr(args, "rounds", 100))),
          "fraction": float(options.get("fraction", getattr(args, "fraction", 1.0))),
          "seeds": int(options.get("seeds", getattr(args, "seeds", 5)))}
    eps = str(options.get("dp_epsilon", getattr(args, "dp_epsilon", "0.5,2,8")))
    try:
        kw["dp_epsilons"] = tuple(float(e) for e in eps.split(",") if e.strip())
    except ValueError:
        raise ConfigError(f"dp_epsilon must be comma-separated numbers, got {eps!r}") from None
    if any(e <= 0 for e in kw["dp_epsilons"]):
        raise ConfigError(f"dp_epsilon values must be positive, got {eps!r}")
    if not 0.0 < kw["fraction"] <= 1.0:
        raise ConfigError(f"fraction must be in (0, 1], got {kw['fraction']}")
    if kw["seeds"] < 1:
        raise ConfigError(f"seeds must be at least 1, got {kw['seeds']}")
    if kw["n_clients"] < 2 or kw["n_clients"] > len(data.train):
        raise ConfigError(f"clients must be between 2 and {len(data.train)}, got {kw['n_clients']}")
    result = run(data, **kw)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    md = to_markdown(result)
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return bench_main(_parser().parse_args(argv))
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
