"""The record of a run: its states, the figures its summary.json holds, the columns of a sweep's results.csv, and how
their text turns back into values. Torch-free. train, rundir, sweep and report take every list from here, so a
figure or a state is added in one place.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .config import ModelConfig, TrainConfig, UsageError

# A run's state, what it means, and who records it.
STATES = {
    "complete": "ran all its steps, or stopped early by --patience: a finished result",
    "pruned": "stopped by its on_eval hook (a sweep's pruner): val is real, the run is short",
    "diverged": "its batch or val loss stopped being finite; best val so far kept, if any",
    "interrupted": "Ctrl-C or SIGTERM: best so far saved, no test loss; microgpt train --resume continues it",
    "invalid": "sweeps: its settings cannot build a model (the error says why)",
    "failed": "sweeps: the run raised, or its worker died (then it is redone)",
}
LEGACY_STATES = {"stopped": "pruned"}  # what summary.json files from before the schema called a state

# The figures of a finished run (summary.json's keys, results.csv's columns), in the order reports show them.
FIGURES: dict[str, type] = {
    "train_loss": float,          # whole train split, eval mode, selected weights
    "val_loss": float,            # = best_val: the selected model's val loss
    "test_loss": float,           # once, on the selected model
    "best_val": float,
    "best_val_step": int,
    "seconds_to_best": float,     # wall seconds (evals included) until the selected model's evaluation
    "steps_done": int,            # optimizer updates made
    "steps_to_target": int,       # first eval step with val < target
    "seconds_to_target": float,   # wall seconds (evals included) until then
    "wall_seconds": float,
    "train_seconds": float,       # loop time without evaluation
    "tokens_per_second": float,   # real (non-padding) predictions trained on per train second
    "stability": float,           # std of the batch loss over the last 10% of steps
    "n_params": int,
    "tier": int,                  # docs/protocol.md's tier of test_loss
}

# Every setting of a run: the fields of ModelConfig and TrainConfig, with the type a value must have.
SETTINGS: dict[str, type] = {f.name: type(f.default) for cls in (ModelConfig, TrainConfig)
                             for f in dataclasses.fields(cls) if f.name != "extra"}

# A sweep's results.csv: who the run is, then every setting, then every figure.
RUN_COLUMNS = ("run", "trial", "config", "seed", "state", "error")
# "stack": the id shared by runs trained as one stacked model (stacked.py), whose wall seconds are the stack's: each
# member's own latency, so a sum of runs' times counts a stack once (stack_seconds).
RESULTS_COLUMNS = (*RUN_COLUMNS, *(s for s in SETTINGS if s != "seed"), *FIGURES, "run_dir", "stack")
METRICS_COLUMNS = ("step", "lr", "loss", "val_loss", "elapsed_s")  # metrics.csv: one row per step


@dataclass
class RunResult:
    """What one run measured. Losses are held-out figures of the val-selected model (docs/protocol.md)."""

    state: str                          # a key of STATES
    stop_reason: str                    # why the loop ended, in words
    steps_done: int
    n_params: int
    train_loss: float | None
    val_loss: float | None
    test_loss: float | None
    best_val: float | None
    best_val_step: int | None
    seconds_to_best: float | None
    target: float
    steps_to_target: int | None
    seconds_to_target: float | None
    wall_seconds: float
    train_seconds: float
    tokens_per_second: float
    stability: float | None
    tier: int | None
    diverged_step: int | None
    trained_on: str                     # which names the optimizer saw
    history: list[dict] = field(default_factory=list, repr=False)  # per step: METRICS_COLUMNS

    def summary(self) -> dict:
        """Every figure but the per-step history, JSON-ready (a non-finite float becomes null)."""
        out = asdict(self)
        out.pop("history")
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def state_of(record: dict) -> str:
    """The state a summary.json or a results.csv row records, in today's names; failed when it names none."""
    state = str(record.get("state") or "failed")
    if state == "stopped" and str(record.get("stop_reason", "")).startswith("early stop"):
        return "complete"  # an old record of a --patience stop
    return LEGACY_STATES.get(state, state)


def parse_bool(text: str) -> bool:
    """true/false in the spellings TOML, flags and CSV use; ValueError otherwise."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean")


def coerce(name: str, value: Any) -> Any:
    """value (typed, or text from TOML, a flag or a CSV cell) as the type of setting `name`; UsageError naming both
    if that is impossible, or if a float is not finite."""
    if name not in SETTINGS:
        raise UsageError(f"unknown setting {name!r}; settings are microgpt train's: {', '.join(sorted(SETTINGS))}")
    kind = SETTINGS[name]
    if isinstance(value, str) and kind is not str:
        text = value.strip()
        try:
            if kind is bool:
                return parse_bool(text)
            value = kind(float(text)) if kind is int and float(text).is_integer() else kind(text)
        except ValueError:
            raise UsageError(f"setting {name!r} needs a {kind.__name__}, got {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UsageError(f"setting {name!r} needs a {kind.__name__}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise UsageError(f"setting {name!r} needs a finite number, got {value!r}")
    return value


def parse_figure(value: Any, strict: bool = False) -> float | None:
    """A figure from JSON or a CSV cell: a float, or None for an empty/null value; strict raises ValueError on text
    that is no number (a CSV cell), lenient returns None (a hand-edited summary.json)."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        if strict:
            raise ValueError(f"{value!r} is not a number") from None
        return None


def stack_seconds(runs: list[tuple[str, float]]) -> float:
    """Machine time of runs given as (stack id or "", seconds): a run alone counts its seconds, the members of one
    stack count the stack's once (the longest member's: they share one clock)."""
    alone = sum(seconds for stack, seconds in runs if not stack)
    stacks: dict[str, float] = {}
    for stack, seconds in runs:
        if stack:
            stacks[stack] = max(stacks.get(stack, 0.0), seconds)
    return alone + sum(stacks.values())
