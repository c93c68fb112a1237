"""What the report computes from the runs: configurations (runs that differ only in seed) and their statistics, the
baseline, ablations against it, the Pareto front of val against seconds, tiers, and summary.csv's rows.
Val ranks and chooses everywhere; test is only compared (docs/protocol.md)."""

from __future__ import annotations

import hashlib
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import stats
from ..config import PRESETS, UsageError
from ..plan import Plan
from ..protocol import TIERS, tier_of
from ..record import SETTINGS
from .records import FIGURES, NOT_CONFIG, Records, Run, kind_of, read_run_dir

ABLATION_MAX_CHANGES = 3  # a configuration further from the baseline than this is a search point, not an ablation


@dataclass(eq=False)  # one configuration is one object: compared by identity
class Configuration:
    """The runs of one configuration: the same settings, different seeds."""

    label: str
    settings: dict[str, Any]
    runs: list[Run]

    def complete(self) -> list[Run]:
        return [r for r in self.runs if r.state == "complete"]

    def values(self, figure: str) -> list[float]:
        """The figure over the complete runs, Nones dropped."""
        return [r.figures[figure] for r in self.complete() if r.figures.get(figure) is not None]

    def spread(self, figure: str) -> stats.Spread:
        return stats.spread(self.values(figure))

    def mean(self, figure: str) -> float | None:
        return self.spread(figure).mean

    def best_run(self) -> Run | None:
        done = [r for r in self.complete() if r.figures["val_loss"] is not None]
        return min(done, key=lambda r: r.figures["val_loss"]) if done else None


def group(runs: list[Run]) -> list[Configuration]:
    """Runs with the same resolved settings (seed aside) form one configuration; runs without settings group by id."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.key(), []).append(run)
    configs, taken = [], set()
    for key, members in groups.items():
        ids = sorted({r.config for r in members if r.config})
        digest = hashlib.sha1(key.encode()).hexdigest()[:6]
        label = "+".join(ids) if ids else members[0].name if len(members) == 1 else "c" + digest
        label = f"{label}@{members[0].source}" if label in taken else label
        taken.add(label)
        configs.append(Configuration(label, members[0].settings, members))
    return configs


def ranked(configs: list[Configuration]) -> list[Configuration]:
    """Configurations with a mean val loss, lowest first (val ranks; docs/protocol.md)."""
    return sorted((c for c in configs if c.spread("val_loss").n), key=lambda c: c.mean("val_loss"))


def same(a: Any, b: Any) -> bool:
    """Equal settings, floats within rounding (a CSV cell against a JSON number)."""
    if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The settings whose values differ between two configurations."""
    return sorted(k for k in set(a) | set(b) if not same(a.get(k), b.get(k)))


def swept(records: Records, configs: list[Configuration]) -> list[str]:
    """The plans' swept parameters, plus any setting that differs between configurations."""
    names = set().union(*(s.swept() for s in records.sweeps))
    with_settings = [c.settings for c in configs if c.settings]
    for other in with_settings[1:]:
        names |= set(differences(with_settings[0], other))
    return sorted(n for n in names if n in SETTINGS and n not in NOT_CONFIG)


def values_of(configs: list[Configuration], name: str) -> list[Any]:
    """The distinct values a setting takes among the configurations, in order (see ordered)."""
    return ordered(c.settings[name] for c in configs if name in c.settings)


def show(value: Any) -> str:
    """A setting's value as text: a float to 3 significant digits (a random search's 0.002226647830267851: 0.00223),
    more where 3 would round a non-integer to an integer (an EMA decay of 0.9995 is not 1: that would read as off)."""
    if not isinstance(value, float):
        return str(value)
    digits = 3
    text = f"{value:.{digits}g}"
    while float(text).is_integer() and not value.is_integer() and digits < 17:
        digits += 1
        text = f"{value:.{digits}g}"
    return text


def ordered(values) -> list[Any]:
    """Distinct setting values, numbers by value first, then text."""
    found = {repr(v): v for v in values}
    return sorted(found.values(), key=lambda v: (isinstance(v, str), v if not isinstance(v, str) else 0, str(v)))


def value_means(configs: list[Configuration], name: str) -> list[tuple[Any, float]]:
    """(value, mean val loss over every complete run with it) for each value of a setting that has such runs."""
    out = []
    for value in values_of(configs, name):
        vals = [v for c in configs if name in c.settings and same(c.settings[name], value)
                for v in c.values("val_loss")]
        out += [(value, statistics.fmean(vals))] if vals else []
    return out


def cell_means(configs: list[Configuration], x: str, y: str) -> dict[tuple[Any, Any], float]:
    """(value of x, value of y) -> mean val loss over every complete run with that pair (a grid's cells)."""
    cells: dict[tuple[Any, Any], list[float]] = {}
    for c in configs:
        if x in c.settings and y in c.settings:
            cells.setdefault((c.settings[x], c.settings[y]), []).extend(c.values("val_loss"))
    return {k: statistics.fmean(v) for k, v in cells.items() if v}


# ----------------------------------------------------------------------------------------------------------- baseline

def find_baseline(arg: str | None, configs: list[Configuration], records: Records) -> tuple[Configuration | None, str]:
    """(the baseline configuration, how it was chosen); (None, why) when there is none."""
    if arg is None:
        return plan_baseline(configs, records)
    path = Path(arg)
    if path.is_dir() and kind_of(path) == "run":
        run = read_run_dir(path, records)
        if run is None:
            raise UsageError(f"--baseline {arg}: the run directory has no readable summary.json; pick a finished run")
        for config in configs:
            if any(r.dir and r.dir.resolve() == path.resolve() for r in config.runs) or (
                    run.settings and run.key() == config.runs[0].key()):
                return config, f"the configuration of run directory {arg} (--baseline)"
        return Configuration("baseline", run.settings, [run]), f"run directory {arg} (--baseline)"
    if path.exists():
        raise UsageError(f"--baseline {arg} is not a run directory (no config.json or summary.json)")
    for config in configs:
        if arg == config.label or arg in {r.config for r in config.runs} or arg in {r.name for r in config.runs}:
            return config, f"configuration {config.label} (--baseline {arg})"
    known = ", ".join(c.label for c in configs[:12]) + (" ..." if len(configs) > 12 else "")
    raise UsageError(f"--baseline {arg!r} is neither a run directory nor a configuration or run id among the inputs "
                     f"(configurations: {known or 'none'})")


def plan_baseline(configs: list[Configuration], records: Records) -> tuple[Configuration | None, str]:
    """Without --baseline: the configuration a sweep runs when it changes nothing, its plan's base (then its preset,
    then the flags' defaults: plan.Plan.defaults_for) on every setting its configurations vary."""
    for sweep in records.sweeps:
        mine = [c for c in configs if c.settings and c.runs[0].source == sweep.name]
        preset = sweep.plan.get("preset")
        if not mine or (preset is not None and preset not in PRESETS):
            continue
        base = Plan(sweep.name, preset=preset, base=sweep.plan.get("base") or {}).defaults_for(swept(records, mine))
        matches = [c for c in mine if all(same(c.settings.get(k), v) for k, v in base.items())]
        if len(matches) == 1:
            return matches[0], f"the base point of plan {sweep.name} (no --baseline given)"
    return None, "none: no configuration is a plan's base point; pass --baseline RUN_DIR|CONFIG to compare"


# ---------------------------------------------------------------------------------------------- against the baseline

@dataclass(frozen=True)
class Ablation:
    """A configuration a few settings away from the baseline, against it on val loss."""

    variant: Configuration
    changed: list[str]
    comparison: stats.Comparison | None   # diff = baseline - variant: positive = lower val than the baseline
    verdict: str


def ablations(baseline: Configuration, configs: list[Configuration], grid: set[str]) -> list[Ablation]:
    """Each configuration within ABLATION_MAX_CHANGES settings of the baseline and at most one grid dimension away
    (one slice through the baseline, not the grid's corners), lowest mean val first."""
    out = []
    for config in configs:
        if config is baseline or not config.settings or not config.complete():
            continue
        changed = differences(baseline.settings, config.settings)
        if not changed or len(changed) > ABLATION_MAX_CHANGES or len(set(changed) & grid) > 1:
            continue
        c = stats.compare(baseline.values("val_loss"), config.values("val_loss"))
        verdict = (stats.NO_STATS if c is None else "no significant difference" if c.p is None or not c.p < stats.ALPHA
                   else "helps (lower val)" if c.diff > 0 else "hurts (higher val)")
        out.append(Ablation(config, changed, c, verdict))
    return sorted(out, key=lambda a: a.variant.mean("val_loss") if a.variant.mean("val_loss") is not None else math.inf)


def pareto_front(configs: list[Configuration], seconds: str = "wall_seconds") -> list[Configuration]:
    """The configurations no other beats on both mean val loss and mean `seconds` (a figure), fastest first."""
    scored = [c for c in configs if c.mean("val_loss") is not None and c.mean(seconds) is not None]
    scored.sort(key=lambda c: (c.mean(seconds), c.mean("val_loss")))
    front: list[Configuration] = []
    for config in scored:
        if not front or config.mean("val_loss") < front[-1].mean("val_loss"):
            front.append(config)
    return front


def preset_of(config: Configuration) -> str | None:
    """The preset whose every setting the configuration has, if any (makemore, best, ...)."""
    for name, (model, train) in PRESETS.items():
        wanted = {k: v for k, v in {**model, **train}.items() if k in SETTINGS and k not in NOT_CONFIG}
        if config.settings and all(same(config.settings.get(k), v) for k, v in wanted.items()):
            return name
    return None


def unused_context(configs: list[Configuration]) -> list[tuple[int, list[int]]]:
    """Per dataset: (the smallest block_size a complete run trained with, the larger ones the runs used).

    Training refuses a block_size below the longest name + 1, so that smallest block_size bounds what any name needs;
    each name is its own sequence (positions restart at each name), so positions beyond it are never used."""
    sizes: dict[str, set[int]] = {}
    for config in configs:
        for run in config.complete():
            if isinstance(run.settings.get("block_size"), int):
                sizes.setdefault(run.data, set()).add(run.settings["block_size"])
    return [(min(s), sorted(s - {min(s)})) for s in sizes.values() if len(s) > 1]


def tier_bins(configs: list[Configuration]) -> list[tuple[str, list[str]]]:
    """(tier name, configuration labels) by mean test loss, every tier listed."""
    names = [f"tier {t} (test < {bound})" for t, bound in TIERS] + [f"no tier (test ≥ {TIERS[-1][1]})", "no test loss"]
    bins: dict[str, list[str]] = {n: [] for n in names}
    for config in configs:
        mean = config.mean("test_loss")
        tier = tier_of(mean)
        bins[names[tier - 1] if tier else names[-2] if mean is not None else names[-1]].append(config.label)
    return list(bins.items())


def summary_rows(configs: list[Configuration], params: list[str]) -> list[list[Any]]:
    """summary.csv: one row per configuration, its swept settings, then mean, sd and n over the complete seeds of
    every figure (the header first)."""
    rows: list[list[Any]] = [["config", "runs", "complete", "seeds", *params, "tier",
                              *[f"{f}_{s}" for f in FIGURES for s in ("mean", "sd", "n")]]]
    cell = lambda x: "" if x is None else repr(x)  # noqa: E731  (repr: every digit of the float)
    for c in configs:
        test = c.mean("test_loss")
        rows.append([c.label, len(c.runs), len(c.complete()), " ".join(str(r.seed) for r in c.complete()
                                                                         if r.seed is not None),
                     *[c.settings.get(p, "") for p in params], tier_of(test) or "" if test is not None else "",
                     *[x for f in FIGURES for s in [c.spread(f)] for x in (cell(s.mean), cell(s.sd), s.n)]])
    return rows
