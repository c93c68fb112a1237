"""Faults from input and from the disk: every one is a single line on stderr with exit 2 (bad input) or 1 (the
system failed), never a traceback, never a half-written file or run directory, never an unbounded allocation."""

import csv
import dataclasses
import json
import math
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from microgpt import files
from microgpt.cli import main
from microgpt.config import MAX_SAMPLES, ModelConfig, TrainConfig, UsageError, resolve
from microgpt.data import load_words
from microgpt.plan import plan_from_dict


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


# ------------------------------------------------------------------------------------------------- atomic writes

@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failed_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, failing):
    target = tmp_path / "summary.json"
    target.write_text("old")

    def broken(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, failing, broken)
    with pytest.raises(OSError, match="No space left"):
        files.write_atomic(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_atomic_write_syncs_the_file_and_then_its_directory(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    files.write_atomic(tmp_path / "a.txt", b"payload")
    assert (tmp_path / "a.txt").read_bytes() == b"payload"
    assert synced == [False, True]  # the file's bytes before the rename, the directory entry after it


# ------------------------------------------------------------------------------------------------ non-finite floats

FLOAT_FIELDS = [f.name for cls in (ModelConfig, TrainConfig) for f in dataclasses.fields(cls) if f.type == "float"]


def test_the_configs_have_float_fields():
    assert {"lr", "dropout", "init_std", "target", "temperature", "eps"} <= set(FLOAT_FIELDS)


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_every_float_setting_must_be_finite(name, value):
    with pytest.raises(UsageError, match=f"{name} must be a finite number, got {value!r}"):
        resolve({name: value})


@pytest.mark.parametrize("flag, value", [
    ("--lr", "inf"), ("--weight-decay", "inf"), ("--init-std", "inf"), ("--muon-lr", "inf"), ("--eps", "nan"),
    ("--grad-clip", "nan"), ("--temperature", "inf"), ("--target", "nan"), ("--dropout", "nan"), ("--ema", "nan"),
])
def test_train_rejects_a_non_finite_flag(tmp_path, capsys, tiny_file, flag, value):
    code, _, err = run(capsys, "train", "--data", tiny_file, "-s", "2", "--out-dir", tmp_path / "runs", flag, value)
    assert code == 2 and one_line(err), err
    assert f"{flag[2:].replace('-', '_')} must be a finite number, got {value}" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_sample_rejects_a_non_finite_temperature(tmp_path, capsys, value):
    code, _, err = run(capsys, "sample", tmp_path, "-t", value)
    assert code == 2 and one_line(err) and f"-t must be a finite number > 0, got {value}" in err


@pytest.mark.parametrize("argv, message", [
    (["--grid", "lr=0.01,inf"], "setting 'lr' needs a finite number, got inf"),
    (["--grid", "n_embd=8,16", "--dropout", "nan"], "setting 'dropout' needs a finite number, got nan"),
    (["--space", "lr=1e-3:inf", "--trials", "2"], "malformed range for 'lr'"),
])
def test_sweep_rejects_a_non_finite_setting_before_writing(tmp_path, capsys, tiny_file, argv, message):
    code, _, err = run(capsys, "sweep", *argv, "--data", tiny_file, "--out-dir", tmp_path / "sweeps")
    assert code == 2 and one_line(err) and message in err, err
    assert not (tmp_path / "sweeps").exists()


# ------------------------------------------------------------------------------------------- out dir and run names

def tree(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_out_dir_that_is_a_file(tmp_path, capsys, tiny_file, command):
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory\n")
    extra = ["-s", "2"] if command == "train" else ["--grid", "lr=0.01", "-s", "2"]
    for out_dir in (blocker, blocker / "deeper"):
        before = tree(tmp_path)
        code, _, err = run(capsys, command, *extra, "--data", tiny_file, "--out-dir", out_dir)
        assert code == 2 and one_line(err), err
        assert f"{blocker} is a file, not a directory" in err and "--out-dir" in err
        assert tree(tmp_path) == before and blocker.read_text() == "not a directory\n"


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory even root cannot write to: a read-only tmpfs mounted on it."""
    path = tmp_path / "ro"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_read_only_out_dir(capsys, tiny_file, read_only_dir, command):
    extra = ["-s", "2"] if command == "train" else ["--grid", "lr=0.01", "-s", "2"]
    for out_dir in (read_only_dir, read_only_dir / "sub"):
        code, _, err = run(capsys, command, *extra, "--data", tiny_file, "--out-dir", out_dir)
        assert code == 2 and one_line(err), err
        assert f"cannot create {command if command == 'sweep' else 'run'} directory under" in err
        assert "Read-only file system; pass --out-dir to a writable directory" in err
    assert list(read_only_dir.iterdir()) == []


BAD_NAMES = ["a/b/c", "../escape", "ABS", ".", "..", "", ".hidden"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_train_name_must_be_one_plain_component(tmp_path, capsys, tiny_file, name):
    name = str(tmp_path / "abs") if name == "ABS" else name
    out_dir = tmp_path / "sub" / "runs"
    code, _, err = run(capsys, "train", "--data", tiny_file, "-s", "2", "--out-dir", out_dir, "--name", name)
    assert code == 2 and one_line(err), err
    assert f"--name must be a plain directory name (no '/', not starting with '.'), got {name!r}" in err
    assert tree(tmp_path) == ["tiny.txt"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_sweep_name_must_be_one_plain_component(tmp_path, capsys, tiny_file, name):
    name = str(tmp_path / "abs") if name == "ABS" else name
    out_dir = tmp_path / "sub" / "sweeps"
    code, _, err = run(capsys, "sweep", "--grid", "lr=0.01", "-s", "2", "--data", tiny_file, "--out-dir", out_dir,
                       "--name", name)
    assert code == 2 and one_line(err), err
    assert f"--name must be a plain directory name (no '/', not starting with '.'), got {name!r}" in err
    plan = tmp_path / "plan.toml"
    plan.write_text(f"name = {json.dumps(name)}\n[grid]\nlr = [0.01]\n")
    code, _, err = run(capsys, "sweep", plan, "-s", "2", "--data", tiny_file, "--out-dir", out_dir)
    assert code == 2 and one_line(err), err
    assert f"the name in {plan} must be a plain directory name" in err
    assert tree(tmp_path) == ["plan.toml", "tiny.txt"]


# ----------------------------------------------------------------------------------------------------- plan shapes

@pytest.mark.parametrize("raw, message", [
    ({"grid": 5}, "grid in plan must be a table of settings ([grid] in TOML), got 5"),
    ({"grid": [0.01]}, "grid in plan must be a table"),
    ({"mode": "tpe", "trials": 2, "space": 5}, "space in plan must be a table of settings ([space] in TOML), got 5"),
    ({"grid": {"lr": [0.01]}, "base": 5}, "base in plan must be a table of settings ([base] in TOML), got 5"),
    ({"points": 5}, "points in plan must be a list of tables ([[points]] in TOML), got 5"),
    ({"points": [5]}, "each [[points]] entry must be a non-empty table of settings, got 5"),
    ({"grid": {"lr": [0.01]}, "preset": ["best"]}, "unknown preset ['best']"),
    ({"grid": {"lr": [0.01]}, "data": 5}, "data in plan must be a file path (a string), got 5"),
    ({"grid": {"lr": [0.01]}, "workers": True}, "workers must be an integer >= 1, got True"),
    ({"mode": "tpe", "trials": 2, "space": {"lr": {"choices": 5}}}, "empty or malformed choices for 'lr': 5"),
])
def test_malformed_plan_fields_are_usage_errors(raw, message):
    with pytest.raises(UsageError) as err:
        plan_from_dict({"name": "x", **raw})
    assert message in str(err.value)


@pytest.mark.parametrize("toml, message", [
    ("name = 'x'\ngrid = 5\n", "grid in PLAN must be a table of settings ([grid] in TOML), got 5"),
    ("name = 'x'\nbase = 5\n[grid]\nlr = [0.01]\n", "base in PLAN must be a table"),
    ("name = 'x'\nmode = 'random'\ntrials = 2\nspace = 5\n", "space in PLAN must be a table"),
    ("[grid]\nlr = [0.01]\n", "PLAN needs a name (a plain directory name), got None"),
])
def test_malformed_plan_file_is_one_line_exit_2(tmp_path, capsys, tiny_file, toml, message):
    plan = tmp_path / "plan.toml"
    plan.write_text(toml)
    code, _, err = run(capsys, "sweep", plan, "-s", "2", "--data", tiny_file, "--out-dir", tmp_path / "sweeps")
    assert code == 2 and one_line(err), err
    assert message.replace("PLAN", str(plan)) in err
    assert not (tmp_path / "sweeps").exists()


# ------------------------------------------------------------------------------------------------------- dashboard

@pytest.mark.parametrize("port", ["0", "70000", "-1"])
def test_dashboard_port_out_of_range(tmp_path, capsys, port):
    code, _, err = run(capsys, "dashboard", tmp_path, "--port", port)
    assert code == 2 and one_line(err) and f"--port must be in 1..65535, got {port}" in err


def test_dashboard_port_in_use(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run(capsys, "dashboard", tmp_path, "--port", port)
    assert code == 2 and one_line(err), err
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use; pass another --port" in err


# ------------------------------------------------------------------------------------------ bounded by the input

def test_a_line_longer_than_max_chars_is_refused_with_its_number(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("anna\n\nbob\n" + "x" * 10_000_000 + "\ncarl\n")  # the 10 MB line that once built a 160M model
    with pytest.raises(UsageError) as err:
        load_words(path)
    assert str(err.value) == (f"data file {path} line 4 has 10,000,000 characters, more than --max-chars 64: fix the "
                              "line, or pass --max-chars 10000000 if examples that long are meant")
    assert load_words(path, max_chars=10_000_000)[-1] == "carl"
    with pytest.raises(UsageError, match="--max-chars must be >= 1, got 0"):
        load_words(path, max_chars=0)


@pytest.fixture
def long_file(tmp_path, tiny_file):
    """The tiny dataset (20 lines) plus one 100-character example on line 21."""
    path = tmp_path / "long.txt"
    path.write_text(tiny_file.read_text() + "ab" * 50 + "\n")
    return path


def test_train_and_sample_honour_max_chars(tmp_path, capsys, long_file):
    out_dir = tmp_path / "runs"
    code, _, err = run(capsys, "train", "--data", long_file, "-s", "2", "--out-dir", out_dir)
    assert code == 2 and one_line(err) and "line 21 has 100 characters, more than --max-chars 64" in err
    assert not out_dir.exists()
    code, _, err = run(capsys, "train", "--data", long_file, "-s", "2", "--samples", "2", "--out-dir", out_dir,
                       "--name", "r", "--max-chars", "100")
    assert code == 0, err
    config = json.loads((out_dir / "r" / "config.json").read_text())
    assert config["data"]["max_chars"] == 100 and config["model"]["block_size"] == 101
    assert run(capsys, "sample", out_dir / "r", "-n", "2")[0] == 0  # reloads the data with the run's own limit
    code, _, err = run(capsys, "sample", out_dir / "r", "-n", "2", "--max-chars", "50")
    assert code == 2 and one_line(err) and "more than --max-chars 50" in err


def test_ngram_honours_max_chars(capsys, long_file):
    code, _, err = run(capsys, "ngram", "--data", long_file, "--order", "2")
    assert code == 2 and one_line(err) and "line 21 has 100 characters" in err
    code, out, err = run(capsys, "ngram", "--data", long_file, "--order", "2", "--max-chars", "100")
    assert code == 0 and "loss   train" in out, err


@pytest.mark.slow
def test_sweep_workers_load_the_data_with_max_chars(tmp_path, capsys, long_file):
    out_dir = tmp_path / "sweeps"
    argv = ["sweep", "--grid", "lr=0.01", "-s", "2", "--eval-every", "2", "--samples", "0", "--name", "m",
            "--data", long_file, "--out-dir", out_dir]
    code, _, err = run(capsys, *argv)
    assert code == 2 and one_line(err) and "line 21 has 100 characters" in err and not out_dir.exists()
    code, out, err = run(capsys, *argv, "--max-chars", "100")
    assert code == 0, out + err
    rows = list(csv.DictReader((out_dir / "m" / "results.csv").open()))
    assert [r["state"] for r in rows] == ["complete"] and rows[0]["block_size"] == "101"


def test_samples_are_capped(tmp_path, capsys):
    assert resolve({"samples": MAX_SAMPLES})[1].samples == MAX_SAMPLES
    with pytest.raises(UsageError, match="samples must be at most 10,000 .* got 10,001"):
        resolve({"samples": MAX_SAMPLES + 1})
    code, _, err = run(capsys, "sample", tmp_path, "-n", MAX_SAMPLES + 1)
    assert code == 2 and one_line(err) and "-n must be in 1..10,000, got 10,001" in err


# -------------------------------------------------------------------------------------------------- sweep records

def test_results_csv_has_one_row_per_run_and_each_column_once(tmp_path, tiny_data):
    from optuna.trial import TrialState

    from microgpt.sweep import export_results, load_study, prepare, reconcile, work

    plan = plan_from_dict({"name": "g", "seeds": 2, "base": {"steps": 2, "eval_every": 2, "samples": 0},
                           "grid": {"lr": [0.01, 0.02]}})
    sweep_dir, url = prepare(plan, tmp_path, None)
    study = load_study(plan, url)
    reconcile(study, plan, sweep_dir, url)
    work(study, plan, tiny_data, sweep_dir, url)
    # what reconcile leaves of a run whose worker died: failed, marked redone, and queued again (the rerun is above)
    dead = study.ask()
    for key, value in {"state": "failed", "error": "worker pid 1 on h died mid-run; redone", "redone": True,
                       "seed": 1, "config": "abcdef", "run": "0009-abcdef-s1"}.items():
        dead.set_user_attr(key, value)
    study.tell(dead, state=TrialState.FAIL)
    assert export_results(study, sweep_dir) == 4
    with (sweep_dir / "results.csv").open(newline="") as fh:
        header = next(csv.reader(fh))
        fh.seek(0)
        rows = list(csv.DictReader(fh))
    assert len(header) == len(set(header)) and header[:6] == ["run", "trial", "config", "seed", "state", "error"]
    assert [r["state"] for r in rows] == ["complete"] * 4
    assert sorted((r["lr"], r["seed"]) for r in rows) == [("0.01", "0"), ("0.01", "1"), ("0.02", "0"), ("0.02", "1")]


# ------------------------------------------------------------------------------------------------------ run records

def test_a_run_trained_from_a_relative_data_path_samples_from_another_directory(tmp_path, capsys, monkeypatch,
                                                                                 tiny_file):
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "c").mkdir(parents=True)  # where ../tiny.txt names no file
    monkeypatch.chdir(tmp_path / "a")
    code, _, err = run(capsys, "train", "--data", os.path.join("..", tiny_file.name), "-s", "2", "--samples", "1",
                       "--out-dir", tmp_path / "runs", "--name", "r")
    assert code == 0, err
    config = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())
    monkeypatch.chdir(tmp_path / "b" / "c")
    code, out, err = run(capsys, "sample", tmp_path / "runs" / "r", "-n", "3")
    assert code == 0 and len(out.splitlines()) == 4, err
    assert config["data"]["path"] == str(tiny_file.resolve())


class Payload:
    """Unpickling this runs os.mkdir(target): what a malicious checkpoint does."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return os.mkdir, (self.target,)


def test_a_checkpoint_holding_python_objects_is_refused_in_one_line(tmp_path, capsys):
    import torch

    run_dir, marker = tmp_path / "run", tmp_path / "pwned"
    run_dir.mkdir()
    torch.save({"model_config": {}, "chars": ["a"], "state_dict": Payload(marker)}, run_dir / "model.pt")
    code, out, err = run(capsys, "sample", run_dir)
    assert code == 2 and one_line(err) and out == "", err
    assert err == (f"microgpt: error: cannot read checkpoint {run_dir / 'model.pt'}: it holds Python objects other "
                   "than tensors, which microgpt refuses to unpickle (only load checkpoints you trust)\n")
    assert "weights_only=False" not in err and not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a zip archive at all", b"PK\x03\x04 truncated"])
def test_a_corrupt_checkpoint_is_one_line(tmp_path, capsys, content):
    (tmp_path / "model.pt").write_bytes(content)
    code, _, err = run(capsys, "sample", tmp_path)
    assert code == 2 and one_line(err) and f"cannot read checkpoint {tmp_path / 'model.pt'}: " in err, err


def test_a_foreign_pickle_is_one_line_from_the_shell(tmp_path):
    # torch warns about the pickle protocol on stderr before refusing the file; pytest would swallow that warning
    marker = tmp_path / "pwned"
    (tmp_path / "model.pt").write_bytes(pickle.dumps({"state_dict": Payload(marker)}, protocol=4))
    env = {**os.environ, "PYTHONPATH": str(Path(files.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-m", "microgpt", "sample", str(tmp_path)], capture_output=True, text=True,
                          env=env)
    assert done.returncode == 2 and one_line(done.stderr), done.stderr
    assert f"cannot read checkpoint {tmp_path / 'model.pt'}: " in done.stderr and not marker.exists()


def test_a_failing_disk_is_one_line_exit_1(tmp_path, capsys, monkeypatch, tiny_file):
    from microgpt import rundir

    def full(path, payload):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(rundir, "write_atomic", full)
    code, _, err = run(capsys, "train", "--data", tiny_file, "-s", "2", "--out-dir", tmp_path / "runs", "--name", "r")
    assert code == 1 and one_line(err), err
    assert err == f"microgpt: error: No space left on device ({tmp_path / 'runs' / 'r' / 'config.json'})\n"
    assert not (tmp_path / "runs" / "r").exists()  # a run that could not write its first record leaves no directory
