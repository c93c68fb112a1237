"""Interrupt and resume: a run stopped after any step and continued from its checkpoint has the history of a run that
was never stopped, for every optimizer, schedule and augmentation, with dropout and EMA on."""

import io

import pytest
import torch

from microgpt.config import ModelConfig, TrainConfig, UsageError
from microgpt.train import train

MODEL = ModelConfig(vocab_size=4, block_size=5, n_embd=16, n_head=4, dropout=0.1)


def strip(history):
    return [(r["step"], r["lr"], r["loss"], r["val_loss"]) for r in history]


def roundtrip(state: dict) -> dict:
    """Through bytes as a resume checkpoint file goes, with the loader the CLI uses."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("settings", [
    {"optimizer": "adam", "schedule": "linear"},
    {"optimizer": "adamw", "schedule": "cosine", "warmup_steps": 5, "weight_decay": 0.1, "ema": 0.9},
    {"optimizer": "rmsprop", "schedule": "exponential", "min_lr": 1e-4, "grad_clip": 0.5},
    {"optimizer": "sgd", "schedule": "constant", "nesterov": True, "lr": 0.1},
    {"optimizer": "muon", "schedule": "wsd", "ema": 0.95},
    {"noise": 0.2, "synthetic": 0.25, "curriculum": 10, "synthetic_order": 2},
])
def test_resumed_history_equals_uninterrupted(tiny_data, settings):
    cfg = TrainConfig(steps=30, batch_size=4, eval_every=4, seed=5, **settings)
    _, whole = train(MODEL, cfg, tiny_data)

    saved: list[dict] = []
    steps_seen = []

    def stop() -> bool:  # Ctrl-C arriving during step 13
        steps_seen.append(1)
        return len(steps_seen) == 13

    _, first = train(MODEL, cfg, tiny_data, should_stop=stop, on_checkpoint=saved.append)
    assert first.state == "interrupted" and first.steps_done == 13 and first.test_loss is None
    assert first.best_val == min(r["val_loss"] for r in whole.history[:13] if r["val_loss"] is not None)
    _, resumed = train(MODEL, cfg, tiny_data, resume=roundtrip(saved[-1]))
    assert strip(resumed.history) == strip(whole.history)
    assert (resumed.state, resumed.val_loss, resumed.test_loss, resumed.train_loss, resumed.best_val_step) == \
        (whole.state, whole.val_loss, whole.test_loss, whole.train_loss, whole.best_val_step)


def test_periodic_checkpoints_resume_from_any_of_them(tiny_data):
    cfg = TrainConfig(steps=20, batch_size=3, eval_every=5, seed=2, ema=0.9)
    saved: list[dict] = []
    _, whole = train(MODEL, cfg, tiny_data, on_checkpoint=saved.append, checkpoint_every=6)
    assert [s["progress"]["step"] for s in saved] == [6, 12, 18]
    for state in saved:  # as if the process had died right after writing each of them
        _, resumed = train(MODEL, cfg, tiny_data, resume=roundtrip(state))
        assert strip(resumed.history) == strip(whole.history)


def test_parity_run_resumes_exactly(tiny_data):
    cfg = TrainConfig(steps=12, parity=True, dtype="float64", eval_every=4, seed=42)
    model_cfg = ModelConfig(vocab_size=4, block_size=5)
    _, whole = train(model_cfg, cfg, tiny_data)
    saved: list[dict] = []
    calls = []
    _, first = train(model_cfg, cfg, tiny_data, should_stop=lambda: calls.append(1) or len(calls) == 5,
                     on_checkpoint=saved.append)
    assert first.state == "interrupted"
    _, resumed = train(model_cfg, cfg, tiny_data, resume=roundtrip(saved[-1]))
    assert strip(resumed.history) == strip(whole.history)


def test_resume_refuses_another_configuration(tiny_data):
    cfg = TrainConfig(steps=10, batch_size=2, eval_every=5)
    saved: list[dict] = []
    train(MODEL, cfg, tiny_data, should_stop=lambda: True, on_checkpoint=saved.append)
    with pytest.raises(UsageError, match="differ from this run's in lr"):
        train(MODEL, TrainConfig(steps=10, batch_size=2, eval_every=5, lr=0.02), tiny_data, resume=saved[0])


def test_train_refuses_data_split_with_another_seed(tiny_file):
    from microgpt.data import load_dataset

    data = load_dataset(tiny_file, split_seed=1)
    with pytest.raises(UsageError, match="split seed 1 but the run's split_seed is 3407"):
        train(MODEL, TrainConfig(steps=2), data)


# ------------------------------------------------------------------------------------------ the command line, for real

def test_diverging_before_the_first_evaluation_is_recorded_diverged(tmp_path, capsys, names_path):
    import json

    from microgpt.cli import main

    code = main(["train", "--data", str(names_path), "-s", "20", "--optimizer", "sgd", "--lr", "1e6",
                 "--out-dir", str(tmp_path), "--name", "d"])
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["state"] == "diverged" and summary["best_val"] is None and summary["diverged_step"] <= 20
    assert not (tmp_path / "d" / "model.pt").exists() and not (tmp_path / "d" / "resume.pt").exists()
    assert "diverged" in out.out and "no model was selected" in out.out


def metrics(run_dir):
    import csv

    with (run_dir / "metrics.csv").open() as fh:
        return [(r["step"], r["lr"], r["loss"], r["val_loss"]) for r in csv.DictReader(fh)]


@pytest.mark.slow
def test_ctrl_c_saves_the_run_and_resume_finishes_it_as_if_never_stopped(tmp_path, names_path):
    import json
    import os
    import signal
    import subprocess
    import sys

    args = ["--data", str(names_path), "-s", "300", "-b", "8", "--eval-every", "50", "--log-every", "10",
            "--dropout", "0.1", "--ema", "0.9", "--samples", "3", "--out-dir", str(tmp_path)]
    cmd = [sys.executable, "-u", "-m", "microgpt", "train"]
    whole = subprocess.run([*cmd, *args, "--name", "whole"], capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr

    proc = subprocess.Popen([*cmd, *args, "--name", "r"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step   120/"):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err == "", err  # one line on stdout, no traceback
    run_dir = tmp_path / "r"
    assert "interrupted after step" in out and "microgpt train --resume" in out
    assert {"config.json", "metrics.csv", "summary.json", "model.pt", "resume.pt"} <= set(os.listdir(run_dir))
    summary = json.loads((run_dir / "summary.json").read_text())
    stopped = summary["steps_done"]
    assert summary["state"] == "interrupted" and 120 <= stopped < 300 and summary["best_val_step"] in (50, 100, 150, 200, 250)

    again = subprocess.run([*cmd, "--resume", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"from step {stopped}/300" in again.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    expected = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["state"] == "complete" and not (run_dir / "resume.pt").exists()
    assert metrics(run_dir) == metrics(tmp_path / "whole")
    assert (summary["val_loss"], summary["test_loss"]) == (expected["val_loss"], expected["test_loss"])
    assert (run_dir / "samples.txt").read_text() == (tmp_path / "whole" / "samples.txt").read_text()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resumed"][0]["step"] == stopped

    code = subprocess.run([*cmd, "--resume", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert code.returncode == 2 and "nothing to resume" in code.stderr and code.stderr.count("\n") == 1


def test_resume_refuses_other_flags_and_runs_without_checkpoint(tmp_path, capsys, names_path):
    from microgpt.cli import main

    assert main(["train", "--data", str(names_path), "-s", "5", "--eval-every", "5", "--samples", "0",
                 "--out-dir", str(tmp_path), "--name", "done"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "done"), "--lr", "0.1"]) == 2
    assert "drop --lr" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "done")]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "not a run directory" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_saves_a_stack_and_resume_finishes_it_as_if_never_stopped(tmp_path, names_path):
    """`microgpt train --seeds 2`, Ctrl-C, then `--resume` on the stack's directory: both members end as the same
    stack never stopped does, and the ensemble the first command asked for is measured."""
    import json
    import signal
    import subprocess
    import sys

    args = ["--data", str(names_path), "-s", "200", "-b", "8", "--eval-every", "50", "--log-every", "10",
            "--dropout", "0.1", "--ema", "0.9", "--samples", "3", "--seeds", "2", "--ensemble", "--out-dir",
            str(tmp_path), "--checkpoint-every", "60"]
    cmd = [sys.executable, "-u", "-m", "microgpt", "train"]
    whole = subprocess.run([*cmd, *args, "--name", "whole"], capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr

    proc = subprocess.Popen([*cmd, *args, "--name", "r"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("step   130/"):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err == "", err
    parent = tmp_path / "r"
    assert f"microgpt train --resume {parent}" in out and (parent / "resume.pt").is_file()
    assert not (parent / "ensemble").exists()
    stopped = json.loads((parent / "s1337" / "summary.json").read_text())
    assert stopped["state"] == "interrupted" and 130 <= stopped["steps_done"] < 200

    again = subprocess.run([*cmd, "--resume", str(parent)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"from step {stopped['steps_done']}/200, 2 of 2 members still training" in again.stdout
    assert not (parent / "resume.pt").exists()
    for seed in ("s1337", "s1338"):
        summary = json.loads((parent / seed / "summary.json").read_text())
        expected = json.loads((tmp_path / "whole" / seed / "summary.json").read_text())
        assert summary["state"] == "complete"
        assert metrics(parent / seed) == metrics(tmp_path / "whole" / seed)
        assert (summary["val_loss"], summary["test_loss"]) == (expected["val_loss"], expected["test_loss"])
    ours = json.loads((parent / "ensemble" / "summary.json").read_text())
    theirs = json.loads((tmp_path / "whole" / "ensemble" / "summary.json").read_text())
    assert (ours["val_loss"], ours["test_loss"]) == (theirs["val_loss"], theirs["test_loss"])

    code = subprocess.run([*cmd, "--resume", str(parent)], capture_output=True, text=True, timeout=120)
    assert code.returncode == 2 and "no resume.pt" in code.stderr and code.stderr.count("\n") == 1
