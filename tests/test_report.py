"""`microgpt report` on records these tests write themselves: a sweep with known losses, a 2-D grid, single runs,
broken inputs; and the page itself in a headless browser."""

import base64
import csv
import io
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats as sps

import microgpt.report as report
from microgpt import stats
from microgpt.cli import build_parser
from microgpt.report import figures, hypotheses, tables
from microgpt.report.records import Records, Run, Sweep
from microgpt.config import UsageError, resolve, to_dict
from microgpt.record import RESULTS_COLUMNS

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as plan.py reads plans
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PLAN = REPO / "plans" / "seed-hypotheses.toml"
BASE = {"n_embd": 16, "n_layer": 1, "n_head": 4, "block_size": 16, "batch_size": 4, "lr": 0.01, "schedule": "cosine",
        "steps": 100, "eval_every": 25}

# Test losses per seed, chosen so that each verdict rule fires once (the baseline mean is 2.40, sd 0.01).
SWEEP = {
    "base": ({}, [2.40, 2.41, 2.39]),
    "wide": ({"n_embd": 64}, [1.67, 1.68, 1.69]),        # -30.0%: predicted 30% -> confirmed
    "lr2": ({"lr": 0.02}, [2.38, 2.42, 2.40]),           # 0% -> not significant at 5%
    "b16": ({"batch_size": 16}, [2.50, 2.51, 2.49]),     # loss up -> opposite
    "deep": ({"n_layer": 2}, [2.30, 2.31, 2.29]),        # 4.2%, predicted 8% -> smaller
    "h8": ({"n_head": 8}, [2.20, 2.21, 2.19]),           # 8.3%, predicted 2% -> larger
    "ctx": ({"block_size": 32}, [2.39]),                 # one seed -> statistics not available
}


def run_dir_records(path: Path, settings: dict, seed: int, test: float, state: str = "complete") -> dict:
    """Write a run directory with plausible records; return its summary."""
    model_cfg, train_cfg = resolve({**settings, "seed": seed})
    path.mkdir(parents=True)
    val = test - 0.02
    (path / "args.txt").write_text("microgpt train\n")
    (path / "config.json").write_text(json.dumps({"model": to_dict(model_cfg), "train": to_dict(train_cfg),
                                                  "seed": seed, "device": "cpu"}))
    steps = train_cfg.steps
    rows = ["step,lr,loss,val_loss,elapsed_s"]
    for step in range(1, steps + 1):
        loss = val + 0.9 * math.exp(-step / 20) + 0.05 * math.sin(step)
        at = val + 0.9 * math.exp(-step / 20) if step % train_cfg.eval_every == 0 else ""
        rows.append(f"{step},{train_cfg.lr},{loss},{at},{0.01 * step * (1 + seed / 10)}")
    (path / "metrics.csv").write_text("\n".join(rows) + "\n")
    (path / "samples.txt").write_text("".join(f"{n}\t{t}\n" for n, t in [("emma", "in train"), ("zelora", "new"),
                                                                          ("ava", "in val-test"), ("brix", "new")] * 6))
    summary = {"state": state, "stop_reason": f"ran all {steps} steps", "steps_done": steps, "n_params": 4192,
               "train_loss": val - 0.03, "val_loss": val, "test_loss": test, "best_val": val, "best_val_step": steps,
               "target": 1.9, "steps_to_target": 75 if val < 1.9 else None, "seconds_to_target": 0.8 if val < 1.9 else None,
               "wall_seconds": 1.5 + seed, "train_seconds": 1.0 + seed, "tokens_per_second": 5000.0,
               "stability": 0.1 + 0.01 * seed, "tier": None, "diverged_step": None, "trained_on": "train split"}
    (path / "summary.json").write_text(json.dumps(summary))
    return summary


def make_sweep(root: Path, name: str = "seed-hypotheses", journal: bool = True, configs: dict = SWEEP,
               base: dict = BASE, grid: dict | None = None, failures: bool = True) -> Path:
    """A sweep directory as `microgpt sweep` writes it, with the losses of `configs` (SWEEP's one-factor points, or the
    product of `grid`), and (failures) a pruned run and an invalid one."""
    sweep = root / name
    sweep.mkdir(parents=True)
    plan = {"name": name, "mode": "grid", "preset": None, "base": base, "grid": grid or {},
            "points": [] if grid else [overrides or {"n_embd": 16} for overrides, _ in configs.values()], "space": {},
            "seeds": [0, 1, 2], "trials": None, "pruner": "none", "data": None, "workers": 1}
    (sweep / "plan.json").write_text(json.dumps(plan))
    header = list(RESULTS_COLUMNS)  # the schema's columns, as `microgpt sweep` writes them
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    row = lambda values: [_cell(values.get(k, "")) for k in header]  # noqa: E731
    trial = 0
    for config, (overrides, tests) in configs.items():
        for seed, test in enumerate(tests):
            run = f"{trial:04d}-{config}-s{seed}"
            summary = run_dir_records(sweep / "runs" / run, {**base, **overrides}, seed, test)
            model_cfg, train_cfg = resolve({**base, **overrides, "seed": seed})
            writer.writerow(row({**to_dict(model_cfg), **to_dict(train_cfg), **summary, "run": run, "trial": trial,
                                 "config": config, "seed": seed, "state": "complete", "run_dir": f"runs/{run}"}))
            trial += 1
    if failures:
        model_cfg, train_cfg = resolve({**base, "n_embd": 32, "seed": 0})
        writer.writerow(row({**to_dict(model_cfg), **to_dict(train_cfg), "run": "9998-pruned", "trial": trial,
                             "config": "pruned32", "seed": 0, "state": "pruned"}))
        writer.writerow(row({"run": "9999-invalid", "trial": trial + 1, "config": "bad", "seed": 0,
                             "state": "invalid", "error": "n_embd 18 is not divisible by n_head 4"}))
    (sweep / "results.csv").write_text(out.getvalue())
    if journal:
        import optuna

        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(sweep / "journal.log")))
        study = optuna.create_study(study_name=name, storage=storage)
        dists = {"n_embd": optuna.distributions.IntDistribution(16, 64),
                 "lr": optuna.distributions.FloatDistribution(0.005, 0.05, log=True)}
        for overrides, tests in configs.values():
            params = {"n_embd": overrides.get("n_embd", 16), "lr": overrides.get("lr", 0.01)}
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=statistics.fmean(tests)))
        (sweep / "storage.txt").write_text(f"journal:{sweep / 'journal.log'}\n")
    return sweep


def _cell(value) -> str:
    return "" if value is None else str(value)


def run_report(*argv: str) -> int:
    return report.run(build_parser().parse_args(["report", *argv]))


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    sweep = make_sweep(root)
    out = root / "out"
    assert run_report(str(sweep), "--plan", str(PLAN), "-o", str(out)) == 0
    return sweep, out


def md_table(md: str, first: str) -> list[dict[str, str]]:
    """The rows of the Markdown table whose header starts with `first`, as dicts by column name."""
    lines = md.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"| {first} |"))
    split = lambda line: [c.strip() for c in line.strip("|").split(" | ")]  # noqa: E731
    header, rows = split(lines[at]), []
    for line in lines[at + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, split(line))))
    return rows


# ------------------------------------------------------------------------------------------------------------ stats

def test_spread_and_interval_follow_student_t():
    xs = [2.0, 2.1, 2.3]
    s = stats.spread(xs + [None, float("nan")])
    assert s.n == 3 and s.mean == pytest.approx(2.1333333) and s.sd == pytest.approx(statistics.stdev(xs))
    lo, hi = stats.mean_ci(xs)
    half = sps.t.ppf(0.975, 2) * s.sd / math.sqrt(3)  # 4.303 for 2 degrees of freedom
    assert (lo, hi) == (pytest.approx(s.mean - half), pytest.approx(s.mean + half))
    assert stats.mean_ci([2.0]) is None and stats.spread([2.0]).sd is None and stats.spread([]).mean is None


def test_compare_is_welch_and_hedges_g_with_lower_loss_positive():
    base, other = [2.40, 2.41, 2.39, 2.42], [2.30, 2.33, 2.29]
    c = stats.compare(base, other)
    assert c.diff == pytest.approx(statistics.fmean(base) - statistics.fmean(other)) and c.diff > 0
    assert c.p == pytest.approx(sps.ttest_ind(base, other, equal_var=False).pvalue)
    assert c.ci[0] < c.diff < c.ci[1] and c.ci[0] > 0  # significant: the interval excludes 0
    pooled = math.sqrt((3 * statistics.variance(base) + 2 * statistics.variance(other)) / 5)
    d = c.diff / pooled
    assert d * 0.8 < c.hedges_g < d  # Hedges' correction shrinks Cohen's d; ~0.86 at 5 degrees of freedom
    assert c.hedges_g == pytest.approx(d * (1 - 3 / (4 * 5 - 1)), rel=0.01)  # Hedges' own approximation of J
    assert stats.compare(base, [2.3]) is None


@pytest.mark.parametrize("other, expected", [
    ([1.67, 1.68, 1.69], "confirmed"),
    ([2.38, 2.42, 2.40], "not significant at 5%"),
    ([2.50, 2.51, 2.49], "opposite"),
    ([2.30, 2.31, 2.29], "smaller"),
    ([2.20, 2.21, 2.19], "larger"),
    ([2.39], stats.NO_STATS),
])
def test_verdict_rules(other, expected):
    base = [2.40, 2.41, 2.39]
    predicted = {"confirmed": 0.30, "smaller": 0.08, "larger": 0.02}.get(expected, 0.15)
    assert stats.verdict(predicted, stats.compare(base, other), 2.40) == expected


# ------------------------------------------------------------------------------------------------------------ sweeps

def test_summary_csv_and_report_md_carry_the_numbers_of_results_csv(sweep_report):
    sweep, out = sweep_report
    assert {p.name for p in out.iterdir()} >= {"report.html", "report.md", "summary.csv", "val-vs-step.png",
                                               "val-vs-seconds.png", "train-vs-val.png", "param-effects.png",
                                               "forest.png", "pareto.png", "parallel-coordinates.png"}
    assert not (out / "heatmap.png").exists()  # one-factor points fill no grid: no heatmap
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    summary = {r["config"]: r for r in csv.DictReader((out / "summary.csv").open())}
    md = (out / "report.md").read_text()
    assert list(summary)[:3] == ["wide", "h8", "deep"]  # ranked by mean val
    for config in ("wide", "b16", "ctx"):
        tests = [float(r["test_loss"]) for r in rows if r["config"] == config and r["state"] == "complete"]
        vals = [float(r["val_loss"]) for r in rows if r["config"] == config and r["state"] == "complete"]
        row = summary[config]
        assert float(row["test_loss_mean"]) == pytest.approx(statistics.fmean(tests), abs=1e-12)
        assert int(row["test_loss_n"]) == len(tests)
        if len(tests) > 1:
            assert float(row["test_loss_sd"]) == pytest.approx(statistics.stdev(tests), abs=1e-12)
        else:
            assert row["test_loss_sd"] == ""
        assert float(row["val_loss_mean"]) == pytest.approx(statistics.fmean(vals), abs=1e-12)
    for config in ("wide", "h8", "deep"):  # shown with mean ± sd of val and test
        tests = [float(r["test_loss"]) for r in rows if r["config"] == config]
        assert f"{statistics.fmean(tests):.4f} ± {statistics.stdev(tests):.4f}" in md
    base = [float(r["test_loss"]) for r in rows if r["config"] == "base"]
    assert f"{statistics.fmean(base):.4f} ± {statistics.stdev(base):.4f}" in md  # the baseline row
    assert summary["pruned32"]["complete"] == "0" and summary["pruned32"]["test_loss_n"] == "0"
    assert summary["wide"]["tier"] == "1" and summary["base"]["tier"] == ""


def test_overview_tiers_and_top_table(sweep_report):
    _, out = sweep_report
    md = (out / "report.md").read_text()
    assert "| complete | 19 |" in md and "| pruned | 1 |" in md and "| invalid | 1 |" in md and "| all | 21 |" in md
    assert "Best configuration (lowest mean val loss): wide" in md and "tier 1" in md
    assert "Baseline: base, the base point of plan seed-hypotheses" in md
    assert "| tier 1 (test < 1.9) | 1 | wide |" in md
    rows = md_table(md, "rank")
    assert [r["config"] for r in rows] == ["wide", "h8", "deep", "ctx", "lr2", "base (baseline)", "b16", "pruned32",
                                           "bad"]  # every configuration, ranked by val; the unranked last
    wide = rows[0]
    p = sps.ttest_ind([2.40, 2.41, 2.39], [1.67, 1.68, 1.69], equal_var=False).pvalue
    assert wide["rank"] == "1" and wide["n_embd"] == "64" and wide["Welch p vs baseline"] == f"{p:.3g}"
    assert float(wide["Hedges' g"]) > 0 and rows[5]["Hedges' g"] == "(baseline)"
    assert len(md_table(md, "config")) == 7  # cost and stability: each of the 7 ranked configurations


def test_hypotheses_rows_and_verdicts(sweep_report):
    _, out = sweep_report
    md = (out / "report.md").read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if " → " in line}
    assert rows["model size"].endswith("| confirmed |") and "n_embd 16 → 64" in rows["model size"]
    assert rows["model size"].count("+30.0%") == 1
    assert rows["learning rate"].endswith("| not significant at 5% |")
    assert rows["batch size"].endswith("| opposite |")
    assert rows["layers"].endswith("| smaller |")
    assert rows["heads"].endswith("| larger |")
    assert rows["context"].endswith("| n < 2 |")  # one seed: no statistics
    assert "lr schedule" not in rows and "regularisation" not in rows  # no matched pair in the records
    assert "The predictions of plan file" in md and "seed-hypotheses.toml" in md
    assert "positions beyond 16 are never used: block_size 32 cannot help" in md
    assert "no name here has more than 15 characters" in md  # 16 = the smallest block_size that trained, minus 1


def test_optuna_plots_and_samples(sweep_report):
    _, out = sweep_report
    md = (out / "report.md").read_text()
    assert "](parallel-coordinates.png)" in md and "](param-importances.png)" in md
    assert "Optuna's param importances of study seed-hypotheses: n_embd accounts for" in md
    assert "## Samples" in md and "50% new, 25% in train, 25% in val-test" in md
    assert "| zelora | new |" in md
    assert "## Skipped" in md and "Nothing was skipped" in md


def test_markdown_links_the_pngs_and_html_inlines_them(sweep_report):
    _, out = sweep_report
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    linked = re.findall(r"\]\(([a-z-]+\.png)\)", md)
    assert len(linked) == len(set(linked)) == 8
    for name in linked:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.count('src="data:image/png;base64,') == len(linked)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert ".png" not in text and "http" not in text and "<link" not in text  # offline
    assert page.count("<script>") == 1 and "<script src" not in page  # our own few lines, inline


def test_absent_study_is_said_and_skipped(tmp_path):
    sweep = make_sweep(tmp_path, journal=False)
    (sweep / "storage.txt").write_text(f"journal:{tmp_path / 'gone' / 'journal.log'}\n")
    assert run_report(str(sweep), "-o", str(tmp_path / "out")) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Optuna's plots not drawn for sweep seed-hypotheses: journal" in md and "not found" in md
    assert not (tmp_path / "gone").exists()  # reading never creates a journal


def test_baseline_flag_by_id_and_by_run_dir(tmp_path):
    sweep = make_sweep(tmp_path, journal=False)
    out = tmp_path / "a"
    assert run_report(str(sweep), "--baseline", "b16", "--top", "2", "--plan", str(PLAN), "-o", str(out)) == 0
    md = (tmp_path / "a" / "report.md").read_text()
    assert "Baseline: b16, configuration b16 (--baseline b16)" in md
    assert "## Top 2 configurations: cost and stability" in md
    assert [r["config"] for r in md_table(md, "config")] == ["wide", "h8", "b16 (baseline)"]
    assert "No configuration pairs with the baseline" in md  # batch 16 is no seed baseline: no matched pair
    run_dir = next((sweep / "runs").glob("*-base-s1"))
    assert run_report(str(sweep), "--baseline", str(run_dir), "-o", str(tmp_path / "b")) == 0
    assert "Baseline: base, the configuration of run directory" in (tmp_path / "b" / "report.md").read_text()
    with pytest.raises(UsageError, match="'nope' is neither a run directory nor a configuration"):
        run_report(str(sweep), "--baseline", "nope", "-o", str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()  # a usage error writes nothing


# ------------------------------------------------------------------------------------------------------------ runs

def test_one_run_dir_gives_the_short_report(tmp_path):
    run_dir_records(tmp_path / "r1", BASE, 0, 2.35)
    out = tmp_path / "out"
    assert run_report(str(tmp_path / "r1"), "-o", str(out)) == 0
    md = (out / "report.md").read_text()
    assert md.startswith("# microgpt report: run r1") and "| test_loss | 2.3500 |" in md
    assert "## Samples" in md and "](train-vs-val.png)" in md and "Top" not in md
    assert not (out / "param-effects.png").exists()


def test_a_folder_of_run_dirs_groups_seeds_into_configurations(tmp_path):
    runs = tmp_path / "runs"
    for seed, test in enumerate([2.30, 2.32]):
        run_dir_records(runs / f"a-s{seed}", BASE, seed, test)
    run_dir_records(runs / "b-s0", {**BASE, "lr": 0.02}, 0, 2.20)
    out = tmp_path / "out"
    assert run_report(str(runs), "-o", str(out)) == 0
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["runs"], r["lr"]) for r in summary] == [("1", "0.02"), ("2", "0.01")]
    assert float(summary[1]["test_loss_mean"]) == pytest.approx(2.31)
    md = (out / "report.md").read_text()
    assert "| 1 | b-s0 | 0.02 | 1/1 |" in md and "| n < 2 |" in md  # one seed: no interval, no test
    assert "Baseline: none" in md and "Welch p vs baseline" not in md  # no plan, no --baseline: nothing compared


def test_broken_records_are_skipped_with_reasons(tmp_path):
    sweep = make_sweep(tmp_path / "s", journal=False)
    text = (sweep / "results.csv").read_text()
    (sweep / "results.csv").write_text(text[: text.rindex("9999-invalid") + 20])  # the last row cut mid-line
    (sweep / "runs" / "0000-base-s0" / "metrics.csv").unlink()
    (sweep / "runs" / "0000-base-s0" / "samples.txt").unlink()
    metrics = sweep / "runs" / "0003-wide-s0" / "metrics.csv"
    metrics.write_text(metrics.read_text()[:-30])  # the best run's last row cut mid-line
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "plan.json").write_text(json.dumps({"name": "empty", "mode": "grid"}))
    runs = tmp_path / "runs"
    run_dir_records(runs / "done", BASE, 0, 2.3)
    run_dir_records(runs / "crashed", BASE, 1, 2.3)
    (runs / "crashed" / "summary.json").unlink()
    run_dir_records(runs / "garbled", BASE, 2, 2.3)
    (runs / "garbled" / "summary.json").write_text('{"state": "compl')
    out = tmp_path / "out"
    assert run_report(str(sweep), str(empty), str(runs), "-o", str(out)) == 0
    md = (out / "report.md").read_text()
    skipped = md[md.index("## Skipped"):]
    assert "results.csv line 22: 4 of " in skipped and "truncated" in skipped
    assert "run 0000-base-s0: no metrics.csv" in skipped
    assert "0003-wide-s0/metrics.csv: 1 of 100 rows malformed" in skipped
    assert "empty/results.csv: missing" in skipped
    assert "crashed: no summary.json" in skipped and "garbled/summary.json: unreadable JSON" in skipped
    assert "| all | 21 |" in md  # 20 sweep rows + the finished run dir
    assert (out / "report.html").is_file() and (out / "val-vs-step.png").is_file()


def test_an_empty_sweep_still_renders(tmp_path):
    sweep = tmp_path / "sweeps" / "nothing"
    sweep.mkdir(parents=True)
    (sweep / "results.csv").write_text("run,trial,config,seed,state,error\n")
    assert run_report(str(sweep), "-o", str(tmp_path / "out")) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "No complete run with a val loss" in md and "no runs: only the header" in md


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "absent", "no such directory"),
    (lambda d: (d / "f.txt").write_text("x") and d / "f.txt", "is a file"),
    (lambda d: (d / "plain").mkdir() or d / "plain", "holds no run or sweep records"),
])
def test_bad_paths_are_one_usage_error(tmp_path, make, message):
    with pytest.raises(UsageError, match=message):
        run_report(str(make(tmp_path)), "-o", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_top_must_be_positive(tmp_path):
    with pytest.raises(UsageError, match="--top must be >= 1, got 0"):
        run_report(str(tmp_path), "--top", "0")


def test_cli_exits_2_on_a_missing_directory(tmp_path, capsys):
    from microgpt import cli

    if "report" not in cli.build_parser()._subparsers._group_actions[0].choices:
        pytest.skip("cli.py does not wire `microgpt report` yet")
    assert cli.main(["report", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("microgpt: error: ") and "absent" in err and "\n" not in err


# ------------------------------------------------------------------------------------------------------- the plan

def test_seed_hypotheses_plan_has_one_factor_per_point():
    plan = tomllib.loads(PLAN.read_text())
    assert plan["mode"] == "grid" and plan["seeds"] == 3 and plan["pruner"] == "none"
    base = plan["base"]
    assert {k: base[k] for k in ("n_embd", "n_layer", "n_head", "block_size", "batch_size", "lr", "schedule")} == {
        "n_embd": 16, "n_layer": 1, "n_head": 4, "block_size": 16, "batch_size": 4, "lr": 0.01, "schedule": "cosine"}
    assert isinstance(base["steps"], int)
    found = hypotheses.parse(plan["hypotheses"], str(PLAN))
    assert [(h.name, h.predicted) for h in found] == [
        ("model size", 0.30), ("learning rate", 0.10), ("batch size", 0.15), ("layers", 0.08), ("lr schedule", 0.05),
        ("regularisation", 0.03), ("heads", 0.02), ("context", 0.01)]
    base_model, base_train = resolve(base)
    base_settings = {**to_dict(base_model), **to_dict(base_train)}
    matched = []
    for point in plan["points"]:
        model_cfg, train_cfg = resolve({**base, **point})  # every point is a valid configuration
        changed = tables.differences(base_settings, {**to_dict(model_cfg), **to_dict(train_cfg)})
        if not changed:
            continue  # the baseline itself
        hits = [h.name for h in found if set(changed) <= set(h.fields)]
        assert len(hits) == 1, (point, hits)
        matched += hits
    assert sorted(matched) == sorted(h.name for h in found)


# --------------------------------------------------------------------------------------------------- in a browser

def chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


# A click on "Hedges' g", the order recorded, a second click: the page's own script sorts in a real browser.
CLICK = """<script>
const th = [...document.querySelectorAll("th")].find(h => h.textContent === "Hedges' g");
const order = () => [...th.closest("table").tBodies[0].rows].map(r => r.cells[1].textContent).join(",");
th.click(); document.body.dataset.first = order(); th.click(); document.body.dataset.second = order();
</script>"""


@pytest.mark.slow  # starts a browser
def test_report_html_renders_and_sorts_in_headless_chromium(sweep_report, tmp_path):
    binary = chromium()
    if binary is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium)")
    _, out = sweep_report
    flags = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2000"]
    page = (out / "report.html").read_text()
    clicked = tmp_path / "clicked.html"
    clicked.write_text(page.replace("</body>", CLICK + "</body>"))
    dom = subprocess.run([*flags, "--dump-dom", clicked.as_uri()], capture_output=True, text=True, timeout=120).stdout
    sources = re.findall(r'<img alt="[^"]*" src="([^"]*)"', dom)
    assert len(sources) == page.count("<img ") == 8 and 'class="sortable"' in dom
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    first = re.search(r'data-first="([^"]*)"', dom).group(1).split(",")
    second = re.search(r'data-second="([^"]*)"', dom).group(1).split(",")
    numbers = ["b16", "lr2", "deep", "h8", "wide"]  # Hedges' g -7.98, 0.00, 7.98, 15.96, 57.45: as numbers, not text
    assert first[:5] == numbers and second[:5] == numbers[::-1]
    assert set(first[5:]) == set(second[5:]) == {"ctx", "base (baseline)", "pruned32", "bad"}  # no value: last
    assert re.search(r'<td data-sort="57\.\d+">57\.\d\d</td>', page)  # the number a click sorts by
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", (out / "report.html").as_uri()], capture_output=True, timeout=120)
    assert shot.is_file(), "chromium wrote no screenshot"
    from matplotlib import image

    pixels = image.imread(shot)
    assert pixels.shape[:2] == (2000, 1200) and pixels.std() > 0.05  # not a blank page


def _config(label: str, **settings) -> tables.Configuration:
    run = Run(label, "plan", label, 0, "complete", settings, {"val_loss": 2.0, "test_loss": 2.0}, None)
    return tables.Configuration(label, settings, [run])


def test_default_baseline_is_the_plans_base_with_the_defaults_filling_the_rest():
    records = Records(sweeps=[Sweep(Path("."), "plan", {"base": {"n_embd": 16}}, None)])
    one_factor = [_config("a", n_embd=16, dropout=0.0), _config("b", n_embd=16, dropout=0.1),
                  _config("c", n_embd=64, dropout=0.0)]
    baseline, how = tables.find_baseline(None, one_factor, records)
    assert baseline.label == "a" and "base point of plan plan" in how
    grid = [_config(f"{e}-{lr}", n_embd=e, lr=lr) for e in (16, 64) for lr in (0.01, 0.02)]
    assert tables.find_baseline(None, grid, records)[0].label == "16-0.01"  # lr open in base: the default, 0.01
    elsewhere = [_config(f"{e}-{lr}", n_embd=e, lr=lr) for e in (16, 64) for lr in (0.02, 0.03)]
    baseline, how = tables.find_baseline(None, elsewhere, records)
    assert baseline is None and how.startswith("none") and "--baseline" in how


def test_a_configuration_equal_to_a_preset_is_named_for_the_pareto_figure():
    model_cfg, train_cfg = resolve({}, "makemore")
    settings = {k: v for k, v in {**to_dict(model_cfg), **to_dict(train_cfg)}.items() if k not in ("seed", "samples")}
    assert tables.preset_of(_config("m", **settings)) == "makemore"
    assert tables.preset_of(_config("m", **{**settings, "lr": 0.01})) is None


def test_a_repeated_seed_counts_once(tmp_path):
    runs = tmp_path / "runs"
    run_dir_records(runs / "a-s0", BASE, 0, 2.30)
    run_dir_records(runs / "a-s0-again", BASE, 0, 2.30)  # the same configuration and seed, run twice
    run_dir_records(runs / "a-s1", BASE, 1, 2.34)
    out = tmp_path / "out"
    assert run_report(str(runs), "-o", str(out)) == 0
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert summary[0]["runs"] == "2" and float(summary[0]["test_loss_mean"]) == pytest.approx(2.32)
    assert "repeats seed 0" in (out / "report.md").read_text()


def test_ablation_rows_on_val(sweep_report):
    _, out = sweep_report
    md = (out / "report.md").read_text()
    assert "## Ablations" in md
    section = md.split("## Ablations", 1)[1].split("\n## ", 1)[0]
    rows = {line.split(" | ")[1]: line for line in section.splitlines() if " → " in line}
    val = lambda tests: [t - 0.02 for t in tests]  # noqa: E731  (run_dir_records: val = test - 0.02)
    wide = rows["wide"]
    p = sps.ttest_ind(val(SWEEP["base"][1]), val(SWEEP["wide"][1]), equal_var=False).pvalue
    assert "n_embd 16 → 64" in wide and "-0.7200" in wide and f"{p:.3g}" in wide and wide.endswith("| helps (lower val) |")
    assert rows["b16"].endswith("| hurts (higher val) |") and "+0.1000" in rows["b16"]
    assert rows["lr2"].endswith("| no significant difference |")
    assert rows["ctx"].endswith("| n < 2 |")
    order = [line.split(" | ")[1] for line in section.splitlines() if " → " in line]
    assert order[0] == "wide" and order[-1] == "b16"  # best val first


def test_ablations_plan_changes_one_technique_per_point():
    plan = tomllib.loads((REPO / "plans" / "ablations.toml").read_text())
    assert plan["mode"] == "grid" and plan["seeds"] >= 3 and plan["preset"] == "best"
    base_model, base_train = resolve(plan["base"], plan["preset"])
    base = {**to_dict(base_model), **to_dict(base_train)}
    changes = []
    for point in plan["points"]:
        model_cfg, train_cfg = resolve({**plan["base"], **point}, plan["preset"])
        changed = tables.differences(base, {**to_dict(model_cfg), **to_dict(train_cfg)})
        assert changed == [] or len(changed) == 1 or set(changed) == {"optimizer", "lr"}, (point, changed)
        changes.append(tuple((k, point[k]) for k in sorted(point) if k in changed))
    assert changes[0] == ()  # the first point is the recipe itself, the baseline
    wanted = {("optimizer", "adam"), ("optimizer", "rmsprop"), ("optimizer", "sgd"), ("optimizer", "muon"),
              ("schedule", "linear"), ("schedule", "exponential"), ("schedule", "wsd"), ("norm", "rmsnorm"),
              ("norm", "rmsnorm_gain"), ("final_norm", False), ("qk_norm", True), ("residual", False),
              ("grad_clip", 1.0), ("dropout", 0.0), ("weight_decay", 0.0), ("ema", 0.0), ("noise", 0.05),
              ("synthetic", 0.25), ("curriculum", 1000)}
    assert wanted <= {pair for change in changes for pair in change}
    assert base["schedule"] == "cosine" and base["optimizer"] == "adamw"  # the recipe's own choices are the baseline


# ------------------------------------------------------------------------------------------------------ a 2-D grid

# lr x n_embd, 2 seeds each; lr 0.02 with n_embd 32 is best. Base leaves n_embd open: the default (16) fills it.
GRID = {f"lr{lr}-e{e}": ({"lr": lr, "n_embd": e}, [2.40 + 4 * abs(lr - 0.02) - (e - 16) / 400 + d for d in (0, 0.01)])
        for lr in (0.01, 0.02, 0.03) for e in (16, 32)}


@pytest.fixture
def drawn(monkeypatch):
    """Every figure the report saves, by file name: its titles, axis labels and legend, and whether a title overlaps."""
    seen = {}
    save = figures._save

    def spy(fig, path, **options):
        fig.canvas.draw()  # lays the figure out as savefig will
        renderer = fig.canvas.get_renderer()
        top = fig._suptitle.get_window_extent(renderer).y0 if fig._suptitle else math.inf
        legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        seen[Path(path).name] = {
            "suptitle": fig._suptitle.get_text() if fig._suptitle else "",
            "titles": [ax.get_title() for ax in fig.axes], "xlabels": [ax.get_xlabel() for ax in fig.axes],
            "legend": [text.get_text() for legend in legends for text in legend.get_texts()],
            "overlap": any(ax.get_tightbbox(renderer).y1 > top for ax in fig.axes if ax.get_visible() and ax.axison)}
        return save(fig, path, **options)

    monkeypatch.setattr(figures, "_save", spy)
    return seen


def test_a_six_configuration_grid_shows_all_six_a_heatmap_and_the_base_as_baseline(tmp_path, drawn):
    base = {k: v for k, v in BASE.items() if k not in ("lr", "n_embd")}
    sweep = make_sweep(tmp_path, "grid", journal=False, configs=GRID, base={**base, "lr": 0.01},
                       grid={"lr": [0.01, 0.02, 0.03], "n_embd": [16, 32]}, failures=False)
    out = tmp_path / "out"
    assert run_report(str(sweep), "-o", str(out)) == 0
    md = (out / "report.md").read_text()
    assert "Baseline: lr0.01-e16, the base point of plan grid" in md  # lr from base, n_embd the default 16
    assert len(md_table(md, "rank")) == 6 and len(md_table(md, "config")) == 6  # every configuration, both tables
    best = md_table(md, "rank")[0]
    assert (best["config"], best["lr"], best["n_embd"]) == ("lr0.02-e32", "0.02", "32")
    for curve in ("val-vs-step.png", "val-vs-seconds.png"):
        assert len(drawn[curve]["legend"]) == 6  # six curves, the baseline's among them
    assert drawn["val-vs-step.png"]["titles"] == [
        "lr=0.02, n_embd=32 reaches the lowest val (2.3450), 0.0800 below the baseline (2.4250)"]
    heat = drawn["heatmap.png"]
    assert heat["titles"][0] == "Lowest mean val at lr=0.02, n_embd=32: 2.3450 (mean over seeds)"
    assert "](heatmap.png)" in md
    effects = drawn["param-effects.png"]
    assert effects["suptitle"].startswith("lr moves mean val the most") and not effects["overlap"]
    assert effects["xlabels"][:2] == ["lr", "n_embd"]  # 0.01-0.03 and 16-32 span < 4x: linear, not "log scale"
    assert "the baseline" in effects["legend"] and "mean per value (all runs; up to 8 values)" in effects["legend"]
    front = md.split("Pareto-optimal, fastest first: ", 1)[1].split("\n", 1)[0]
    assert front.startswith("lr0.02-e32")  # every run took the same seconds: the lowest val alone is optimal
    assert "pareto.png" in drawn and "## Ablations" in md
    ablations = md_table(md, "change")
    assert {r["config"] for r in ablations} == {"lr0.02-e16", "lr0.03-e16", "lr0.01-e32"}  # one grid step away


def test_many_configurations_show_the_top_ones_and_list_all(tmp_path, drawn):
    configs = {f"e{e}": ({"n_embd": e}, [2.5 - e / 1000, 2.51 - e / 1000]) for e in range(16, 16 + 4 * 13, 4)}
    sweep = make_sweep(tmp_path, "wide", journal=False, configs=configs, failures=False)
    assert run_report(str(sweep), "-o", str(tmp_path / "out")) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert len(md_table(md, "rank")) == 13 and "## Top 3 configurations: cost and stability" in md
    assert len(drawn["val-vs-step.png"]["legend"]) == 4  # the top 3 and the baseline
    assert drawn["param-effects.png"]["xlabels"] == ["n_embd (log scale)"]  # 16-64: spans 4x


def test_hypotheses_come_from_the_plan_file_or_plan_json(tmp_path):
    sweep = make_sweep(tmp_path, journal=False)
    plan = tmp_path / "mine.toml"
    plan.write_text('name = "x"\n[hypotheses.wider]\npredicted = 0.5\nchange = { n_embd = [16, 64] }\n')
    assert run_report(str(sweep), "--plan", str(plan), "-o", str(tmp_path / "a")) == 0
    rows = md_table((tmp_path / "a" / "report.md").read_text(), "hypothesis")
    assert [(r["hypothesis"], r["predicted reduction"], r["verdict"]) for r in rows] == [("wider", "50%", "smaller")]
    assert run_report(str(sweep), "-o", str(tmp_path / "b")) == 0
    assert "## The plan's hypotheses" not in (tmp_path / "b" / "report.md").read_text()  # nothing predicted
    stored = json.loads((sweep / "plan.json").read_text())
    stored["hypotheses"] = tomllib.loads(PLAN.read_text())["hypotheses"]
    (sweep / "plan.json").write_text(json.dumps(stored))
    assert run_report(str(sweep), "-o", str(tmp_path / "c")) == 0
    assert len(md_table((tmp_path / "c" / "report.md").read_text(), "hypothesis")) == 6


@pytest.mark.parametrize("text, message", [
    (None, "plan file not found"),
    ('name = "x"\n', "has no \\[hypotheses\\] table"),
    ("[hypotheses.a]\npredicted = \"big\"\nchange = { n_embd = [16, 64] }\n", "predicted must be"),
    ("[hypotheses.a]\npredicted = 0.1\nchange = { colour = [1, 2] }\n", "unknown setting 'colour'"),
])
def test_a_bad_plan_file_is_one_usage_error(tmp_path, text, message):
    sweep = make_sweep(tmp_path, journal=False)
    plan = tmp_path / "bad.toml"
    if text is not None:
        plan.write_text(text)
    with pytest.raises(UsageError, match=message):
        run_report(str(sweep), "--plan", str(plan), "-o", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_the_block_size_note_follows_the_data(tmp_path):
    runs = tmp_path / "runs"
    for block, tests in ((24, [2.30, 2.31]), (48, [2.30, 2.32])):  # data whose longest name fits 24 positions
        for seed, test in enumerate(tests):
            run_dir_records(runs / f"b{block}-s{seed}", {**BASE, "block_size": block}, seed, test)
    assert run_report(str(runs), "-o", str(tmp_path / "out")) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "block_size ≥ 24" in md and "more than 23 characters" in md and "block_size 48 cannot help" in md
    assert "15" not in md.split("## Each setting's effect", 1)[1].split("##", 1)[0]
    same = tmp_path / "same"
    for seed in (0, 1):
        run_dir_records(same / f"a-s{seed}", {**BASE, "block_size": 32}, seed, 2.3)
    run_dir_records(same / "b-s0", {**BASE, "block_size": 32, "lr": 0.02}, 0, 2.3)
    assert run_report(str(same), "-o", str(tmp_path / "out2")) == 0
    assert "cannot help" not in (tmp_path / "out2" / "report.md").read_text()  # one block_size: nothing to say


def test_a_two_objective_study_is_drawn_on_val(tmp_path, drawn):
    import optuna

    sweep = make_sweep(tmp_path, "fast", journal=False, configs=GRID, failures=False)
    plan = json.loads((sweep / "plan.json").read_text())
    (sweep / "plan.json").write_text(json.dumps({**plan, "objectives": ["val", "seconds"]}))
    journal = optuna.storages.journal.JournalFileBackend(str(sweep / "journal.log"))
    study = optuna.create_study(study_name="fast", storage=optuna.storages.JournalStorage(journal),
                                directions=["minimize", "minimize"])
    dists = {"n_embd": optuna.distributions.IntDistribution(16, 64),
             "lr": optuna.distributions.FloatDistribution(0.005, 0.05, log=True)}
    for overrides, tests in GRID.values():
        values = [statistics.fmean(tests) - 0.02, 100 * overrides["lr"]]  # val, and seconds that grow with lr
        study.add_trial(optuna.trial.create_trial(params=overrides, distributions=dists, values=values))
    (sweep / "storage.txt").write_text(f"journal:{sweep / 'journal.log'}\n")
    assert run_report(str(sweep), "-o", str(tmp_path / "out")) == 0
    assert drawn["parallel-coordinates.png"]["suptitle"] == (
        "6 complete trials of study fast; lowest val 2.3450 at lr=0.02, n_embd=32")
    assert drawn["param-importances.png"]["suptitle"].startswith("lr accounts for")


def test_the_pareto_front_is_what_nothing_beats_on_both():
    def timed(label: str, val: float, secs: float) -> tables.Configuration:
        run = Run(label, "s", label, 0, "complete", {"lr": val}, {"val_loss": val, "seconds_to_best": secs}, None)
        return tables.Configuration(label, {"lr": val}, [run])

    configs = [timed("a", 2.0, 100), timed("b", 2.1, 10), timed("c", 2.2, 50), timed("d", 2.05, 20),
               timed("e", 2.1, 10.5)]
    assert [c.label for c in tables.pareto_front(configs, "seconds_to_best")] == ["b", "d", "a"]
    assert tables.pareto_front(configs) == []  # no wall_seconds recorded: no front on them


def test_a_plans_hypotheses_reach_plan_json_and_the_report(tmp_path, names_data):
    from microgpt.plan import load_plan_file, plan_from_dict
    from microgpt.sweep import prepare

    raw = load_plan_file(PLAN)
    plan = plan_from_dict({**raw, "base": {**raw.get("base", {}), "steps": 2}})
    sweep_dir, _ = prepare(plan, tmp_path, None)
    stored = json.loads((sweep_dir / "plan.json").read_text())
    assert stored["hypotheses"] == raw["hypotheses"]
    assert hypotheses.parse(stored["hypotheses"], "plan.json")  # the report reads them without --plan


def test_a_setting_near_an_integer_is_not_shown_as_that_integer():
    # An EMA decay of 0.9995 at 3 significant digits would print "1", which reads as a different setting.
    assert tables.show(0.9995) == "0.9995"
    assert tables.show(0.99951234) == "0.9995"
    assert tables.show(0.002226647830267851) == "0.00223"
    assert tables.show(0.999) == "0.999"
    assert tables.show(1.0) == "1"
    assert tables.show(12000) == "12000"
