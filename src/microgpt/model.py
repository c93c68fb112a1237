"""A GPT in microgpt's family: token + position embeddings, pre-norm blocks of causal attention and an MLP, a head.

Differences from GPT-2, at the defaults (= microgpt.py): RMSNorm without gain instead of LayerNorm, a norm right after
the embeddings, no final norm, ReLU instead of GELU, no biases, untied head. Each of these is a ModelConfig option.
"""

from __future__ import annotations

import math
import random
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig

NORM_EPS = 1e-5  # microgpt's rmsnorm epsilon


def dropout_noise(shape: torch.Size | tuple[int, ...], p: float, generator: torch.Generator | None,
                  device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Inverted-dropout multipliers (0 or 1/(1-p)) drawn from generator: the arithmetic of F.dropout, but from a
    run's own stream, so a member of a stacked run (stacked.py) draws exactly the masks it would draw alone."""
    return torch.empty(shape, device=device, dtype=dtype).bernoulli_(1.0 - p, generator=generator).div_(1.0 - p)


def dropout(x: torch.Tensor, p: float, training: bool, generator: torch.Generator | None) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    return x * dropout_noise(x.shape, p, generator, x.device, x.dtype)


def drop_path_noise(rows: int, p: float, generator: torch.Generator | None, device: torch.device,
                    dtype: torch.dtype) -> torch.Tensor:
    """Stochastic depth's multipliers for a residual branch, one per packed row: (rows, 1, 1) of 0 or 1/(1-p)."""
    return dropout_noise((rows, 1, 1), p, generator, device, dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              noise: Callable[[torch.Size], torch.Tensor] | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(hs)) v over (..., T, hs), causal or masked; noise(shape) multiplies the attention weights
    (dropout) when given, which needs the weights written out, else one fused kernel."""
    if noise is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
    T = q.size(-2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))  # (..., T, T)
    allowed = mask if mask is not None else torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    att = att.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    return (att * noise(att.shape)) @ v


class Norm(nn.Module):
    """rmsnorm (no parameters, microgpt), rmsnorm_gain (learnable gain) or layernorm (gain and bias)."""

    def __init__(self, kind: str, dim: int):
        super().__init__()
        self.kind, self.dim = kind, dim
        self.weight = nn.Parameter(torch.ones(dim)) if kind in ("rmsnorm_gain", "layernorm") else None
        self.bias = nn.Parameter(torch.zeros(dim)) if kind == "layernorm" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "layernorm":
            return F.layer_norm(x, (self.dim,), self.weight, self.bias, NORM_EPS)
        return F.rms_norm(x, (self.dim,), self.weight, NORM_EPS)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qk_norm = cfg.qk_norm
        self.dropout_attn, self.dropout_resid = cfg.rate("attn"), cfg.rate("resid")
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)  # rows: microgpt's wq, wk, wv stacked
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)      # microgpt's wo
        self.generator: torch.Generator | None = None  # dropout's stream (GPT.dropout_generator sets it)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if self.qk_norm:  # bounded attention logits: |q.k| / sqrt(hs) <= sqrt(hs)
            q = F.rms_norm(q, (q.size(-1),), eps=NORM_EPS)
            k = F.rms_norm(k, (k.size(-1),), eps=NORM_EPS)
        noise = None
        if self.training and self.dropout_attn > 0:
            noise = lambda shape: dropout_noise(shape, self.dropout_attn, self.generator, x.device, x.dtype)  # noqa: E731
        y = attention(q, k, v, mask, noise)  # scale 1/sqrt(hs), as microgpt
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return dropout(self.c_proj(y), self.dropout_resid, self.training, self.generator)


def swiglu(h: torch.Tensor) -> torch.Tensor:
    """SiLU(gate) * value, the gate the first half of the hidden features and the value the second."""
    gate, value = h.chunk(2, dim=-1)
    return F.silu(gate) * value


ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "relu2": lambda x: F.relu(x).square(),
    "swiglu": swiglu,
}


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.mlp_hidden()
        fan_out = 2 * hidden if cfg.activation == "swiglu" else hidden  # swiglu: gate and value from one matrix
        self.c_fc = nn.Linear(cfg.n_embd, fan_out, bias=False)        # microgpt's mlp_fc1
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=False)      # microgpt's mlp_fc2
        self.act = ACTIVATIONS[cfg.activation]
        self.dropout = cfg.rate("resid")
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(self.c_proj(self.act(self.c_fc(x))), self.dropout, self.training, self.generator)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int = 0):
        super().__init__()
        self.residual = cfg.residual
        self.path_rate = cfg.path_rate(layer)
        self.norm_1 = Norm(cfg.norm, cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.norm_2 = Norm(cfg.norm, cfg.n_embd)
        self.mlp = MLP(cfg)

    def skipped(self, branch: torch.Tensor) -> torch.Tensor:
        """Stochastic depth: the branch, or nothing, per packed row (training only; drawn from dropout's stream)."""
        if not self.training or self.path_rate == 0:
            return branch
        return branch * drop_path_noise(branch.size(0), self.path_rate, self.attn.generator, branch.device,
                                        branch.dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        a = self.attn(self.norm_1(x), mask)
        x = x + self.skipped(a) if self.residual else a
        m = self.mlp(self.norm_2(x))
        return x + self.skipped(m) if self.residual else m


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.embed_norm = Norm(cfg.norm, cfg.n_embd) if cfg.embed_norm else nn.Identity()
        self.blocks = nn.ModuleList(Block(cfg, layer) for layer in range(cfg.n_layer))
        self.final_norm = Norm(cfg.norm, cfg.n_embd) if cfg.final_norm else nn.Identity()
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.wte.weight
        self._generator: torch.Generator | None = None

    @property
    def dropout_generator(self) -> torch.Generator | None:
        """Where every dropout mask comes from: None = torch's global generator."""
        return self._generator

    @dropout_generator.setter
    def dropout_generator(self, generator: torch.Generator | None) -> None:
        self._generator = generator
        for block in self.blocks:
            block.attn.generator = block.mlp.generator = generator

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # parameters() yields a tied matrix once

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        pos: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) -> logits (B, T, vocab); loss = mean cross-entropy over targets != -1."""
        B, T = idx.shape
        if pos is None:
            pos = torch.arange(T, device=idx.device)
        x = dropout(self.embed_norm(self.wte(idx) + self.wpe(pos)), self.cfg.rate("embed"), self.training,
                    self._generator)  # (B, T, C)
        for block in self.blocks:
            x = block(x, mask)
        logits = self.lm_head(self.final_norm(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Extend idx (B, T) by sampling up to max_new_tokens tokens; the model never sees more than block_size."""
        for _ in range(min(max_new_tokens, self.cfg.block_size - idx.size(1) + 1)):
            logits, _ = self(idx)
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            probs = F.softmax(logits.double(), dim=-1)
            nxt = torch.multinomial(probs.cpu(), num_samples=1, generator=generator).to(idx.device)
            idx = torch.cat((idx, nxt), dim=1)
        return idx


def microgpt_matrices(model: GPT) -> list[torch.Tensor]:
    """The weight matrices in the order microgpt.py creates them: wte, wpe, lm_head, then per layer q, k, v, o, fc1, fc2."""
    tensors = [model.wte.weight, model.wpe.weight, model.lm_head.weight]
    for block in model.blocks:
        tensors += [block.attn.c_attn.weight, block.attn.c_proj.weight, block.mlp.c_fc.weight, block.mlp.c_proj.weight]
    return tensors


@torch.no_grad()
def init_weights(model: GPT, generator: torch.Generator | None = None, py_rng: random.Random | None = None) -> None:
    """Initialise every parameter. With py_rng, exactly as microgpt.py: random.gauss(0, std), row by row, in its order."""
    cfg = model.cfg
    for module in model.modules():
        if isinstance(module, Norm):
            if module.weight is not None:
                module.weight.fill_(1.0)
            if module.bias is not None:
                module.bias.zero_()
    if py_rng is not None:
        for weight in microgpt_matrices(model):
            flat = [py_rng.gauss(0, cfg.init_std) for _ in range(weight.numel())]  # (out, in) row-major = microgpt
            weight.copy_(torch.tensor(flat, dtype=torch.float64).view_as(weight))
        return
    if cfg.init == "microgpt":
        for weight in microgpt_matrices(model):
            weight.normal_(0.0, cfg.init_std, generator=generator)
        return
    # nanoGPT: N(0, 0.02) everywhere, residual projections scaled by 1/sqrt(2 n_layer) (GPT-2 paper)
    for weight in microgpt_matrices(model):
        weight.normal_(0.0, 0.02, generator=generator)
    for block in model.blocks:
        block.attn.c_proj.weight.normal_(0.0, 0.02 / math.sqrt(2 * cfg.n_layer), generator=generator)
        block.mlp.c_proj.weight.normal_(0.0, 0.02 / math.sqrt(2 * cfg.n_layer), generator=generator)
