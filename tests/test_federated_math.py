"""Grassmann math of federated PCA: rotation invariance, FedPG convergence to the centralised
subspace, the one-shot merge, streaming estimation, and the robust aggregation's bound."""

import numpy as np
import pytest

from streamad.federated.grassmann import (
    FrequentDirections,
    StreamingMoments,
    aggregate,
    chordal_distance,
    dual_update,
    fedpg_local,
    local_pca,
    one_shot_merge,
    orthonormalize,
    principal_angles,
    random_basis,
)

D, K = 12, 3


def _clients(n_clients=20, n=400, seed=0, shift=0.0):
    """Clients drawing from one low-rank Gaussian (plus noise); ``shift`` tilts each client's
    own subspace a little (non-IID)."""
    rng = np.random.default_rng(seed)
    base = random_basis(D, K, rng)
    out = []
    for _ in range(n_clients):
        B = orthonormalize(base + shift * rng.normal(size=(D, K)))
        X = rng.normal(size=(n, K)) * np.array([3.0, 2.0, 1.5]) @ B.T + 0.3 * rng.normal(size=(n, D))
        out.append(X)
    return base, out


def test_distances_are_rotation_invariant_and_bounded():
    rng = np.random.default_rng(1)
    U, V = random_basis(D, K, rng), random_basis(D, K, rng)
    R = orthonormalize(rng.normal(size=(K, K)))
    assert chordal_distance(U, U @ R) < 1e-12
    assert np.allclose(principal_angles(U, V), principal_angles(U @ R, V), atol=1e-10)
    W = orthonormalize(np.vstack([np.zeros((K, K)), np.eye(K), np.zeros((D - 2 * K, K))]))
    E = orthonormalize(np.vstack([np.eye(K), np.zeros((D - K, K))]))
    assert chordal_distance(E, W) == pytest.approx(np.sqrt(K))
    assert np.allclose(principal_angles(E, W), np.pi / 2)


def test_aggregate_does_not_depend_on_each_clients_rotation():
    rng = np.random.default_rng(2)
    ref = random_basis(D, K, rng)
    bases = [orthonormalize(ref + 0.2 * rng.normal(size=(D, K))) for _ in range(5)]
    rotated = [U @ orthonormalize(rng.normal(size=(K, K))) for U in bases]
    a = aggregate(ref, bases, [100] * 5).basis
    b = aggregate(ref, rotated, [100] * 5).basis
    assert chordal_distance(a, b) < 1e-9


def test_one_shot_merge_equals_centralised_pca_with_exact_local_svds():
    _, parts = _clients(n_clients=5, seed=3)
    pooled = np.vstack(parts)
    pooled = pooled - pooled.mean(0)
    central, _ = local_pca(pooled, K)
    # Exact local SVDs of the (globally centred) data, full rank: the merge is exact.
    mean = np.vstack(parts).mean(0)
    bases, svals, counts = [], [], []
    for X in parts:
        U, s = local_pca(X - mean, D)
        bases.append(U)
        svals.append(s)
        counts.append(len(X))
    merged = one_shot_merge(bases, svals, K, n_samples=counts)
    assert chordal_distance(merged, central) < 1e-8


def test_fedpg_rounds_converge_to_the_centralised_subspace():
    _, parts = _clients(seed=4)
    mean = np.vstack(parts).mean(0)
    covs = [(X - mean).T @ (X - mean) / len(X) for X in parts]
    central, _ = local_pca(np.vstack(parts) - mean, K)
    rng = np.random.default_rng(5)
    Z = random_basis(D, K, rng)
    U = [Z.copy() for _ in parts]
    Y = [np.zeros((D, K)) for _ in parts]
    rho = 0.01
    start = chordal_distance(Z, central)
    for _ in range(30):
        U = [fedpg_local(U[i], covs[i], Z, Y[i], step=0.3, rho=rho, local_steps=30) for i in range(len(parts))]
        prev = Z
        Z = aggregate(prev, U, [len(X) for X in parts], robust=False).basis
        Y = [dual_update(Y[i], U[i], Z, rho, reference=prev) for i in range(len(parts))]
    assert start > 0.5
    assert chordal_distance(Z, central) < 0.02
    assert np.allclose(Z.T @ Z, np.eye(K), atol=1e-10)  # the server's mean is re-orthonormalised


def test_streaming_estimators_track_the_batch_answers():
    _, parts = _clients(n_clients=1, n=3000, seed=6)
    X = parts[0]
    m = StreamingMoments(D)
    m.update_many(X[:1000])
    for x in X[1000:]:
        m.update(x)
    assert np.allclose(m.mean, X.mean(0)) and np.allclose(m.var, X.var(0))
    fd = FrequentDirections(D, ell=2 * K + 2)
    fd.update_many(X - X.mean(0))
    sketch = fd.sketch
    U_fd = np.linalg.svd(sketch.T, full_matrices=False)[0][:, :K]
    U_true, _ = local_pca(X - X.mean(0), K)
    assert chordal_distance(orthonormalize(U_fd), U_true) < 0.1


def test_a_poisoned_client_moves_the_robust_aggregate_by_less_than_five_degrees():
    rng = np.random.default_rng(7)
    honest_truth, parts = _clients(n_clients=19, seed=8)
    honest = [local_pca(X - X.mean(0), K)[0] for X in parts]
    ref = aggregate(honest[0], honest, [len(X) for X in parts], robust=False).basis
    worst_robust = worst_plain = 0.0
    for _ in range(20):
        poison = random_basis(D, K, rng)
        bases = honest + [poison]
        counts = [400] * 19 + [400 * 50]  # it also claims 50x the samples
        robust = aggregate(ref, bases, counts).basis
        plain = aggregate(ref, bases, counts, robust=False).basis
        worst_robust = max(worst_robust, np.degrees(principal_angles(robust, ref).max()))
        worst_plain = max(worst_plain, np.degrees(principal_angles(plain, ref).max()))
    assert worst_robust < 5.0
    assert worst_plain > 3 * worst_robust  # without the bounds the same client drags it far
