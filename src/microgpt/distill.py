"""Distillation: a student trained against a teacher's soft next-character distribution as well as the true one.

The target of every real (non-padding) prediction is mix * the teacher's distribution + (1 - mix) * the true next
character, so the loss is mix * cross-entropy(teacher, student) + (1 - mix) * the usual cross-entropy. The teacher
(an ensemble.Ensemble, or any module whose forward returns log-probabilities) runs in eval mode without gradients.
Only training batches see it: val, test and train losses stay docs/protocol.md's plain measure.

A name's teacher distribution depends on that name alone (packed names never attend to each other), so TeacherTable
computes it once for every train name (and every name of a --synthetic pool), before the first step, in a fixed
order; a step then looks its names up instead of running K teacher models on them. An example outside the table (a
noised name) sends its batch to the teacher as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import TrainConfig, UsageError
from .data import Batch, Dataset, frame, pack_examples

TABLE_NAMES = 1024  # names per teacher forward while the table is filled


def live_probs(teacher: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """The teacher's next-character probabilities at batch's real predictions (n_tokens, V), row-major order."""
    with torch.no_grad():
        log_probs, _ = teacher(batch.idx, pos=batch.pos, mask=batch.mask)  # (B, T, V), eval mode, float32
    keep = batch.targets.view(-1) >= 0  # padding is never counted (docs/protocol.md)
    return log_probs.view(-1, log_probs.size(-1))[keep].exp()


def names_in(batch: Batch) -> list[tuple[int, ...]]:
    """Each packed name's input ids (BOS c1..cn), in the row-major order of its real predictions."""
    keep = batch.targets.view(-1) >= 0
    ids = batch.idx.view(-1)[keep].tolist()
    starts = (batch.pos.view(-1)[keep] == 0).nonzero().view(-1).tolist() + [len(ids)]
    return [tuple(ids[a:b]) for a, b in zip(starts, starts[1:])]


class TeacherTable:
    """The teacher's distribution for every prediction of every name of seqs (the train split, then any synthetic
    pool), filled once in that order, TABLE_NAMES a forward, so a resumed run looks up the very numbers the unstopped
    one did."""

    def __init__(self, teacher: torch.nn.Module, seqs: list[list[int]], bos: int, device: torch.device | str):
        self.teacher = teacher
        self.data_id = getattr(teacher, "data_id", None)  # check_teacher reads it, as of the teacher itself
        self.where: dict[tuple[int, ...], tuple[int, int]] = {}  # name's inputs -> (first row of table, length)
        width = max(len(s) for s in seqs) + 1
        parts, rows = [], 0
        for i in range(0, len(seqs), TABLE_NAMES):
            examples = [frame(s, bos) for s in seqs[i:i + TABLE_NAMES]]
            batch = pack_examples(examples, bos, width).to(device)
            parts.append(live_probs(teacher, batch))
            for name in names_in(batch):
                self.where.setdefault(name, (rows, len(name)))
                rows += len(name)
        self.table = torch.cat(parts)  # (predictions of the train split, V) float32, on device

    def probs(self, batch: Batch) -> torch.Tensor:
        """live_probs(teacher, batch), looked up (batch on any device: the rows come on the table's); a batch with
        any name outside the table runs the teacher."""
        rows = []
        for name in names_in(batch):
            found = self.where.get(name)
            if found is None:
                return live_probs(self.teacher, batch.to(self.table.device))
            rows.extend(range(found[0], found[0] + found[1]))
        return self.table.index_select(0, torch.tensor(rows, device=self.table.device))


def teacher_table(teacher: torch.nn.Module, data: Dataset, device: torch.device | str,
                  pool: list[list[int]] | None = None) -> TeacherTable:
    """The TeacherTable of data's train names (then pool's, a --synthetic pool), on device."""
    return TeacherTable(teacher.to(device), data.encoded("train") + (pool or []), data.tokenizer.bos, device)


def distill_loss(logits: torch.Tensor, batch: Batch, teacher: torch.nn.Module | TeacherTable, loss: torch.Tensor,
                 mix: float) -> torch.Tensor:
    """mix * cross-entropy against the teacher's probabilities + (1 - mix) * loss, the student's own cross-entropy
    against batch.targets, both token-weighted means over the same real predictions. teacher: a TeacherTable, or
    the model itself (run on the batch)."""
    teacher_probs = teacher.probs(batch) if isinstance(teacher, TeacherTable) else live_probs(teacher, batch)
    soft = soft_loss(logits, batch.targets, teacher_probs)
    # (1 - mix) * loss rather than a recomputed cross-entropy: mix 0 is then the undistilled run, number for number
    return mix * soft + (1 - mix) * loss


def soft_loss(logits: torch.Tensor, targets: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the student's logits (..., V) against the teacher's probabilities (n, V) over the n real
    predictions (targets >= 0), taken in row-major order as live_probs and TeacherTable.probs give them."""
    V = logits.size(-1)
    keep = targets.reshape(-1) >= 0  # padding is never counted (docs/protocol.md)
    student = F.log_softmax(logits.float().reshape(-1, V)[keep], dim=-1)  # float32 also under bf16 autocast
    return -(teacher_probs * student).sum(-1).mean()


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
