"""CPU speed: let TRL's fused LM head score only the labelled positions, as it already does on GPUs.

TRL (1.x) projects hidden states through the LM head in tiles and, on Triton devices, only for the positions that
carry a label. Elsewhere it scores every position to keep tile shapes static for compilers, which buys nothing in
eager CPU training. Recommendation prompts are ~90% of each example and carry no label (loss on the answer only),
so on CPU this scoring took 46% of an SFT step in a profile (py-spy) of the demo's training. The switch below
makes CPU take the labelled-positions path; the loss and gradients are the same (tests/test_train_speed.py checks
it). Where TRL lacks the hook it does nothing.
"""

import logging

logger = logging.getLogger(__name__)


def score_labelled_positions_only() -> bool:
    """Enable TRL's compact (labelled positions only) LM-head scoring on CPU; True if it is in effect."""
    try:
        from trl.trainer import utils
    except ImportError:
        return False
    original = getattr(utils, "_use_triton", None)
    if original is None:
        logger.info("this TRL version has no compact-scoring switch; CPU training scores every position")
        return False
    if getattr(original, "cpu_compact", False):
        return True

    def use_compact(device) -> bool:
        return device.type == "cpu" or original(device)

    use_compact.cpu_compact = True
    utils._use_triton = use_compact
    return True
