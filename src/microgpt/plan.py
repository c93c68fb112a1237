"""A sweep plan: which settings every run shares, which it varies and how, how many seeds, which pruner.

A plan is a small TOML file (see plans/) or the same thing from `microgpt sweep` flags:

    name = "runner"            # the sweep's directory and Optuna study name
    mode = "grid"              # grid: every point once per seed | random | tpe (Bayesian, Optuna's TPE)
    seeds = 1                  # K seeds 0..K-1, or an explicit list [0, 1, 2]
    trials = 40                # random/tpe: configurations to try (each run once per seed)
    pruner = "none"            # none | asha | hyperband | median (on val loss at eval steps)
    preset = "makemore"        # optional: start the base from a preset
    [base]                     # settings every run shares: any `microgpt train` setting, by config field name
    steps = 500
    [grid]                     # grid mode: the product of these lists
    lr = [0.005, 0.01]
    [[points]]                 # grid mode: explicit configurations, in addition to (or instead of) the product
    n_embd = 64
    [space]                    # random/tpe: "low:high", "low:high:log", or a list of choices
    lr = "1e-4:3e-2:log"
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ModelConfig, TrainConfig, UsageError
from .files import check_dir_name
from .record import SETTINGS, coerce

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MODES = ("grid", "random", "tpe")
PRUNERS = ("none", "asha", "hyperband", "median")
PLAN_KEYS = {"name", "mode", "seeds", "trials", "pruner", "preset", "base", "grid", "points", "space", "data", "workers",
             "objectives", "hypotheses"}  # hypotheses: carried into plan.json for `microgpt report`, never read by a run
# What a sweep may minimise, and the run's figure for each: its best val, and the wall seconds it took to get there
# (evaluations included, the final test and train-split evaluations not), so the front answers "how fast to a val".
OBJECTIVES = {"val": "best_val", "seconds": "seconds_to_best"}
NOT_SWEEPABLE = {"seed", "extra", "parity", "vocab_size"}


@dataclass(frozen=True)
class Dimension:
    """One searched setting of a random/TPE plan."""

    name: str
    kind: str                      # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()

    def to_dict(self) -> dict:
        if self.kind == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        return {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}


def parse_dimension(name: str, spec: Any) -> Dimension:
    """A dimension from 'low:high[:log]', a list of choices, or {low, high, log} / {choices}."""
    kind = SETTINGS.get(name)
    if kind is None:
        coerce(name, None)  # raises the unknown-setting error
    if name in NOT_SWEEPABLE:
        raise UsageError(f"{name!r} cannot be searched: use the plan's seeds for seeds")
    if isinstance(spec, dict):
        if "choices" in spec:
            spec = spec["choices"]
        else:
            spec = f"{spec.get('low')}:{spec.get('high')}" + (":log" if spec.get("log") else "")
    if isinstance(spec, str) and ":" in spec:
        parts = spec.split(":")
        log = len(parts) == 3 and parts[2].strip() == "log"
        if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
            raise UsageError(f"malformed range for {name!r}: {spec!r}; write low:high or low:high:log")
        if kind not in (int, float):
            raise UsageError(f"{name!r} is a {kind.__name__} setting: give a list of choices, not the range {spec!r}")
        try:
            low, high = (kind(float(p)) if kind is int else float(p) for p in parts[:2])
        except ValueError:
            raise UsageError(f"malformed range for {name!r}: {spec!r}; low and high must be numbers") from None
        if not low < high or (log and low <= 0) or not (math.isfinite(low) and math.isfinite(high)):
            raise UsageError(f"malformed range for {name!r}: {spec!r}; need low < high (and low > 0 for log)")
        return Dimension(name, "int" if kind is int else "float", low, high, log)
    if isinstance(spec, str):
        spec = [s for s in spec.split(",")]
    if not isinstance(spec, list) or not spec:
        raise UsageError(f"empty or malformed choices for {name!r}: {spec!r}")
    return Dimension(name, "categorical", choices=tuple(dict.fromkeys(coerce(name, v) for v in spec)))


@dataclass(frozen=True)
class Plan:
    name: str
    mode: str = "grid"
    seeds: tuple[int, ...] = (0,)
    trials: int | None = None
    pruner: str = "none"
    preset: str | None = None
    base: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)      # name -> list of values
    points: tuple = ()                            # explicit configurations (dicts)
    space: tuple[Dimension, ...] = ()
    data: str | None = None
    workers: int = 1
    objectives: tuple[str, ...] = ("val",)         # minimised; ("val", "seconds") searches for the Pareto front
    hypotheses: dict = field(default_factory=dict)  # predictions about its points, judged by the report

    @property
    def swept(self) -> list[str]:
        """The settings this plan varies, in a stable order."""
        names = list(self.grid)
        for point in self.points:
            names += [k for k in point if k not in names]
        return names + [d.name for d in self.space if d.name not in names]

    def grid_configs(self) -> list[dict]:
        """Grid mode: the product of the grid, then the explicit points; each a dict over self.swept."""
        if self.mode != "grid":
            return []
        names = self.swept
        configs: list[dict] = []
        if self.grid:
            keys = list(self.grid)
            for values in itertools.product(*(self.grid[k] for k in keys)):
                configs.append(dict(zip(keys, values)))
        configs += [dict(p) for p in self.points]
        fallback = self.defaults_for(names)
        full = [{n: c.get(n, fallback[n]) for n in names} for c in configs]
        unique: dict[str, dict] = {}
        for c in full:
            unique.setdefault(config_id(c), c)
        return list(unique.values())

    def defaults_for(self, names: list[str]) -> dict:
        """What a setting is when a point does not name it: the plan's base, else the preset, else the default."""
        from .config import PRESETS

        preset_model, preset_train = PRESETS[self.preset] if self.preset else ({}, {})
        defaults = {f.name: f.default for cls in (ModelConfig, TrainConfig) for f in dataclasses.fields(cls)
                    if f.default is not dataclasses.MISSING}
        out = {}
        for n in names:
            out[n] = self.base.get(n, preset_model.get(n, preset_train.get(n, defaults.get(n))))
        return out

    def total_runs(self) -> int:
        per_config = len(self.grid_configs()) if self.mode == "grid" else (self.trials or 0)
        return per_config * len(self.seeds)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "mode": self.mode, "preset": self.preset, "base": self.base,
            "grid": self.grid, "points": [dict(p) for p in self.points],
            "space": {d.name: d.to_dict() for d in self.space},
            "seeds": list(self.seeds), "trials": self.trials, "pruner": self.pruner, "data": self.data,
            "workers": self.workers, "objectives": list(self.objectives),
            **({"hypotheses": self.hypotheses} if self.hypotheses else {}),
        }


def config_id(params: dict) -> str:
    """A short id shared by the seeds of one configuration."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:6]


def plan_from_dict(raw: dict, source: str = "plan") -> Plan:
    """Validate a plan's raw values (from TOML, JSON or flags) into a Plan; UsageError on the first problem."""
    unknown = sorted(set(raw) - PLAN_KEYS)
    if unknown:
        raise UsageError(f"unknown field(s) in {source}: {', '.join(unknown)}; known: {', '.join(sorted(PLAN_KEYS))}")
    name = raw.get("name")
    if not isinstance(name, str):
        raise UsageError(f"{source} needs a name (a plain directory name), got {name!r}")
    check_dir_name(name, f"the name in {source}")
    mode = raw.get("mode", "grid")
    if mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    pruner = raw.get("pruner", "none")
    if pruner not in PRUNERS:
        raise UsageError(f"pruner must be one of {', '.join(PRUNERS)}; got {pruner!r}")
    seeds_raw = raw.get("seeds", 1)
    if isinstance(seeds_raw, int) and not isinstance(seeds_raw, bool) and seeds_raw >= 1:
        seeds = tuple(range(seeds_raw))
    elif isinstance(seeds_raw, list) and seeds_raw and all(isinstance(s, int) for s in seeds_raw) \
            and len(set(seeds_raw)) == len(seeds_raw):
        seeds = tuple(seeds_raw)
    else:
        raise UsageError(f"seeds must be a count >= 1 or a list of distinct integers; got {seeds_raw!r}")
    from .config import PRESETS

    preset = raw.get("preset")
    if preset is not None and (not isinstance(preset, str) or preset not in PRESETS):
        raise UsageError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    base = {k: coerce(k, v) for k, v in _table(raw, "base", source).items()}
    if base.get("parity"):
        raise UsageError("parity runs cannot be swept: microgpt parity has no held-out split to choose on")

    grid: dict[str, list] = {}
    for k, values in _table(raw, "grid", source).items():
        if k in NOT_SWEEPABLE:
            raise UsageError(f"{k!r} cannot be a grid dimension: use the plan's seeds for seeds")
        if isinstance(values, str):
            values = values.split(",")
        if not isinstance(values, list) or not values:
            raise UsageError(f"empty grid for {k!r}: give at least one value")
        grid[k] = list(dict.fromkeys(coerce(k, v) for v in values))
    points = []
    if not isinstance(raw.get("points", []), list):
        raise UsageError(f"points in {source} must be a list of tables ([[points]] in TOML), got {raw['points']!r}")
    for p in raw.get("points", []):
        if not isinstance(p, dict) or not p:
            raise UsageError(f"each [[points]] entry must be a non-empty table of settings, got {p!r}")
        points.append({k: coerce(k, v) for k, v in p.items()})
    space = tuple(parse_dimension(k, v) for k, v in _table(raw, "space", source).items())

    trials = raw.get("trials")
    if mode == "grid":
        if space:
            raise UsageError("a grid plan takes [grid] and [[points]], not [space]; use mode = \"random\" or \"tpe\"")
        if not grid and not points:
            raise UsageError("a grid plan needs a non-empty [grid] or [[points]]")
    else:
        if grid or points:
            raise UsageError(f"a {mode} plan searches [space], not [grid]/[[points]]")
        if not space:
            raise UsageError(f"a {mode} plan needs a non-empty [space]")
        if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
            raise UsageError(f"a {mode} plan needs trials = N (configurations to try), got {trials!r}")
    workers = raw.get("workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise UsageError(f"workers must be an integer >= 1, got {workers!r}")
    data = raw.get("data")
    if data is not None and not isinstance(data, str):
        raise UsageError(f"data in {source} must be a file path (a string), got {data!r}")
    objectives = raw.get("objectives", ["val"])
    if isinstance(objectives, str):
        objectives = objectives.split(",")
    if (not isinstance(objectives, list) or not objectives or len(set(objectives)) != len(objectives)
            or any(o not in OBJECTIVES for o in objectives)):
        raise UsageError(f"objectives must be a list of distinct names among {', '.join(OBJECTIVES)}; got {objectives!r}")
    if len(objectives) > 1 and pruner != "none":
        raise UsageError("a sweep with several objectives cannot prune (Optuna's pruners need one): set pruner = \"none\"")
    return Plan(name=name, mode=mode, seeds=seeds, trials=trials if mode != "grid" else None, pruner=pruner,
                preset=preset, base=base, grid=grid, points=tuple(points), space=space,
                data=str(data) if data else None, workers=workers, objectives=tuple(objectives),
                hypotheses=dict(raw.get("hypotheses") or {}))


def _table(raw: dict, key: str, source: str) -> dict:
    """raw[key] if it is a table (a TOML [key] section); UsageError naming the key otherwise (e.g. `grid = 5`)."""
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise UsageError(f"{key} in {source} must be a table of settings ([{key}] in TOML), got {value!r}")
    return value


def load_plan_file(path: str | Path) -> dict:
    """The raw values of a TOML plan file; UsageError if it cannot be read or parsed."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"plan file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"plan file {path} is not valid TOML: {err}") from None


def parse_assignment(text: str, flag: str) -> tuple[str, str]:
    """'name=value' from a --grid/--space flag, with names written either lr or n-embd."""
    if "=" not in text:
        raise UsageError(f"{flag} takes name=values, got {text!r}")
    name, value = text.split("=", 1)
    return name.strip().replace("-", "_"), value.strip()
