"""Faults from input and from the disk: every one is a single line on stderr with exit 2 (bad input) or 1 (the
system failed), never a traceback, never a half-written file or run directory, never an unbounded allocation."""

import dataclasses
import math
import os

import pytest

from microgpt import files
from microgpt.cli import main
from microgpt.config import ModelConfig, TrainConfig, UsageError, resolve


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
