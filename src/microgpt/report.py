"""`microgpt report`: read run and sweep records (CSV and JSON only) and write one report of what they measured.

It never builds or loads a model: every number comes from results.csv, summary.json, metrics.csv and samples.txt, and
every loss is docs/protocol.md's held-out, token-weighted mean (nats/token). Val ranks; test is what the report
compares.

out/
  report.html    one self-contained file: the figures inline as base64 PNGs, opens offline
  report.md      the same text, figures linked by relative path
  *.png          the figures
  summary.csv    one row per configuration: mean, sd and n over its seeds of every figure
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import html
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import stats
from .config import UsageError
from .rundir import write_atomic
from .protocol import TAGS, TIERS, tag_shares, tier_of
from .record import FIGURES as RECORD_FIGURES, SETTINGS, STATES, coerce, parse_figure, state_of

# The record's figures but its tier (shown as a category), plus loss_drop_per_second, derived (see Run).
FIGURES = (*(f for f in RECORD_FIGURES if f != "tier"), "loss_drop_per_second")
NOT_CONFIG = ("seed", "log_every", "samples", "temperature")  # cannot change a loss: runs differing only here are seeds
LOG_X = ("lr", "min_lr", "weight_decay", "eps", "init_std")   # plotted on a log axis when every value is positive
LOSS_AXIS = "loss (nats/token)"
DIGITS = {"best_val_step": 0, "steps_done": 0, "steps_to_target": 0, "n_params": 0, "tokens_per_second": 0,
          "seconds_to_target": 2, "wall_seconds": 2, "train_seconds": 2}  # decimals shown; every other figure: 4
BASELINE_COLOUR = "black"
BLOCK_NOTE = ("With this trainer each name is its own sequence (BOS, the name, BOS) and names are at most 15 characters, "
              "so no batch ever uses more than 16 positions: a block_size beyond 16 cannot help, and any difference "
              "it shows is seed noise (the larger position table changes the initial random draw).")


# ---------------------------------------------------------------------------------------------------------- records

@dataclass
class Run:
    """One run as its records tell it. Figures are None where the record has no value."""

    name: str                     # results.csv's run id, or the run directory's name
    source: str                   # the sweep or directory it was read from
    config: str                   # results.csv's configuration id; "" for a bare run directory
    seed: int | None
    state: str                    # complete | pruned | diverged | invalid | failed
    settings: dict[str, Any]      # resolved ModelConfig and TrainConfig fields, NOT_CONFIG left out; {} if unknown
    figures: dict[str, float | None]
    dir: Path | None              # its run directory, when there is one
    error: str = ""

    def __post_init__(self) -> None:
        # loss_drop_per_second: val loss gained over the uniform start ln(vocab_size), per second of training
        val, secs, vocab = self.figures.get("val_loss"), self.figures.get("train_seconds"), self.settings.get("vocab_size")
        ok = val is not None and secs and vocab
        self.figures["loss_drop_per_second"] = (math.log(vocab) - val) / secs if ok else None


@dataclass
class Sweep:
    path: Path
    name: str
    plan: dict[str, Any]
    storage: str | None           # Optuna storage URL, from storage.txt or plan.json

    def swept(self) -> set[str]:
        """The parameters the plan varies: the keys of grid, points and space."""
        keys = set(self.plan.get("grid") or {}) | set(self.plan.get("space") or {})
        for point in self.plan.get("points") or []:
            keys |= set(point)
        return keys


@dataclass
class Records:
    """Everything read from the DIR arguments, and what could not be read, with why."""

    runs: list[Run] = field(default_factory=list)
    sweeps: list[Sweep] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    _metrics: dict[int, list[dict] | None] = field(default_factory=dict)

    def skip(self, what: Any, why: str) -> None:
        self.skipped.append((str(what), why))

    def metrics(self, run: Run) -> list[dict] | None:
        """The run's metrics.csv rows (step, loss, val_loss, elapsed_s; val_loss None where not evaluated), read once."""
        if id(run) not in self._metrics:
            self._metrics[id(run)] = read_metrics(run, self)
        return self._metrics[id(run)]


def load(paths: list[str]) -> Records:
    """Read every DIR: a sweep (results.csv or plan.json), a run (config.json or summary.json), or a folder of those."""
    records = Records()
    for arg in paths:
        path = Path(arg)
        if not path.exists():
            raise UsageError(f"{arg}: no such directory; pass sweep directories (sweeps/<name>) or run directories")
        if not path.is_dir():
            raise UsageError(f"{arg} is a file: pass the run or sweep directory that holds it ({path.parent})")
        try:
            children = sorted(path.iterdir())
        except OSError as err:
            raise UsageError(f"cannot read directory {arg}: {err.strerror}") from None
        kind = _kind(path)
        if kind is not None:
            _read(path, kind, records)
            continue
        inner = [(c, _kind(c)) for c in children if c.is_dir()]
        inner = [(c, k) for c, k in inner if k is not None]
        if not inner:
            raise UsageError(f"{arg} holds no run or sweep records: expected results.csv or plan.json (a sweep), "
                             "config.json or summary.json (a run), or directories holding them")
        for child, kind in inner:
            _read(child, kind, records)
    _drop_repeats(records)
    return records


def _drop_repeats(records: Records) -> None:
    """Keep one complete run per (configuration, seed) within one sweep or folder: a repeat of the same seed is not
    a new sample, and counting it would shrink every interval. Repeats go to records.skipped."""
    kept: dict[tuple[str, str, int], Run] = {}
    runs = []
    for run in records.runs:
        if run.state == "complete" and run.seed is not None:
            key = (run.source, _key(run), run.seed)
            if key in kept:
                records.skip(f"{run.source}: run {run.name}",
                             f"repeats seed {run.seed} of the configuration of run {kept[key].name}: counted once")
                continue
            kept[key] = run
        runs.append(run)
    records.runs = runs


def _kind(path: Path) -> str | None:
    if (path / "results.csv").is_file() or (path / "plan.json").is_file():
        return "sweep"
    if (path / "config.json").is_file() or (path / "summary.json").is_file():
        return "run"
    return None


def _read(path: Path, kind: str, records: Records) -> None:
    if kind == "sweep":
        read_sweep(path, records)
    else:
        run = read_run_dir(path, records)
        if run is not None:
            records.runs.append(run)


def read_run_dir(path: Path, records: Records) -> Run | None:
    """A run directory as a Run; None (and a note in records.skipped) when it has no readable summary.json."""
    config = _read_json(path / "config.json", records)
    summary = _read_json(path / "summary.json", records)
    if summary is None:
        if not (path / "summary.json").exists():
            records.skip(path, "no summary.json: the run never finished (summary.json is written last)")
        return None
    settings: dict[str, Any] = {}
    if config is None:
        records.skip(path / "config.json", "missing or unreadable: the run is kept, as a configuration of its own")
    else:
        values = {**config.get("model", {}), **config.get("train", {})}
        settings = {k: v for k, v in values.items() if k in SETTINGS and k not in NOT_CONFIG}
    state = state_of(summary)
    seed = (config or {}).get("seed")
    figures = {k: parse_figure(summary.get(k)) for k in FIGURES}
    return Run(path.name, str(path.parent), "", seed, state, settings, figures, path, summary.get("stop_reason") or "")


def read_sweep(path: Path, records: Records) -> None:
    """plan.json, storage.txt and every row of results.csv; bad rows go to records.skipped with their line number."""
    plan = _read_json(path / "plan.json", records) if (path / "plan.json").exists() else {}
    plan = plan or {}
    storage = plan.get("storage")
    try:
        lines = (path / "storage.txt").read_text().split("\n")
        storage = lines[0].strip() or storage
    except OSError:
        pass
    sweep = Sweep(path, str(plan.get("name") or path.name), plan, storage)
    records.sweeps.append(sweep)
    results = path / "results.csv"
    if not results.is_file():
        records.skip(results, "missing: the sweep has recorded no run yet")
        return
    try:
        rows = list(csv.reader(io.StringIO(results.read_text())))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        records.skip(results, f"unreadable: {err}")
        return
    if not rows:
        records.skip(results, "empty: no header, no runs")
        return
    header, body = rows[0], rows[1:]
    missing = [c for c in ("run", "config", "state") if c not in header]
    if missing:
        records.skip(results, f"no column {', '.join(missing)}: not a results.csv of `microgpt sweep`")
        return
    if not body:
        records.skip(results, "no runs: only the header")
    for lineno, row in enumerate(body, start=2):
        if len(row) != len(header):
            records.skip(f"{results} line {lineno}", f"{len(row)} of {len(header)} fields (a truncated write?)")
            continue
        cells = {k: v.strip() for k, v in zip(header, row)}
        try:
            records.runs.append(_sweep_run(sweep, cells))
        except ValueError as err:
            records.skip(f"{results} line {lineno}", f"unreadable value: {err}")


def _sweep_run(sweep: Sweep, cells: dict[str, str]) -> Run:
    settings = {}
    for name, kind in SETTINGS.items():
        if name in NOT_CONFIG or name not in cells:  # a column an older results.csv lacks: compare without it
            continue
        if cells[name] == "":
            settings = {}  # an invalid run has no resolved values: it groups by its configuration id alone
            break
        settings[name] = coerce(name, cells[name])
    figures = {k: parse_figure(cells.get(k, ""), strict=True) for k in FIGURES}
    seed = int(float(cells["seed"])) if cells.get("seed") else None
    run_dir = sweep.path / cells["run_dir"] if cells.get("run_dir") else None
    state = state_of(cells)
    return Run(cells["run"], sweep.name, cells["config"], seed, state, settings, figures, run_dir, cells.get("error", ""))


def _read_json(path: Path, records: Records) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        records.skip(path, f"unreadable JSON: {err}")
        return None
    if not isinstance(value, dict):
        records.skip(path, "not a JSON object")
        return None
    return value


def read_metrics(run: Run, records: Records) -> list[dict] | None:
    """metrics.csv as numbers; malformed rows are dropped and counted in records.skipped."""
    path = run.dir / "metrics.csv" if run.dir else None
    if path is None or not path.is_file():
        records.skip(f"run {run.name}", "no metrics.csv: left out of the curves")
        return None
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        records.skip(path, f"unreadable: {err}")
        return None
    out, bad = [], 0
    for row in rows:
        try:
            out.append({"step": int(row["step"]), "loss": float(row["loss"]), "val_loss": parse_figure(row["val_loss"], True),
                        "elapsed_s": float(row["elapsed_s"])})
        except (KeyError, TypeError, ValueError):
            bad += 1
    if bad:
        records.skip(path, f"{bad} of {len(rows)} rows malformed (a truncated file?): plotted without them")
    return out or None


def read_samples(run: Run) -> list[tuple[str, str]] | None:
    """samples.txt as (name, tag) pairs; None when the run has none."""
    try:
        text = (run.dir / "samples.txt").read_text() if run.dir else None
    except (OSError, UnicodeDecodeError):
        return None
    if text is None:
        return None
    pairs = [line.split("\t", 1) for line in text.splitlines() if "\t" in line]
    return [(name, tag.strip()) for name, tag in pairs]


# ----------------------------------------------------------------------------------------------------- configurations

@dataclass
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

    def best_run(self) -> Run | None:
        done = [r for r in self.complete() if r.figures["val_loss"] is not None]
        return min(done, key=lambda r: r.figures["val_loss"]) if done else None


def group(runs: list[Run]) -> list[Configuration]:
    """Runs with the same resolved settings (seed aside) form one configuration; runs without settings group by id."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(_key(run), []).append(run)
    configs, taken = [], set()
    for key, members in groups.items():
        ids = sorted({r.config for r in members if r.config})
        label = "+".join(ids) if ids else members[0].name if len(members) == 1 else "c" + _digest(key)
        if label in taken:
            label = f"{label}@{members[0].source}"
        taken.add(label)
        configs.append(Configuration(label, members[0].settings, members))
    return configs


def _key(run: Run) -> str:
    if run.settings:
        return json.dumps(run.settings, sort_keys=True)
    return f"{run.source}#{run.config or run.name}"


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:6]


def ranked(configs: list[Configuration]) -> list[Configuration]:
    """Configurations with a mean val loss, lowest first (val ranks; docs/protocol.md)."""
    scored = [c for c in configs if c.spread("val_loss").n]
    return sorted(scored, key=lambda c: c.spread("val_loss").mean)


def _same(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The settings whose values differ between two configurations."""
    return sorted(k for k in set(a) | set(b) if not _same(a.get(k), b.get(k)))


def find_baseline(arg: str | None, configs: list[Configuration], records: Records) -> tuple[Configuration | None, str]:
    """(the baseline configuration, how it was chosen); (None, why) when there is none."""
    if arg is None:
        return _plan_baseline(configs, records)
    path = Path(arg)
    if path.is_dir() and _kind(path) == "run":
        run = read_run_dir(path, records)
        if run is None:
            raise UsageError(f"--baseline {arg}: the run directory has no readable summary.json; pick a finished run")
        for config in configs:
            if any(r.dir and r.dir.resolve() == path.resolve() for r in config.runs) or (
                    run.settings and _key(run) == _key(config.runs[0])):
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


def _plan_baseline(configs: list[Configuration], records: Records) -> tuple[Configuration | None, str]:
    """Without --baseline: a plan's base point, found from the records alone.

    The baseline equals the plan's [base] on every setting base names. When base leaves a swept setting open (a point
    sets dropout, base does not), the baseline takes the value most of the plan's configurations share: in a
    one-factor-at-a-time plan that is the unchanged one. A tie, or more than one candidate left, means no baseline.
    """
    for sweep in records.sweeps:
        base = {k: v for k, v in (sweep.plan.get("base") or {}).items() if k in SETTINGS and k not in NOT_CONFIG}
        mine = [c for c in configs if c.settings and c.runs[0].source == sweep.name]
        if not base or not mine:
            continue
        matches = [c for c in mine if all(_same(c.settings.get(k), v) for k, v in base.items())]
        open_keys = {k for m in matches[1:] for k in differences(matches[0].settings, m.settings)}
        for key in sorted(open_keys):
            usual = _usual([c.settings.get(key) for c in mine])
            matches = [c for c in matches if usual is not None and _same(c.settings.get(key), usual[0])]
        if len(matches) == 1:
            return matches[0], f"the base point of plan {sweep.name} (no --baseline given)"
    return None, "no baseline: pass --baseline RUN_DIR|CONFIG (no configuration is a plan's base point alone)"


def _usual(values: list[Any]) -> tuple[Any] | None:
    """(the most common value,), or None when two values tie for it."""
    counts = Counter(json.dumps(v) for v in values).most_common(2)
    if len(counts) == 2 and counts[0][1] == counts[1][1]:
        return None
    return (json.loads(counts[0][0]),)


def swept(records: Records, configs: list[Configuration]) -> list[str]:
    """The plans' swept parameters, plus any setting that differs between configurations."""
    names = set().union(*(s.swept() for s in records.sweeps)) if records.sweeps else set()
    with_settings = [c.settings for c in configs if c.settings]
    for a in with_settings[1:]:
        names |= set(differences(with_settings[0], a))
    return sorted(n for n in names if n in SETTINGS and n not in NOT_CONFIG)


# --------------------------------------------------------------------------------------------------------- hypotheses

@dataclass(frozen=True)
class Hypothesis:
    """One of the seed's predictions: changing one factor of the baseline lowers test loss by `predicted` (relative)."""

    name: str
    fields: tuple[str, ...]                     # the settings this factor may change; every other must stay equal
    change: dict[str, tuple[Any, Any]]          # field -> (baseline value, changed value), where the seed names them
    predicted: float                            # predicted relative test-loss reduction, 0.30 = 30%
    grows: tuple[str, ...] = ()                 # at least one of these must be larger than in the baseline


HYPOTHESES = (
    Hypothesis("model size", ("n_embd",), {"n_embd": (16, 64)}, 0.30),
    Hypothesis("learning rate", ("lr",), {"lr": (0.01, 0.02)}, 0.10),
    Hypothesis("batch size", ("batch_size",), {"batch_size": (4, 16)}, 0.15),
    Hypothesis("layers", ("n_layer",), {"n_layer": (1, 2)}, 0.08),
    Hypothesis("lr schedule", ("schedule", "warmup_steps", "min_lr"), {}, 0.05),
    Hypothesis("regularisation", ("dropout", "weight_decay", "optimizer", "decay_all"), {}, 0.03,
               grows=("dropout", "weight_decay")),
    Hypothesis("heads", ("n_head",), {"n_head": (4, 8)}, 0.02),
    Hypothesis("context", ("block_size",), {"block_size": (16, 32)}, 0.01),
)


@dataclass(frozen=True)
class Measured:
    hypothesis: Hypothesis
    variant: Configuration
    changed: list[str]
    comparison: stats.Comparison | None
    verdict: str


def measure_hypotheses(baseline: Configuration | None, configs: list[Configuration]) -> list[Measured]:
    """Each hypothesis against every configuration that differs from the baseline in exactly its factor.

    Measured on test loss: reduction = (baseline mean - variant mean) / baseline mean, its 95% interval from Welch's,
    and the verdict by the rules of stats.verdict.
    """
    if baseline is None or not baseline.settings or not baseline.values("test_loss"):
        return []
    base = baseline.settings
    out = []
    for h in HYPOTHESES:
        for config in configs:
            if config is baseline or not config.settings or not config.values("test_loss"):
                continue
            changed = differences(base, config.settings)
            if not changed or not set(changed) <= set(h.fields):
                continue
            if any(not (_same(base.get(k), a) and _same(config.settings.get(k), b)) for k, (a, b) in h.change.items()):
                continue
            if h.grows and not any((config.settings.get(k) or 0) > (base.get(k) or 0) for k in h.grows):
                continue
            comparison = stats.compare(baseline.values("test_loss"), config.values("test_loss"))
            mean = baseline.spread("test_loss").mean
            out.append(Measured(h, config, changed, comparison, stats.verdict(h.predicted, comparison, mean)))
    return out


# ------------------------------------------------------------------------------------------------------------ figures

def _pyplot():
    """pyplot on the Agg backend: files only, no display needed (and ~0.4 s of import `microgpt train` skips)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colours(top: list[Configuration], baseline: Configuration | None) -> dict[int, str]:
    """One colour per configuration, the same in every figure: the baseline black, the top ones tab10 in rank order."""
    out = {id(c): f"C{i % 10}" for i, c in enumerate(top)}
    if baseline is not None:
        out[id(baseline)] = BASELINE_COLOUR
    return out


def val_curve(config: Configuration, records: Records, x: str) -> tuple[np.ndarray, ...] | None:
    """(x, mean, min, max) of val loss over the seeds, at each evaluated step; x = "step" or mean elapsed seconds."""
    by_step: dict[int, list[tuple[float, float]]] = {}
    for run in config.complete():
        for row in records.metrics(run) or []:
            if row["val_loss"] is not None and math.isfinite(row["val_loss"]):
                by_step.setdefault(row["step"], []).append((row["elapsed_s"], row["val_loss"]))
    if not by_step:
        return None
    steps = sorted(by_step)
    xs = [s if x == "step" else float(np.mean([e for e, _ in by_step[s]])) for s in steps]
    vals = [[v for _, v in by_step[s]] for s in steps]
    return (np.array(xs, float), np.array([np.mean(v) for v in vals]), np.array([min(v) for v in vals]),
            np.array([max(v) for v in vals]))


def plot_val_curves(shown: list[Configuration], palette: dict[int, str], records: Records, x: str, path: Path,
                    names: dict[int, str] | None = None) -> bool:
    """Val loss against step or seconds: the mean over seeds, a min-max band; False when no run has metrics."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn = False
    for config in shown:
        curve = val_curve(config, records, x)
        if curve is None:
            continue
        xs, mean, lo, hi = curve
        colour = palette.get(id(config), "0.6")
        n = len(config.complete())
        name = (names or {}).get(id(config), config.label)
        ax.plot(xs, mean, color=colour, lw=1.8, marker="o", ms=3, label=f"{name} (n={n})")
        ax.fill_between(xs, lo, hi, color=colour, alpha=0.15, lw=0)
        drawn = True
    if drawn:
        ax.set_xlabel("step" if x == "step" else "seconds (wall, since the run started)")
        ax.set_ylabel(f"val {LOSS_AXIS}")
        ax.set_title(f"Val loss vs {'step' if x == 'step' else 'seconds'}: mean over seeds, band = min to max")
        _finish(ax)
        _save(fig, path)
    plt.close(fig)
    return drawn


def _finish(ax) -> None:
    """The look every line plot of the report shares: a light grid and a small legend."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over `window` values (fewer at the start)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    return (sums[idx] - sums[lo]) / (idx - lo)


def plot_train_val(run: Run, records: Records, path: Path) -> bool:
    """One run's batch loss (smoothed) and val loss against step, with its final train-split and test losses."""
    rows = records.metrics(run)
    if not rows:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    batch = [(r["step"], r["loss"]) for r in rows if math.isfinite(r["loss"])]
    if batch:
        steps, losses = map(np.array, zip(*batch))
        window = max(1, len(losses) // 50)
        ax.plot(steps, smooth(losses.astype(float), window), color="C0", lw=1.2,
                label=f"train: batch loss, mean of the last {window} steps")
    val = [(r["step"], r["val_loss"]) for r in rows if r["val_loss"] is not None and math.isfinite(r["val_loss"])]
    if val:
        ax.plot(*zip(*val), color="C3", marker="o", ms=3, lw=1.8, label="val (whole split)")
    for figure, colour, text in (("train_loss", "C0", "train split, eval mode"), ("test_loss", "C2", "test")):
        value = run.figures.get(figure)
        if value is not None:
            ax.axhline(value, color=colour, ls="--", lw=1, label=f"{text}, selected model: {value:.4f}")
    ax.set_xlabel("step")
    ax.set_ylabel(LOSS_AXIS)
    ax.set_title(f"Train vs val, run {run.name}: val rising while train falls is overfitting")
    _finish(ax)
    _save(fig, path)
    plt.close(fig)
    return True


def plot_param_effects(params: list[str], configs: list[Configuration], palette: dict[int, str],
                       log_params: set[str], path: Path) -> list[str]:
    """Val loss against each parameter's values: a point per run, the mean per value; returns the params drawn."""
    series = {}
    for name in params:
        points = [(c.settings[name], r.figures["val_loss"], palette.get(id(c), "0.6"))
                  for c in configs if name in c.settings for r in c.complete() if r.figures["val_loss"] is not None]
        if len({json.dumps(v) for v, _, _ in points}) >= 2:
            series[name] = points
    if not series:
        return []
    plt = _pyplot()
    ncols = min(3, len(series))
    nrows = math.ceil(len(series) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 3.4 * nrows), squeeze=False)
    for ax, (name, points) in zip(axes.flat, series.items()):
        values = [v for v, _, _ in points]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            xs = [float(v) for v in values]
            order = sorted(set(xs))
        else:
            order = sorted({str(v) for v in values})
            xs = [order.index(str(v)) for v in values]
        ax.scatter(xs, [loss for _, loss, _ in points], c=[c for _, _, c in points], s=16, alpha=0.7, zorder=3)
        keys = order if numeric else list(range(len(order)))
        means = [np.mean([loss for x, (_, loss, _) in zip(xs, points) if x == k]) for k in keys]
        ax.plot(keys, means, color="0.35", ls="--", marker="D", ms=5, label="mean per value", zorder=2)
        if numeric and min(xs) > 0 and (name in log_params or (SETTINGS[name] is int and max(xs) >= 4 * min(xs))):
            ax.set_xscale("log", base=10 if name in log_params else 2)  # sizes double; rates span decades
        if not numeric or len(keys) <= 8:
            ax.set_xticks(keys, order if not numeric else [f"{k:g}" for k in keys])
            ax.minorticks_off()
        ax.set_xlabel(name + (" (log scale)" if ax.get_xscale() == "log" else ""))
        ax.set_ylabel(f"val {LOSS_AXIS}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Each parameter's effect on val loss (coloured: the top configurations and the baseline)", fontsize=10)
    _save(fig, path)
    plt.close(fig)
    return list(series)


def importances(sweep: Sweep) -> tuple[dict[str, float] | None, str]:
    """Optuna's parameter importances for the sweep's study, or (None, why not)."""
    if not sweep.storage:
        return None, f"sweep {sweep.name}: no storage.txt and no storage in plan.json"
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage: Any = sweep.storage
        if storage.startswith("journal:"):
            journal = Path(storage[len("journal:"):])
            if not journal.is_file() and (sweep.path / journal.name).is_file():
                journal = sweep.path / journal.name  # the sweep directory was moved or copied
            if not journal.is_file():  # JournalFileBackend would create an empty one: never write while reading
                return None, f"sweep {sweep.name}: journal {journal} not found"
            storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
        elif storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).is_file():
            return None, f"sweep {sweep.name}: database {storage} not found"
        study = optuna.load_study(study_name=sweep.name, storage=storage)
        return optuna.importance.get_param_importances(study), ""
    except Exception as err:  # an absent study, too few finished trials, optuna missing: say so and go on
        return None, f"sweep {sweep.name}: {type(err).__name__}: {err}"


# ----------------------------------------------------------------------------------------------- the document itself

@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    file: str        # a PNG in the output directory
    caption: str


Block = str | Table | Image | list  # a paragraph, a table, a figure, or a bulleted list of strings


@dataclass
class Section:
    title: str
    blocks: list[Block]


def fmt(x: float | None, digits: int = 4) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def fmt_spread(s: stats.Spread, digits: int = 4) -> str:
    if s.mean is None:
        return "—"
    return f"{s.mean:.{digits}f} ± {s.sd:.{digits}f}" if s.sd is not None else f"{s.mean:.{digits}f} (n = 1)"


def fmt_p(p: float | None) -> str:
    return "—" if p is None else f"{p:.3g}"


def tier_name(test_mean: float | None) -> str:
    if test_mean is None:
        return "no test loss"
    tier = tier_of(test_mean)
    return f"tier {tier}" if tier else f"no tier (test ≥ {TIERS[-1][1]})"


def settings_text(config: Configuration, params: list[str], baseline: Configuration | None) -> str:
    """What sets the configuration apart: its settings that differ from the baseline's, else its swept values."""
    if baseline is not None and baseline.settings and config.settings:
        if config is baseline:
            return "(the baseline)"
        params = differences(baseline.settings, config.settings)
    return ", ".join(f"{k}={config.settings[k]}" for k in params if k in config.settings) or "—"


def overview(records: Records, configs: list[Configuration], order: list[Configuration],
             baseline: Configuration | None, how: str) -> Section:
    counts: dict[str, int] = {}
    for run in records.runs:
        counts[run.state] = counts.get(run.state, 0) + 1
    states = [s for s in tuple(STATES) if s in counts] + sorted(set(counts) - set(tuple(STATES)))
    walls = [r.figures["wall_seconds"] for r in records.runs if r.figures.get("wall_seconds") is not None]
    blocks: list[Block] = []
    if records.sweeps:
        blocks.append([f"sweep {s.name}: mode {s.plan.get('mode', '?')}, seeds {s.plan.get('seeds', '?')}, "
                       f"pruner {s.plan.get('pruner', '?')} ({s.path})" for s in records.sweeps])
    blocks.append(Table(["state", "runs"], [[s, str(counts[s])] for s in states] + [["all", str(len(records.runs))]]))
    blocks.append(f"{len(configs)} configurations. Total wall time {sum(walls):.1f} s ({sum(walls) / 3600:.2f} h) "
                  f"over the {len(walls)} runs that recorded one. Only complete runs enter the loss statistics.")
    if order:
        best = order[0]
        test = best.spread("test_loss")
        blocks.append(f"Best configuration (lowest mean val loss): {best.label} — val {fmt_spread(best.spread('val_loss'))}, "
                      f"test {fmt_spread(test)} over {test.n} seeds: {tier_name(test.mean)}.")
    else:
        blocks.append("No complete run with a val loss: nothing to rank.")
    blocks.append(f"Baseline: {baseline.label}, {how}." if baseline else f"Baseline: {how}.")
    return Section("Overview", blocks)


def tiers_section(configs: list[Configuration]) -> Section:
    bins: dict[str, list[str]] = {}
    names = [f"tier {t} (test < {bound})" for t, bound in TIERS] + [f"no tier (test ≥ {TIERS[-1][1]})", "no test loss"]
    for config in configs:
        mean = config.spread("test_loss").mean
        tier = tier_of(mean) if mean is not None else None
        name = names[tier - 1] if tier else names[-2] if mean is not None else names[-1]
        bins.setdefault(name, []).append(config.label)
    rows = [[n, str(len(bins.get(n, []))), _clip(bins.get(n, []))] for n in names]
    return Section("Tiers", ["Each configuration by its mean test loss over its complete seeds (docs/protocol.md "
                             "tiers).",
                             Table(["tier", "configurations", "ids"], rows)])


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip(items: list[str], limit: int = 12) -> str:
    return ", ".join(items[:limit]) + (f" ... (+{len(items) - limit})" if len(items) > limit else "")


def top_section(top: list[Configuration], baseline: Configuration | None, params: list[str]) -> Section:
    shown = top + ([baseline] if baseline is not None and baseline not in top else [])
    losses, costs = [], []
    for i, config in enumerate(shown):
        rank = str(i + 1) if config in top else "baseline"
        test = config.values("test_loss")
        ci = stats.mean_ci(test)
        ci_text = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else stats.NO_STATS
        if baseline is None:
            p_text = g_text = "no baseline"
        elif config is baseline:
            p_text = g_text = "(baseline)"
        else:
            comparison = stats.compare(baseline.values("test_loss"), test)
            p_text = fmt_p(comparison.p) if comparison else stats.NO_STATS
            g_text = fmt(comparison.hedges_g, 2) if comparison else stats.NO_STATS
        n = f"{len(config.complete())}/{len(config.runs)}"
        losses.append([rank, config.label, settings_text(config, params, baseline), n, fmt_spread(config.spread("val_loss")),
                       fmt_spread(config.spread("test_loss")), ci_text, p_text, g_text])
        reached = config.spread("steps_to_target")
        costs.append([rank, config.label, f"{fmt(reached.mean, 0)} ({reached.n}/{len(config.complete())})",
                      fmt_spread(config.spread("seconds_to_target"), 2), fmt_spread(config.spread("train_seconds"), 2),
                      fmt_spread(config.spread("loss_drop_per_second"), 4), fmt_spread(config.spread("stability"), 4),
                      fmt(config.spread("n_params").mean, 0)])
    targets = sorted({c.settings.get("target") for c in shown if c.settings.get("target") is not None})
    target = " / ".join(f"{t:g}" for t in targets) or "the run's target"
    return Section(f"Top {len(top)} configurations", [
        "Ranked by mean val loss (val drives every choice); test loss is the figure compared. Mean ± sd over the "
        "complete seeds; 95% interval of the mean test loss from Student's t. Against the baseline, on test loss: "
        "Welch's t-test (two-sided p) and Hedges' g (Cohen's d with the small-sample correction; positive = lower "
        "loss than the baseline).",
        Table(["rank", "config", "settings" + (" (where they differ from the baseline)" if baseline else ""),
               "complete/runs", "val loss", "test loss", "test 95% CI",
               "Welch p vs baseline", "Hedges' g"], losses),
        f"Cost and stability. Steps and seconds to target: first evaluation with val < {target}, mean over the seeds "
        "that reached it (how many in brackets). Loss drop per second: (ln(vocab_size) − val loss) / training seconds. "
        "Stability: sd of the batch loss over the last 10% of steps.",
        Table(["rank", "config", "steps to target", "seconds to target", "train seconds", "loss drop per second",
               "stability", "parameters"], costs),
    ])


def hypotheses_section(measured: list[Measured], baseline: Configuration) -> Section:
    rows = []
    for m in measured:
        change = ", ".join(f"{k} {baseline.settings.get(k)} → {m.variant.settings.get(k)}" for k in m.changed)
        mean = baseline.spread("test_loss").mean
        if m.comparison is None:
            measured_text = p_text = stats.NO_STATS
        else:
            r, (lo, hi) = stats.relative(m.comparison, mean)
            measured_text = f"{100 * r:+.1f}% [{100 * lo:+.1f}%, {100 * hi:+.1f}%]"
            p_text = fmt_p(m.comparison.p)
        n = f"{len(baseline.values('test_loss'))}/{len(m.variant.values('test_loss'))}"
        rows.append([m.hypothesis.name, change, f"{baseline.label} vs {m.variant.label}", n,
                     f"{100 * m.hypothesis.predicted:.0f}%", measured_text, p_text, m.verdict])
    return Section("The seed's hypotheses", [
        f"Each row compares the baseline ({baseline.label}) with a configuration that differs in that factor alone. "
        "Reduction = (baseline mean test loss − variant mean) / baseline mean; positive = better. Interval: Welch's 95% "
        "interval of the difference over the baseline mean. Verdict: not significant at 5% when Welch p ≥ 0.05; else "
        "opposite when the sign is reversed; confirmed when the interval holds the prediction; else smaller or larger.",
        Table(["hypothesis", "change", "configs", "seeds (base/variant)", "predicted reduction",
               "measured reduction [95% CI]", "Welch p", "verdict"], rows),
    ] + ([BLOCK_NOTE] if any(m.hypothesis.name == "context" for m in measured) else []))


ABLATION_MAX_CHANGES = 3  # a configuration further from the baseline than this is a search point, not an ablation


def ablation_rows(baseline: Configuration, configs: list[Configuration]) -> list[list[str]]:
    """Each configuration within ABLATION_MAX_CHANGES settings of the baseline, against it on val loss."""
    base_val = baseline.values("val_loss")
    rows = []
    for config in configs:
        if config is baseline or not config.settings or not config.complete():
            continue
        changed = differences(baseline.settings, config.settings)
        if not changed or len(changed) > ABLATION_MAX_CHANGES:
            continue
        comparison = stats.compare(base_val, config.values("val_loss"))
        variant = config.spread("val_loss")
        if comparison is None:
            diff_text, p_text, verdict = fmt(None), stats.NO_STATS, stats.NO_STATS
        else:
            lo, hi = comparison.ci
            # comparison.diff = baseline - variant; shown as variant - baseline so that negative = lower val loss
            diff_text = f"{-comparison.diff:+.4f} [{-hi:+.4f}, {-lo:+.4f}]"
            p_text = fmt_p(comparison.p)
            if comparison.p is None or not comparison.p < stats.ALPHA:
                verdict = "no significant difference"
            else:
                verdict = "helps (lower val)" if comparison.diff > 0 else "hurts (higher val)"
        change = ", ".join(f"{k} {baseline.settings.get(k)} → {config.settings.get(k)}" for k in changed)
        rows.append((variant.mean if variant.mean is not None else math.inf,
                     [change, config.label, f"{len(base_val)}/{variant.n}", fmt_spread(variant), diff_text, p_text,
                      verdict]))
    return [row for _, row in sorted(rows, key=lambda r: r[0])]


def ablations_section(baseline: Configuration, rows: list[list[str]]) -> Section:
    return Section("Ablations", [
        f"Every configuration that differs from the baseline ({baseline.label}, val "
        f"{fmt_spread(baseline.spread('val_loss'))}) in at most {ABLATION_MAX_CHANGES} settings, on val loss (the "
        "figure choices are made on), best first. Difference = variant mean − baseline mean, negative = better, with "
        "Welch's 95% interval; verdict by Welch's two-sided p at 5%.",
        Table(["change", "config", "seeds (base/variant)", "val loss", "difference [95% CI]", "Welch p", "verdict"],
              rows),
    ])


def samples_section(run: Run) -> Section | None:
    pairs = read_samples(run)
    if not pairs:
        return None
    shares = tag_shares([tag for _, tag in pairs])
    share_text = ", ".join(f"{shares[t]:.0%} {t}" for t in TAGS)
    return Section("Samples", [
        f"{min(20, len(pairs))} of the {len(pairs)} names in samples.txt of run {run.name} ({share_text} over all {len(pairs)}).",
        Table(["name", "tag"], [[name, tag] for name, tag in pairs[:20]]),
    ])


def skipped_section(records: Records) -> Section:
    if not records.skipped:
        return Section("Skipped", ["Nothing was skipped: every record was read."])
    return Section("Skipped", ["What could not be used, and why; the rest of the report stands without it.",
                               [f"{what}: {why}" for what, why in records.skipped]])


# ------------------------------------------------------------------------------------------------------ the two reports

def full_report(records: Records, configs: list[Configuration], baseline: Configuration | None, how: str,
                top_n: int, out: Path) -> list[Section]:
    """The report of a sweep, or of several runs: overview, tiers, top configurations, curves, effects, hypotheses."""
    order = ranked(configs)
    top = order[:top_n]
    params = swept(records, configs)
    palette = colours(top, baseline)
    sections = [overview(records, configs, order, baseline, how), tiers_section(configs)]
    if top:
        sections.append(top_section(top, baseline, params))

    curves: list[Block] = []
    shown = top + ([baseline] if baseline is not None and baseline not in top else [])
    names = {id(c): _short(f"{c.label}: {settings_text(c, params, baseline)}") for c in shown}
    if plot_val_curves(shown, palette, records, "step", out / "val-vs-step.png", names):
        curves.append(Image("val-vs-step.png", "Val loss vs step, top configurations and the baseline (black)."))
    if plot_val_curves(shown, palette, records, "seconds", out / "val-vs-seconds.png", names):
        curves.append(Image("val-vs-seconds.png", "Val loss vs wall seconds (mean elapsed time at each evaluation)."))
    best = order[0].best_run() if order else None
    if best is not None and plot_train_val(best, records, out / "train-vs-val.png"):
        curves.append(Image("train-vs-val.png", f"Train vs val for run {best.name}, the best seed of {order[0].label}."))
    if curves:
        sections.append(Section("Loss curves", curves))

    measured = measure_hypotheses(baseline, configs)
    effects: list[Block] = []
    log_params = set(LOG_X) | {k for s in records.sweeps for k, v in (s.plan.get("space") or {}).items()
                               if isinstance(v, dict) and v.get("log")}
    drawn = plot_param_effects(params, configs, palette, log_params, out / "param-effects.png")
    if drawn:
        effects.append(Image("param-effects.png", f"Val loss against {', '.join(drawn)}: one point per complete run, "
                                                  "dashed line = mean per value."))
        if "block_size" in drawn and not any(m.hypothesis.name == "context" for m in measured):
            effects.append(BLOCK_NOTE)  # else the hypotheses section says it
    for sweep in records.sweeps:
        result, why = importances(sweep)
        if result is None:
            effects.append(f"Parameter importance not computed for {why}.")
        else:
            effects.append(f"Parameter importance of study {sweep.name} "
                           "(optuna.importance.get_param_importances, default evaluator, normalised to sum 1):")
            effects.append(Table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in result.items()]))
    if effects:
        sections.append(Section("Each parameter's effect", effects))

    if measured:
        sections.append(hypotheses_section(measured, baseline))
    rows = ablation_rows(baseline, configs) if baseline is not None and baseline.settings else []
    if rows:
        sections.append(ablations_section(baseline, rows))
    if best is not None:
        samples = samples_section(best)
        if samples:
            sections.append(samples)
    sections.append(skipped_section(records))
    return sections


def run_report(records: Records, configs: list[Configuration], out: Path) -> list[Section]:
    """The short report of one run: its figures, its curves, its samples."""
    run = records.runs[0]
    config = configs[0]
    f = run.figures
    rows = [["tier", tier_name(f.get("test_loss"))]] + [[k, fmt(f.get(k), DIGITS.get(k, 4))] for k in FIGURES]
    main = ", ".join(f"{k}={run.settings[k]}" for k in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "lr",
                                                          "schedule", "optimizer", "steps") if k in run.settings)
    sections = [Section("Overview", [f"Run {run.name} ({run.dir}): {run.state}" + (f" ({run.error})." if run.error else "."),
                                     f"Settings: {main or 'unknown (no config.json)'}.", Table(["figure", "value"], rows)])]
    curves: list[Block] = []
    if plot_train_val(run, records, out / "train-vs-val.png"):
        curves.append(Image("train-vs-val.png", "Batch loss (smoothed) and val loss against step."))
    if plot_val_curves([config], {id(config): "C3"}, records, "seconds", out / "val-vs-seconds.png"):
        curves.append(Image("val-vs-seconds.png", "Val loss against wall seconds."))
    if curves:
        sections.append(Section("Loss curves", curves))
    samples = samples_section(run)
    if samples:
        sections.append(samples)
    sections.append(skipped_section(records))
    return sections


# ------------------------------------------------------------------------------------------------------------ writers

def summary_csv(configs: list[Configuration], params: list[str]) -> str:
    """One row per configuration: its swept settings, then mean, sd and n over the complete seeds of every figure."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["config", "runs", "complete", "seeds", *params, "tier",
                     *[f"{f}_{s}" for f in FIGURES for s in ("mean", "sd", "n")]])
    for config in configs:
        cells = [config.label, len(config.runs), len(config.complete()),
                 " ".join(str(r.seed) for r in config.complete() if r.seed is not None),
                 *[config.settings.get(p, "") for p in params]]
        test = config.spread("test_loss").mean
        cells.append(tier_of(test) or "" if test is not None else "")
        for figure in FIGURES:
            s = config.spread(figure)
            cells += [_cell(s.mean), _cell(s.sd), s.n]
        writer.writerow(cells)
    return out.getvalue()


def _cell(x: float | None) -> str:
    return "" if x is None else repr(x)


def markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, str):
                lines += [block, ""]
            elif isinstance(block, list):
                lines += [f"- {item}" for item in block] + [""]
            elif isinstance(block, Image):
                lines += [f"![{block.caption}]({block.file})", "", f"*{block.caption}*", ""]
            else:
                cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731
                lines.append("| " + " | ".join(cell(h) for h in block.header) + " |")
                lines.append("|" + "---|" * len(block.header))
                lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in block.rows]
                lines.append("")
    return "\n".join(lines)


CSS = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f2f2f2}figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.9em;color:#555}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}"""


def html_page(title: str, sections: list[Section], out: Path) -> str:
    """The report as one HTML file, each figure inlined as a base64 PNG data URI."""
    e = html.escape
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{e(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{e(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, str):
                parts.append(f"<p>{e(block)}</p>")
            elif isinstance(block, list):
                parts.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in block) + "</ul>")
            elif isinstance(block, Image):
                data = base64.b64encode((out / block.file).read_bytes()).decode("ascii")
                parts.append(f'<figure><img alt="{e(block.caption)}" src="data:image/png;base64,{data}">'
                             f"<figcaption>{e(block.caption)}</figcaption></figure>")
            else:
                head = "".join(f"<th>{e(str(h))}</th>" for h in block.header)
                body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in block.rows)
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


FIGURE_FILES = ("val-vs-step.png", "val-vs-seconds.png", "train-vs-val.png", "param-effects.png")


def write_report(records: Records, baseline_arg: str | None, top_n: int, out: Path) -> Path:
    """Build the report of these records into out/; return the path of report.html."""
    configs = group(records.runs)
    baseline, how = find_baseline(baseline_arg, configs, records)  # may raise UsageError: before anything is written
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out} is a file: pass a directory for the report")
    out.mkdir(parents=True, exist_ok=True)
    for name in FIGURE_FILES:  # a figure left from an earlier report must not pass for this one's
        (out / name).unlink(missing_ok=True)
    if len(records.runs) == 1 and not records.sweeps and baseline_arg is None:
        title, sections = f"microgpt report: run {records.runs[0].name}", run_report(records, configs, out)
    else:
        names = ", ".join(s.name for s in records.sweeps) or f"{len(records.runs)} runs"
        title, sections = f"microgpt report: {names}", full_report(records, configs, baseline, how, top_n, out)
    order = ranked(configs)
    write_atomic(out / "summary.csv", summary_csv(order + [c for c in configs if c not in order], swept(records, configs)))
    write_atomic(out / "report.md", markdown(title, sections))
    write_atomic(out / "report.html", html_page(title, sections, out))
    return out / "report.html"


# ----------------------------------------------------------------------------------------------------------------- CLI

def run(args: argparse.Namespace) -> int:
    """Execute `microgpt report`; UsageError on bad input."""
    if args.top < 1:
        raise UsageError(f"--top must be >= 1, got {args.top}")
    records = load(args.dirs)
    page = write_report(records, args.baseline, args.top, Path(args.out))
    runs, configs, skipped = len(records.runs), len({_key(r) for r in records.runs}), len(records.skipped)
    print(f"report {page} ({runs} run{'s' * (runs != 1)}, {configs} configuration{'s' * (configs != 1)}, "
          f"{skipped} skipped)")
    print(f"       {page.with_name('report.md')}, {page.with_name('summary.csv')}")
    return 0
