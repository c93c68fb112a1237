"""The protocol every reported number follows (docs/protocol.md), as constants and small pure functions: the split
seed, the tiers of test loss, and how a generated name is tagged. Torch-free, so any module can import it."""

from __future__ import annotations

import math
from collections import Counter

SPLIT_SEED = 3407                               # the split permutation's seed (makemore's)
TIERS = ((1, 1.9), (2, 2.0), (3, 2.2))          # tier by test loss: below each bound, in nats per token
TAGS = ("new", "in train", "in val-test")       # where a generated name is found


def tier_of(test_loss: float | None) -> int | None:
    """1, 2 or 3 by the protocol's thresholds on test loss; None above 2.2 or without a test loss."""
    if test_loss is None or not math.isfinite(test_loss):
        return None
    for tier, bound in TIERS:
        if test_loss < bound:
            return tier
    return None


def tag_names(names: list[str], train: list[str], heldout: list[str]) -> list[str]:
    """For each name: 'in train' if the train split has it, else 'in val-test' if val or test has it, else 'new'."""
    train_set, heldout_set = set(train), set(heldout)
    return ["in train" if w in train_set else "in val-test" if w in heldout_set else "new" for w in names]


def tag_shares(tags: list[str]) -> dict[str, float]:
    """Share of each tag, in TAGS order."""
    counts = Counter(tags)
    return {t: counts[t] / max(1, len(tags)) for t in TAGS}
