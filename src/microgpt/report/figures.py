"""The report's figures, drawn with matplotlib from the records (and Optuna's own plots from a sweep's study).
Each function writes one PNG and returns whether it drew; titles come from the caller, who knows the finding."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .records import Records, Run, Sweep
from .tables import Ablation, Configuration, ordered, show, value_means, values_of

LOSS_AXIS = "loss (nats/token)"
SECONDS = {"wall_seconds": "wall seconds per run",
           "seconds_to_best": "wall seconds to the selected evaluation (the sweep's second objective)"}


def pyplot():
    """pyplot on the Agg backend: files only, no display needed (and ~0.4 s of import `microgpt train` skips)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colours(shown: list[Configuration], baseline: Configuration | None) -> dict[int, Any]:
    """One colour per shown configuration, the same in every figure: the baseline black, the others in rank order."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(shown) <= 10 else "tab20"]
    out = {id(c): cmap(i % cmap.N) for i, c in enumerate(c for c in shown if c is not baseline)}
    return out | ({id(baseline): "black"} if baseline is not None else {})


def _save(fig, path: Path, **options) -> bool:
    fig.savefig(path, dpi=100, **options)
    pyplot().close(fig)
    return True


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _log_axis(values: list[Any]) -> bool:
    """Log only where it helps: numbers, all positive, spanning at least 4x (three values 0.01-0.03 stay linear)."""
    return _numeric(values) and min(values) > 0 and max(values) >= 4 * min(values)


def _plain_log(ax, values: list[float]) -> None:
    """A log x axis with four plain labels across the values' range (0.002, 0.005, ...), not 2x10^-3 at decades."""
    ax.set_xscale("log")
    ticks = np.geomspace(min(values), max(values), 4)
    ax.set_xticks(ticks, [f"{v:.2g}" if v < 10 else f"{v:.0f}" for v in ticks])
    ax.minorticks_off()


def val_curve(config: Configuration, records: Records, x: str) -> tuple[np.ndarray, ...] | None:
    """(x, mean, min, max) of val loss over the seeds at each evaluated step; x is the step or the mean elapsed s."""
    at: dict[int, list[tuple[float, float]]] = {}
    for run in config.complete():
        for row in records.metrics(run) or []:
            if row["val_loss"] is not None and math.isfinite(row["val_loss"]):
                at.setdefault(row["step"], []).append((row["elapsed_s"], row["val_loss"]))
    if not at:
        return None
    steps = sorted(at)
    xs = [s if x == "step" else np.mean([e for e, _ in at[s]]) for s in steps]
    vals = [[v for _, v in at[s]] for s in steps]
    return tuple(np.array(a, float) for a in (xs, [np.mean(v) for v in vals], [min(v) for v in vals],
                                                [max(v) for v in vals]))


def val_curves(shown: list[Configuration], palette: dict[int, Any], names: dict[int, str], records: Records,
               x: str, title: str, path: Path) -> bool:
    """Val loss against step or seconds: the mean over seeds and a min-max band; False when no run has metrics."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    drawn = False
    for config in shown:
        if (curve := val_curve(config, records, x)) is None:
            continue
        xs, mean, lo, hi = curve
        colour = palette.get(id(config), "0.6")
        label = f"{names[id(config)]} (n={len(config.complete())})"
        ax.plot(xs, mean, color=colour, lw=1.8, marker="o", ms=3, label=label)
        ax.fill_between(xs, lo, hi, color=colour, alpha=0.12, lw=0)
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set(xlabel="step" if x == "step" else "seconds (wall, since the run started)", ylabel=f"val {LOSS_AXIS}")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncols=2 if len(shown) > 6 else 1)
    return _save(fig, path)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over `window` values (fewer at the start)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    return (sums[idx] - sums[lo]) / (idx - lo)


def train_val(run: Run, records: Records, title: str, path: Path) -> bool:
    """One run's batch loss (smoothed) and val loss against step, with its final train-split and test losses."""
    if not (rows := records.metrics(run)):
        return False
    fig, ax = pyplot().subplots(figsize=(9, 4.5), layout="constrained")
    if batch := [(r["step"], r["loss"]) for r in rows if math.isfinite(r["loss"])]:
        steps, losses = map(np.array, zip(*batch))
        window = max(1, len(losses) // 50)
        ax.plot(steps, smooth(losses.astype(float), window), color="C0", lw=1.2,
                label=f"train: batch loss, mean of the last {window} steps")
    if val := [(r["step"], r["val_loss"]) for r in rows if r["val_loss"] is not None and math.isfinite(r["val_loss"])]:
        ax.plot(*zip(*val), color="C3", marker="o", ms=3, lw=1.8, label="val (whole split)")
    for figure, colour, text in (("train_loss", "C0", "train split, eval mode"), ("test_loss", "C2", "test")):
        if (value := run.figures.get(figure)) is not None:
            ax.axhline(value, color=colour, ls="--", lw=1, label=f"{text}, selected model: {value:.4f}")
    ax.set(xlabel="step", ylabel=LOSS_AXIS)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def setting_effects(params: list[str], configs: list[Configuration], palette: dict[int, Any], names: dict[int, str],
                    title: str, path: Path) -> list[str]:
    """Val loss against each setting's values: a point per run (jittered sideways so seeds do not hide each other),
    the mean per value dashed; the shown configurations coloured. Returns the settings drawn."""
    drawn = [p for p in params if len(value_means(configs, p)) >= 2]
    if not drawn:
        return []
    plt = pyplot()
    from matplotlib.lines import Line2D

    ncols = min(3, len(drawn))
    nrows = math.ceil(len(drawn) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.2 * nrows + 1.2), squeeze=False,
                             layout="constrained")
    rng = np.random.default_rng(0)
    for ax, name in zip(axes.flat, drawn):
        values = values_of(configs, name)
        numeric, log, few = _numeric(values), _log_axis(values), len(values) <= 8  # few: a grid's levels
        place = (lambda v: float(v)) if numeric else (lambda v: float(values.index(v)))  # noqa: E731
        span = (math.log(max(values) / min(values)) if log else max(values) - min(values)) if numeric else len(values)

        def jitter(x: float) -> float:  # seeds of one level side by side; a continuous search needs none
            u = rng.uniform(-0.025, 0.025) * span if few else 0.0
            return x * math.exp(u) if log else x + u

        points = [(jitter(place(c.settings[name])), r.figures["val_loss"], palette.get(id(c)))
                  for c in configs if name in c.settings for r in c.complete() if r.figures["val_loss"] is not None]
        for coloured in (False, True):  # the shown configurations on top
            mine = [p for p in points if (p[2] is not None) == coloured]
            if mine:
                ax.scatter([p[0] for p in mine], [p[1] for p in mine], c=[p[2] or "0.7" for p in mine],
                           s=22 if coloured else 12, alpha=0.85, zorder=3 + coloured, lw=0)
        means = value_means(configs, name)
        if few:  # over a continuous range each value is one configuration: a line through them would trace noise
            ax.plot([place(v) for v, _ in means], [m for _, m in means], color="0.3", ls="--", marker="D", ms=4)
        if log and few:
            ax.set_xscale("log", base=2 if all(isinstance(v, int) for v in values) else 10)
        elif log:
            _plain_log(ax, values)
        if few:
            ax.set_xticks([place(v) for v in values], [show(v) for v in values])
            ax.minorticks_off()
        best = min(means, key=lambda vm: vm[1])
        ax.set_title(f"lowest {'mean ' if few else ''}at {show(best[0])}: {best[1]:.4f}", fontsize=9)
        ax.set(xlabel=name + (" (log scale)" if log else ""), ylabel=f"val {LOSS_AXIS}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(drawn):]:
        ax.axis("off")
    handles = [Line2D([], [], ls="", marker="o", color=palette[id(c)], label=names[id(c)])
               for c in configs if id(c) in palette and id(c) in names]
    handles += [Line2D([], [], ls="", marker="o", color="0.7", label="other configurations"),
                Line2D([], [], ls="--", marker="D", color="0.3", label="mean per value (all runs; up to 8 values)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)), fontsize=8)
    fig.suptitle(title, fontsize=11)
    _save(fig, path)
    return drawn


def heatmap(cells: dict[tuple[Any, Any], float], x: str, y: str, baseline: Configuration | None, title: str,
            path: Path) -> bool:
    """Mean val loss per pair of values of two settings (tables.cell_means), the baseline's cell outlined."""
    if not cells:
        return False
    xs, ys = ordered(k[0] for k in cells), ordered(k[1] for k in cells)
    grid = np.array([[cells.get((vx, vy), np.nan) for vx in xs] for vy in ys])
    fig, ax = pyplot().subplots(figsize=(1.2 * len(xs) + 3, 0.8 * len(ys) + 2), layout="constrained")
    image = ax.imshow(grid, cmap="viridis_r", aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=8,
                    color="white" if v > np.nanmean(grid) else "black")
    if baseline is not None and (baseline.settings.get(x), baseline.settings.get(y)) in cells:
        j, i = xs.index(baseline.settings[x]), ys.index(baseline.settings[y])
        ax.add_patch(pyplot().Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.5, ec="black"))
    ax.set_xticks(range(len(xs)), [show(v) for v in xs])
    ax.set_yticks(range(len(ys)), [show(v) for v in ys])
    ax.set(xlabel=x, ylabel=y)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, label=f"mean val {LOSS_AXIS}")
    return _save(fig, path)


def forest(rows: list[Ablation], labels: list[str], title: str, path: Path) -> bool:
    """Each ablation's val difference from the baseline (variant - baseline) with its 95% Welch interval."""
    pairs = [(a, label) for a, label in zip(rows, labels) if a.comparison is not None]
    if not pairs:
        return False
    fig, ax = pyplot().subplots(figsize=(9, 0.32 * len(pairs) + 1.6), layout="constrained")
    for k, (a, _) in enumerate(pairs):
        c = a.comparison
        colour = {"helps (lower val)": "C2", "hurts (higher val)": "C3"}.get(a.verdict, "0.5")
        ax.errorbar(-c.diff, k, xerr=[[c.ci[1] - c.diff], [c.diff - c.ci[0]]], fmt="o", color=colour, capsize=3)
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(range(len(pairs)), [label for _, label in pairs], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel=f"val {LOSS_AXIS}: variant − baseline (negative = better), 95% interval")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def pareto(configs: list[Configuration], front: list[Configuration], seconds: str, baseline: Configuration | None,
           presets: dict[int, str], title: str, path: Path) -> bool:
    """Mean val loss against mean `seconds` per configuration, the Pareto-optimal ones joined and named."""
    scored = [c for c in configs if c.mean("val_loss") is not None and c.mean(seconds) is not None]
    if len(scored) < 2:
        return False
    fig, ax = pyplot().subplots(figsize=(9, 5), layout="constrained")
    xy = lambda cs: ([c.mean(seconds) for c in cs], [c.mean("val_loss") for c in cs])  # noqa: E731
    ax.scatter(*xy(scored), s=18, color="0.65", label="configuration (mean over seeds)", zorder=2)
    ax.step(*xy(front), where="post", color="C3", lw=1, zorder=3)
    ax.scatter(*xy(front), s=40, color="C3", label="Pareto-optimal: nothing both faster and lower", zorder=4)
    for c in front:
        ax.annotate(c.label, (c.mean("wall_seconds"), c.mean("val_loss")), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    if baseline in scored:
        ax.scatter(*xy([baseline]), s=110, facecolors="none", edgecolors="black", lw=1.5, label="baseline", zorder=5)
    for c in scored:
        if id(c) in presets:
            ax.scatter(*xy([c]), marker="*", s=160, color="gold", edgecolors="black", zorder=6,
                       label=f"preset {presets[id(c)]}")
    if _log_axis(xy(scored)[0]):
        _plain_log(ax, xy(scored)[0])
    ax.set(xlabel=SECONDS[seconds] + (" (log scale)" if ax.get_xscale() == "log" else ""),
           ylabel=f"val {LOSS_AXIS}")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def open_study(sweep: Sweep):
    """(the sweep's Optuna study, read-only, "") or (None, why not). A journal file that is not there is never made."""
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
        return optuna.load_study(study_name=sweep.name, storage=storage), ""
    except Exception as err:  # an absent study, an unreachable database: say so and go on
        return None, f"sweep {sweep.name}: {type(err).__name__}: {err}"


def study_figures(study, out: Path, contour: bool, objectives: list[str]) -> list[tuple[str, str]]:
    """Optuna's parallel coordinates and parameter importances of the study on val (its first objective named "val"
    in a study of several), and with `contour` its contour plot of the two most important settings, as (file, title)
    pairs; Optuna's ggplot style stays inside."""
    import optuna
    from optuna.visualization import matplotlib as plots

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < 2 or not done[0].params or "val" not in objectives[:len(study.directions)]:
        return []
    val = objectives.index("val")
    on_val = {"target": (lambda t: t.values[val]) if len(study.directions) > 1 else None, "target_name": "val loss"}
    best = min(done, key=lambda t: t.values[val])
    drawn = []
    with pyplot().style.context("default"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna.visualization.matplotlib is marked experimental
        ax = plots.plot_parallel_coordinate(study, **on_val)
        title = (f"{len(done)} complete trials of study {study.study_name}; lowest val {best.values[val]:.4f} at "
                 + ", ".join(f"{k}={show(v)}" for k, v in best.params.items()))
        drawn.append(("parallel-coordinates.png", ax, title, (11, 5)))
        if len(done[0].params) >= 2:
            importances = optuna.importance.get_param_importances(study, target=on_val["target"])
            top = list(importances)[:2]
            ax = plots.plot_param_importances(study, **on_val)
            drawn.append(("param-importances.png", ax, f"{top[0]} accounts for {importances[top[0]]:.0%} of val's "
                          "variance explained (Optuna's default evaluator)", (8, 0.4 * len(importances) + 2)))
            if contour:
                ax = plots.plot_contour(study, params=top, **on_val)
                drawn.append(("contour.png", ax, f"val over {top[0]} and {top[1]}, the two most important", (8, 6)))
        for file, ax, title, size in drawn:
            ax.figure.set_size_inches(*size)
            ax.set_title("")
            ax.figure.suptitle(title, fontsize=10)
            _save(ax.figure, out / file, bbox_inches="tight")  # Optuna's own layout: not constrained-ready
    return [(file, title) for file, _, title, _ in drawn]
