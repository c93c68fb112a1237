"""The training loop, written out top to bottom, and the held-out evaluation that every reported loss comes from."""

from __future__ import annotations

import contextlib
import copy
import math
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from .augment import AugmentedSampler, augmentation_text, synthetic_pool
from .config import ModelConfig, TrainConfig
from .data import Batch, BatchSampler, Dataset, SequenceSampler
from .model import GPT, init_weights
from .optim import build_optimizer, lr_at

TIERS = ((1, 1.9), (2, 2.0), (3, 2.2))  # PROTOCOL.md: tier by test loss


def tier_of(test_loss: float | None) -> int | None:
    """1, 2 or 3 by PROTOCOL.md's thresholds on test loss; None above 2.2 or without a test loss."""
    if test_loss is None or not math.isfinite(test_loss):
        return None
    for tier, bound in TIERS:
        if test_loss < bound:
            return tier
    return None


@torch.no_grad()
def evaluate(model: GPT, batches: list[Batch]) -> float:
    """Token-weighted mean cross-entropy (nats) over every prediction of every name in batches; restores train mode."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for b in batches:
        logits, _ = model(b.idx, pos=b.pos, mask=b.mask)
        total += torch.nn.functional.cross_entropy(
            logits.view(-1, logits.size(-1)), b.targets.view(-1), ignore_index=-1, reduction="sum"
        ).item()
        count += b.n_tokens
    model.train(was_training)
    return total / count


class WeightAverage:
    """An exponential moving average of the parameters, the weights every evaluation sees when enabled.

    Its decay ramps up as min(decay, (1 + step) / (10 + step)) so the average is not dominated by the initial weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.params = [p.detach().clone() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.params, [p.detach() for p in model.parameters()], 1.0 - d)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module):
        """Swap the averaged weights into model for the duration, then restore the live ones."""
        live = [p.detach().clone() for p in model.parameters()]
        with torch.no_grad():
            for p, a in zip(model.parameters(), self.params):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, v in zip(model.parameters(), live):
                    p.copy_(v)


@dataclass
class RunResult:
    """What one run measured. Losses are held-out figures of the val-selected model (PROTOCOL.md)."""

    state: str                          # complete (all steps, or early-stopped by patience) | stopped (on_eval asked) | diverged
    stop_reason: str                    # why the loop ended, in words
    steps_done: int                     # optimizer updates made
    n_params: int
    train_loss: float | None            # whole train split, eval mode
    val_loss: float | None              # = best_val: the selected model's val loss
    test_loss: float | None             # once, on the selected model
    best_val: float | None
    best_val_step: int | None
    target: float
    steps_to_target: int | None         # first eval step with val < target
    seconds_to_target: float | None     # wall seconds (evals included) until then
    wall_seconds: float
    train_seconds: float                # loop time without evaluation
    tokens_per_second: float            # real (non-padding) predictions trained on per train second
    stability: float | None             # std of the batch loss over the last 10% of steps
    tier: int | None
    diverged_step: int | None
    trained_on: str                     # which names the optimizer saw
    history: list[dict] = field(default_factory=list, repr=False)  # per step: step, lr, loss, val_loss, elapsed_s

    def summary(self) -> dict:
        """Every figure but the per-step history, JSON-ready."""
        out = asdict(self)
        out.pop("history")
        return out


def train(
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    data: Dataset,
    device: str | torch.device = "cpu",
    on_eval: Callable[[int, float], bool | None] | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    py_rng: random.Random | None = None,
) -> tuple[GPT, RunResult]:
    """Train a fresh model; return it (the val-selected weights) and its RunResult.

    on_eval(step, val_loss) runs after each evaluation; returning True stops the run (pruning, early exits).
    With cfg.parity, py_rng (default random.Random(cfg.seed)) shuffles the names and draws the initial weights exactly
    as microgpt.py does; pass your own to keep drawing from it afterwards (microgpt's sampling).
    """
    model_cfg.validate()
    cfg.validate()
    data.check_block_size(model_cfg.block_size)
    dtype = getattr(torch, cfg.dtype)
    torch.manual_seed(cfg.seed)  # dropout masks; init and batch order use their own generators below

    model = GPT(model_cfg).to(dtype)
    if cfg.parity:
        py_rng = py_rng if py_rng is not None else random.Random(cfg.seed)
        docs = data.microgpt_docs(py_rng)  # microgpt shuffles before it draws the weights
        init_weights(model, py_rng=py_rng)
        sampler = SequenceSampler(docs, data.tokenizer, cfg.batch_size)
        trained_on = "all names, microgpt.py order (val/test names are among them)"
    else:
        init_weights(model, generator=torch.Generator().manual_seed(cfg.seed))
        trained_on = "train split"
        if cfg.noise or cfg.synthetic or cfg.curriculum:
            pool = synthetic_pool(data, cfg) if cfg.synthetic else None
            sampler = AugmentedSampler(data, cfg, pool)
            trained_on += augmentation_text(cfg)
        else:
            sampler = BatchSampler(data.encoded("train"), data.tokenizer.bos, cfg.batch_size, seed=cfg.seed)
    model.to(device)
    model.train()
    optimizer = build_optimizer(model, cfg)
    ema = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
    val_batches = [b.to(device) for b in data.eval_batches("val")]
    autocast = (torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if cfg.autocast == "bfloat16"
                else contextlib.nullcontext())

    say = log or (lambda line: None)
    history: list[dict] = []
    best_val, best_step, best_state = None, None, None
    steps_to_target = seconds_to_target = diverged_step = None
    evals_since_best = 0
    tokens = 0
    eval_seconds = interval_eval = 0.0
    state, stop_reason = "complete", f"ran all {cfg.steps} steps"
    interval_losses: list[float] = []
    interval_start = time.perf_counter()
    t0 = interval_start
    steps = range(cfg.steps)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(steps, total=cfg.steps, leave=False, unit="step", dynamic_ncols=True)
        steps = bar
        say = bar.write
    step = 0
    for step in steps:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr if group["peak_lr"] == cfg.lr else group["peak_lr"] * lr / cfg.lr
        batch = sampler.next().to(device)
        with autocast:
            _, loss = model(batch.idx, batch.targets, batch.pos, batch.mask)
        loss_value = loss.item()  # the loss before this step's update, as microgpt prints it
        if not math.isfinite(loss_value):
            state, diverged_step = "diverged", step + 1
            stop_reason = f"batch loss became {loss_value} at step {step + 1}"
            history.append({"step": step + 1, "lr": lr, "loss": loss_value, "val_loss": None,
                            "elapsed_s": time.perf_counter() - t0})
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
        optimizer.step()
        if ema is not None:
            ema.update(model, step)
        tokens += batch.n_tokens
        interval_losses.append(loss_value)
        done = step + 1
        row = {"step": done, "lr": lr, "loss": loss_value, "val_loss": None, "elapsed_s": 0.0}
        history.append(row)

        stop = False
        if done % cfg.eval_every == 0 or done == cfg.steps:
            e0 = time.perf_counter()
            with ema.applied(model) if ema is not None else contextlib.nullcontext():
                val = evaluate(model, val_batches)
                if math.isfinite(val) and (best_val is None or val < best_val):
                    best_state = copy.deepcopy(model.state_dict())
            interval_eval += time.perf_counter() - e0
            eval_seconds += time.perf_counter() - e0
            row["val_loss"] = val
            if not math.isfinite(val):
                state, diverged_step = "diverged", done
                stop_reason = f"val loss became {val} at step {done}"
                stop = True
            elif best_val is None or val < best_val:
                best_val, best_step, evals_since_best = val, done, 0
            else:
                evals_since_best += 1
            if steps_to_target is None and math.isfinite(val) and val < cfg.target:
                steps_to_target, seconds_to_target = done, time.perf_counter() - t0
            if not stop and cfg.patience and evals_since_best >= cfg.patience:
                stop_reason = f"early stop at step {done}: no new best val in {cfg.patience} evaluations"
                stop = True
            if not stop and on_eval is not None and on_eval(done, val):
                state, stop_reason = "stopped", f"stopped by on_eval at step {done}"
                stop = True
        row["elapsed_s"] = time.perf_counter() - t0
        if done % cfg.log_every == 0 or row["val_loss"] is not None or done == cfg.steps or stop:
            now = time.perf_counter()
            ms = 1000 * (now - interval_start - interval_eval) / max(1, len(interval_losses))  # evals excluded
            val_text = f"{row['val_loss']:.4f}" if row["val_loss"] is not None else "   -  "
            say(f"step {done:5d}/{cfg.steps} | loss {statistics.fmean(interval_losses):.4f} | val {val_text} | "
                f"lr {lr:.1e} | {ms:.2f} ms/step")
            interval_losses, interval_start, interval_eval = [], now, 0.0
        if stop:
            break
    if bar is not None:
        bar.close()
    wall_to_here = time.perf_counter() - t0
    steps_done = len([r for r in history if math.isfinite(r["loss"])])

    train_loss = val_loss = test_loss = None
    if best_state is not None:
        model.load_state_dict(best_state)
        val_loss = best_val
        test_loss = evaluate(model, [b.to(device) for b in data.eval_batches("test")])
        train_loss = evaluate(model, [b.to(device) for b in data.eval_batches("train")])
    tail = [r["loss"] for r in history[-max(2, len(history) // 10):] if math.isfinite(r["loss"])]
    train_seconds = max(wall_to_here - eval_seconds, 1e-9)
    result = RunResult(
        state=state,
        stop_reason=stop_reason,
        steps_done=steps_done,
        n_params=model.num_params(),
        train_loss=train_loss,
        val_loss=val_loss,
        test_loss=test_loss,
        best_val=best_val,
        best_val_step=best_step,
        target=cfg.target,
        steps_to_target=steps_to_target,
        seconds_to_target=seconds_to_target,
        wall_seconds=time.perf_counter() - t0,
        train_seconds=train_seconds,
        tokens_per_second=tokens / train_seconds,
        stability=statistics.pstdev(tail) if len(tail) >= 2 else None,
        tier=tier_of(test_loss),
        diverged_step=diverged_step,
        trained_on=trained_on,
        history=history,
    )
    return model, result
