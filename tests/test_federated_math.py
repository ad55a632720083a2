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
    top_subspace,
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


def _fedpg(parts, rounds, *, rho=10.0, robust=True, seed=7):
    covs = [X.T @ X / len(X) for X in parts]
    counts = [len(X) for X in parts]
    rng = np.random.default_rng(seed)
    Z = random_basis(parts[0].shape[1], K, rng)
    U = [Z.copy() for _ in parts]
    Y = [np.zeros_like(Z) for _ in parts]
    for _ in range(rounds):
        U = [fedpg_local(U[i], covs[i], Z, Y[i], step=0.3, rho=rho, local_steps=30) for i in range(len(parts))]
        prev = Z
        agg = aggregate(prev, U, counts, robust=robust)
        Z = agg.basis
        Y = [dual_update(Y[i], U[i], Z, rho, reference=prev, weight=agg.dual_scale[i]) for i in range(len(parts))]
    return Z


@pytest.mark.parametrize("robust", [False, True])
def test_fedpg_reaches_the_pooled_pca_when_each_client_sees_a_different_range(robust):
    """Non-IID: pooled data sorted by one feature and cut into clients, so the clients' own
    subspaces differ a lot. FedPG must still converge to the PCA of the pooled data, with
    robust weights too (their dual steps are scaled to match) and whatever the start."""
    rng = np.random.default_rng(8)
    A = rng.normal(size=(D, D)) * np.linspace(2.0, 0.2, D)
    X = rng.standard_t(4, size=(3000, D)) @ A.T
    X = (X - X.mean(0)) / X.std(0)
    parts = np.array_split(X[np.argsort(X[:, 0])], 8)
    central, _ = local_pca(X, K)
    own = [chordal_distance(top_subspace(P.T @ P / len(P), K)[0], central) for P in parts]
    assert np.median(own) > 0.4  # far from IID: most clients' own subspaces are far off
    for seed in (7, 9):
        Z = _fedpg(parts, 120, robust=robust, seed=seed)
        assert np.degrees(principal_angles(Z, central).max()) < 0.1


def test_robust_weights_scale_the_dual_steps_so_the_weighted_duals_still_balance():
    rng = np.random.default_rng(10)
    ref = random_basis(D, K, rng)
    honest = [orthonormalize(ref + 0.05 * rng.normal(size=(D, K))) for _ in range(4)]
    agg = aggregate(ref, [*honest, random_basis(D, K, rng)], [100, 100, 100, 100, 50_000])
    share = np.full(5, 0.2)  # counts clipped at the median: the inflated claim buys nothing
    assert agg.dual_scale[-1] < 1.0 and np.all(agg.dual_scale[:4] > 1.0)
    assert np.allclose(agg.dual_scale * share, agg.weights)
    assert np.allclose(aggregate(ref, honest, [100, 200, 300, 400], robust=False).dual_scale, 1.0)


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


def test_dp_covariance_clips_rows_and_adds_noise_of_the_stated_scale():
    from streamad.federated.grassmann import dp_covariance
    rng = np.random.default_rng(11)
    X = rng.normal(size=(2000, D))
    X[0] *= 100.0  # one huge row: clipped to norm 5, so it cannot dominate the release
    eps, delta, clip = 1.0, 1e-5, 5.0
    sigma = 2 * clip**2 / len(X) * np.sqrt(2 * np.log(1.25 / delta)) / eps
    clipped = X * np.minimum(1.0, clip / np.linalg.norm(X, axis=1, keepdims=True))
    exact = clipped.T @ clipped / len(X)
    noise = np.array([dp_covariance(X, epsilon=eps, delta=delta, clip=clip, rng=s) - exact for s in range(200)])
    assert np.allclose(noise, noise.transpose(0, 2, 1))  # symmetric
    assert abs(noise.std() / sigma - 1) < 0.05 and abs(noise.mean()) < 0.05 * sigma
    with pytest.raises(ValueError, match="epsilon"):
        dp_covariance(X, epsilon=0.0)
