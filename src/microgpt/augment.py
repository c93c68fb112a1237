"""The seed's data augmentations, applied to training batches only (val and test are never touched):

- noise: each input character is corrupted with probability p, half the time replaced by another character, half the
  time deleted; the targets stay the clean name's next characters (a deleted input takes its own prediction with it).
- synthetic names: a share of every batch comes from a pool of generated names, sampled once before training from a
  Kneser-Ney n-gram fitted to the train split, or from a model trained on the same train split (a run directory).
- curriculum: for the first N steps the batch draws only names up to a length cap that grows linearly from the
  shortest name to the longest; after that, every name.

Each has its own random stream, so switching one on leaves the real names of every batch unchanged.
"""

from __future__ import annotations

import bisect
import random
from pathlib import Path

import torch

from .config import TrainConfig, UsageError
from .data import Batch, Dataset, frame, pack_examples, rng_state, set_rng_state

Example = tuple[list[int], list[int]]  # (inputs starting with BOS, targets), equal lengths


def corrupt(seq: list[int], bos: int, p: float, rng: random.Random) -> Example:
    """The clean example with each input character (never the opening BOS) substituted or deleted with probability p.

    A substitution draws uniformly among the other characters. Deleting input i also drops prediction i, so every
    remaining position still predicts what follows it in the clean name, from a context that lacks one character.
    """
    inputs, targets = frame(seq, bos)
    if p <= 0:
        return inputs, targets
    out_in, out_tgt = [inputs[0]], [targets[0]]
    for x, y in zip(inputs[1:], targets[1:]):
        if rng.random() < p:
            if rng.random() < 0.5:
                continue  # deleted, with the prediction made from it
            other = rng.randrange(bos - 1)  # characters are ids 0..bos-1; draw among the bos-1 that are not x
            x = other + 1 if other >= x else other
        out_in.append(x)
        out_tgt.append(y)
    return out_in, out_tgt


# ------------------------------------------------------------------------------------------------- synthetic names

def ngram_names(data: Dataset, order: int, n: int, seed: int) -> list[list[int]]:
    """n names (ids, without BOS) sampled from a Kneser-Ney n-gram of the given order fitted to the train split.

    Names are drawn until the n-gram emits BOS; an empty name, or one longer than the data's longest, is redrawn, so
    every synthetic name fits the model's context.
    """
    from .ngram import KneserNey

    bos = data.tokenizer.bos
    lm = KneserNey(order, data.tokenizer.vocab_size, bos).fit(data.encoded("train"))
    rng = random.Random(seed)
    cumulative: dict[tuple[int, ...], list[float]] = {}  # history -> cumulative probabilities; histories repeat a lot
    keep = max(0, lm.levels - 1)
    longest = data.max_len
    names: list[list[int]] = []
    while len(names) < n:
        tokens, ended = [bos], False
        while not ended and len(tokens) <= longest + 1:
            history = tuple(tokens[-keep:]) if keep else ()
            cdf = cumulative.get(history)
            if cdf is None:
                cdf = cumulative[history] = _cumsum(lm.probs(tokens))
            token = min(bisect.bisect_right(cdf, rng.random() * cdf[-1]), len(cdf) - 1)
            ended = token == bos
            if not ended:
                tokens.append(token)
        if ended and 1 < len(tokens) <= longest + 1:
            names.append(tokens[1:])
    return names


def _cumsum(p: list[float]) -> list[float]:
    out, total = [], 0.0
    for q in p:
        total += q
        out.append(total)
    return out


def check_synthetic_source(data: Dataset, cfg: TrainConfig) -> None:
    """UsageError unless cfg's synthetic names can come from where it says, without leaking val/test names."""
    if not cfg.synthetic or cfg.synthetic_from == "ngram":
        return
    from .rundir import read_json

    path = Path(cfg.synthetic_from)
    if not (path / "config.json").is_file() or not (path / "model.pt").is_file():
        raise UsageError(f"--synthetic-from {cfg.synthetic_from}: not a finished run directory (needs config.json and "
                         "model.pt); pass 'ngram' or a run directory of `microgpt train`")
    config = read_json(path / "config.json")
    split_seed = config.get("data", {}).get("split_seed")
    parity = config.get("train", {}).get("parity")
    if config.get("data", {}).get("sha256") != data.sha256:
        raise UsageError(f"--synthetic-from {cfg.synthetic_from}: that model was trained on other data (sha256 "
                         "differs); use a model trained on this data file")
    if split_seed != data.split_seed or parity:
        raise UsageError(f"--synthetic-from {cfg.synthetic_from}: that model was trained with split seed {split_seed}"
                         f"{' in parity mode (on all names)' if parity else ''}, so it has seen this run's val/test "
                         f"names (split seed {data.split_seed}); train the source on the same split")


def model_names(data: Dataset, cfg: TrainConfig, n: int) -> list[list[int]]:
    """n names sampled at temperature 1 from the model of run directory cfg.synthetic_from (same split, checked)."""
    from .rundir import load_checkpoint
    from .sample import sample_names

    check_synthetic_source(data, cfg)
    path, seed = Path(cfg.synthetic_from), cfg.seed
    model, tokenizer, _ = load_checkpoint(path)
    if tokenizer != data.tokenizer:
        raise UsageError(f"--synthetic-from {path}: its vocabulary differs from this data's; use a model of this data")
    generator = torch.Generator().manual_seed(seed)
    names: list[list[int]] = []
    longest = data.max_len
    while len(names) < n:
        for name in sample_names(model, tokenizer, min(4096, 2 * (n - len(names)) + 16), 1.0, None, generator):
            if 0 < len(name) <= longest and len(names) < n:
                names.append(tokenizer.encode(name))
    return names


def augmentation_text(cfg: TrainConfig) -> str:
    """What was added to the train split, for RunResult.trained_on (empty without augmentation)."""
    parts = []
    if cfg.synthetic:
        source = f"a {cfg.synthetic_order}-gram" if cfg.synthetic_from == "ngram" else cfg.synthetic_from
        parts.append(f"{cfg.synthetic:.0%} of each batch synthetic names from {source}")
    if cfg.noise:
        parts.append(f"input noise {cfg.noise:g}")
    if cfg.curriculum:
        parts.append(f"length curriculum over {cfg.curriculum} steps")
    return f" + {', '.join(parts)}" if parts else ""


def synthetic_pool(data: Dataset, cfg: TrainConfig) -> list[list[int]]:
    """The pool the batches' synthetic share is drawn from: as many generated names as the train split has names."""
    n = len(data.train)
    if cfg.synthetic_from == "ngram":
        return ngram_names(data, cfg.synthetic_order, n, cfg.seed)
    return model_names(data, cfg, n)


# ----------------------------------------------------------------------------------------------------- the sampler

class AugmentedSampler:
    """Training batches with the augmentations of cfg. The real names come in the same order as BatchSampler's
    (epochs of a seeded permutation) whenever the curriculum is over, so each augmentation is a clean ablation."""

    def __init__(self, data: Dataset, cfg: TrainConfig, pool: list[list[int]] | None):
        self.seqs = data.encoded("train")
        self.bos = data.tokenizer.bos
        self.width = data.max_len + 1
        self.batch_size = cfg.batch_size
        self.noise = cfg.noise
        self.curriculum = cfg.curriculum
        self.n_synthetic = round(cfg.synthetic * cfg.batch_size) if pool else 0
        self.pool = pool or []
        self.generator = torch.Generator().manual_seed(cfg.seed)            # real names: BatchSampler's stream
        self.pool_generator = torch.Generator().manual_seed(cfg.seed + 1)   # synthetic names
        self.short_first = sorted(range(len(self.seqs)), key=lambda i: len(self.seqs[i]))
        self.lengths = [len(self.seqs[i]) for i in self.short_first]
        self.noise_rng = random.Random(cfg.seed)
        self.curriculum_rng = random.Random(cfg.seed + 2)
        self.order: list[int] = []
        self.pool_order: list[int] = []
        self.names: list[list[int]] = []
        self.step = 0

    def cap(self, step: int) -> int | None:
        """The longest name allowed at this step (None once the curriculum is over): shortest -> longest, linearly."""
        if step >= self.curriculum:
            return None
        lo, hi = self.lengths[0], self.lengths[-1]
        return lo + (hi - lo) * (step + 1) // self.curriculum

    def next(self) -> Batch:
        picked: list[list[int]] = []
        n_real = self.batch_size - self.n_synthetic
        cap = self.cap(self.step)
        if cap is not None:
            eligible = bisect.bisect_right(self.lengths, cap)
            picked = [self.seqs[self.short_first[self.curriculum_rng.randrange(eligible)]] for _ in range(n_real)]
        while len(picked) < n_real:
            if not self.order:
                self.order = torch.randperm(len(self.seqs), generator=self.generator).tolist()
            picked.append(self.seqs[self.order.pop()])
        for _ in range(self.n_synthetic):
            if not self.pool_order:
                self.pool_order = torch.randperm(len(self.pool), generator=self.pool_generator).tolist()
            picked.append(self.pool[self.pool_order.pop()])
        self.step += 1
        self.names = picked  # the clean names of this batch, real ones first
        examples = [corrupt(s, self.bos, self.noise, self.noise_rng) for s in picked]
        return pack_examples(examples, self.bos, self.width)

    def state_dict(self) -> dict:
        """Every stream's position (the pool itself is rebuilt from the seed)."""
        return {"generator": self.generator.get_state(), "pool_generator": self.pool_generator.get_state(),
                "noise_rng": rng_state(self.noise_rng), "curriculum_rng": rng_state(self.curriculum_rng),
                "order": list(self.order), "pool_order": list(self.pool_order), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.pool_generator.set_state(state["pool_generator"])
        set_rng_state(self.noise_rng, state["noise_rng"])
        set_rng_state(self.curriculum_rng, state["curriculum_rng"])
        self.order, self.pool_order, self.step = list(state["order"]), list(state["pool_order"]), state["step"]
