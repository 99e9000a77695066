"""sid_report on a hand-made case: every number computed by hand."""

import math

import pytest
import torch

from align.sid.report import sid_report

CODES = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 0]])
EMBEDDINGS = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.0, 2.0]])  # the last one is not unit length
CODEBOOKS = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 0.0], [0.0, 0.5], [9.0, 9.0]])]


def test_report_numbers_by_hand():
    report = sid_report(CODES, [2, 3], EMBEDDINGS, CODEBOOKS)
    first, second = report["levels"]
    assert first == {
        "level": 0,
        "size": 2,
        "used": 2,
        "utilisation": 1.0,
        "perplexity": pytest.approx(2.0),
        "largest_cluster": 2,
        "mean_cluster": 2.0,
    }
    assert second["used"] == 2 and second["utilisation"] == pytest.approx(2 / 3)
    assert second["perplexity"] == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert second["largest_cluster"] == 3 and second["mean_cluster"] == 2.0
    assert report["collisions"]["collision_rate"] == 0.5 and report["collisions"]["largest_group"] == 2
    # x_hat: (1, 0), (1, 0.5), (0, 1), (0, 1): errors 0, 0.4^2 + 0.3^2, 0, 1^2.
    assert report["reconstruction_mse"] == pytest.approx((0.25 + 1.0) / 4)
    # Cosines: same first code (0, 1) 0.6 and (2, 3) 1.0; all pairs 0.6, 0, 0, 0.8, 0.8, 1.0.
    assert report["coherence"]["same_first_code"] == pytest.approx(0.8)
    assert report["coherence"]["random_pairs"] == pytest.approx(3.2 / 6)
    # Pairs sharing both codes: only (2, 3), cosine 1.
    assert report["coherence"]["same_prefix"] == [pytest.approx(0.8), pytest.approx(1.0)]


def test_report_without_embeddings_or_shared_codes():
    report = sid_report(torch.tensor([[0], [1], [2]]), [4])
    assert "reconstruction_mse" not in report and "coherence" not in report
    assert report["levels"][0]["utilisation"] == 0.75
    spread = sid_report(torch.tensor([[0], [1]]), [2], embeddings=torch.eye(2))
    assert spread["coherence"] == {"same_first_code": None, "random_pairs": 0.0, "same_prefix": [None]}


def test_report_rejects_codes_outside_their_level():
    with pytest.raises(ValueError, match="level 1 has codes outside"):
        sid_report(CODES, [2, 1])
    with pytest.raises(ValueError, match="do not match"):
        sid_report(CODES, [2])


def test_the_quantizers_own_errors_replace_codebooks():
    report = sid_report(CODES, [2, 3], EMBEDDINGS, CODEBOOKS, level_errors=[0.5, 0.25])
    assert report["reconstruction_mse"] == 0.25 and report["reconstruction_mse_per_level"] == [0.5, 0.25]
    assert report["embedding_mean_sq_norm"] == pytest.approx((1 + 1 + 1 + 4) / 4)
