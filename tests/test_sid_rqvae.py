"""RQ-VAE: determinism, learning, k-means-initialised codebooks, Sinkhorn balance, re-assignment distances."""

import math

import pytest
import torch

from align.sid.rqvae import fit_rq_vae, sinkhorn_assign


def clustered(n_per_blob: int = 40, blobs: int = 6, dim: int = 10, seed: int = 0) -> torch.Tensor:
    """Unit rows around `blobs` random directions, like sentence embeddings of a few product kinds."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(blobs, dim, generator=g)
    x = centers.repeat_interleave(n_per_blob, 0) + 0.2 * torch.randn(blobs * n_per_blob, dim, generator=g)
    return torch.nn.functional.normalize(x, dim=1)


TINY = dict(levels=2, codebook_size=6, latent_dim=4, hidden_dim=16, epochs=40, batch_size=32, lr=1e-2, iters=5)


def test_same_seed_same_codes_and_weights():
    x = clustered()
    a, b = fit_rq_vae(x, seed=1, **TINY), fit_rq_vae(x, seed=1, **TINY)
    assert torch.equal(a.codes, b.codes)
    assert all(torch.equal(p, q) for p, q in zip(a.codebooks, b.codebooks, strict=True))
    assert all(torch.equal(p, q) for p, q in zip(a.decoder.parameters(), b.decoder.parameters(), strict=True))
    assert not torch.equal(fit_rq_vae(x, seed=2, **TINY).codebooks[0], a.codebooks[0])


def test_it_learns_a_reconstruction_and_separates_blobs():
    x = clustered()
    result = fit_rq_vae(x, **TINY)
    assert result.codes.shape == (240, 2) and result.level_sizes == [6, 6] and result.codebooks[0].shape == (6, 4)
    variance = (x - x.mean(0)).square().sum(1).mean()
    assert result.level_errors[-1] < 0.3 * variance  # far better than predicting the mean
    mse = (x - result.reconstruct()).square().sum(1).mean()
    assert float(mse) == pytest.approx(result.level_errors[-1], rel=1e-4)
    # Each blob mostly on one first-level code, and the blobs mostly on different codes.
    majority = [torch.bincount(codes, minlength=6).max() for codes in result.codes[:, 0].view(6, 40)]
    assert sum(majority) >= 0.8 * 240
    assert len({int(torch.bincount(codes).argmax()) for codes in result.codes[:, 0].view(6, 40)}) >= 5


def test_training_lowers_the_error_of_the_kmeans_initialised_model():
    x = clustered()
    untrained = fit_rq_vae(x, **(TINY | {"epochs": 0}))
    assert fit_rq_vae(x, **TINY).level_errors[-1] < 0.7 * untrained.level_errors[-1]


def test_last_level_distances_are_measured_in_the_latent_space():
    x = clustered(n_per_blob=10)
    result = fit_rq_vae(x, **(TINY | {"epochs": 2}))
    latent = result.encoder(x[:5]).detach()
    residual = latent - result.codebooks[0][result.codes[:5, 0]]
    expected = (residual[:, None, :] - result.codebooks[1][None]).square().sum(-1)
    torch.testing.assert_close(result.last_level_distances(x[:5], result.codes[:5]), expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(result.last_level_distances(x[:5], result.codes[:5]).argmin(1), result.codes[:5, 1])


def test_sinkhorn_spreads_rows_evenly_where_argmin_would_not():
    # 12 rows all nearest to code 0, a little farther from codes 1 and 2 (in three different ways).
    g = torch.Generator().manual_seed(0)
    distances = torch.tensor([0.0, 0.3, 0.3]) + 0.2 * torch.rand(12, 3, generator=g)
    assert torch.bincount(distances.argmin(1), minlength=3).tolist()[0] >= 8
    counts = torch.bincount(sinkhorn_assign(distances), minlength=3)
    assert counts.max() <= math.ceil(12 / 3) + 1


def test_sinkhorn_at_the_last_level_balances_it():
    x = clustered(n_per_blob=60, blobs=2)
    plain = fit_rq_vae(x, **(TINY | {"codebook_size": 4}))
    even = fit_rq_vae(x, **(TINY | {"codebook_size": 4, "sinkhorn": True}))
    largest = [torch.bincount(r.codes[:, 1], minlength=4).max() for r in (plain, even)]
    assert largest[1] <= largest[0] and largest[1] <= 1.3 * 120 / 4
    assert even.sinkhorn and not plain.sinkhorn


def test_bad_input_is_refused_like_rq_kmeans():
    with pytest.raises(ValueError, match="row 1 has NaN"):
        fit_rq_vae(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), **TINY)
    with pytest.raises(ValueError, match="empty"):
        fit_rq_vae(torch.empty(0, 3), **TINY)
