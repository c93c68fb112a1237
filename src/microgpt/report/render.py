"""The report as a document: sections of paragraphs, lists, tables and figures, each sentence stating what the
records show, handed to two Jinja2 templates (templates/report.md.j2, templates/report.html.j2)."""

from __future__ import annotations

import base64
import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from .. import stats
from ..config import UsageError
from ..files import write_atomic
from ..protocol import TAGS, TIERS, tag_shares, tier_of
from ..record import STATES, stack_seconds
from . import figures, hypotheses
from .records import FIGURES, Records, Run, read_samples
from .tables import (ABLATION_MAX_CHANGES, Configuration, ablations, cell_means, differences, find_baseline, group,
                     pareto_front, preset_of, ranked, show, summary_rows, swept, tier_bins, unused_context, value_means)

NA = "n < 2"  # in a table cell: fewer than 2 seeds on a side, so no interval and no test (stats.NO_STATS)
SHOW_ALL = 12  # up to this many configurations, every one is drawn and detailed; beyond it the --top ones
DIGITS = {"best_val_step": 0, "steps_done": 0, "steps_to_target": 0, "n_params": 0, "tokens_per_second": 0,
          "seconds_to_target": 2, "seconds_to_best": 2, "wall_seconds": 2, "train_seconds": 2}  # decimals shown; every other figure: 4
FIGURE_FILES = ("val-vs-step.png", "val-vs-seconds.png", "train-vs-val.png", "param-effects.png", "heatmap.png",
                "forest.png", "pareto.png", "parallel-coordinates.png", "param-importances.png", "contour.png")


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]
    keys: list[list[Any]] | None = None   # per cell, the number a click on its header sorts by (HTML); None: its text
    kind: str = "table"

    def cells(self) -> list[list[tuple[Any, Any]]]:
        """(text, sort key) per cell, for the HTML template."""
        keys = self.keys or [[None] * len(row) for row in self.rows]
        return [list(zip(row, key, strict=True)) for row, key in zip(self.rows, keys, strict=True)]


@dataclass
class Figure:
    file: str        # a PNG in the output directory
    caption: str
    data: str = ""   # the PNG as base64, for the HTML page
    kind: str = "figure"


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)   # str (a paragraph), list[str] (bullets), Table, Figure


def fmt(x: float | None, digits: int = 4) -> str:
    return "—" if x is None or x != x else f"{x:.{digits}f}"


def fmt_spread(s: stats.Spread, digits: int = 4) -> str:
    if s.mean is None:
        return "—"
    return f"{s.mean:.{digits}f} ± {s.sd:.{digits}f}" if s.sd is not None else f"{s.mean:.{digits}f} (n = 1)"


def fmt_p(p: float | None) -> str:
    return "—" if p is None else f"{p:.3g}"


def tier_name(test_mean: float | None) -> str:
    if test_mean is None:
        return "no test loss"
    return f"tier {tier_of(test_mean)}" if tier_of(test_mean) else f"no tier (test ≥ {TIERS[-1][1]})"


def describe(config: Configuration, params: list[str], baseline: Configuration | None) -> str:
    """What sets the configuration apart in a legend or a title: its settings that differ from the baseline's, else
    its swept values; its label where that takes more than 3 settings."""
    if baseline is not None and baseline.settings and config.settings:
        if config is baseline:
            return "the baseline"
        params = differences(baseline.settings, config.settings)
    named = [k for k in params if k in config.settings]
    return ", ".join(f"{k}={show(config.settings[k])}" for k in named) if 0 < len(named) <= 3 else config.label


def change(baseline: Configuration, config: Configuration, changed: list[str]) -> str:
    return ", ".join(f"{k} {show(baseline.settings.get(k))} → {show(config.settings.get(k))}" for k in changed)


# ------------------------------------------------------------------------------------------------------ the sections

def overview(records: Records, configs: list[Configuration], baseline: Configuration | None, how: str) -> Section:
    counts = {s: sum(r.state == s for r in records.runs) for s in {*STATES, *(r.state for r in records.runs)}}
    states = [s for s in STATES if counts[s]] + sorted(s for s in counts if s not in STATES and counts[s])
    # machine time: a stack's clock once (its members share it), an ensemble's own command only (its wall_seconds is
    # its members' cost, which their own records count where they are read too)
    timed = [(r.stack, r.own_seconds if r.own_seconds is not None else r.figures["wall_seconds"])
             for r in records.runs if r.own_seconds is not None or r.figures.get("wall_seconds") is not None]
    stacks = len({stack for stack, _ in timed if stack})
    order = ranked(configs)
    blocks: list = [[f"sweep {s.name}: mode {s.plan.get('mode', '?')}, seeds {s.plan.get('seeds', '?')}, pruner "
                     f"{s.plan.get('pruner', '?')} ({s.path})" for s in records.sweeps]] if records.sweeps else []
    blocks += [Table(["state", "runs"], [[s, counts[s]] for s in states] + [["all", len(records.runs)]]),
               f"{len(configs)} configurations. Total wall time {stack_seconds(timed):.1f} s "
               f"({stack_seconds(timed) / 3600:.2f} h) over the {len(timed)} runs that recorded one"
               + (f", each of the {stacks} stacks of runs trained as one model counted once" if stacks else "")
               + ". Only complete runs enter the loss statistics."]
    if order:
        best, test = order[0], order[0].spread("test_loss")
        blocks.append(f"Best configuration (lowest mean val loss): {best.label} — val "
                      f"{fmt_spread(best.spread('val_loss'))}, test {fmt_spread(test)} over {test.n} seeds: "
                      f"{tier_name(test.mean)}.")
    else:
        blocks.append("No complete run with a val loss: nothing to rank.")
    return Section("Overview", blocks + [f"Baseline: {baseline.label}, {how}." if baseline else f"Baseline: {how}."])


def tiers(configs: list[Configuration]) -> Section:
    rows = [[name, len(labels), ", ".join(labels[:12]) + (f" ... (+{len(labels) - 12})" if len(labels) > 12 else "")]
            for name, labels in tier_bins(configs)]
    return Section("Tiers", ["Each configuration by its mean test loss over its complete seeds (docs/protocol.md).",
                             Table(["tier", "configurations", "ids"], rows)])


def all_configurations(configs: list[Configuration], baseline: Configuration | None, params: list[str]) -> Section:
    """Every configuration in one table, ranked by mean val; in HTML a click on a header sorts by that column."""
    order = ranked(configs)
    head = ["rank", "config", *params, "complete/runs", "val loss", "test loss",
            "test 95% CI", *(["Welch p vs baseline", "Hedges' g"] if baseline else []), "wall s", "parameters", "tier"]
    rows, keys = [], []
    for config in order + [c for c in configs if c not in order]:
        rank = order.index(config) + 1 if config in order else None
        val, test, ci = config.spread("val_loss"), config.spread("test_loss"), stats.mean_ci(config.values("test_loss"))
        settings = [show(config.settings.get(p, "—")) for p in params]  # a column each: a click sorts by it
        c = None if baseline is None or config is baseline else stats.compare(baseline.values("test_loss"),
                                                                  config.values("test_loss"))
        compared = [] if baseline is None else ["(baseline)"] * 2 if config is baseline else [
            NA] * 2 if c is None else [fmt_p(c.p), fmt(c.hedges_g, 2)]
        rows.append([rank or "—", config.label + (" (baseline)" if config is baseline else ""), *settings,
                     f"{len(config.complete())}/{len(config.runs)}", fmt_spread(val), fmt_spread(test),
                     f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else NA, *compared,
                     fmt(config.mean("wall_seconds"), 1), fmt(config.mean("n_params"), 0), tier_of(test.mean) or "—"])
        keys.append([rank, None, *[config.settings.get(p) for p in params], len(config.complete()), val.mean, test.mean,
                     ci and ci[0], *([] if baseline is None else [c and c.p, c and c.hedges_g]),
                     config.mean("wall_seconds"), config.mean("n_params"), tier_of(test.mean)])
    text = ("Ranked by mean val loss (val drives every choice); test loss is the figure compared. Mean ± sd over the "
            "complete seeds; 95% interval of the mean test loss from Student's t; n < 2: fewer than 2 seeds, no "
            "interval or test.")
    if baseline is not None:
        text += (" Against the baseline, on test loss: Welch's t-test (two-sided p) and Hedges' g (Cohen's d with the "
                 "small-sample correction; positive = lower loss than the baseline).")
    return Section(f"All {len(configs)} configurations", [text + " In report.html a click on a header sorts the table.",
                                                         Table(head, rows, keys)])


def costs(shown: list[Configuration], top: int | None, baseline: Configuration | None) -> Section:
    rows = []
    for config in shown:
        reached = config.spread("steps_to_target")
        rows.append([config.label + (" (baseline)" if config is baseline else ""),
                     f"{fmt(reached.mean, 0)} ({reached.n}/{len(config.complete())})",
                     fmt_spread(config.spread("seconds_to_target"), 2), fmt_spread(config.spread("train_seconds"), 2),
                     fmt_spread(config.spread("loss_drop_per_second")), fmt_spread(config.spread("stability")),
                     fmt(config.mean("n_params"), 0)])
    targets = sorted({c.settings["target"] for c in shown if c.settings.get("target") is not None})
    target = " / ".join(f"{t:g}" for t in targets) or "the run's target"
    return Section(f"Top {top} configurations: cost and stability" if top else "Cost and stability", [
        f"Steps and seconds to target: first evaluation with val < {target}, mean over the seeds that reached it (how "
        "many in brackets). Loss drop per second: (ln(vocab_size) − val loss) / training seconds. Stability: sd of the "
        "batch loss over the last 10% of steps.",
        Table(["config", "steps to target", "seconds to target", "train seconds", "loss drop per second", "stability",
               "parameters"], rows)])


def curves(shown: list[Configuration], baseline: Configuration | None, params: list[str], records: Records,
           palette: dict, out: Path) -> Section:
    names = {id(c): describe(c, params, baseline) for c in shown}
    blocks = []
    order = ranked(shown)
    if order:
        best, base = order[0], baseline.mean("val_loss") if baseline is not None else None
        title = f"{names[id(best)]} reaches the lowest val ({best.mean('val_loss'):.4f})"
        if base is not None and best is not baseline:
            title += f", {base - best.mean('val_loss'):.4f} below the baseline ({base:.4f})"
        if figures.val_curves(shown, palette, names, records, "step", title, out / "val-vs-step.png"):
            blocks.append(Figure("val-vs-step.png", "Val loss against step: mean over seeds, band = min to max; "
                                                    "the baseline black."))
        timed = [c for c in order if c.mean("wall_seconds") is not None]
        if timed:
            fast = min(timed, key=lambda c: c.mean("wall_seconds"))
            title = (f"{names[id(timed[0])]} ends lowest, {timed[0].mean('wall_seconds'):.1f} s a run; "
                     + (f"{names[id(fast)]} is fastest ({fast.mean('wall_seconds'):.1f} s, val "
                        f"{fast.mean('val_loss'):.4f})" if fast is not timed[0] else "it is also the fastest"))
            if figures.val_curves(shown, palette, names, records, "seconds", title, out / "val-vs-seconds.png"):
                blocks.append(Figure("val-vs-seconds.png", "Val loss against wall seconds (mean elapsed time at each "
                                                           "evaluation)."))
        run = best.best_run()
        if run is not None and figures.train_val(run, records, train_val_title(run, records), out / "train-vs-val.png"):
            blocks.append(Figure("train-vs-val.png", f"Train vs val for run {run.name}, the best seed of {best.label}."))
    return Section("Loss curves", blocks)


def train_val_title(run: Run, records: Records) -> str:
    vals = [(r["val_loss"], r["step"]) for r in records.metrics(run) or [] if r["val_loss"] is not None]
    if not vals:
        return f"run {run.name}: no val evaluation recorded"
    (low, step), last = min(vals), vals[-1][0]
    text = (f"run {run.name}: val is lowest at step {step} ({low:.4f}) and ends {last - low:.4f} higher"
            if last - low > 1e-4 else f"run {run.name}: val is still at its lowest at the last evaluation ({low:.4f})")
    train = run.figures.get("train_loss")
    return text + (f"; val − train split {run.figures['val_loss'] - train:+.4f}" if train is not None
                   and run.figures.get("val_loss") is not None else "")


def effects(configs: list[Configuration], baseline: Configuration | None, params: list[str], records: Records,
            palette: dict, names: dict, out: Path) -> Section:
    blocks: list = []
    spans = {p: value_means(configs, p) for p in params}  # levels only: over a continuous range the spread of
    spans = {p: (min(m, key=lambda vm: vm[1]), max(m, key=lambda vm: vm[1]))  # single runs is not an effect
             for p, m in spans.items() if 2 <= len(m) <= 8}
    strongest = sorted(spans, key=lambda p: spans[p][0][1] - spans[p][1][1])
    title = "Val loss against each setting"
    if strongest:
        p, ((lo_v, lo), (hi_v, hi)) = strongest[0], spans[strongest[0]]
        title = f"{p} moves mean val the most: {lo:.4f} at {p}={show(lo_v)}, {hi:.4f} at {p}={show(hi_v)}"
    drawn = figures.setting_effects(params, configs, palette, names, title, out / "param-effects.png")
    if drawn:
        blocks.append(Figure("param-effects.png", f"Val loss against {', '.join(drawn)}: one point per complete run, "
                                                  "jittered sideways; dashed = mean per value over all runs."))
    grid = [p for p in strongest if p in set().union(*(s.plan.get("grid") or {} for s in records.sweeps))]
    if len(grid) >= 2:  # a grid's product fills the cells; one-factor points or a random search would leave them empty
        x, y = grid[:2] if len(grid) > 2 else sorted(grid)
        others = [p for p in grid if p not in (x, y)]
        cells = cell_means(configs, x, y)
        (vx, vy), v = min(cells.items(), key=lambda kv: kv[1])
        title = (f"Lowest mean val at {x}={show(vx)}, {y}={show(vy)}: {v:.4f} (mean over "
                 + (f"{', '.join(others)} and seeds)" if others else "seeds)"))
        if figures.heatmap(cells, x, y, baseline, title, out / "heatmap.png"):
            blocks.append(Figure("heatmap.png", f"Mean val loss for each pair of {x} and {y}" + (
                f", the two settings that move it most, averaged over {', '.join(others)}" if others else "")
                + (" (baseline outlined)." if baseline is not None else ".")))
    for limit, beyond in unused_context(configs):
        blocks.append(f"Every complete run on this data trained with block_size ≥ {limit}, and training refuses a "
                      f"block_size below the longest name + 1, so no name here has more than {limit - 1} characters. "
                      f"Each name is its own sequence (positions restart at each name), so positions beyond {limit} "
                      f"are never used: block_size {', '.join(map(str, beyond))} cannot help, and any difference it "
                      "shows is seed noise (the larger position table only changes the initial random draw).")
    for sweep in records.sweeps:
        study, why = figures.open_study(sweep)
        if study is None:
            blocks.append(f"Optuna's plots not drawn for {why}.")
            continue
        objectives = sweep.plan.get("objectives") or ["val"]  # a plan.json from before objectives: val alone
        for file, title in figures.study_figures(study, out, sweep.plan.get("mode") in ("random", "tpe"), objectives):
            blocks.append(Figure(file, f"Optuna's {file[:-4].replace('-', ' ')} of study {sweep.name}: {title}."))
    return Section("Each setting's effect", blocks)


def cost_front(records: Records, configs: list[Configuration], baseline: Configuration | None, out: Path) -> Section:
    """Val against seconds: the sweep's own two objectives where it searched on seconds, else wall seconds."""
    two = any("seconds" in (s.plan.get("objectives") or []) for s in records.sweeps)
    secs = "seconds_to_best" if two and any(c.mean("seconds_to_best") is not None for c in configs) else "wall_seconds"
    front = pareto_front(configs, secs)
    if not front:
        return Section("Val against time")
    best = min(front, key=lambda c: c.mean("val_loss"))
    title = (f"{len(front)} of {len([c for c in configs if c.mean(secs) is not None])} configurations are "
             f"Pareto-optimal; the lowest val ({best.mean('val_loss'):.4f}) takes {best.mean(secs):.1f} s")
    if front[0] is not best:
        title += f", {front[0].label} gets {front[0].mean('val_loss'):.4f} in {front[0].mean(secs):.1f} s"
    presets = {id(c): p for c in configs if (p := preset_of(c))}
    if not figures.pareto(configs, front, secs, baseline, presets, title, out / "pareto.png"):
        return Section("Val against time")
    return Section("Val against time", [
        Figure("pareto.png", f"Mean val loss against mean {figures.SECONDS[secs]}, one point per configuration; a "
                             "Pareto-optimal one has no other both faster and lower."),
        "Pareto-optimal, fastest first: " + ", ".join(f"{c.label} ({c.mean(secs):.1f} s, val "
                                                      f"{c.mean('val_loss'):.4f})" for c in front) + "."])


def hypotheses_section(measured: list[hypotheses.Measured], baseline: Configuration, source: str) -> Section:
    mean = baseline.spread("test_loss").mean
    rows = []
    for m in measured:
        measured_text = p_text = NA
        if m.comparison is not None:
            r, (lo, hi) = stats.relative(m.comparison, mean)
            measured_text, p_text = f"{100 * r:+.1f}% [{100 * lo:+.1f}%, {100 * hi:+.1f}%]", fmt_p(m.comparison.p)
        rows.append([m.hypothesis.name, change(baseline, m.variant, m.changed), f"{baseline.label} vs {m.variant.label}",
                     f"{len(baseline.values('test_loss'))}/{len(m.variant.values('test_loss'))}",
                     f"{100 * m.hypothesis.predicted:.0f}%", measured_text, p_text,
                     NA if m.verdict == stats.NO_STATS else m.verdict])
    return Section("The plan's hypotheses", [
        f"The predictions of {source}. Each row compares the baseline ({baseline.label}) with a configuration that "
        "differs in that factor alone. Reduction = (baseline mean test loss − variant mean) / baseline mean; positive "
        "= better. Interval: Welch's 95% interval of the difference over the baseline mean. Verdict: not significant "
        "at 5% when Welch p ≥ 0.05; else opposite when the sign is reversed; confirmed when the interval holds the "
        f"prediction; else smaller or larger. {NA}: fewer than 2 seeds on a side, no interval and no test.",
        Table(["hypothesis", "change", "configs", "seeds (base/variant)", "predicted reduction",
               "measured reduction [95% CI]", "Welch p", "verdict"], rows)])


def ablations_section(baseline: Configuration, configs: list[Configuration], grid: set[str], out: Path) -> Section:
    rows = ablations(baseline, configs, grid)
    if not rows:
        return Section("Ablations")
    labels = [change(baseline, a.variant, a.changed) for a in rows]
    table = []
    for a, label in zip(rows, labels):
        c = a.comparison  # diff = baseline - variant; shown as variant - baseline, so that negative = lower val
        table.append([label, a.variant.label, f"{len(baseline.values('val_loss'))}/{len(a.variant.values('val_loss'))}",
                      fmt_spread(a.variant.spread("val_loss")),
                      f"{-c.diff:+.4f} [{-c.ci[1]:+.4f}, {-c.ci[0]:+.4f}]" if c else fmt(None),
                      fmt_p(c.p) if c else NA, NA if a.verdict == stats.NO_STATS else a.verdict])
    helps = [(a, label) for a, label in zip(rows, labels) if a.verdict.startswith("helps")]
    hurts = sum(a.verdict.startswith("hurts") for a in rows)
    title = f"{len(helps)} of {len(rows)} changes lower val significantly, {hurts} raise it"
    if helps:
        title += f"; the largest gain: {helps[0][1]} ({-helps[0][0].comparison.diff:+.4f})"
    blocks: list = [
        f"Every configuration that differs from the baseline ({baseline.label}, val "
        f"{fmt_spread(baseline.spread('val_loss'))}) in at most {ABLATION_MAX_CHANGES} settings (and in at most one "
        "grid dimension), on val loss (the figure choices are made on), best first. Difference = variant mean − "
        "baseline mean, negative = better, with Welch's 95% interval; verdict by Welch's two-sided p at 5%; "
        f"{NA}: fewer than 2 seeds on a side.",
        Table(["change", "config", "seeds (base/variant)", "val loss", "difference [95% CI]", "Welch p", "verdict"],
              table)]
    if figures.forest(rows, labels, title, out / "forest.png"):
        blocks.insert(1, Figure("forest.png", "Each change's val difference from the baseline with its 95% interval; "
                                              "green = significantly lower, red = significantly higher."))
    return Section("Ablations", blocks)


def samples(run: Run) -> Section:
    if not (pairs := read_samples(run)):
        return Section("Samples")
    shares = tag_shares([tag for _, tag in pairs])
    return Section("Samples", [f"{min(20, len(pairs))} of the {len(pairs)} names in samples.txt of run {run.name} ("
                               + ", ".join(f"{shares[t]:.0%} {t}" for t in TAGS) + f" over all {len(pairs)}).",
                               Table(["name", "tag"], [list(p) for p in pairs[:20]])])


def skipped(records: Records) -> Section:
    if not records.skipped:
        return Section("Skipped", ["Nothing was skipped: every record was read."])
    return Section("Skipped", ["What could not be used, and why; the rest of the report stands without it.",
                               [f"{what}: {why}" for what, why in records.skipped]])


# -------------------------------------------------------------------------------------------------------- the reports

def sweep_report(records: Records, configs: list[Configuration], baseline: Configuration | None, how: str,
                 found: tuple[list[hypotheses.Hypothesis], str], top: int | None, out: Path) -> list[Section]:
    """The report of a sweep, or of several runs: every configuration, and the ones drawn in detail."""
    params = swept(records, configs)
    order = ranked(configs)
    limit = top or (SHOW_ALL if len(order) <= SHOW_ALL else 3)
    shown = order[:limit] + ([baseline] if baseline is not None and baseline not in order[:limit] else [])
    palette = figures.colours(shown, baseline)
    names = {id(c): describe(c, params, baseline) for c in shown}
    sections = [overview(records, configs, baseline, how), tiers(configs),
                all_configurations(configs, baseline, params)]
    if shown:
        sections.append(costs(shown, limit if len(order) > limit else None, baseline))
    sections += [curves(shown, baseline, params, records, palette, out),
                 effects(configs, baseline, params, records, palette, names, out),
                 cost_front(records, configs, baseline, out)]
    measured = hypotheses.measure(found[0], baseline, configs)
    if measured:
        sections.append(hypotheses_section(measured, baseline, found[1]))
    elif found[0]:
        sections.append(Section("The plan's hypotheses", [
            f"No configuration pairs with the baseline for any hypothesis of {found[1]} (or the baseline has no test "
            "loss)."]))
    if baseline is not None and baseline.settings:
        grid = set().union(*(s.plan.get("grid") or {} for s in records.sweeps))
        sections.append(ablations_section(baseline, configs, grid, out))
    if order and order[0].best_run() is not None:
        sections.append(samples(order[0].best_run()))
    return sections + [skipped(records)]


def run_report(records: Records, configs: list[Configuration], out: Path) -> list[Section]:
    """The short report of one run: its figures, its curves, its samples."""
    run, config = records.runs[0], configs[0]
    main = ", ".join(f"{k}={run.settings[k]}" for k in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "lr",
                                                          "schedule", "optimizer", "steps") if k in run.settings)
    rows = [["tier", tier_name(run.figures.get("test_loss"))]]
    rows += [[k, fmt(run.figures.get(k), DIGITS.get(k, 4))] for k in FIGURES]
    blocks: list = []
    if figures.train_val(run, records, train_val_title(run, records), out / "train-vs-val.png"):
        blocks.append(Figure("train-vs-val.png", "Batch loss (smoothed) and val loss against step."))
    title = f"run {run.name}: val {fmt(run.figures.get('val_loss'))} after {fmt(run.figures.get('wall_seconds'), 1)} s"
    if figures.val_curves([config], {id(config): "C3"}, {id(config): run.name}, records, "seconds", title,
                          out / "val-vs-seconds.png"):
        blocks.append(Figure("val-vs-seconds.png", "Val loss against wall seconds."))
    state = f"Run {run.name} ({run.dir}): {run.state}" + (f" ({run.error})." if run.error else ".")
    return [Section("Overview", [state, f"Settings: {main or 'unknown (no config.json)'}.",
                                 Table(["figure", "value"], rows)]),
            Section("Loss curves", blocks), samples(run), skipped(records)]


TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                               autoescape=jinja2.select_autoescape(["html.j2"]), trim_blocks=True, lstrip_blocks=True,
                               keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
TEMPLATES.filters["cell"] = lambda text: str(text).replace("|", "\\|").replace("\n", " ")


def write_report(records: Records, baseline_arg: str | None, top: int | None, plan_file: str | None,
                 out: Path) -> Path:
    """Build the report of these records into out/; return the path of report.html. Bad input raises UsageError
    before anything is written."""
    configs = group(records.runs)
    baseline, how = find_baseline(baseline_arg, configs, records)
    found = hypotheses.load(plan_file, records)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out} is a file: pass a directory for the report")
    out.mkdir(parents=True, exist_ok=True)
    for name in FIGURE_FILES:  # a figure left from an earlier report must not pass for this one's
        (out / name).unlink(missing_ok=True)
    if len(records.runs) == 1 and not records.sweeps and baseline_arg is None:
        title, sections = f"microgpt report: run {records.runs[0].name}", run_report(records, configs, out)
    else:
        names = ", ".join(s.name for s in records.sweeps) or f"{len(records.runs)} runs"
        title = f"microgpt report: {names}"
        sections = sweep_report(records, configs, baseline, how, found, top, out)
    sections = [s for s in sections if s.blocks]
    order = ranked(configs)
    table = io.StringIO()
    csv.writer(table, lineterminator="\n").writerows(summary_rows(order + [c for c in configs if c not in order],
                                                                  swept(records, configs)))
    write_atomic(out / "summary.csv", table.getvalue())
    write_atomic(out / "report.md", TEMPLATES.get_template("report.md.j2").render(title=title, sections=sections))
    for block in (b for s in sections for b in s.blocks if isinstance(b, Figure)):
        block.data = base64.b64encode((out / block.file).read_bytes()).decode("ascii")
    write_atomic(out / "report.html", TEMPLATES.get_template("report.html.j2").render(title=title, sections=sections))
    return out / "report.html"
