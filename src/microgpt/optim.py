"""Optimizers and learning-rate schedules, as small factories and pure functions."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .config import TrainConfig
from . import precision


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for the update at step (0-based).

    1) warmup: step < warmup_steps ramps linearly, lr * (step + 1) / warmup_steps;
    2) constant: lr;
    3) otherwise p = (step - warmup) / (steps - warmup) runs from 0 at the first decayed update to 1 at step = steps
       (one past the last update, microgpt's convention: lr_t = lr * (1 - step / steps)), and
       linear      = min_lr + (lr - min_lr) * (1 - p),
       cosine      = min_lr + (lr - min_lr) * (1 + cos(pi p)) / 2,
       exponential = lr * (min_lr / lr) ** p;
    4) wsd (warmup-stable-decay): lr until the last decay_frac of the steps, then linear to min_lr.
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
    if cfg.schedule == "wsd":
        q = min(1.0, max(0.0, (p - (1.0 - cfg.decay_frac)) / cfg.decay_frac))
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * (1.0 - q)
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
    """The optimizer cfg names, over param_groups(model, cfg). Each group keeps its peak lr as group["peak_lr"];
    the training loop scales it by lr_at(step) / cfg.lr every step."""
    optimizer = _build(model, cfg)
    for group in optimizer.param_groups:
        group["peak_lr"] = group["lr"]
    return optimizer


def hidden_matrices(model: nn.Module) -> list[torch.Tensor]:
    """The 2-D weights inside the blocks (attention and MLP): what Muon updates. Embeddings and the head are not."""
    blocks = getattr(model, "blocks", [])
    return [m.weight for block in blocks for m in block.modules() if isinstance(m, nn.Linear)]


def _build(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "muon":
        muon_ids = {id(p) for p in hidden_matrices(model)}
        groups = []
        for g in param_groups(model, cfg):
            muon = [p for p in g["params"] if id(p) in muon_ids]
            rest = [p for p in g["params"] if id(p) not in muon_ids]
            if muon:
                groups.append({"params": muon, "weight_decay": g["weight_decay"], "muon": True, "lr": cfg.muon_lr})
            if rest:
                groups.append({"params": rest, "weight_decay": g["weight_decay"], "muon": False, "lr": cfg.lr})
        return MuonWithAdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, momentum=0.95)
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



# Quintic Newton-Schulz coefficients for orthogonalising a matrix in a few iterations, as published with Muon
# (K. Jordan et al., 2024, "Muon: an optimizer for hidden layers in neural networks").
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalise(g: torch.Tensor, steps: int = 5, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Approximately U V^T of g's SVD, by Newton-Schulz iterations in dtype.

    By default bfloat16 where it is native (precision.matmul_dtype): on a CPU with AVX512-BF16 it measured 2.7x faster
    than float32 (benchmarks/muon_speed.py, BENCHMARKS.md) and the ablations saw no loss difference; without native
    bf16 it would be emulated, many times slower, so float32 is used there.
    """
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype or precision.matmul_dtype(g.device.type))
    transposed = x.size(0) > x.size(1)
    if transposed:
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        A = x @ x.T
        x = a * x + (b * A + c * A @ A) @ x
    return (x.T if transposed else x).to(g.dtype)


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for groups with muon=True (Nesterov momentum, then the update orthogonalised and scaled by
    sqrt(max(1, rows / cols))); AdamW with bias correction for the others. Decoupled weight decay in both."""

    def __init__(self, params, lr: float, betas=(0.9, 0.99), eps: float = 1e-8, momentum: float = 0.95, ns_steps: int = 5):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "momentum": momentum, "ns_steps": ns_steps,
                                  "weight_decay": 0.0, "muon": False})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if wd:
                    p.mul_(1.0 - lr * wd)
                if group["muon"]:
                    buf = state.setdefault("momentum_buffer", torch.zeros_like(p))
                    buf.mul_(group["momentum"]).add_(p.grad)
                    update = p.grad.add(buf, alpha=group["momentum"])  # Nesterov
                    update = orthogonalise(update, group["ns_steps"])
                    p.add_(update, alpha=-lr * max(1.0, p.size(0) / p.size(1)) ** 0.5)
                    continue
                beta1, beta2 = group["betas"]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                state["exp_avg"].lerp_(p.grad, 1.0 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
                bias1 = 1.0 - beta1 ** state["step"]
                bias2 = 1.0 - beta2 ** state["step"]
                denom = (state["exp_avg_sq"] / bias2).sqrt_().add_(group["eps"])
                p.addcdiv_(state["exp_avg"], denom, value=-lr / bias1)
        return None
