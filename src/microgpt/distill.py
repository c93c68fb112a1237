"""Distillation: a student trained against a teacher's soft next-character distribution as well as the true one.

The target of every real (non-padding) prediction is mix * the teacher's distribution + (1 - mix) * the true next
character, so the loss is mix * cross-entropy(teacher, student) + (1 - mix) * the usual cross-entropy. The teacher
(an ensemble.Ensemble, or any module whose forward returns log-probabilities) runs in eval mode without gradients.
Only training batches see it: val, test and train losses stay docs/protocol.md's plain measure.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import TrainConfig, UsageError
from .data import Batch, Dataset


def distill_loss(logits: torch.Tensor, batch: Batch, teacher: torch.nn.Module, loss: torch.Tensor,
                 mix: float) -> torch.Tensor:
    """mix * cross-entropy against the teacher's probabilities + (1 - mix) * loss, the student's own cross-entropy
    against batch.targets, both token-weighted means over the same real predictions."""
    V = logits.size(-1)
    with torch.no_grad():
        teacher_log_probs, _ = teacher(batch.idx, pos=batch.pos, mask=batch.mask)  # (B, T, V), eval mode
    keep = batch.targets.view(-1) >= 0  # padding is never counted (docs/protocol.md)
    student = F.log_softmax(logits.float().view(-1, V)[keep], dim=-1)  # float32 also under bf16 autocast
    soft = -(teacher_log_probs.view(-1, V)[keep].exp() * student).sum(-1).mean()
    # (1 - mix) * loss rather than a recomputed cross-entropy: mix 0 is then the undistilled run, number for number
    return mix * soft + (1 - mix) * loss


def check_teacher(teacher: torch.nn.Module | None, data: Dataset, cfg: TrainConfig) -> None:
    """UsageError unless a teacher is given exactly when cfg.distill_from asks for one, and it was trained on data's
    file, split and vocabulary (a teacher from another split has seen this run's val/test names)."""
    if cfg.distill_from and teacher is None:
        raise UsageError(f"distill_from {cfg.distill_from}: pass train(..., teacher=ensemble.load_teacher("
                         "cfg.distill_from, data)); train() loads no other run's model")
    if teacher is None:
        return
    if not cfg.distill_from:
        raise UsageError("a teacher was passed but distill_from is empty: set distill_from to the run directories it "
                         "was loaded from, so the run's config.json records it")
    ours = (data.sha256, data.split_seed, tuple(data.tokenizer.chars))
    if getattr(teacher, "data_id", None) != ours:
        raise UsageError(f"distill_from {cfg.distill_from}: the teacher was trained on other data, another split or "
                         f"another vocabulary than this run (sha256 {data.sha256[:12]}..., split seed "
                         f"{data.split_seed}); distil only from runs of the same data file and split")


def distill_text(cfg: TrainConfig) -> str:
    """What the training target adds to the train split, for RunResult.trained_on (empty without a teacher)."""
    return f" + distilled from {cfg.distill_from} (mix {cfg.distill_mix:g})" if cfg.distill_from else ""
