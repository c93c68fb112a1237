"""Optimizers and learning-rate schedules, as small factories and pure functions."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for the update at step (0-based).

    1) warmup: step < warmup_steps ramps linearly, lr * (step + 1) / warmup_steps;
    2) constant: lr;
    3) otherwise p = (step - warmup) / (steps - warmup) runs from 0 at the first decayed update to 1 at step = steps
       (one past the last update, microgpt's convention: lr_t = lr * (1 - step / steps)), and
       linear      = min_lr + (lr - min_lr) * (1 - p),
       cosine      = min_lr + (lr - min_lr) * (1 + cos(pi p)) / 2,
       exponential = lr * (min_lr / lr) ** p.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    p = min(1.0, (step - cfg.warmup_steps) / (cfg.steps - cfg.warmup_steps))
    if cfg.schedule == "linear":
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * (1.0 - p)
    if cfg.schedule == "cosine":
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))
    if cfg.schedule == "exponential":
        return cfg.lr * (cfg.min_lr / cfg.lr) ** p
    raise AssertionError(f"unvalidated schedule {cfg.schedule!r}")


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Split parameters into decayed (Linear matrices, or everything with decay_all) and not decayed."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}  # a tied head counts here
    matrices = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)} - embeddings
    decay, no_decay = [], []
    for p in model.parameters():  # yields a tied matrix once
        (decay if cfg.decay_all or id(p) in matrices else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer cfg names, over param_groups(model, cfg); lr is set per step from lr_at."""
    groups = param_groups(model, cfg)
    # foreach: one kernel per op over all tensors; for a few dozen tiny tensors it is the fast path on CPU and CUDA.
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, foreach=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, foreach=True)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.beta2, eps=cfg.eps, momentum=cfg.momentum, foreach=True)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, foreach=True)
    raise AssertionError(f"unvalidated optimizer {cfg.optimizer!r}")

