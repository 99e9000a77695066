"""Residual k-means: balance bound, determinism, error, separated clusters, clear errors, degenerate sizes."""

import math
from unittest.mock import patch

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from align.sid.rqkmeans import balanced_assign, fit_rq_kmeans, nearest


def blobs(n_per_blob: int, centers: list[list[float]], noise: float = 0.01, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.tensor(centers)
    return c.repeat_interleave(n_per_blob, 0) + noise * torch.randn(len(centers) * n_per_blob, c.shape[1], generator=g)


def random_points(n: int, d: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_balanced_caps_every_cluster_at_ceil_n_over_k_on_every_level():
    x = random_points(1003, d=16)
    result = fit_rq_kmeans(x, levels=3, codebook_size=[16, 8, 5], balanced=True, iters=5)
    for level, k in enumerate([16, 8, 5]):
        counts = torch.bincount(result.codes[:, level], minlength=k)
        assert counts.max() <= math.ceil(1003 / k)


def test_tolerance_lets_unequal_clusters_stay_whole_within_the_stated_cap():
    x = blobs(1, [[5.0, 0.0]] * 60 + [[-5.0, 0.0]] * 40)  # natural clusters of 60 and 40: the strict cap is 50
    strict = fit_rq_kmeans(x, levels=1, codebook_size=2, balanced=True)
    loose = fit_rq_kmeans(x, levels=1, codebook_size=2, balanced=True, balance_tolerance=0.2)
    assert torch.bincount(strict.codes[:, 0]).max() == 50
    assert sorted(torch.bincount(loose.codes[:, 0]).tolist()) == [40, 60]  # ceil(1.2 * 100 / 2) = 60
    assert loose.level_errors[0] < 0.01 * strict.level_errors[0]


def test_tolerance_bounds_every_level_and_every_prefix():
    x = random_points(1003, d=16)
    for per_prefix in (False, True):
        result = fit_rq_kmeans(
            x, levels=2, codebook_size=[16, 8], balanced=True, balance_per_prefix=per_prefix, balance_tolerance=0.1
        )
        assert torch.bincount(result.codes[:, 0]).max() <= math.ceil(1.1 * 1003 / 16)
        prefixes = torch.unique(result.codes[:, :1], dim=0, return_inverse=True)[1]
        for group in range(int(prefixes.max()) + 1):
            members = result.codes[prefixes == group, 1]
            cap = math.ceil(1.1 * members.numel() / 8) if per_prefix else math.ceil(1.1 * 1003 / 8)
            assert torch.bincount(members).max() <= cap


def test_plain_kmeans_on_isotropic_noise_leaves_no_sink_cluster():
    # Without a capped first assignment one centroid near the origin took 3.3 x n / K items here.
    x = random_points(6000, d=256)
    result = fit_rq_kmeans(x, levels=1, codebook_size=128, refine_sweeps=0)
    assert torch.bincount(result.codes[:, 0]).max() <= 2 * 6000 / 128


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 60),
    k=st.integers(1, 8),
    slack=st.integers(0, 3),
    seed=st.integers(0, 1000),
    chunk=st.sampled_from([4, 1000]),
)
def test_balanced_assign_respects_any_capacity(n, k, slack, seed, chunk):
    x, centroids = random_points(n, 3, seed), random_points(k, 3, seed + 1)
    capacity = math.ceil(n / k) + slack
    codes = balanced_assign(x, centroids, capacity, chunk_size=chunk)
    assert codes.min() >= 0 and codes.max() < k
    assert torch.bincount(codes, minlength=k).max() <= capacity


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), k=st.integers(1, 6), n_groups=st.integers(1, 5), seed=st.integers(0, 1000))
def test_balanced_assign_caps_each_group_separately(n, k, n_groups, seed):
    assert_group_caps_hold(n, k, n_groups, seed, chunk_size=7)


def assert_group_caps_hold(n: int, k: int, n_groups: int, seed: int, chunk_size: int) -> None:
    """Random points in random groups, each group capped at ceil(size / k) per centroid: every cap holds."""
    x, centroids = random_points(n, 3, seed), random_points(k, 3, seed + 1)
    groups = torch.randint(n_groups, (n,), generator=torch.Generator().manual_seed(seed))
    capacity = (torch.bincount(groups, minlength=n_groups) + k - 1) // k
    codes = balanced_assign(x, centroids, capacity, chunk_size=chunk_size, groups=groups)
    assert codes.min() >= 0 and codes.max() < k
    slot_counts = torch.bincount(groups * k + codes, minlength=n_groups * k).view(n_groups, k)
    assert (slot_counts <= capacity[:, None]).all()


def test_balancing_per_prefix_leaves_no_collision_when_groups_fit():
    # Level 0: 4 codes of <= 10 items; level 1 within each: <= ceil(10 / 4) = 3 items per (c0, c1); level 2 within
    # those: 1 item per code. Every SID is then distinct, where global balancing alone leaves collisions.
    x = random_points(40, d=16)
    prefix = fit_rq_kmeans(x, levels=3, codebook_size=4, balanced=True, balance_per_prefix=True).codes
    assert len({tuple(row) for row in prefix.tolist()}) == 40
    assert torch.bincount(prefix[:, 0]).max() <= 10
    assert torch.bincount(prefix[:, 0] * 4 + prefix[:, 1]).max() <= 3


def test_balanced_assign_is_nearest_when_capacity_never_binds():
    x, centroids = random_points(200), random_points(7, seed=1)
    assert torch.equal(balanced_assign(x, centroids, capacity=200), nearest(x, centroids)[0])


def test_balanced_assign_keeps_the_point_that_loses_most_elsewhere():
    # Both points prefer centroid 0 (capacity 1). Point 0 is closer to it, but point 1 would lose more elsewhere.
    centroids = torch.tensor([[0.0], [1.0]])
    x = torch.tensor([[0.45], [-0.5]])  # margins: point 0: 0.3025 - 0.2025 = 0.1; point 1: 2.25 - 0.25 = 2.0
    assert balanced_assign(x, centroids, capacity=1).tolist() == [1, 0]


def test_same_seed_same_codes_and_codebooks():
    x = random_points(500)
    a = fit_rq_kmeans(x, levels=2, codebook_size=8, balanced=True, seed=3)
    b = fit_rq_kmeans(x, levels=2, codebook_size=8, balanced=True, seed=3)
    assert torch.equal(a.codes, b.codes)
    assert all(torch.equal(p, q) for p, q in zip(a.codebooks, b.codebooks, strict=True))


def test_separated_blobs_get_one_first_level_code_each():
    x = blobs(25, [[5.0, 0.0], [0.0, 5.0], [-5.0, 0.0], [0.0, -5.0]])
    for balanced in (False, True):
        codes = fit_rq_kmeans(x, levels=1, codebook_size=4, balanced=balanced).codes[:, 0]
        per_blob = codes.view(4, 25)
        assert all(len(set(row.tolist())) == 1 for row in per_blob)
        assert len(set(per_blob[:, 0].tolist())) == 4


def test_error_falls_with_levels_and_matches_the_reconstruction():
    x = random_points(600, d=12)
    greedy = fit_rq_kmeans(x, levels=3, codebook_size=8, refine_sweeps=0)
    assert greedy.level_errors == sorted(greedy.level_errors, reverse=True)
    assert greedy.level_errors[0] < x.square().sum(1).mean()
    one_level = fit_rq_kmeans(x, levels=1, codebook_size=8)
    assert greedy.level_errors[-1] < 0.9 * one_level.level_errors[0]
    refined = fit_rq_kmeans(x, levels=3, codebook_size=8, refine_sweeps=1)
    assert refined.level_errors[-1] <= greedy.level_errors[-1] + 1e-6  # block coordinate descent never hurts
    mse = (x - refined.reconstruct()).square().sum(1).mean()
    assert mse == pytest.approx(refined.level_errors[-1], rel=1e-4)


def test_codebook_larger_than_the_catalog_is_lowered_to_it():
    result = fit_rq_kmeans(random_points(10), levels=2, codebook_size=50, balanced=True)
    assert result.level_sizes == [10, 10]
    assert sorted(result.codes[:, 0].tolist()) == list(range(10))  # capacity ceil(10 / 10) = 1


@pytest.mark.parametrize("balanced", [False, True])
def test_fewer_distinct_points_than_codes(balanced):
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).repeat(10, 1)  # 20 items, 2 distinct points, K = 8
    result = fit_rq_kmeans(x, levels=2, codebook_size=8, balanced=balanced)
    assert result.codes.shape == (20, 2) and result.codes.max() < 8
    assert result.level_errors[-1] == pytest.approx(0.0, abs=1e-10)
    if balanced:
        assert torch.bincount(result.codes[:, 0]).max() <= math.ceil(20 / 8)


def test_sample_fit_then_full_assignment_covers_every_item():
    x = random_points(3000)
    result = fit_rq_kmeans(x, levels=2, codebook_size=4, balanced=True, sample_size=500, chunk_size=256)
    assert result.codes.shape == (3000, 2)
    assert torch.bincount(result.codes[:, 0], minlength=4).max() <= 750


@pytest.mark.parametrize(
    ("x", "kwargs", "message"),
    [
        (torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), {}, "row 1 has NaN"),
        (torch.tensor([[0.0, float("inf")]]), {}, "row 0 has NaN or inf"),
        (torch.empty(0, 4), {}, "empty"),
        (torch.ones(4), {}, "2-D"),
        (torch.ones(4, 2, dtype=torch.int64), {}, "floating point"),
        (torch.ones(4, 2), {"levels": 0}, "levels must be >= 1"),
        (torch.ones(4, 2), {"codebook_size": 0}, "codebook_size must be >= 1"),
        (torch.ones(4, 2), {"levels": 2, "codebook_size": [3]}, "1 sizes for 2 levels"),
        (torch.ones(4, 2), {"balanced": True, "balance_tolerance": -0.1}, "balance_tolerance must be >= 0"),
    ],
)
def test_bad_input_raises_a_clear_value_error(x, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit_rq_kmeans(x, **kwargs)


def test_capacity_too_small_is_refused():
    with pytest.raises(ValueError, match="cannot hold"):
        balanced_assign(random_points(10), random_points(3), capacity=3)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 80), k=st.integers(3, 9), n_groups=st.integers(1, 3), seed=st.integers(0, 1000))
def test_short_candidate_lists_still_respect_every_cap(n, k, n_groups, seed):
    # Two candidates per point for up to 9 centroids: lists run out and are recomputed among the open ones.
    with patch("align.sid.rqkmeans.CANDIDATES", 2):
        assert_group_caps_hold(n, k, n_groups, seed, chunk_size=5)
