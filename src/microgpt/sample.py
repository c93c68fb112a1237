"""Names from a trained model, and how new they are: each is new, in the train split, or in val/test."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from .config import UsageError
from .data import Tokenizer
from .model import GPT
from .protocol import TAGS, tag_names, tag_shares  # noqa: F401 - where callers found them before



def _device_of(model: GPT) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def sample_names(
    model: GPT,
    tokenizer: Tokenizer,
    n: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    prefix: str = "",
) -> list[str]:
    """n names, each from BOS (and prefix, which every name then starts with) until the model emits BOS or the context
    is full; UsageError if prefix has a character outside the vocabulary or leaves no room in the context."""
    unknown = sorted(set(prefix) - set(tokenizer.chars))
    if unknown:
        raise UsageError(f"prefix {prefix!r} has characters the model's vocabulary lacks: {''.join(unknown)!r} "
                         f"(its characters: {''.join(tokenizer.chars)!r})")
    if len(prefix) >= model.cfg.block_size:
        raise UsageError(f"prefix {prefix!r} has {len(prefix)} characters: with BOS it fills the model's context of "
                         f"{model.cfg.block_size} positions; give at most {model.cfg.block_size - 1}")
    was_training = model.training
    model.eval()
    start = torch.tensor([tokenizer.bos, *tokenizer.encode(prefix)], dtype=torch.long, device=_device_of(model))
    idx = start.expand(n, -1).contiguous()
    out = model.generate(idx, model.cfg.block_size, temperature, top_k, generator).tolist()
    model.train(was_training)
    names = []
    for row in out:
        ids = row[1:]
        if tokenizer.bos in ids:
            ids = ids[: ids.index(tokenizer.bos)]
        names.append(tokenizer.decode(ids))
    return names


@torch.no_grad()
def sample_names_microgpt(
    model: GPT, tokenizer: Tokenizer, n: int, temperature: float, py_rng: random.Random
) -> list[str]:
    """microgpt.py's sampler: random.choices over softmax(logits / temperature), from its own Python RNG."""
    was_training = model.training
    model.eval()
    device = _device_of(model)
    vocab = range(tokenizer.vocab_size)
    names = []
    for _ in range(n):
        tokens = [tokenizer.bos]
        chars: list[int] = []
        for _ in range(model.cfg.block_size):  # microgpt feeds at most block_size positions
            logits, _ = model(torch.tensor([tokens], device=device))
            probs = F.softmax(logits[0, -1].double() / temperature, dim=-1).tolist()
            token = py_rng.choices(vocab, weights=probs)[0]
            if token == tokenizer.bos:
                break
            chars.append(token)
            tokens.append(token)
        names.append(tokenizer.decode(chars))
    model.train(was_training)
    return names
