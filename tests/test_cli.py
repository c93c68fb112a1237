"""The command line, through main([...]) as a user types it."""

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import microgpt
from microgpt.cli import build_parser, main
from microgpt.config import PRESETS, ModelConfig, TrainConfig, resolve


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_writes_a_complete_run(tmp_path, capsys, names_path):
    code, out, err = run(capsys, "train", "--data", str(names_path), "-s", "60", "-l", "0.01", "-e", "16", "-b", "4",
                         "--eval-every", "20", "--out-dir", str(tmp_path), "--name", "r", "--samples", "5")
    assert code == 0, err
    run_dir = tmp_path / "r"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "args.txt", "config.json", "metrics.csv", "model.pt", "samples.txt", "summary.json"]
    assert (run_dir / "args.txt").read_text().startswith("microgpt train --data ")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["batch_size"] == 4 and config["model"]["n_embd"] == 16 and config["train"]["steps"] == 60
    assert config["data"]["splits"] == {"train": 30033, "val": 1000, "test": 1000}
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert len(rows) == 60 and [r["step"] for r in rows if r["val_loss"]] == ["20", "40", "60"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "complete" and 2.0 < summary["test_loss"] < 3.3
    assert summary["val_loss"] == min(float(r["val_loss"]) for r in rows if r["val_loss"])
    assert len((run_dir / "samples.txt").read_text().splitlines()) == 5
    assert "step    20/60 | loss" in out and "test" in out and str(run_dir) in out
    payload = torch.load(run_dir / "model.pt", weights_only=True)
    assert payload["step"] == summary["best_val_step"]

    code, out, err = run(capsys, "sample", str(run_dir), "-n", "7", "-t", "0.8", "--top-k", "5")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 8 and lines[-1].startswith("new ")
    assert all(line.split()[-1] in ("new", "train", "val-test") for line in lines[:-1])

    code, out, err = run(capsys, "sample", str(run_dir), "-n", "6", "--prefix", "ka")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 7 and all(line.startswith("ka") for line in lines[:-1])
    for prefix, message in (("k2", "characters the model's vocabulary lacks: '2'"), ("a" * 16, "at most 15")):
        code, out, err = run(capsys, "sample", str(run_dir), "--prefix", prefix)
        assert code == 2 and message in err and err.count("\n") == 1 and not out


def test_seed_flags_really_change_the_run(tmp_path, capsys, names_path):
    base = ["train", "--data", str(names_path), "-s", "5", "--eval-every", "5", "--out-dir", str(tmp_path), "--samples", "0"]
    configs = {}
    for name, extra in {"a": [], "b": ["-e", "32", "-y", "2", "--n-head", "8", "-c", "20", "-b", "3", "-l", "0.02"]}.items():
        assert run(capsys, *base, "--name", name, *extra)[0] == 0
        configs[name] = json.loads((tmp_path / name / "config.json").read_text())
    b = configs["b"]
    assert (b["model"]["n_embd"], b["model"]["n_layer"], b["model"]["n_head"], b["model"]["block_size"]) == (32, 2, 8, 20)
    assert (b["train"]["batch_size"], b["train"]["lr"]) == (3, 0.02)
    assert configs["a"]["model"]["block_size"] == 16  # longest name + 1
    pa = json.loads((tmp_path / "a" / "summary.json").read_text())["n_params"]
    pb = json.loads((tmp_path / "b" / "summary.json").read_text())["n_params"]
    assert pa == 4192 and pb > pa


def write(tmp_path, content: bytes):
    path = tmp_path / "data.txt"
    path.write_bytes(content)
    return str(path)


BAD_INPUTS = {
    "missing": (lambda t: str(t / "nope.txt"), [], "data file not found"),
    "directory": (lambda t: str(t), [], "is a directory"),
    "empty": (lambda t: write(t, b""), [], "empty or whitespace-only"),
    "whitespace": (lambda t: write(t, b" \n\n\t\n"), [], "empty or whitespace-only"),
    "not utf-8": (lambda t: write(t, b"anna\n\xc3\x28\n"), [], "not UTF-8"),
    "nul byte": (lambda t: write(t, b"anna\x00\n"), [], "NUL byte"),
    "too few": (lambda t: write(t, b"anna\nbob\n"), [], "at least 10 examples"),
    "too long": (lambda t: write(t, b"\n".join([b"ab"] * 12 + [b"abcdefghij"])), ["-c", "8"],
                 "example 13 ('abcdefghij') has 10 characters and needs a context of 11, but --block-size is 8"),
    "heads": (lambda t: write(t, b"\n".join([b"ab"] * 12)), ["-e", "16", "--n-head", "12"], "not divisible"),
    "dropout": (lambda t: write(t, b"\n".join([b"ab"] * 12)), ["--dropout", "1.5"], "dropout must be in [0, 1)"),
    "steps": (lambda t: write(t, b"\n".join([b"ab"] * 12)), ["-s", "0"], "steps must be a positive integer"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, case):
    make, extra, message = BAD_INPUTS[case]
    (tmp_path / "in").mkdir()
    data = make(tmp_path / "in")
    out_dir = tmp_path / "runs"
    code, out, err = run(capsys, "train", "--data", data, "--out-dir", str(out_dir), *extra)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out_dir.exists()


def test_bad_flag_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--optimizer", "lion"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'lion'" in err and err.count("\n") == 1


def test_sample_on_a_missing_run(tmp_path, capsys):
    code, _, err = run(capsys, "sample", str(tmp_path / "nothing"))
    assert code == 2 and "run directory not found" in err and err.count("\n") == 1


def test_cuda_when_absent(tmp_path, capsys, names_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present; tests/test_cuda.py exercises it")
    code, _, err = run(capsys, "train", "--data", str(names_path), "--device", "cuda", "--out-dir", str(tmp_path / "r"))
    assert code == 2 and "no CUDA device" in err and not (tmp_path / "r").exists()
    code, _, err = run(capsys, "sweep", "--data", str(names_path), "--grid", "lr=0.01,0.02", "-s", "5", "--device",
                       "cuda", "--out-dir", str(tmp_path / "s"))
    assert code == 2 and "no CUDA device" in err and err.count("\n") == 1 and not (tmp_path / "s").exists()


def test_help_and_flag_errors_import_no_torch():
    """`microgpt --help` and a mistyped flag must answer at once: torch alone takes seconds to import."""
    code = """
import sys
from microgpt.cli import main
for argv in (["--help"], ["train", "--help"], ["sweep", "--help"], ["report", "--help"], ["ngram", "--help"],
             ["sample", "--help"], ["train", "--optimizer", "lion"]):
    try:
        main(argv)
    except SystemExit:
        pass
print("heavy:", sorted({m.split(".")[0] for m in sys.modules} & {"torch", "optuna", "matplotlib", "scipy"}))
"""
    src = str(Path(microgpt.__file__).resolve().parents[1])  # the microgpt these tests import
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (src, os.environ.get("PYTHONPATH"))))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "heavy: []"


def test_every_config_field_is_one_flag_with_its_default():
    """The flags are made from the config fields: one each (vocab_size comes from the data, extra is notes), named
    after the field, default None so a preset is only overridden by what was typed, help ending with the default."""
    fields = [f for cls in (ModelConfig, TrainConfig) for f in dataclasses.fields(cls)]
    subcommands = build_parser()._subparsers._group_actions[0].choices
    for command in ("train", "sweep"):
        actions = [a for a in subcommands[command]._actions if a.dest in {f.name for f in fields}]
        assert sorted(a.dest for a in actions) == sorted(f.name for f in fields if f.name not in ("vocab_size", "extra"))
        for a in actions:
            default = next(f.default for f in fields if f.name == a.dest)
            shown = ("on" if default else "off") if isinstance(default, bool) else \
                f"{default:g}" if isinstance(default, float) else str(default)
            assert f"--{a.dest.replace('_', '-')}" in a.option_strings and a.default is None
            assert a.help.endswith(")") and shown in a.help.rsplit("(default ", 1)[1], (a.dest, a.help)
    args = build_parser().parse_args(["train", "-s", "5", "-e", "32", "--no-embed-norm", "--lr", "0.02", "-c", "20"])
    assert (args.steps, args.n_embd, args.embed_norm, args.lr, args.block_size) == (5, 32, False, 0.02, 20)
    assert args.final_norm is None and args.schedule is None


def test_a_shortened_preset_keeps_its_proportions():
    """`--preset best -s 300` used to stop on "warmup_steps 500 must be below steps 300": with fewer steps than the
    preset's, its warmup and eval/log intervals shrink in proportion, unless they were given."""
    preset = PRESETS["best"][1]
    assert (preset["steps"], preset["warmup_steps"], preset["eval_every"], preset["log_every"]) == (20000, 500, 1000, 1000)
    cfg = resolve({"steps": 300}, "best")[1]
    assert (cfg.steps, cfg.warmup_steps, cfg.eval_every, cfg.log_every) == (300, 7, 15, 15)
    cfg = resolve({"steps": 300, "warmup_steps": 50, "eval_every": 100}, "best")[1]
    assert (cfg.warmup_steps, cfg.eval_every, cfg.log_every) == (50, 100, 15)
    cfg = resolve({"steps": 2}, "best")[1]
    assert (cfg.warmup_steps, cfg.eval_every, cfg.log_every) == (0, 1, 1)
    cfg = resolve({"steps": 40000}, "best")[1]  # longer than the preset: its values stand
    assert (cfg.warmup_steps, cfg.eval_every, cfg.log_every) == (500, 1000, 1000)
    assert resolve({"steps": 1000}, "makemore")[1].eval_every == 50
    assert resolve({"steps": 300})[1].eval_every == 60  # no preset: at least five evaluations (MIN_EVALS)
    args = build_parser().parse_args(["train", "--preset", "best", "-s", "300"])
    overrides = {k: v for k, v in vars(args).items() if v is not None and k in TrainConfig.__dataclass_fields__}
    assert resolve(overrides, args.preset)[1].warmup_steps == 7


def test_config_json_records_the_commit_and_the_cpu(tmp_path, tiny_data):
    from microgpt.rundir import CPU_FLAGS, git_commit, run_config

    config = run_config(*resolve({}, None, tiny_data.tokenizer.vocab_size, tiny_data.max_len + 1), tiny_data, "cpu",
                        ["microgpt", "train"])
    package = Path(microgpt.__file__).resolve().parent
    head = subprocess.run(["git", "-C", str(package.parents[1]), "rev-parse", "HEAD"], capture_output=True, text=True)
    in_checkout = head.returncode == 0 and (package.parents[1] / "pyproject.toml").is_file()
    assert config["git_commit"] == (head.stdout.strip() if in_checkout else None)
    assert git_commit(tmp_path) is None  # not a checkout of microgpt
    cpu = config["cpu"]
    assert set(cpu) == {"model", "flags", "torch_capability"} and cpu["torch_capability"] == \
        torch.backends.cpu.get_cpu_capability()
    if Path("/proc/cpuinfo").is_file():
        assert cpu["model"] and set(cpu["flags"]) <= set(CPU_FLAGS)


def test_tensorboard_gets_every_step(tmp_path, capsys, tiny_file):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install -e \".[tensorboard]\")")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, out, err = run(capsys, "train", "--data", str(tiny_file), "-s", "12", "-b", "4", "--eval-every", "5",
                         "--out-dir", str(tmp_path / "runs"), "--name", "r", "--tensorboard", str(tmp_path / "tb"))
    assert code == 0, err
    assert f"tensorboard --logdir {tmp_path / 'tb'}" in out
    rows = list(csv.DictReader((tmp_path / "runs" / "r" / "metrics.csv").open()))
    events = EventAccumulator(str(tmp_path / "tb" / "r"))
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in ("train/loss", "val/loss", "lr")}
    assert scalars["train/loss"] == [(int(r["step"]), pytest.approx(float(r["loss"]))) for r in rows]
    assert scalars["lr"] == [(int(r["step"]), pytest.approx(float(r["lr"]))) for r in rows]
    assert scalars["val/loss"] == [(int(r["step"]), pytest.approx(float(r["val_loss"]))) for r in rows if r["val_loss"]]
    assert [s for s, _ in scalars["val/loss"]] == [5, 10, 12]


def test_tensorboard_missing_is_one_line_before_any_run(tmp_path, capsys, tiny_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    code, out, err = run(capsys, "train", "--data", str(tiny_file), "--out-dir", str(tmp_path / "runs"),
                         "--tensorboard", str(tmp_path / "tb"))
    assert code == 2 and 'pip install -e ".[tensorboard]"' in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "tb").exists()


def test_tensorboard_of_a_resumed_run_adds_only_the_new_steps(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install -e \".[tensorboard]\")")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from microgpt.cli import write_tensorboard

    history = [{"step": s, "lr": 0.01, "loss": 3.0 - s / 10, "val_loss": 2.5 if s % 3 == 0 else None,
                "elapsed_s": s / 100} for s in range(1, 7)]
    write_tensorboard(tmp_path / "r", history[:4])  # the session that was interrupted after step 4
    write_tensorboard(tmp_path / "r", history, after_step=4)  # the resumed one: its history holds steps 1-6
    events = EventAccumulator(str(tmp_path / "r"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Scalars("val/loss")] == [3, 6]


@pytest.mark.parametrize("steps, every", [(1000, 200), (20000, 200), (500, 100), (60, 12), (3, 1)])
def test_a_short_run_still_gets_five_evaluations(steps, every):
    assert resolve({"steps": steps})[1].eval_every == every
    assert resolve({"steps": steps, "eval_every": 7})[1].eval_every == 7  # a given interval is kept
