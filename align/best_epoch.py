"""Epoch selection for the baselines trained by hand (SASRec, the from-scratch SID model).

Both keep the epoch with the best validation score and stop after `patience` epochs without a better one; this
is that bookkeeping, so the two models pick epochs by the same rule.
"""

import copy
import logging
import math

import torch

logger = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as given."""
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)


class BestEpoch:
    """Track the best epoch by a validation metric and keep a copy of its weights.

    Without validation metrics every epoch counts as the best so far, so the last one is kept.
    """

    def __init__(self, model: torch.nn.Module, metric: str, patience: int) -> None:
        self.metric, self.patience = metric, patience
        self.epoch, self.valid, self.score = 0, {}, -math.inf
        self.state = copy.deepcopy(model.state_dict())

    def update(self, model: torch.nn.Module, epoch: int, metrics: dict) -> bool:
        """Record one epoch's validation metrics; True when training should stop."""
        score = metrics.get(self.metric, epoch)
        if score > self.score:
            self.epoch, self.valid, self.score = epoch, metrics, score
            self.state = copy.deepcopy(model.state_dict())
            return False
        if self.patience and epoch - self.epoch >= self.patience:
            logger.info("early stop: no better valid %s for %d epochs", self.metric, self.patience)
            return True
        return False

    def restore(self, model: torch.nn.Module, epochs_run: int) -> dict:
        """Load the best epoch's weights into `model`; returns {"best_epoch", "epochs_run", "valid"}."""
        model.load_state_dict(self.state)
        return {"best_epoch": self.epoch, "epochs_run": epochs_run, "valid": self.valid}
