"""Faults from input and from the disk: every one is a single line on stderr with exit 2 (bad input) or 1 (the
system failed), never a traceback, never a half-written file or run directory, never an unbounded allocation."""

import dataclasses
import json
import math
import socket
import os
import subprocess

import pytest

from microgpt import files
from microgpt.cli import main
from microgpt.config import ModelConfig, TrainConfig, UsageError, resolve
from microgpt.plan import plan_from_dict


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

def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


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
