"""Many runs of one model shape trained as one computation: every weight carries a leading member dimension K, so one
batched matmul does the work of K and a lab of tiny models pays the per-operation overhead once per step, not K times.

Each member is a train.Run (its own init, dropout stream, batch order, schedule and every hyperparameter that leaves
the tensors' shapes alone); this module does its forward, backward, optimizer step and evaluations, stacked. A
member's history equals the run alone to float32 rounding (tests/test_stacked.py). Weights with a member dimension and
batched matmuls measured 1.3-2.8x faster than torch.func.vmap here (../shared/notes/stacking.md), hence no vmap.
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
import time
import zlib
from typing import Callable

import torch
import torch.nn.functional as F

from . import precision
from .config import ModelConfig, TrainConfig, UsageError
from .data import Batch, Dataset
from .distill import soft_loss
from .model import ACTIVATIONS, GPT, NORM_EPS, attention, dropout_noise
from .optim import NS_COEFFICIENTS, hidden_matrices, lr_at
from .record import RunResult
from .train import Run, eval_rows

# ModelConfig fields a stack may vary per member: they change values, not tensor shapes or the forward's structure
MEMBER_MODEL_FIELDS = ("dropout", "dropout_embed", "dropout_attn", "dropout_resid", "drop_path", "init", "init_std")
# TrainConfig fields every member of a stack shares: one optimizer code path, dtype, precision, data order and split
SHARED_TRAIN_FIELDS = ("optimizer", "nesterov", "dtype", "autocast", "parity", "split_seed")
MASKS = ("own", "shared")  # where a stack's dropout masks come from (StackedRun)
STACK_FORMAT = 1  # StackedRun.state_dict()'s layout


def default_masks(device: str | torch.device) -> str:
    """A stack's dropout masks unless asked otherwise: each member's own on the CPU, one shared draw on a GPU."""
    return "own" if torch.device(device).type == "cpu" else "shared"


def site_rate(model_cfg: ModelConfig, site: str) -> float:
    """A member's drop probability at one of StackedGPT's noise sites: embed, attn, resid (attention output), mlp
    (MLP output) or path<layer> (stochastic depth of that block), as GPT draws it alone."""
    if site.startswith("path"):
        return model_cfg.path_rate(int(site[4:]))
    return model_cfg.rate("resid" if site == "mlp" else site)


def stack_key(model_cfg: ModelConfig, cfg: TrainConfig) -> tuple:
    """Runs with equal keys can train in one stack (their weights have the same shapes)."""
    model = tuple(sorted((k, v) for k, v in dataclasses.asdict(model_cfg).items() if k not in MEMBER_MODEL_FIELDS))
    return model + tuple((k, getattr(cfg, k)) for k in SHARED_TRAIN_FIELDS)


def groups(configs: list[tuple[ModelConfig, TrainConfig]], size: int) -> list[list[int]]:
    """Indices of configs in stacks of at most size compatible runs, in first-seen order."""
    by_key: dict[tuple, list[list[int]]] = {}
    for i, (model_cfg, cfg) in enumerate(configs):
        stacks = by_key.setdefault(stack_key(model_cfg, cfg), [[]])
        if len(stacks[-1]) == size:
            stacks.append([])
        stacks[-1].append(i)
    return sorted((s for stacks in by_key.values() for s in stacks), key=lambda s: s[0])


@dataclasses.dataclass
class StackedBatch:
    """K members' batches in one tensor set, padded to the largest: rows of BOS inputs and -1 targets, and columns
    after each row's last token (causal attention never lets a real token see them)."""

    idx: torch.Tensor             # (K, R, W)
    targets: torch.Tensor         # (K, R, W), -1 where nothing is predicted
    pos: torch.Tensor             # (K, R, W)
    mask: torch.Tensor | None     # (K, R, 1, W, W) True where attention is allowed; None = plain causal
    shapes: list[tuple[int, int]]  # each member's own (rows, width): where its dropout masks go
    n_tokens: torch.Tensor        # (K,) predictions per member


def stack_batches(batches: list[Batch], bos: int, device: torch.device | str) -> StackedBatch:
    K = len(batches)
    R = max(b.idx.size(0) for b in batches)
    W = max(b.idx.size(1) for b in batches)
    idx = torch.full((K, R, W), bos, dtype=torch.long)
    targets = torch.full((K, R, W), -1, dtype=torch.long)
    pos = torch.zeros((K, R, W), dtype=torch.long)
    mask = None
    if any(b.mask is not None for b in batches):
        mask = torch.ones(W, W, dtype=torch.bool).tril().expand(K, R, 1, W, W).clone()
    for k, b in enumerate(batches):
        r, w = b.idx.shape
        idx[k, :r, :w] = b.idx
        targets[k, :r, :w] = b.targets
        pos[k, :r, :w] = b.pos
        if b.mask is not None:
            mask[k, :r, :, :w, :w] = b.mask
    to = lambda t: t.to(device, non_blocking=True)  # noqa: E731
    return StackedBatch(to(idx), to(targets), to(pos), None if mask is None else to(mask),
                        [tuple(b.idx.shape) for b in batches], torch.tensor([b.n_tokens for b in batches]))


class StackedGPT:
    """GPT's forward over weights with a leading member dimension: params[name] is (K, *GPT's shape of name)."""

    def __init__(self, models: list[GPT]):
        self.cfg = models[0].cfg
        self.names = [name for name, _ in models[0].named_parameters()]  # a tied head is wte.weight, once
        self.params = {name: torch.stack([dict(m.named_parameters())[name].detach() for m in models]).requires_grad_()
                       for name in self.names}

    @property
    def K(self) -> int:
        return self.params["wte.weight"].size(0)

    def member_state(self, params: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
        """Member k's weights as GPT.state_dict() holds them (a tied head under both names)."""
        state = {name: params[name][k].detach().clone() for name in self.names}
        if self.cfg.tie_weights:
            state["lm_head.weight"] = state["wte.weight"]
        return state

    def forward(self, params: dict[str, torch.Tensor], idx: torch.Tensor, pos: torch.Tensor,
                mask: torch.Tensor | None, noise: Callable[[str, torch.Size, torch.dtype], torch.Tensor] | None = None
                ) -> torch.Tensor:
        """idx, pos (K, R, W) -> logits (K, R, W, vocab). noise(site, shape, dtype) gives dropout multipliers for a
        site's activations (None: no dropout anywhere)."""
        cfg = self.cfg
        K, R, W = idx.shape
        C = cfg.n_embd
        wte, wpe = params["wte.weight"], params["wpe.weight"]
        offsets = torch.arange(K, device=idx.device).view(K, 1, 1)
        x = (F.embedding(idx + offsets * wte.size(1), wte.reshape(-1, C))
             + F.embedding(pos + offsets * wpe.size(1), wpe.reshape(-1, C)))  # (K, R, W, C)
        if cfg.embed_norm:
            x = self.norm(params, "embed_norm", x)
        x = self.dropped(x, "embed", noise)
        for layer in range(cfg.n_layer):
            p = f"blocks.{layer}."
            a = self.attention(params, p + "attn.", self.norm(params, p + "norm_1", x), mask, noise)
            x = x + self.skipped(a, layer, noise) if cfg.residual else a
            h = ACTIVATIONS[cfg.activation](self.linear(params[p + "mlp.c_fc.weight"], self.norm(params, p + "norm_2", x)))
            m = self.dropped(self.linear(params[p + "mlp.c_proj.weight"], h), "mlp", noise)
            x = x + self.skipped(m, layer, noise) if cfg.residual else m
        if cfg.final_norm:
            x = self.norm(params, "final_norm", x)
        head = params["wte.weight"] if cfg.tie_weights else params["lm_head.weight"]
        return self.linear(head, x)

    @staticmethod
    def linear(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x (K, R, W, in) @ weight (K, out, in)^T, one bmm for all members."""
        K, R, W, _ = x.shape
        return torch.bmm(x.reshape(K, R * W, -1), weight.transpose(1, 2)).view(K, R, W, -1)

    def norm(self, params: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
        K, C = x.size(0), x.size(-1)
        if self.cfg.norm == "layernorm":
            return (F.layer_norm(x, (C,), None, None, NORM_EPS) * params[name + ".weight"].view(K, 1, 1, C)
                    + params[name + ".bias"].view(K, 1, 1, C))
        y = F.rms_norm(x, (C,), None, NORM_EPS)
        return y * params[name + ".weight"].view(K, 1, 1, C) if self.cfg.norm == "rmsnorm_gain" else y

    @staticmethod
    def dropped(x: torch.Tensor, site: str, noise: Callable | None) -> torch.Tensor:
        multipliers = noise(site, x.shape, x.dtype) if noise is not None else None
        return x if multipliers is None else x * multipliers

    @staticmethod
    def skipped(branch: torch.Tensor, layer: int, noise: Callable | None) -> torch.Tensor:
        """Stochastic depth of block `layer`: one multiplier per member and packed row (site "path<layer>")."""
        K, R = branch.shape[:2]
        multipliers = noise(f"path{layer}", (K, R, 1, 1), branch.dtype) if noise is not None else None
        return branch if multipliers is None else branch * multipliers

    def attention(self, params: dict[str, torch.Tensor], p: str, x: torch.Tensor, mask: torch.Tensor | None,
                  noise: Callable | None) -> torch.Tensor:
        cfg = self.cfg
        K, R, W, C = x.shape
        nh = cfg.n_head
        q, k, v = self.linear(params[p + "c_attn.weight"], x).split(C, dim=-1)
        q, k, v = (t.reshape(K * R, W, nh, C // nh).transpose(1, 2) for t in (q, k, v))  # (K*R, nh, W, hs)
        if cfg.qk_norm:
            q = F.rms_norm(q, (q.size(-1),), eps=NORM_EPS)
            k = F.rms_norm(k, (k.size(-1),), eps=NORM_EPS)
        flat_mask = None if mask is None else mask.reshape(K * R, 1, W, W)
        multipliers = noise("attn", (K, R, nh, W, W), x.dtype) if noise is not None else None  # GPT's dtype choice
        y = attention(q, k, v, flat_mask, None if multipliers is None else (lambda shape: multipliers.reshape(shape)))
        y = y.transpose(1, 2).reshape(K, R, W, C)
        return self.dropped(self.linear(params[p + "c_proj.weight"], y), "resid", noise)


def column(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """Per-member scalars (computed in Python's double, as torch's optimizers compute theirs) as a (K, 1, ...) tensor
    that broadcasts over a stacked weight like `like`."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, *([1] * (like.dim() - 1)))


class StackedOptimizer:
    """The optimizer every member's TrainConfig names (one kind per stack), with each member's own lr schedule, betas,
    eps, momentum, weight decay and grad clip; the same arithmetic, in the same order, as torch.optim's foreach
    Adam/AdamW/RMSprop/SGD and optim.MuonWithAdamW."""

    def __init__(self, model: StackedGPT, template: GPT, cfgs: list[TrainConfig]):
        self.model, self.cfgs = model, cfgs
        self.kind = cfgs[0].optimizer
        embeddings = {id(template.wte.weight), id(template.wpe.weight)}
        linears = {id(m.weight) for m in template.modules() if isinstance(m, torch.nn.Linear)} - embeddings
        hidden = {id(p) for p in hidden_matrices(template)}
        named = dict(template.named_parameters())
        self.matrix = {n: id(named[n]) in linears for n in model.names}      # decayed without decay_all
        self.muon = {n: self.kind == "muon" and id(named[n]) in hidden for n in model.names}
        self.state: dict[str, dict[str, torch.Tensor]] = {n: {} for n in model.names}
        self.steps = 0
        self.columns: dict[tuple, torch.Tensor] = {}

    def column(self, values: list[float], like: torch.Tensor) -> torch.Tensor:
        """column(), remembered: most values (betas, eps, a step's lr) repeat across weights and steps, and making
        a tensor costs more than the arithmetic on a microgpt-sized weight."""
        key = (tuple(values), like.dim(), like.dtype, like.device)
        found = self.columns.get(key)
        if found is None:
            if len(self.columns) > 4096:
                self.columns.clear()
            found = self.columns[key] = column(values, like)
        return found

    def select(self, keep: list[int]) -> None:
        """Keep only these members (the stack shrinks when members stop)."""
        index = torch.tensor(keep)
        self.cfgs = [self.cfgs[i] for i in keep]
        self.columns.clear()
        for state in self.state.values():
            for key, t in state.items():
                state[key] = t.index_select(0, index.to(t.device))

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], lrs: list[float]) -> None:
        cfgs = self.cfgs
        self.steps += 1
        t = self.steps
        grads = {n: params[n].grad for n in self.model.names}
        if any(c.grad_clip > 0 for c in cfgs):
            self.clip(grads)
        if self.kind in ("adam", "adamw"):
            self.adam_foreach(params, grads, lrs, t, decoupled=self.kind == "adamw")
            return
        for n in self.model.names:
            p, g, st = params[n], grads[n], self.state[n]
            decay = [c.weight_decay if (self.matrix[n] or c.decay_all) else 0.0 for c in cfgs]
            if self.muon[n]:
                lr = [c.muon_lr * lr / c.lr if c.muon_lr != c.lr else lr for c, lr in zip(cfgs, lrs)]
                self.muon_step(p, g, st, lr, decay)
            elif self.kind == "muon":
                self.muon_adamw_step(p, g, st, lrs, decay, t)
            elif self.kind == "rmsprop":
                if any(decay):
                    g = g + p * self.column(decay, p)
                alpha = self.column([c.beta2 for c in cfgs], p)
                avg_sq = slot(st, "square_avg", p)
                avg_sq.mul_(alpha).add_(self.column([1 - c.beta2 for c in cfgs], p) * g * g)
                avg = avg_sq.sqrt().add_(self.column([c.eps for c in cfgs], p))
                buf = slot(st, "momentum_buffer", p)
                buf.mul_(self.column([c.momentum for c in cfgs], p)).add_(g / avg)
                p.add_(buf * self.column([-lr for lr in lrs], p))
            else:  # sgd
                if any(decay):
                    g = g + p * self.column(decay, p)
                if "momentum_buffer" not in st:
                    st["momentum_buffer"] = g.clone()
                else:
                    st["momentum_buffer"].mul_(self.column([c.momentum for c in cfgs], p)).add_(g)
                buf = st["momentum_buffer"]
                g = g + buf * self.column([c.momentum for c in cfgs], p) if cfgs[0].nesterov else buf
                p.add_(g * self.column([-lr for lr in lrs], p))

    def clip(self, grads: dict[str, torch.Tensor]) -> None:
        """clip_grad_norm_ per member: its own global norm and max (0 = no clipping)."""
        norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), 2.0, dim=1) for g in grads.values()])
        total = torch.linalg.vector_norm(norms, 2.0, dim=0)  # (K,)
        limit = torch.tensor([c.grad_clip if c.grad_clip > 0 else math.inf for c in self.cfgs], device=total.device)
        coef = torch.clamp(limit.to(total.dtype) / (total + 1e-6), max=1.0)
        for g in grads.values():
            g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))

    def column_list(self, values: list[float], tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """column(values, t) for each of tensors (one lookup per distinct rank)."""
        by_rank: dict[int, torch.Tensor] = {}
        out = []
        for t in tensors:
            found = by_rank.get(t.dim())
            if found is None:
                found = by_rank[t.dim()] = self.column(values, t)
            out.append(found)
        return out

    def adam_foreach(self, params, grads, lrs, t, decoupled: bool) -> None:
        """Adam (decoupled: AdamW) for every weight at once in torch._foreach_ calls, with torch.optim's foreach
        arithmetic in its order: a loop over the weights was ~600 small operations a step, each a kernel launch on a
        GPU (where the stacked step was 1.7x a single run's at K = 1)."""
        cfgs = self.cfgs
        names = self.model.names
        P = [params[n] for n in names]
        G = [grads[n] for n in names]
        decays = {n: [c.weight_decay if (self.matrix[n] or c.decay_all) else 0.0 for c in cfgs] for n in names}
        for group in {tuple(d) for d in decays.values() if any(d)}:  # weights decayed alike
            at = [i for i, n in enumerate(names) if tuple(decays[n]) == group]
            if decoupled:
                torch._foreach_mul_([P[i] for i in at],
                                    self.column_list([1 - lr * wd for lr, wd in zip(lrs, group)], [P[i] for i in at]))
            else:
                added = torch._foreach_mul([P[i] for i in at], self.column_list(list(group), [P[i] for i in at]))
                for i, g in zip(at, torch._foreach_add([G[i] for i in at], added)):
                    G[i] = g
        M = [slot(self.state[n], "exp_avg", p) for n, p in zip(names, P)]
        V = [slot(self.state[n], "exp_avg_sq", p) for n, p in zip(names, P)]
        torch._foreach_lerp_(M, G, self.column_list([1 - c.beta1 for c in cfgs], P))
        torch._foreach_mul_(V, self.column_list([c.beta2 for c in cfgs], P))
        square = torch._foreach_mul(G, self.column_list([1 - c.beta2 for c in cfgs], P))
        torch._foreach_mul_(square, G)
        torch._foreach_add_(V, square)
        denom = torch._foreach_sqrt(V)
        torch._foreach_div_(denom, self.column_list([(1 - c.beta2 ** t) ** 0.5 for c in cfgs], P))
        torch._foreach_add_(denom, self.column_list([c.eps for c in cfgs], P))
        update = torch._foreach_div(M, denom)
        torch._foreach_mul_(update, self.column_list([-(lr / (1 - c.beta1 ** t)) for c, lr in zip(cfgs, lrs)], P))
        torch._foreach_add_(P, update)

    def muon_adamw_step(self, p, g, st, lrs, decay, t) -> None:
        """MuonWithAdamW's AdamW half (its own order of operations)."""
        cfgs = self.cfgs
        if any(decay):
            p.mul_(self.column([1 - lr * wd for lr, wd in zip(lrs, decay)], p))
        m = slot(st, "exp_avg", p)
        v = slot(st, "exp_avg_sq", p)
        m.lerp_(g, self.column([1 - c.beta1 for c in cfgs], p))
        v.mul_(self.column([c.beta2 for c in cfgs], p)).add_(g * self.column([1 - c.beta2 for c in cfgs], p) * g)
        denom = (v / self.column([1 - c.beta2 ** t for c in cfgs], p)).sqrt_().add_(self.column([c.eps for c in cfgs], p))
        p.add_(m / denom * self.column([-lr / (1 - c.beta1 ** t) for c, lr in zip(cfgs, lrs)], p))

    def muon_step(self, p, g, st, lrs, decay) -> None:
        if any(decay):
            p.mul_(self.column([1 - lr * wd for lr, wd in zip(lrs, decay)], p))
        buf = slot(st, "momentum_buffer", p)
        buf.mul_(0.95).add_(g)
        update = orthogonalise_stacked(g.add(buf, alpha=0.95))
        scale = max(1.0, p.size(1) / p.size(2)) ** 0.5
        p.add_(update * self.column([-lr * scale for lr in lrs], p))


def slot(state: dict[str, torch.Tensor], key: str, like: torch.Tensor) -> torch.Tensor:
    """state[key], zeros like `like` the first time."""
    found = state.get(key)
    if found is None:
        found = state[key] = torch.zeros_like(like)
    return found


def orthogonalise_stacked(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """optim.orthogonalise for each member of g (K, rows, cols), in one set of batched matmuls."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(precision.matmul_dtype(g.device.type))
    transposed = x.size(1) > x.size(2)
    if transposed:
        x = x.mT
    x = x / (torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = x @ x.mT
        x = a * x + (b * A + c * A @ A) @ x
    return (x.mT if transposed else x).to(g.dtype)


class StackedRun:
    """K runs (train.Run) in one computation. Members stop on their own (steps done, diverged, early-stopped,
    pruned) and leave the stack; the others go on. Stages as Run's: train_step(), evaluate(), finish()."""

    def __init__(self, runs: list[Run], masks: str | None = None):
        keys = {stack_key(r.model_cfg, r.cfg) for r in runs}
        if len(keys) != 1:
            raise UsageError("a stack's runs must share the model's shape and the optimizer, dtype, precision and "
                             f"parity; these differ in {sorted(_differing(runs))}")
        self.runs = runs
        self.active = list(range(len(runs)))   # the members still training, in stack order
        self.model = StackedGPT([r.model for r in runs])
        self.optimizer = StackedOptimizer(self.model, runs[0].model, [r.cfg for r in runs])
        self.ema = ({n: p.detach().clone() for n, p in self.model.params.items()}
                    if any(r.cfg.averages() for r in runs) else None)
        first = runs[0]
        self.device, self.data = first.device, first.data
        self.autocast = first.autocast
        # Dropout masks: "own" draws each member's from its own generator (what it draws alone, one draw per member
        # and site); "shared" draws the stack's in one call per site from one generator seeded by the members' seeds
        # (same keep rates, other masks). Per-member draws are a few launches each: on a GPU they cost more than the
        # step itself (K = 16 at the recipe's size), on the CPU they are lost in the arithmetic.
        self.masks = masks or default_masks(self.device)
        if self.masks not in MASKS:
            raise UsageError(f"masks must be one of {', '.join(MASKS)}, got {self.masks!r}")
        self.mask_generator = None
        if self.masks == "shared":
            seed = zlib.crc32(repr([r.cfg.seed for r in runs]).encode())
            self.mask_generator = torch.Generator(self.device).manual_seed(seed)
        self.step = 0
        self.t0 = time.perf_counter()
        for r in runs:  # a member's clock is the stack's
            r.t0 = self.t0
            r.optimizer = r.ema = None  # the stack's optimizer and average hold every member's state

    # --------------------------------------------------------------------------------------------------- training

    def members(self) -> list[Run]:
        return [self.runs[i] for i in self.active]

    def noise(self, members: list[Run], shapes: list[tuple[int, int]]) -> Callable | None:
        """Dropout multipliers per site: each member's from its own generator, in the shape its own batch has alone
        (so the draws are the ones it makes alone), padded with ones."""
        n_layer = self.model.cfg.n_layer
        sites = ["embed", "attn", "resid", "mlp", *(f"path{layer}" for layer in range(n_layer))]
        rates = {site: [site_rate(r.model_cfg, site) for r in members] for site in sites}
        if not any(p > 0 for site in sites for p in rates[site]):
            return None
        if self.masks == "shared":
            keeps = {site: torch.tensor([1.0 - p for p in rates[site]], device=self.device) for site in sites}

            def shared(site: str, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor | None:
                if not any(p > 0 for p in rates[site]):
                    return None
                column = keeps[site].view(-1, *[1] * (len(shape) - 1))
                return torch.bernoulli(column.expand(shape), generator=self.mask_generator).div_(column).to(dtype)

            return shared

        def draw(site: str, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor | None:
            if not any(p > 0 for p in rates[site]):
                return None
            out = torch.ones(shape, dtype=dtype, device=self.device)
            for k, (r, p) in enumerate(zip(members, rates[site])):
                if p > 0:
                    rows, width = shapes[k]
                    if site == "attn":
                        own, region = (rows, shape[2], width, width), out[k, :rows, :, :width, :width]
                    elif site.startswith("path"):
                        own, region = (rows, 1, 1), out[k, :rows]
                    else:
                        own, region = (rows, width, shape[-1]), out[k, :rows, :width]
                    region.copy_(dropout_noise(own, p, r.dropout_generator, out.device, out.dtype))
            return out

        return draw

    def train_step(self) -> list[float | None]:
        """One update of every active member; their batch losses (None where one was not finite: that member is
        recorded diverged and leaves the stack)."""
        members = self.members()
        step = self.step
        lrs = [lr_at(step, r.cfg) for r in members]
        own = [r.sampler.next() for r in members]
        batch = stack_batches(own, self.data.tokenizer.bos, self.device)
        params = self.model.params
        with self.autocast:
            logits = self.model.forward(params, batch.idx, batch.pos, batch.mask, self.noise(members, batch.shapes))
        K = len(members)
        if logits.dtype in (torch.bfloat16, torch.float16):  # autocast's output: the loss in float32, as GPT's is
            logits = logits.float()
        sums = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch.targets.reshape(-1),
                               ignore_index=-1, reduction="none").view(K, -1).sum(1)
        losses = sums / batch.n_tokens.to(sums.device)
        if any(r.teacher is not None for r in members):  # distillation (distill.py), member by member
            mixed = []
            for k, (r, b) in enumerate(zip(members, own)):
                if r.teacher is None:
                    mixed.append(losses[k])
                    continue
                soft = soft_loss(logits[k], batch.targets[k], r.teacher.probs(b))  # b: the member's batch, on the host
                mixed.append(r.cfg.distill_mix * soft + (1 - r.cfg.distill_mix) * losses[k])
            losses = torch.stack(mixed)
        for p in params.values():
            p.grad = None
        # A member whose loss is not finite gets no gradient (it is recorded diverged below and leaves the stack);
        # deciding that on the device lets a GPU run the whole step before the host reads the losses.
        torch.where(torch.isfinite(losses), losses, 0.0).sum().backward()
        self.optimizer.step(params, lrs)
        if self.ema is not None:
            with torch.no_grad():
                shares = [r.cfg.average_weight(step) for r in members]
                live = [p.detach() for p in params.values()]
                torch._foreach_lerp_([self.ema[n] for n in params], live,
                                     self.optimizer.column_list([0.0 if w is None else w for w in shares], live))
        values = losses.tolist()
        finite = [math.isfinite(v) for v in values]
        self.step = step + 1
        out: list[float | None] = []
        for r, lr, value, ok, n in zip(members, lrs, values, finite, batch.n_tokens.tolist()):
            if not ok:
                r.state, r.diverged_step = "diverged", step + 1
                r.stop_reason = f"batch loss became {value} at step {step + 1}"
                r.history.append({"step": step + 1, "lr": lr, "loss": value, "val_loss": None, "elapsed_s": r.elapsed()})
                out.append(None)
                continue
            r.tokens += n
            r.step = step + 1
            r.history.append({"step": r.step, "lr": lr, "loss": value, "val_loss": None, "elapsed_s": r.elapsed()})
            out.append(value)
        return out

    def eval_params(self) -> dict[str, torch.Tensor]:
        """The weights evaluations see: each member's EMA where it keeps one, its live weights otherwise."""
        live = {n: p.detach() for n, p in self.model.params.items()}
        if self.ema is None:
            return live
        uses = [r.cfg.averages() for r in self.members()]
        return {n: torch.where(self.optimizer.column([float(u) for u in uses], p).bool(), self.ema[n], p)
                for n, p in live.items()}

    @torch.no_grad()
    def losses(self, params: dict[str, torch.Tensor], batches: list[Batch]) -> list[float]:
        """Each member's token-weighted mean cross-entropy over batches (train.evaluate's measure), all in one pass
        per chunk of rows."""
        K = params["wte.weight"].size(0)
        totals = torch.zeros(K, dtype=torch.float64)
        count = 0
        for b in batches:
            rows, width = b.idx.shape
            chunk = eval_rows(width, self.model.cfg.n_embd, K, self.device)
            for i in range(0, rows, chunk):
                idx, pos = b.idx[i:i + chunk].to(self.device), b.pos[i:i + chunk].to(self.device)
                targets = b.targets[i:i + chunk].to(self.device)
                mask = None if b.mask is None else b.mask[i:i + chunk].to(self.device).expand(K, -1, -1, -1, -1)
                logits = self.model.forward(params, idx.expand(K, -1, -1), pos.expand(K, -1, -1), mask)
                ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1).repeat(K),
                                     ignore_index=-1, reduction="none")
                totals += ce.view(K, -1).sum(1).double().cpu()
            count += b.n_tokens
        return (totals / count).tolist()

    def evaluate(self, due: list[int]) -> dict[int, float]:
        """Val loss of the members at these stack positions (one pass for all); a new best is kept per member."""
        e0 = time.perf_counter()
        params = self.eval_params()
        vals = self.losses(params, self.runs[0].val_batches)
        members = self.members()
        out = {}
        for k in due:
            r, val = members[k], vals[k]
            if math.isfinite(val) and (r.best_val is None or val < r.best_val):
                r.best_state = self.model.member_state(params, k)
            r.history[-1]["val_loss"] = val
            out[k] = val
        seconds = time.perf_counter() - e0
        for r in members:
            r.eval_seconds += seconds
        for k in due:
            members[k].history[-1]["elapsed_s"] = members[k].elapsed()
        return out

    def drop(self, leaving: set[int]) -> None:
        """Take the members at these stack positions out of the stack."""
        if not leaving:
            return
        keep = [k for k in range(len(self.active)) if k not in leaving]
        self.active = [self.active[k] for k in keep]
        if not keep:
            return
        index = torch.tensor(keep, device=self.model.params["wte.weight"].device)
        self.model.params = {n: p.detach().index_select(0, index).requires_grad_() for n, p in self.model.params.items()}
        if self.ema is not None:
            self.ema = {n: p.index_select(0, index) for n, p in self.ema.items()}
        self.optimizer.select(keep)

    # ------------------------------------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """Everything needed to continue this stack exactly: the stacked weights, optimizer state and EMA, which
        members are still in it, and each member's own progress (train.Run.progress_state: its best weights, batch
        stream, RNG states, history) with how it ended if it already left. torch.save-able, weights_only-loadable."""
        cpu = lambda d: {n: t.detach().cpu().clone() for n, t in d.items()}  # noqa: E731
        return {
            "format": STACK_FORMAT,
            "members": [{**r.progress_state(), "state": r.state, "stop_reason": r.stop_reason,
                         "diverged_step": r.diverged_step} for r in self.runs],
            "active": list(self.active),
            "step": self.step,
            "params": cpu(self.model.params),
            "optimizer": {"steps": self.optimizer.steps,
                          "state": {n: cpu(st) for n, st in self.optimizer.state.items()}},
            "ema": None if self.ema is None else cpu(self.ema),
            "masks": self.masks,
            "mask_rng": None if self.mask_generator is None else self.mask_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from state_dict()'s output; UsageError if it is another stack's (members, settings or data)."""
        if state.get("format") != STACK_FORMAT or "members" not in state:
            raise UsageError(f"stack checkpoint format {state.get('format')!r} is not {STACK_FORMAT}: it was written by "
                             "another version of microgpt")
        if len(state["members"]) != len(self.runs):
            raise UsageError(f"the stack checkpoint holds {len(state['members'])} members, this stack "
                             f"{len(self.runs)}: resume a stack with the members it started with")
        if state["masks"] != self.masks:
            raise UsageError(f"the stack checkpoint drew its dropout masks {state['masks']}, this stack would draw "
                             f"them {self.masks}: resume it on the kind of device it started on")
        self.t0 = time.perf_counter()
        for r, m in zip(self.runs, state["members"]):
            r.load_progress(m)
            r.state, r.stop_reason, r.diverged_step = m["state"], m["stop_reason"], m["diverged_step"]
            r.t0 = self.t0
        self.active = list(state["active"])
        to = lambda d: {n: t.to(self.device) for n, t in d.items()}  # noqa: E731
        self.model.params = {n: t.requires_grad_() for n, t in to(state["params"]).items()}
        self.optimizer.cfgs = [self.runs[i].cfg for i in self.active]
        self.optimizer.columns.clear()
        self.optimizer.steps = state["optimizer"]["steps"]
        self.optimizer.state = {n: to(st) for n, st in state["optimizer"]["state"].items()}
        self.ema = None if state["ema"] is None else to(state["ema"])
        self.step = state["step"]
        if self.mask_generator is not None:
            self.mask_generator.set_state(state["mask_rng"])
        torch.set_rng_state(state["torch_rng"])

    # --------------------------------------------------------------------------------------------------- finishing

    def finish(self) -> list[RunResult]:
        """Each member's val-selected weights measured on test and train (all members in one pass per split), then
        its RunResult, as Run.finish makes it."""
        measured = [r for r in self.runs if r.best_state is not None and r.state != "interrupted"]
        held_out: dict[int, tuple[float, float]] = {}
        if measured:
            best = StackedGPT([_loaded(r) for r in measured])
            test = self.losses(best.params, self.data.eval_batches("test"))
            train = self.losses(best.params, self.data.eval_batches("train"))
            held_out = {id(r): (te, tr) for r, te, tr in zip(measured, test, train)}
        return [r.finish(held_out.get(id(r))) for r in self.runs]


def _loaded(run: Run) -> GPT:
    run.model.load_state_dict(run.best_state)
    return run.model


def _differing(runs: list[Run]) -> set[str]:
    keys = [dict(stack_key(r.model_cfg, r.cfg)) for r in runs]
    return {k for k in keys[0] if any(key.get(k) != keys[0][k] for key in keys[1:])}


def train_stacked(
    configs: list[tuple[ModelConfig, TrainConfig]],
    data: Dataset,
    device: str | torch.device = "cpu",
    on_eval: list[Callable[[int, float], bool | None] | None] | None = None,
    log: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    pools: list[list[list[int]] | None] | None = None,
    py_rngs: list[random.Random | None] | None = None,
    progress: bool = False,
    masks: str | None = None,
    resume: dict | None = None,
    on_checkpoint: Callable[[dict], None] | None = None,
    checkpoint_every: int = 0,
    teachers: list | None = None,
) -> list[tuple[GPT, RunResult]]:
    """Train these runs as one stack (stack_key equal for all); return each one's model (val-selected weights) and
    RunResult, in order: what train() returns for each alone, to float32 rounding.

    on_eval[i](step, val) runs after member i's evaluations; True stops that member only (pruned). should_stop()
    ends every member's run as "interrupted" (continue it with resume=, below). pools[i]: member i's
    synthetic names, as train()'s pool. progress: a tqdm bar over the longest member's steps. masks: the dropout
    masks' source, "own" (each member's from its own generator: exactly what it trains on alone) or "shared" (one draw
    per site for the whole stack); default own on the CPU, shared on a GPU (StackedRun). resume: a
    StackedRun.state_dict() to continue from (the same configs, in order). on_checkpoint(state) gets one every
    checkpoint_every stack steps (0: never) and when should_stop() stops the stack, before its members are marked
    interrupted: continued from, it gives the histories of a stack never stopped. teachers[i]: member i's teacher,
    as train()'s (an ensemble, or one distill.TeacherTable that members of one teacher share).
    """
    n = len(configs)
    on_eval = on_eval or [None] * n
    pools = pools or [None] * n
    py_rngs = py_rngs or [None] * n
    teachers = teachers or [None] * n
    runs = [Run(m, c, data, device, py_rng=rng, pool=pool, teacher=teacher, own_optimizer=False)
            for (m, c), pool, rng, teacher in zip(configs, pools, py_rngs, teachers)]
    stack = StackedRun(runs, masks)
    if resume is not None:
        stack.load_state_dict(resume)
    say = log or (lambda line: None)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=max(c.steps for _, c in configs), leave=False, unit="step", dynamic_ncols=True)
        say = bar.write
    window: list[float] = []
    t_line, evals_s = time.perf_counter(), 0.0
    last_line_step = stack.step
    while stack.active:
        members = stack.members()
        losses = stack.train_step()
        leaving = {k for k, v in enumerate(losses) if v is None}
        window += [v for v in losses if v is not None]
        due = [k for k, r in enumerate(members) if k not in leaving
               and (r.step % r.cfg.eval_every == 0 or r.step == r.cfg.steps)]
        if due:
            e0 = time.perf_counter()
            vals = stack.evaluate(due)
            evals_s += time.perf_counter() - e0
            for k, val in vals.items():
                if members[k].stopped_by(val, on_eval[stack.active[k]]):
                    leaving.add(k)
        leaving |= {k for k, r in enumerate(members) if r.step >= r.cfg.steps}
        step = stack.step
        if (step % members[0].cfg.log_every == 0 or due or not (set(range(len(members))) - leaving)
                or time.perf_counter() - t_line >= 30.0):
            now = time.perf_counter()
            ms = 1000 * (now - t_line - evals_s) / max(1, step - last_line_step)
            vals_now = [r.history[-1]["val_loss"] for r in members if r.history and r.history[-1]["val_loss"] is not None]
            val_text = f" | val {min(vals_now):.4f}..{max(vals_now):.4f}" if vals_now else ""
            say(f"step {step:5d}/{max(r.cfg.steps for r in members)} | {len(members)} members | loss "
                f"{statistics.fmean(window) if window else float('nan'):.4f}{val_text} | {ms:.2f} ms/step")
            window, t_line, evals_s, last_line_step = [], now, 0.0, step
        if should_stop is not None and should_stop():
            stack.drop(leaving)  # members whose runs ended at this step leave as they would have
            if on_checkpoint is not None and stack.active:
                on_checkpoint(stack.state_dict())
            members = stack.members()
            for r in members:
                r.state, r.stop_reason = "interrupted", f"interrupted after step {r.step}"
            leaving = set(range(len(members)))
        stack.drop(leaving)
        if on_checkpoint is not None and checkpoint_every and stack.active and stack.step % checkpoint_every == 0:
            on_checkpoint(stack.state_dict())
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    results = stack.finish()
    return [(r.model, result) for r, result in zip(runs, results)]

