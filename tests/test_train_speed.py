import pytest
import torch

from align.testing import tiny_causal_lm
from align.train.speed import score_labelled_positions_only

pytestmark = pytest.mark.usefixtures("one_thread")


def _loss_and_grad(model, input_ids, labels):
    model.zero_grad()
    out = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
    out.loss.backward()
    return out.loss.detach(), model.get_input_embeddings().weight.grad.clone()


def test_labelled_positions_only_gives_the_same_loss_and_gradients(monkeypatch):
    """The CPU switch changes which positions TRL's fused head scores, never the loss or its gradients."""
    from trl.kernels.chunked_logprob import _use_triton as trl_default
    from trl.trainer import utils
    from trl.trainer.utils import add_fused_lm_head

    monkeypatch.setattr(utils, "_use_triton", trl_default)  # TRL's own choice, whatever earlier tests switched
    model = tiny_causal_lm(50, seed=1)
    add_fused_lm_head(model)
    input_ids = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(0))
    labels = input_ids.clone()
    labels[:, :9] = -100  # a long prompt without labels, a short answer with them, as in SFT on recommendations
    every_position = _loss_and_grad(model, input_ids, labels)

    assert not utils._use_triton(torch.device("cpu"))
    assert score_labelled_positions_only() and score_labelled_positions_only()  # idempotent
    assert utils._use_triton(torch.device("cpu"))
    labelled_only = _loss_and_grad(model, input_ids, labels)

    torch.testing.assert_close(labelled_only[0], every_position[0])
    torch.testing.assert_close(labelled_only[1], every_position[1])
