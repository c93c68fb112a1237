"""The training loop, written out top to bottom, and the held-out evaluation that every reported loss comes from."""

from __future__ import annotations

import contextlib
import copy
import math
import random
import statistics
import time
from typing import Callable

import torch

from .augment import AugmentedSampler, augmentation_text, ngram_names
from .config import ModelConfig, TrainConfig, UsageError, to_dict
from .data import Batch, BatchSampler, Dataset, SequenceSampler, rng_state, set_rng_state
from .distill import TeacherTable, check_teacher, distill_loss, distill_text, teacher_table
from .model import GPT, init_weights
from .optim import build_optimizer, lr_at
from .precision import resolve_autocast
from .protocol import tier_of
from .record import RunResult

LOG_SECONDS = 30.0  # a console line at least this often, whatever log_every says: a long run logged to a file shows life

# Activations an evaluation pass holds, in floats: rows are evaluated in chunks whose MLP hidden layer (4 x n_embd per
# token, per member) stays about this size, cache-sized rather than memory-bound: the train split's loss took 0.69-0.78x
# the time of whole 4,096-name batches at the default, fast, mid and best presets and 0.98x at makemore's, the same
# numbers to float rounding (benchmarks/eval_speed.py, BENCHMARKS.md).
# A GPU has no such cache to fit, and each chunk costs a few hundred kernel launches: there a chunk holds up to
# EVAL_FLOATS_GPU (1 GiB of float32), the whole batch at every preset's size but the largest stacks'.
EVAL_FLOATS = 1 << 21
EVAL_FLOATS_GPU = 1 << 28


def eval_rows(width: int, n_embd: int, members: int = 1, device: str | torch.device = "cpu") -> int:
    """Rows of `width` tokens per evaluation chunk (EVAL_FLOATS on the CPU, EVAL_FLOATS_GPU elsewhere)."""
    budget = EVAL_FLOATS if torch.device(device).type == "cpu" else EVAL_FLOATS_GPU
    return max(1, budget // (members * width * 4 * n_embd))


@torch.no_grad()
def evaluate(model: GPT, batches: list[Batch]) -> float:
    """Token-weighted mean cross-entropy (nats) over every prediction of every name in batches; restores train mode."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for b in batches:
        rows = eval_rows(b.idx.size(1), model.cfg.n_embd, 1, device)
        for i in range(0, b.idx.size(0), rows):
            mask = None if b.mask is None else b.mask[i:i + rows]
            logits, _ = model(b.idx[i:i + rows], pos=b.pos[i:i + rows], mask=mask)
            total += torch.nn.functional.cross_entropy(
                logits.view(-1, logits.size(-1)), b.targets[i:i + rows].reshape(-1), ignore_index=-1, reduction="sum"
            ).item()
        count += b.n_tokens
    model.train(was_training)
    return total / count


class WeightAverage:
    """An average of the parameters, the weights every evaluation sees when enabled: an exponential moving average
    (--ema) or SWA's uniform one over the last steps (--swa); TrainConfig.average_weight gives each step's share."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig):
        self.cfg = cfg
        self.params = [p.detach().clone() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        torch._foreach_lerp_(self.params, [p.detach() for p in model.parameters()], self.cfg.average_weight(step))

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


def train(
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    data: Dataset,
    device: str | torch.device = "cpu",
    on_eval: Callable[[int, float], bool | None] | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    py_rng: random.Random | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_checkpoint: Callable[[dict], None] | None = None,
    checkpoint_every: int = 0,
    resume: dict | None = None,
    pool: list[list[int]] | None = None,
    teacher: torch.nn.Module | None = None,
) -> tuple[GPT, RunResult]:
    """Train a fresh model (or continue the run a checkpoint holds); return it, with the val-selected weights, and its
    RunResult.

    The loop, top to bottom: build the run (Run), then per step train one batch, evaluate and keep the best at eval
    steps, log, checkpoint; finish() evaluates the selected weights on test and train.
    on_eval(step, val_loss) runs after each evaluation; returning True stops the run (pruning, early exits).
    should_stop() is asked after every step; True ends the run as "interrupted" (Ctrl-C), without the test and train
    evaluations, after on_checkpoint has the state to resume from. on_checkpoint(state) also gets it every
    checkpoint_every steps (0: only on interrupt); train(..., resume=state) continues such a run to the same history
    as an uninterrupted one.
    With cfg.parity, py_rng (default random.Random(cfg.seed)) shuffles the names and draws the initial weights exactly
    as microgpt.py does; pass your own to keep drawing from it afterwards (microgpt's sampling).
    pool: the synthetic names of cfg.synthetic (augment.synthetic_pool(data, cfg)); without one an n-gram pool is
    drawn here, and a run directory as cfg.synthetic_from is refused (the caller loads that model, not train()).
    teacher: the ensemble of cfg.distill_from (ensemble.load_teacher(cfg.distill_from, data)), which train() does not
    load either; each training batch's loss then mixes in its distribution (distill.py).
    """
    run = Run(model_cfg, cfg, data, device, py_rng, pool, teacher)
    if resume is not None:
        run.load_state_dict(resume)
    say = log or (lambda line: None)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=run.step, leave=False, unit="step", dynamic_ncols=True)
        say = bar.write
    window = LogWindow(last=cfg.parity)
    while run.step < cfg.steps:
        loss = run.train_step()
        if loss is None:  # diverged: the batch loss is no longer finite
            break
        window.add(loss)
        stop = False
        if run.step % cfg.eval_every == 0 or run.step == cfg.steps:
            e0 = time.perf_counter()
            val = run.evaluate()
            window.eval_seconds += time.perf_counter() - e0
            stop = run.stopped_by(val, on_eval)
        if bar is not None:
            bar.update(1)
        row = run.history[-1]
        if (run.step % cfg.log_every == 0 or row["val_loss"] is not None or run.step == cfg.steps or stop
                or window.seconds() >= LOG_SECONDS):
            say(window.line(run.step, cfg.steps, row["lr"], row["val_loss"]))
        if stop:
            break
        if should_stop is not None and should_stop():
            run.state, run.stop_reason = "interrupted", f"interrupted after step {run.step}"
            break
        if on_checkpoint is not None and checkpoint_every and run.step % checkpoint_every == 0 and run.step < cfg.steps:
            on_checkpoint(run.state_dict())
    if bar is not None:
        bar.close()
    if run.state == "interrupted" and on_checkpoint is not None:
        on_checkpoint(run.state_dict())
    return run.model, run.finish()


class LogWindow:
    """The batch losses and timing since the last console line: a line shows their mean (with last=True the last
    step's own loss, as microgpt.py prints it) and ms per step, evals excluded."""

    def __init__(self, last: bool = False) -> None:
        self.last = last
        self.losses: list[float] = []
        self.start = time.perf_counter()
        self.eval_seconds = 0.0

    def add(self, loss: float) -> None:
        self.losses.append(loss)

    def seconds(self) -> float:
        """Wall seconds since the last line."""
        return time.perf_counter() - self.start

    def line(self, step: int, steps: int, lr: float, val: float | None) -> str:
        now = time.perf_counter()
        ms = 1000 * (now - self.start - self.eval_seconds) / max(1, len(self.losses))
        val_text = f"{val:.4f}" if val is not None else "   -  "
        loss = (self.losses[-1] if self.last else statistics.fmean(self.losses)) if self.losses else float("nan")
        self.losses, self.start, self.eval_seconds = [], now, 0.0
        return f"step {step:5d}/{steps} | loss {loss:.4f} | val {val_text} | lr {lr:.1e} | {ms:.2f} ms/step"


CHECKPOINT_FORMAT = 1


class Run:
    """One run in progress: the model, its optimizer, EMA and batch stream, and everything measured so far.

    Stages: Run(...) builds them; train_step() makes one update; evaluate() measures val and keeps the best weights;
    finish() measures the selected weights and returns the RunResult. state_dict() is everything a resumed run needs
    to continue exactly (weights, optimizer, EMA, best weights, batch stream, RNG states, history).
    """

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, data: Dataset, device: str | torch.device = "cpu",
                 py_rng: random.Random | None = None, pool: list[list[int]] | None = None,
                 teacher: torch.nn.Module | None = None, own_optimizer: bool = True):
        model_cfg.validate()
        cfg.validate()
        data.check_block_size(model_cfg.block_size)
        if data.split_seed != cfg.split_seed:
            raise UsageError(f"the data is split with split seed {data.split_seed} but the run's split_seed is "
                             f"{cfg.split_seed}: load the data with load_dataset(path, {cfg.split_seed})")
        self.model_cfg, self.cfg, self.data, self.device = model_cfg, cfg, data, device
        torch.manual_seed(cfg.seed)  # anything else that draws from torch's global generator
        model = GPT(model_cfg).to(getattr(torch, cfg.dtype))
        # dropout masks, init and batch order: each its own generator, so a stacked member draws what it would alone
        self.dropout_generator = torch.Generator(device).manual_seed(cfg.seed)
        if cfg.parity:
            self.py_rng = py_rng if py_rng is not None else random.Random(cfg.seed)
            docs = data.microgpt_docs(self.py_rng)  # microgpt shuffles before it draws the weights
            init_weights(model, py_rng=self.py_rng)
            self.sampler = SequenceSampler(docs, data.tokenizer, cfg.batch_size)
            self.trained_on = "all names, microgpt.py order (val/test names are among them)"
        else:
            self.py_rng = py_rng
            init_weights(model, generator=torch.Generator().manual_seed(cfg.seed))
            self.trained_on = "train split"
            if cfg.noise or cfg.synthetic or cfg.curriculum:
                if cfg.synthetic and pool is None:
                    if cfg.synthetic_from != "ngram":
                        raise UsageError(f"synthetic names from {cfg.synthetic_from}: pass train(..., "
                                         "pool=augment.synthetic_pool(data, cfg)); train() loads no other run's model")
                    pool = ngram_names(data, cfg.synthetic_order, len(data.train), cfg.seed)
                self.sampler = AugmentedSampler(data, cfg, pool)
                self.trained_on += augmentation_text(cfg)
            else:
                self.sampler = BatchSampler(data.encoded("train"), data.tokenizer.bos, cfg.batch_size, seed=cfg.seed)
        check_teacher(teacher, data, cfg)
        if teacher is not None and not isinstance(teacher, TeacherTable):  # a stack's members share one table
            teacher = teacher_table(teacher, data, device, pool if cfg.synthetic else None)  # synthetic names too
        self.teacher = teacher
        self.trained_on += distill_text(cfg)
        self.model = model.to(device)
        self.model.dropout_generator = self.dropout_generator
        self.model.train()
        # own_optimizer=False: a stack (stacked.py) updates this run's weights; torch.optim's first optimizer also
        # imports torch._dynamo, 2.5 s of a 7 s microgpt-sized run here
        self.optimizer = build_optimizer(self.model, cfg) if own_optimizer else None
        self.ema = WeightAverage(self.model, cfg) if cfg.averages() and own_optimizer else None
        self.val_batches = [b.to(device) for b in data.eval_batches("val")]
        self.precision, self.precision_why = resolve_autocast(cfg.autocast, torch.device(device).type, cfg.dtype,
                                                              cfg.parity)
        self.autocast = (torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
                         if self.precision == "bfloat16" else contextlib.nullcontext())
        # what has happened so far (all of it in state_dict)
        self.step = 0                       # optimizer updates made
        self.history: list[dict] = []       # per step: step, lr, loss, val_loss, elapsed_s
        self.best_val: float | None = None
        self.best_step: int | None = None
        self.best_state: dict | None = None  # the val-selected weights (EMA ones when EMA is on)
        self.evals_since_best = 0
        self.steps_to_target: int | None = None
        self.seconds_to_target: float | None = None
        self.diverged_step: int | None = None
        self.tokens = 0
        self.eval_seconds = 0.0
        self.seconds_before = 0.0           # wall seconds of earlier sessions of a resumed run
        self.state, self.stop_reason = "complete", f"ran all {cfg.steps} steps"
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return self.seconds_before + time.perf_counter() - self.t0

    def train_step(self) -> float | None:
        """One update on the next batch; its batch loss (before the update), or None if it was not finite."""
        cfg, step = self.cfg, self.step
        lr = lr_at(step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr if group["peak_lr"] == cfg.lr else group["peak_lr"] * lr / cfg.lr
        batch = self.sampler.next().to(self.device)
        with self.autocast:
            logits, loss = self.model(batch.idx, batch.targets, batch.pos, batch.mask)
        if self.teacher is not None:
            loss = distill_loss(logits, batch, self.teacher, loss, cfg.distill_mix)
        loss_value = loss.item()  # the loss before this step's update, as microgpt prints it
        if not math.isfinite(loss_value):
            self.state, self.diverged_step = "diverged", step + 1
            self.stop_reason = f"batch loss became {loss_value} at step {step + 1}"
            self.history.append({"step": step + 1, "lr": lr, "loss": loss_value, "val_loss": None,
                                 "elapsed_s": self.elapsed()})
            return None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip, foreach=True)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model, step)
        self.tokens += batch.n_tokens
        self.step = step + 1
        self.history.append({"step": self.step, "lr": lr, "loss": loss_value, "val_loss": None,
                             "elapsed_s": self.elapsed()})
        return loss_value

    def evaluate(self) -> float:
        """Val loss of the weights evaluation sees (the EMA's when on); a new best is kept. Recorded in history."""
        e0 = time.perf_counter()
        with self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext():
            val = evaluate(self.model, self.val_batches)
            if math.isfinite(val) and (self.best_val is None or val < self.best_val):
                self.best_state = copy.deepcopy(self.model.state_dict())
        self.eval_seconds += time.perf_counter() - e0
        row = self.history[-1]
        row["val_loss"] = val
        row["elapsed_s"] = self.elapsed()
        return val

    def stopped_by(self, val: float, on_eval: Callable[[int, float], bool | None] | None) -> bool:
        """After an evaluation: update best, target and patience; True when the run ends here."""
        done, cfg = self.step, self.cfg
        if not math.isfinite(val):
            self.state, self.diverged_step = "diverged", done
            self.stop_reason = f"val loss became {val} at step {done}"
            return True
        if self.best_val is None or val < self.best_val:
            self.best_val, self.best_step, self.evals_since_best = val, done, 0
        else:
            self.evals_since_best += 1
        if self.steps_to_target is None and val < cfg.target:
            self.steps_to_target, self.seconds_to_target = done, self.elapsed()
        if cfg.patience and self.evals_since_best >= cfg.patience:
            self.stop_reason = f"early stop at step {done}: no new best val in {cfg.patience} evaluations"
            return True
        if on_eval is not None and on_eval(done, val):
            self.state, self.stop_reason = "pruned", f"stopped by on_eval at step {done}"
            return True
        return False

    def finish(self, held_out: tuple[float, float] | None = None) -> RunResult:
        """Load the val-selected weights and measure them on test and train (not for an interrupted run); held_out:
        their (test, train) losses measured already (a stacked run measures all its members in one pass)."""
        wall_to_here = self.elapsed()
        steps_done = len([r for r in self.history if math.isfinite(r["loss"])])
        train_loss = val_loss = test_loss = None
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            val_loss = self.best_val
            if held_out is not None:
                test_loss, train_loss = held_out
            elif self.state != "interrupted":
                test_loss = evaluate(self.model, [b.to(self.device) for b in self.data.eval_batches("test")])
                train_loss = evaluate(self.model, [b.to(self.device) for b in self.data.eval_batches("train")])
        tail = [r["loss"] for r in self.history[-max(2, len(self.history) // 10):] if math.isfinite(r["loss"])]
        train_seconds = max(wall_to_here - self.eval_seconds, 1e-9)
        return RunResult(
            state=self.state,
            stop_reason=self.stop_reason,
            steps_done=steps_done,
            n_params=self.model.num_params(),
            train_loss=train_loss,
            val_loss=val_loss,
            test_loss=test_loss,
            best_val=self.best_val,
            best_val_step=self.best_step,
            seconds_to_best=next((r["elapsed_s"] for r in self.history if r["step"] == self.best_step), None),
            target=self.cfg.target,
            steps_to_target=self.steps_to_target,
            seconds_to_target=self.seconds_to_target,
            wall_seconds=self.elapsed(),
            train_seconds=train_seconds,
            tokens_per_second=self.tokens / train_seconds,
            stability=statistics.pstdev(tail) if len(tail) >= 2 else None,
            tier=tier_of(test_loss),
            diverged_step=self.diverged_step,
            trained_on=self.trained_on,
            history=self.history,
        )

    # ------------------------------------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """Everything needed to continue this run exactly; torch.save-able and loadable with weights_only=True."""
        return {
            **self.progress_state(),
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "ema": None if self.ema is None else [p.cpu().clone() for p in self.ema.params],
        }

    def progress_state(self) -> dict:
        """state_dict() but the live weights, optimizer and EMA: what a stacked member (whose weights live in the
        stack, stacked.py) checkpoints of its own."""
        cpu = lambda sd: {k: v.detach().cpu().clone() for k, v in sd.items()}  # noqa: E731
        return {
            "format": CHECKPOINT_FORMAT,
            "model_config": to_dict(self.model_cfg),
            "train_config": {k: v for k, v in to_dict(self.cfg).items() if k != "extra"},
            "data_sha256": self.data.sha256,
            "split_seed": self.data.split_seed,
            "best_state": None if self.best_state is None else cpu(self.best_state),
            "sampler": self.sampler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "dropout_rng": self.dropout_generator.get_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.device(self.device).type == "cuda" else [],
            "py_rng": None if self.py_rng is None else rng_state(self.py_rng),
            "progress": {
                "step": self.step, "history": copy.deepcopy(self.history), "best_val": self.best_val,
                "best_step": self.best_step, "evals_since_best": self.evals_since_best,
                "steps_to_target": self.steps_to_target, "seconds_to_target": self.seconds_to_target,
                "tokens": self.tokens, "eval_seconds": self.eval_seconds, "seconds": self.elapsed(),
            },
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from state_dict()'s output; UsageError if it belongs to another configuration or data."""
        self.load_progress(state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.params = [p.to(self.device) for p in state["ema"]]

    def load_progress(self, state: dict) -> None:
        """progress_state()'s part of a checkpoint: checks, best weights, batch stream, RNG states, history."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise UsageError(f"resume checkpoint format {state.get('format')!r} is not {CHECKPOINT_FORMAT}: it was "
                             "written by another version of microgpt")
        ours = {k: v for k, v in to_dict(self.cfg).items() if k != "extra"}
        for what, theirs, mine in (("model", state["model_config"], to_dict(self.model_cfg)),
                                   ("training", state["train_config"], ours)):
            changed = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
            if changed:
                raise UsageError(f"the resume checkpoint's {what} settings differ from this run's in "
                                 f"{', '.join(changed)}: resume a run with the configuration it started with")
        if state["data_sha256"] != self.data.sha256 or state["split_seed"] != self.data.split_seed:
            raise UsageError("the resume checkpoint was trained on other data or another split: resume it with the "
                             "data file and split seed its config.json names")
        device = self.device
        self.best_state = None if state["best_state"] is None else {k: v.to(device) for k, v in state["best_state"].items()}
        self.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        # before dropout had its own generator it drew from the global one, whose state the checkpoint holds
        fallback = state["cuda_rng"][0] if state["cuda_rng"] else state["torch_rng"]
        self.dropout_generator.set_state(state.get("dropout_rng", fallback))
        if state["py_rng"] is not None and self.py_rng is not None:
            set_rng_state(self.py_rng, state["py_rng"])
        p = state["progress"]
        self.step, self.history = p["step"], copy.deepcopy(p["history"])
        self.best_val, self.best_step, self.evals_since_best = p["best_val"], p["best_step"], p["evals_since_best"]
        self.steps_to_target, self.seconds_to_target = p["steps_to_target"], p["seconds_to_target"]
        self.tokens, self.eval_seconds, self.seconds_before = p["tokens"], p["eval_seconds"], p["seconds"]
        self.t0 = time.perf_counter()

