"""Sweeps: plans, completeness, faults (kill, divergence, exceptions, invalid points), storages, pruning, refine."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from microgpt.cli import main
from microgpt.config import UsageError
from microgpt.plan import load_plan_file, plan_from_dict
from microgpt.sweep import load_study, prepare, reconcile, refine_plan, trial_rows, work

REPO = Path(__file__).resolve().parents[1]
FAST = {"steps": 10, "eval_every": 5, "samples": 2}


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_shipped_plans_are_valid():
    plans = sorted((REPO / "plans").glob("*.toml"))
    assert {p.stem for p in plans} >= {"runner", "lr", "architecture", "dynamics", "search"}
    sizes = {}
    for path in plans:
        plan = plan_from_dict(load_plan_file(path), str(path))
        sizes[path.stem] = plan.total_runs()
    assert sizes["runner"] == 64 and sizes["lr"] == 36 and sizes["architecture"] == 108 and sizes["dynamics"] == 36


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"name": "x", "grid": {"lr": [0.1]}, "colour": "red"}, "unknown field(s) in plan: colour"),
        ({"name": "x", "grid": {"lr": []}}, "empty grid for 'lr'"),
        ({"name": "x", "grid": {"learning_rate": [0.1]}}, "unknown setting 'learning_rate'"),
        ({"name": "x", "mode": "tpe", "trials": 5, "space": {"lr": "0.1:0.01"}}, "malformed range for 'lr'"),
        ({"name": "x", "mode": "tpe", "trials": 5, "space": {"lr": "a:b:log"}}, "malformed range for 'lr'"),
        ({"name": "x", "mode": "tpe", "space": {"lr": "1e-4:1e-2:log"}}, "needs trials = N"),
        ({"name": "x", "grid": {"n_embd": ["wide"]}}, "setting 'n_embd' needs a int"),
        ({"name": "x", "grid": {"seed": [1, 2]}}, "use the plan's seeds"),
        ({"name": "x"}, "needs a non-empty [grid] or [[points]]"),
        ({"name": "x", "grid": {"lr": [0.1]}, "seeds": 0}, "seeds must be"),
    ],
)
def test_bad_plans(raw, message):
    with pytest.raises(UsageError) as err:
        plan_from_dict(raw)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--grid", "lr=0.1", "--grid", "colour=red"], "unknown setting 'colour'"),
        (["--grid", "lr="], "setting 'lr' needs a float"),
        (["--space", "lr=3:1:log", "--trials", "2"], "malformed range"),
        (["--grid", "lr=0.1", "--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot open storage"),
        (["--grid", "lr=0.1", "--storage", "notadb://x"], "cannot open storage"),
    ],
)
def test_bad_sweep_flags_are_one_line_exit_2_nothing_written(tmp_path, capsys, names_path, argv, message):
    code, _, err = cli(capsys, "sweep", *argv, "--data", str(names_path), "--out-dir", str(tmp_path / "sweeps"))
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "sweeps").exists()


def test_bad_plan_file(tmp_path, capsys):
    path = tmp_path / "p.toml"
    path.write_text("name = 'x'\n[grid\nlr = [1]\n")
    code, _, err = cli(capsys, "sweep", str(path), "--out-dir", str(tmp_path / "sweeps"))
    assert code == 2 and "not valid TOML" in err and not (tmp_path / "sweeps").exists()


def in_process(tmp_path, names_data, raw: dict, train_fn=None, stack: int = 1):
    """Prepare a sweep and run one worker in this process; returns (study, sweep_dir, plan)."""
    plan = plan_from_dict(raw)
    sweep_dir, url = prepare(plan, tmp_path, None)
    study = load_study(plan, url)
    reconcile(study, plan, sweep_dir, url)
    work(study, plan, names_data, sweep_dir, url, train_fn=train_fn, stack=stack)
    return study, sweep_dir, plan


def test_grid_runs_every_point_once_per_seed_and_records_it(tmp_path, names_data):
    raw = {"name": "g", "seeds": 2, "base": FAST, "grid": {"lr": [0.01, 0.02], "n_embd": [8, 16]},
           "points": [{"n_layer": 2}]}
    study, sweep_dir, plan = in_process(tmp_path, names_data, raw)
    rows = read_csv(sweep_dir / "results.csv")
    assert len(rows) == 5 * 2 == plan.total_runs()
    assert Counter((r["config"], r["seed"]) for r in rows).most_common(1)[0][1] == 1
    assert {(r["lr"], r["n_embd"], r["n_layer"]) for r in rows} == {
        ("0.01", "8", "1"), ("0.01", "16", "1"), ("0.02", "8", "1"), ("0.02", "16", "1"), ("0.01", "16", "2")}
    for r in rows:  # every row parses, matches its run directory, and the objective is val, never test
        assert r["state"] == "complete" and set(r) == set(rows[0])
        summary = json.loads((sweep_dir / r["run_dir"] / "summary.json").read_text())
        assert float(r["val_loss"]) == summary["val_loss"] and float(r["test_loss"]) == summary["test_loss"]
        trial = study.trials[int(r["trial"])]
        assert trial.value == summary["best_val"] != summary["test_loss"]
    # resuming a finished sweep runs nothing again
    again, _, _ = in_process(tmp_path, names_data, raw)
    assert len(read_csv(sweep_dir / "results.csv")) == 10


def test_invalid_diverged_and_raising_runs_are_recorded(tmp_path, names_data):
    from microgpt.train import train

    def flaky(model_cfg, cfg, data, **kw):
        if cfg.batch_size == 3:
            raise RuntimeError("boom: simulated crash")
        return train(model_cfg, cfg, data, **kw)

    raw = {"name": "faults", "base": FAST,
           "points": [{"n_embd": 16, "n_head": 12}, {"lr": 1e6, "optimizer": "sgd", "momentum": 0.0},
                      {"batch_size": 3}, {"lr": 0.01}]}
    _, sweep_dir, _ = in_process(tmp_path, names_data, raw, train_fn=flaky)
    rows = {r["run"]: r for r in read_csv(sweep_dir / "results.csv")}
    states = sorted(r["state"] for r in rows.values())
    assert states == ["complete", "diverged", "failed", "invalid"]
    by_state = {r["state"]: r for r in rows.values()}
    assert "not divisible" in by_state["invalid"]["error"]
    assert "RuntimeError: boom" in by_state["failed"]["error"]
    assert "became" in by_state["diverged"]["error"]


@pytest.mark.slow
def test_tpe_with_asha_prunes_and_spends_fewer_steps_than_grid(tmp_path, names_data):
    base = {"steps": 60, "eval_every": 5, "samples": 0, "batch_size": 4}
    lrs = [0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.0005, 0.002, 0.005, 0.02, 0.05, 0.2]
    _, grid_dir, _ = in_process(tmp_path, names_data, {"name": "grid", "base": base, "grid": {"lr": lrs}})
    _, tpe_dir, plan = in_process(tmp_path, names_data, {
        "name": "tpe", "mode": "tpe", "trials": 12, "pruner": "asha", "base": base, "space": {"lr": "1e-4:0.3:log"}})
    grid_rows, tpe_rows = read_csv(grid_dir / "results.csv"), read_csv(tpe_dir / "results.csv")
    assert len(grid_rows) == len(tpe_rows) == 12
    assert any(r["state"] == "pruned" for r in tpe_rows)
    steps = lambda rows: sum(int(r["steps_done"]) for r in rows)  # noqa: E731
    assert steps(tpe_rows) < steps(grid_rows) == 12 * 60


@pytest.mark.parametrize("mode", ["random", "tpe"])
def test_parallel_workers_draw_different_configurations(tmp_path, mode):
    from microgpt.sweep import claim

    plan = plan_from_dict({"name": "w", "mode": mode, "trials": 6, "base": FAST,
                           "space": {"lr": "1e-4:1e-1:log", "dropout": "0.0:0.5"}})
    sweep_dir, url = prepare(plan, tmp_path, None)
    workers = [load_study(plan, url) for _ in range(3)]  # as three worker processes each open the study
    drawn = [claim(study, plan, sweep_dir, url, {})[0][1] for study in workers]
    assert len({(p["lr"], p["dropout"]) for p in drawn}) == 3


def test_seeds_of_a_tpe_configuration_share_it(tmp_path, names_data):
    _, sweep_dir, _ = in_process(tmp_path, names_data, {
        "name": "s", "mode": "random", "trials": 2, "seeds": [5, 6], "base": FAST,
        "space": {"lr": "1e-3:1e-2:log", "activation": ["relu", "gelu"]}})
    rows = read_csv(sweep_dir / "results.csv")
    assert len(rows) == 4
    by_config: dict[str, list] = {}
    for r in rows:
        by_config.setdefault(r["config"], []).append((r["lr"], r["activation"], r["seed"]))
    assert len(by_config) == 2
    for runs in by_config.values():
        assert len({(lr, act) for lr, act, _ in runs}) == 1 and sorted(s for *_, s in runs) == ["5", "6"]


def test_export_regenerates_results(tmp_path, capsys, names_data, names_path):
    _, sweep_dir, _ = in_process(tmp_path, names_data, {"name": "e", "base": FAST, "grid": {"lr": [0.01, 0.02]}})
    before = (sweep_dir / "results.csv").read_text()
    (sweep_dir / "results.csv").unlink()
    code, out, _ = cli(capsys, "sweep", "export", str(sweep_dir))
    assert code == 0 and "2 runs" in out and (sweep_dir / "results.csv").read_text() == before


@pytest.mark.slow
def test_refine_narrows_around_the_best(tmp_path, names_data):
    _, sweep_dir, _ = in_process(tmp_path, names_data, {
        "name": "r", "base": FAST, "grid": {"lr": [0.001, 0.01, 0.1], "activation": ["relu", "gelu"], "n_embd": [8, 16]}})
    plan = refine_plan(sweep_dir, top=2, trials=4)
    assert plan.mode == "tpe" and plan.trials == 4 and plan.name == "r-refine"
    dims = {d.name: d for d in plan.space}
    rows = read_csv(sweep_dir / "results.csv")
    best = sorted(rows, key=lambda r: float(r["val_loss"]))[:2]
    lrs = [float(r["lr"]) for r in best]
    assert "lr" in dims and dims["lr"].low <= min(lrs) and dims["lr"].high >= max(lrs)
    plan2 = refine_plan(sweep_dir, top=12, trials=4)  # every width of the grid: the refined widths keep its spacing
    assert {d.name: d for d in plan2.space}["n_embd"].choices == (8, 16, 24)
    assert dims["lr"].high / dims["lr"].low < 0.1 / 0.001  # narrower than the original range


def run_cli_sweep(tmp_path, names_path, *extra, **popen):
    cmd = [sys.executable, "-m", "microgpt", "sweep", "--data", str(names_path), "--out-dir", str(tmp_path), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def running_trial(journal: Path, name: str, after_one_done: bool = True):
    """A run in flight (after_one_done: once another has finished), read from the sweep's journal the way a second
    process would."""
    import optuna
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    if not journal.is_file():
        return None
    try:
        study = optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal))))
    except KeyError:
        return None
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    running = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING and "pid" in t.user_attrs]
    return running[0] if (done or not after_one_done) and running else None


@pytest.mark.slow
@pytest.mark.parametrize("stack", [1, 3])
def test_killed_worker_run_is_redone_by_the_survivor_and_the_sweep_says_so(tmp_path, names_path, stack):
    args = ["--grid", "lr=0.002,0.004,0.006,0.008,0.01,0.012", "-s", "400", "--eval-every", "100",
            "--workers", "2", "--name", "k", "--samples", "0", "--stack", str(stack)]
    proc = run_cli_sweep(tmp_path, names_path, *args)
    victim, deadline = None, time.time() + 120
    while victim is None and time.time() < deadline:  # a stack of 3 is the worker's whole share: kill it mid-stack
        victim = running_trial(tmp_path / "k" / "journal.log", "k", after_one_done=stack == 1)
        time.sleep(0.1)
    assert victim is not None, "no run was ever in flight"
    os.kill(victim.user_attrs["pid"], signal.SIGKILL)  # one worker dies mid-run; the other finishes the grid
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "1 worker(s) exited abnormally" in out and "every point is recorded" in out, out
    rows = read_csv(tmp_path / "k" / "results.csv")
    assert sorted(r["lr"] for r in rows) == ["0.002", "0.004", "0.006", "0.008", "0.01", "0.012"]
    assert all(r["state"] == "complete" for r in rows)  # the dead run's failed attempt is in the storage, not here
    import optuna
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="k", storage=optuna.storages.JournalStorage(
        JournalFileBackend(str(tmp_path / "k" / "journal.log"))))
    dead = [t for t in study.trials if t.user_attrs.get("redone")]
    # every run the victim's worker held dies with it and is redone: its stack of 3 or its one run (or, with one
    # run at a time, the next one if it moved on between our read and the kill)
    assert len(dead) == stack and all("died mid-run" in t.user_attrs["error"] for t in dead)
    assert {t.user_attrs["worker"] for t in dead} == {victim.user_attrs["worker"]}

    again = run_cli_sweep(tmp_path, names_path, *args)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and "done   6 runs recorded: 6 complete" in out, out


KILL_AFTER_ASK = """
import os, signal, sys
from pathlib import Path
import optuna
from microgpt.data import load_dataset
from microgpt.plan import plan_from_dict
from microgpt.sweep import load_study, work
import json

sweep_dir = Path(sys.argv[1])
plan = plan_from_dict(json.loads((sweep_dir / "plan.json").read_text()))
ask = optuna.Study.ask
def ask_then_die(self, *a, **k):
    ask(self, *a, **k)  # the point is claimed in the storage; the process dies before it names its worker
    os.kill(os.getpid(), signal.SIGKILL)
optuna.Study.ask = ask_then_die
url = (sweep_dir / "storage.txt").read_text().strip()
work(load_study(plan, url), plan, load_dataset(sys.argv[2]), sweep_dir, url)
"""


@pytest.mark.slow
def test_a_worker_killed_between_claiming_a_point_and_starting_it_strands_nothing(tmp_path, names_path, names_data):
    raw = {"name": "c", "base": FAST, "grid": {"lr": [0.01, 0.02, 0.03]}}
    plan = plan_from_dict(raw)
    sweep_dir, url = prepare(plan, tmp_path, None)
    reconcile(load_study(plan, url), plan, sweep_dir, url)
    dying = subprocess.run([sys.executable, "-c", KILL_AFTER_ASK, str(sweep_dir), str(names_path)], timeout=120)
    assert dying.returncode == -signal.SIGKILL
    study = load_study(plan, url)
    stranded = [t for t in study.trials if t.state.name == "RUNNING"]
    assert len(stranded) == 1 and "worker" not in stranded[0].user_attrs
    assert reconcile(study, plan, sweep_dir, url)["redone"] == 1
    work(study, plan, names_data, sweep_dir, url)
    rows = read_csv(sweep_dir / "results.csv")
    assert sorted(r["lr"] for r in rows) == ["0.01", "0.02", "0.03"] and all(r["state"] == "complete" for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("stack", [1, 2])
def test_ctrl_c_stops_a_sweep_cleanly_and_it_resumes(tmp_path, names_path, stack):
    args = ["--grid", "lr=0.002,0.004,0.006,0.008", "-s", "600", "--eval-every", "100", "--workers", "2",
            "--name", "i", "--samples", "0", "--stack", str(stack)]
    proc = run_cli_sweep(tmp_path, names_path, *args, start_new_session=True)
    deadline = time.time() + 120
    # one at a time: stop once a run is recorded and others are in flight; stacks of 2: while both are in flight
    while running_trial(tmp_path / "i" / "journal.log", "i", after_one_done=stack == 1) is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: every process of the group gets it
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "run the same command again to resume" in out
    done = [r for r in read_csv(tmp_path / "i" / "results.csv")]
    assert (1 if stack == 1 else 0) <= len(done) < 4 and all(r["state"] == "complete" for r in done)
    assert len(list((tmp_path / "i" / "runs").iterdir())) == len(done)  # the abandoned runs left no directory

    again = run_cli_sweep(tmp_path, names_path, *args)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    rows = read_csv(tmp_path / "i" / "results.csv")
    assert sorted(r["lr"] for r in rows) == ["0.002", "0.004", "0.006", "0.008"]
    assert {r["run"] for r in done} <= {r["run"] for r in rows}  # finished runs were kept, not rerun


@pytest.mark.slow
def test_a_torn_journal_tail_is_set_aside_and_the_sweep_resumes(tmp_path, capsys, names_path):
    args = ["sweep", "--grid", "lr=0.01,0.02", "-s", "10", "--eval-every", "5", "--samples", "0", "--name", "t",
            "--data", str(names_path), "--out-dir", str(tmp_path)]
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    journal = tmp_path / "t" / "journal.log"
    whole = journal.read_bytes()
    last = whole[:-1].rfind(b"\n") + 1
    journal.write_bytes(whole[: last + (len(whole) - last) // 2])  # a crash halfway through the last record
    code, out, err = cli(capsys, "sweep", "export", str(tmp_path / "t"))
    assert code == 0, err
    assert "last line was torn" in out
    side = list((tmp_path / "t").glob("journal.log.torn-*"))
    assert len(side) == 1 and side[0].read_bytes() == whole[last: last + (len(whole) - last) // 2]
    code, out, err = cli(capsys, *args)
    assert code == 0, out + err
    rows = read_csv(tmp_path / "t" / "results.csv")
    assert sorted(r["lr"] for r in rows) == ["0.01", "0.02"] and all(r["state"] == "complete" for r in rows)
    code, _, err = cli(capsys, "sweep", "export", str(tmp_path / "t"))
    assert code == 0, err


@pytest.mark.slow
def test_refine_from_the_command_line(tmp_path, capsys, names_data, names_path):
    _, sweep_dir, _ = in_process(tmp_path, names_data, {
        "name": "base", "base": FAST, "grid": {"lr": [0.003, 0.01, 0.03], "n_embd": [8, 16]}})
    code, out, err = cli(capsys, "sweep", "--refine", str(sweep_dir), "--top", "2", "--trials", "2",
                         "--data", str(names_path), "--out-dir", str(tmp_path), "--workers", "1")
    assert code == 0, err
    assert (tmp_path / "base-refine.toml").is_file() and "refined around the top 2" in out
    rows = read_csv(tmp_path / "base-refine" / "results.csv")
    assert len(rows) == 2 and all(r["state"] in ("complete", "pruned") for r in rows)


@pytest.mark.slow
def test_eight_workers_on_one_journal_record_every_run_once(tmp_path, names_path):
    proc = run_cli_sweep(tmp_path, names_path, "--grid", "lr=" + ",".join(str(0.001 * i) for i in range(1, 9)),
                         "--grid", "n_embd=8,16", "-s", "5", "--eval-every", "5", "--samples", "0",
                         "--workers", "8", "--name", "eight")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    rows = read_csv(tmp_path / "eight" / "results.csv")
    assert len(rows) == 16 and all(r["state"] == "complete" for r in rows)
    assert len({(r["config"], r["seed"]) for r in rows}) == 16
    assert len(list((tmp_path / "eight" / "runs").iterdir())) == 16


@pytest.fixture(scope="session")
def postgres_url():
    url = os.environ.get("MICROGPT_TEST_PG")
    if not url:
        pytest.skip("no PostgreSQL server: MICROGPT_TEST_PG is unset (.ci/run starts one and sets it)")
    return url


@pytest.mark.slow
def test_workers_on_two_processes_share_one_postgres_study(tmp_path, names_path, postgres_url):
    name = f"pg{os.getpid()}{int(time.time())}"
    grid = ["--grid", "lr=0.001,0.002,0.003,0.004,0.005,0.006", "-s", "5", "--eval-every", "5", "--samples", "0"]
    import optuna

    first = run_cli_sweep(tmp_path / "a", names_path, *grid, "--workers", "2", "--name", name, "--storage", postgres_url)
    deadline = time.monotonic() + 120  # --join needs the study: wait until the first machine has created it
    while name not in optuna.study.get_all_study_names(storage=postgres_url) and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()[0]
        time.sleep(0.2)
    second = run_cli_sweep(tmp_path / "b", names_path, "--join", name, "--storage", postgres_url, "--workers", "2")
    out_a, _ = first.communicate(timeout=600)
    out_b, _ = second.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, out_a + out_b

    study = optuna.load_study(study_name=name, storage=postgres_url)
    rows = trial_rows(study)
    assert len(rows) == 6 and all(r["state"] == "complete" for r in rows)
    # one hostname, two live machines: neither took the other's runs for dead
    assert not any(t.user_attrs.get("redone") for t in study.trials) and len(study.trials) == 6
    assert len({(r["config"], r["seed"]) for r in rows}) == 6
    local = len(list((tmp_path / "a" / name / "runs").iterdir())) + len(list((tmp_path / "b" / name / "runs").iterdir()))
    assert local == 6


@pytest.mark.slow  # starts a web server
def test_dashboard_serves_the_study(tmp_path, names_data):
    pytest.importorskip("optuna_dashboard")
    import socket
    import urllib.request

    _, sweep_dir, _ = in_process(tmp_path, names_data, {"name": "d", "base": FAST, "grid": {"lr": [0.01]}})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "microgpt", "dashboard", str(sweep_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        body = None
        for _ in range(100):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert body is not None and '"d"' in body
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def pg_study(url: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=url)


@pytest.mark.slow
def test_a_worker_dead_on_another_machine_is_redone_by_the_machine_that_joins(tmp_path, names_path, postgres_url):
    name = f"dead{os.getpid()}{int(time.time())}"
    grid = ["--grid", "lr=0.002,0.004,0.006", "-s", "300", "--eval-every", "100", "--samples", "0"]
    a = run_cli_sweep(tmp_path / "a", names_path, *grid, "--workers", "1", "--name", name, "--storage", postgres_url,
                      "--heartbeat", "1", start_new_session=True)
    victim, deadline = None, time.time() + 120
    while victim is None and time.time() < deadline:
        try:
            running = [t for t in pg_study(postgres_url, name).trials if t.state.name == "RUNNING"]
            victim = running[0] if running and "worker" in running[0].user_attrs else None
        except KeyError:
            pass
        time.sleep(0.2)
    assert victim is not None
    os.killpg(a.pid, signal.SIGKILL)  # machine A is gone: its main process and its worker, no goodbye
    a.communicate(timeout=30)
    b = run_cli_sweep(tmp_path / "b", names_path, "--join", name, "--storage", postgres_url, "--workers", "1")
    out, _ = b.communicate(timeout=300)
    assert b.returncode == 0, out
    rows = trial_rows(pg_study(postgres_url, name))
    assert sorted(r["lr"] for r in rows) == [0.002, 0.004, 0.006] and all(r["state"] == "complete" for r in rows)
    dead = [t for t in pg_study(postgres_url, name).trials if t.user_attrs.get("redone")]
    # A's one worker held all three as one stack (--stack auto: 3 runs / 1 worker), each beating its heartbeat
    assert sorted(t.number for t in dead) == [0, 1, 2] and victim.number in {t.number for t in dead}
    assert all(victim.user_attrs["worker"] in t.user_attrs["error"] for t in dead)


@pytest.mark.slow
def test_the_database_password_is_never_written_or_printed(tmp_path, names_path, postgres_url):
    from urllib.parse import urlsplit

    parts = urlsplit(postgres_url)  # the CI server trusts loopback, so any password is accepted: we only watch it
    with_userinfo = postgres_url.replace(f"{parts.username}@", f"{parts.username}:pw-s3cret@")
    with_query = postgres_url + "?password=q-s3cret"
    for i, url in enumerate((with_userinfo, with_query)):
        name = f"secret{i}{os.getpid()}{int(time.time())}"
        proc = run_cli_sweep(tmp_path, names_path, "--grid", "lr=0.01,0.02", "-s", "5", "--eval-every", "5",
                             "--samples", "0", "--name", name, "--storage", url)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        assert "s3cret" not in out and "***" in out
        written = [p for p in (tmp_path / name).rglob("*") if p.is_file()]
        assert written and not any(b"s3cret" in p.read_bytes() for p in written)
        stored = (tmp_path / name / "storage.txt").read_text().strip()
        assert stored.startswith("postgresql") and "password" not in stored
        export = subprocess.run([sys.executable, "-m", "microgpt", "sweep", "export", str(tmp_path / name)],
                                capture_output=True, text=True, timeout=120)
        assert export.returncode == 0 and "2 runs" in export.stdout, export.stderr


def test_urls_are_redacted_and_stored_without_password():
    from microgpt.sweep import redact, scrub, storable

    assert redact("postgresql://u:p%40ss@h:5/db") == "postgresql://u:***@h:5/db"
    assert storable("postgresql://u:p%40ss@h:5/db") == "postgresql://u@h:5/db"
    assert redact("postgresql://u@h/db?sslmode=require&password=zz") == "postgresql://u@h/db?password=***&sslmode=require"
    assert storable("postgresql://u@h/db?password=zz&sslmode=require") == "postgresql://u@h/db?sslmode=require"
    assert scrub('FATAL: password "p@ss" rejected', "postgresql://u:p%40ss@h/db") == 'FATAL: password "***" rejected'
    assert redact("journal:/x/journal.log") == storable("journal:/x/journal.log") == "journal:/x/journal.log"


@pytest.mark.slow
def test_a_sweep_over_split_seeds_trains_each_run_on_its_own_split(tmp_path, capsys, names_data, names_path):
    base = {"steps": 30, "eval_every": 30, "samples": 0}
    _, sweep_dir, _ = in_process(tmp_path, names_data, {"name": "splits", "base": base, "grid": {"split_seed": [1, 3407]}})
    rows = {r["split_seed"]: r for r in read_csv(sweep_dir / "results.csv")}
    assert rows["1"]["val_loss"] != rows["3407"]["val_loss"]
    for split_seed, row in rows.items():
        config = json.loads((sweep_dir / row["run_dir"] / "config.json").read_text())
        assert config["train"]["split_seed"] == config["data"]["split_seed"] == int(split_seed)
    code, _, err = cli(capsys, "train", "-s", "30", "--eval-every", "30", "--samples", "0", "--seed", "0",
                       "--split-seed", "1", "--data", str(names_path), "--out-dir", str(tmp_path), "--name", "one")
    assert code == 0, err
    alone = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert float(rows["1"]["val_loss"]) == alone["val_loss"] and float(rows["1"]["test_loss"]) == alone["test_loss"]


def test_a_two_objective_search_tells_val_and_seconds(tmp_path, names_data):
    study, sweep_dir, plan = in_process(tmp_path, names_data, {
        "name": "mo", "mode": "tpe", "trials": 4, "objectives": ["val", "seconds"], "base": FAST,
        "space": {"n_embd": [8, 16, 32], "lr": "1e-3:3e-2:log"}})
    rows = {int(r["trial"]): r for r in read_csv(sweep_dir / "results.csv")}
    assert len(rows) == 4 and study.directions == [study.directions[0]] * 2
    for t in study.trials:
        row = rows[t.number]
        assert t.values == [float(row["best_val"]), float(row["seconds_to_best"])]
        assert 0 < float(row["seconds_to_best"]) <= float(row["wall_seconds"])
    assert 1 <= len(study.best_trials) <= 4  # the Pareto front
    with pytest.raises(UsageError, match="cannot prune"):
        plan_from_dict({"name": "x", "mode": "tpe", "trials": 2, "objectives": ["val", "seconds"], "pruner": "asha",
                        "space": {"lr": "1e-3:1e-2"}})
    with pytest.raises(UsageError, match="objectives must be"):
        plan_from_dict({"name": "x", "grid": {"lr": [0.1]}, "objectives": ["test"]})


# ------------------------------------------------------------------------------------------- stacks (stacked.py)

def test_a_stacked_grid_records_what_one_run_at_a_time_records(tmp_path, names_data):
    raw = {"name": "g", "seeds": 2, "base": {**FAST, "steps": 20}, "grid": {"lr": [0.01, 0.03], "n_embd": [8, 16],
                                                                            "batch_size": [1, 4]}}
    _, one_dir, plan = in_process(tmp_path / "one", names_data, raw)
    _, stacked_dir, _ = in_process(tmp_path / "stacked", names_data, raw, stack=8)
    one, stacked = read_csv(one_dir / "results.csv"), read_csv(stacked_dir / "results.csv")
    assert len(one) == len(stacked) == plan.total_runs() == 16
    key = lambda r: (r["config"], r["seed"])  # noqa: E731
    stacked_by = {key(r): r for r in stacked}
    for r in one:
        s = stacked_by[key(r)]
        assert s["state"] == r["state"] == "complete"
        for figure in ("val_loss", "test_loss", "train_loss"):
            assert float(s[figure]) == pytest.approx(float(r[figure]), abs=2e-6)
    assert len(list((stacked_dir / "runs").iterdir())) == 16  # one run directory per member


def test_grid_points_of_one_shape_are_queued_together(tmp_path):
    from microgpt.sweep import stack_size

    plan = plan_from_dict({"name": "q", "base": FAST, "grid": {"lr": [0.01, 0.02], "n_embd": [8, 16],
                                                               "batch_size": [1, 2]}})
    sweep_dir, url = prepare(plan, tmp_path, None)
    study = load_study(plan, url)
    reconcile(study, plan, sweep_dir, url)
    widths = [t.params.get("n_embd", t.system_attrs.get("fixed_params", {}).get("n_embd")) for t in study.trials]
    assert widths == [8] * 4 + [16] * 4
    assert stack_size(plan, 2) == 4 and stack_size(plan, 16) == 1
    assert stack_size(plan_from_dict({"name": "t", "mode": "tpe", "trials": 40, "space": {"lr": "1e-3:1e-2"}}), 2) == 4
    timed = plan_from_dict({"name": "s", "mode": "tpe", "trials": 40, "objectives": ["val", "seconds"],
                            "space": {"lr": "1e-3:1e-2"}})
    assert stack_size(timed, 2) == 1  # a speed search times each run alone


def test_pruning_stops_members_of_a_stacked_tpe_search(tmp_path, names_data):
    base = {"steps": 60, "eval_every": 5, "samples": 0, "batch_size": 4}
    _, tpe_dir, _ = in_process(tmp_path, names_data, {
        "name": "tpe", "mode": "tpe", "trials": 12, "pruner": "asha", "base": base, "space": {"lr": "1e-4:0.3:log"}},
        stack=4)
    rows = read_csv(tpe_dir / "results.csv")
    assert len(rows) == 12 and any(r["state"] == "pruned" for r in rows) and any(r["state"] == "complete" for r in rows)
    pruned = [r for r in rows if r["state"] == "pruned"]
    assert all(int(r["steps_done"]) < 60 for r in pruned)  # stopped early while the rest of its stack went on


def test_a_speed_search_refuses_stacks(tmp_path, names_path, capsys):
    from microgpt.cli import main

    plan = Path(__file__).resolve().parents[1] / "plans" / "fast.toml"
    assert main(["sweep", str(plan), "--stack", "2", "--data", str(names_path), "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "share one clock: use --stack 1" in err and err.count("\n") == 1 and not any(tmp_path.iterdir())
