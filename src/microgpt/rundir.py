"""A run directory: everything needed to read a run back or rebuild it, written so that nothing is ever half-written.

runs/<name>/
  args.txt       the exact command
  config.json    resolved ModelConfig and TrainConfig, data source and splits, device, versions, git commit, CPU
  metrics.csv    step, lr, batch loss, val loss (when evaluated), elapsed seconds
  summary.json   the RunResult figures (held-out losses, tier, timing, stability)
  model.pt       the val-selected weights with their config and vocabulary (torch.load(..., weights_only=True))
  samples.txt    generated names, each tagged new / in train / in val-test
  resume.pt      while a run is unfinished: everything `microgpt train --resume` needs (train.Run.state_dict)
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import platform
import shlex
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .config import ModelConfig, TrainConfig, UsageError, from_dict, to_dict
from .data import Dataset, Tokenizer
from .files import cannot_create, check_dir_name, make_dir, write_atomic
from .model import GPT
from .precision import SHOWN_CPU_FLAGS, cpu_flags, cpu_model
from .record import METRICS_COLUMNS, RunResult

RESUME_FILE = "resume.pt"
PACKAGE_DIR = Path(__file__).resolve().parent
CPU_FLAGS = SHOWN_CPU_FLAGS  # what sets the speed here: bf16 autocast (BENCHMARKS.md)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def new_run_dir(root: str | os.PathLike, name: str | None, prefix: str = "train") -> Path:
    """Create a fresh directory root/name (default prefix-YYYYmmdd-HHMMSS), suffixing -2, -3 ... if taken."""
    root = Path(root)
    if name is not None:
        check_dir_name(name, "--name")
    base = name or f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    make_dir(root, "run directory")
    for k in range(1, 10_000):
        path = root / (base if k == 1 else f"{base}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as err:  # a read-only or full disk
            raise cannot_create("run directory", root, err) from None
    raise UsageError(f"could not create a run directory under {root} named {base}")


def run_config(model_cfg: ModelConfig, train_cfg: TrainConfig, data: Dataset, device: str, argv: list[str]) -> dict:
    """The resolved configuration of a run, as config.json holds it."""
    return {
        "model": to_dict(model_cfg),
        "train": to_dict(train_cfg),
        "data": {
            "path": str(Path(data.path).resolve()),  # absolute: `microgpt sample RUN_DIR` may run from elsewhere
            "sha256": data.sha256,
            "examples": len(data.words),
            "chars": "".join(data.tokenizer.chars),
            "split_seed": data.split_seed,
            "max_chars": data.max_chars,
            "splits": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        },
        "device": device,
        "threads": torch.get_num_threads(),
        "seed": train_cfg.seed,
        "argv": argv,
        "versions": {"microgpt": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "git_commit": git_commit(),
        "cpu": cpu_info(),
    }


def git_commit(package_dir: Path = PACKAGE_DIR) -> str | None:
    """HEAD of the git checkout the package runs from (src/microgpt inside it); None for an installed copy, without
    git, or if git fails or takes over 5 s."""
    try:
        out = subprocess.run(["git", "-C", str(package_dir), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.splitlines()
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() / "src" / "microgpt" != package_dir:
        return None
    return lines[1]


def cpu_info() -> dict:
    """The CPU's model name and which of CPU_FLAGS it has (from /proc/cpuinfo: None where there is none), and the
    vector instruction set torch's CPU kernels use."""
    have = cpu_flags()
    flags = [f for f in CPU_FLAGS if f in have] if have else None
    model = cpu_model()
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()
    return {"model": model or platform.processor() or None, "flags": flags, "torch_capability": capability}


def metrics_csv(history: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=METRICS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRICS_COLUMNS})
    return out.getvalue()


def write_run(
    run_dir: Path,
    config: dict,
    result: RunResult,
    model: GPT | None,
    tokenizer: Tokenizer,
    samples: list[tuple[str, str]],
) -> None:
    """Write every record of a finished run into run_dir (which new_run_dir made)."""
    run_dir = Path(run_dir)
    write_atomic(run_dir / "args.txt", shlex.join(config["argv"]) + "\n")
    write_json(run_dir / "config.json", config)
    write_atomic(run_dir / "metrics.csv", metrics_csv(result.history))
    if model is not None and result.best_val is not None:
        save_checkpoint(run_dir / "model.pt", model, tokenizer, result.best_val_step)
    write_atomic(run_dir / "samples.txt", "".join(f"{name}\t{tag}\n" for name, tag in samples))
    write_json(run_dir / "summary.json", result.summary())  # last: its presence means the run is complete on disk


def record_run(run_dir: Path, config: dict, cfg: TrainConfig, data: Dataset, model: GPT | None, result: RunResult,
               py_rng=None) -> tuple[list[str], list[str]]:
    """A finished run's sample names (none without a selected model, or when interrupted), tagged by split, and every
    record write_run() writes; (names, their tags). A parity run with the Python RNG it trained with samples as
    microgpt.py does, continuing that stream; every other run from a torch generator seeded with its seed."""
    from .sample import sample_names, sample_names_microgpt, tag_names

    names: list[str] = []
    if model is not None and result.best_val is not None and result.state != "interrupted" and cfg.samples:
        if cfg.parity and py_rng is not None:
            names = sample_names_microgpt(model, data.tokenizer, cfg.samples, cfg.temperature, py_rng)
        else:
            generator = torch.Generator().manual_seed(cfg.seed)
            names = sample_names(model, data.tokenizer, cfg.samples, cfg.temperature, generator=generator)
    tags = tag_names(names, data.train, data.val + data.test)
    write_run(run_dir, config, result, model, data.tokenizer, list(zip(names, tags)))
    return names, tags


def save_checkpoint(path: Path, model: GPT, tokenizer: Tokenizer, step: int | None) -> None:
    payload = {
        "model_config": to_dict(model.cfg),
        "chars": list(tokenizer.chars),
        "step": step,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_atomic(Path(path), buf.getvalue())


def save_resume(path: Path, state: dict) -> None:
    """A resume checkpoint (train.Run.state_dict()), written atomically: a kill mid-write keeps the previous one."""
    buf = io.BytesIO()
    torch.save(state, buf)
    write_atomic(Path(path), buf.getvalue())


def load_resume(path: Path) -> dict:
    """A resume checkpoint, read with torch's weights-only loader; UsageError naming the file if it cannot be."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign: one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"cannot read resume checkpoint {path}: {first}") from None


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[GPT, Tokenizer, dict]:
    """(model in eval mode, tokenizer, payload) from a model.pt or a run directory holding one."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}: pass a run directory that has model.pt")
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle's protocol before refusing it anyway
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location=device, weights_only=True)
        model_cfg = from_dict(ModelConfig, payload["model_config"])
        state = payload["state_dict"]
        dtype = next(iter(state.values())).dtype
        model = GPT(model_cfg).to(dtype)
        model.load_state_dict(state)
    except UsageError:
        raise
    except Exception as err:  # a truncated or foreign file: say which in one line, not a traceback
        raise UsageError(f"cannot read checkpoint {path}: {_load_failure(err)}") from None
    model.to(device).eval()
    return model, Tokenizer(tuple(payload["chars"])), payload


def _load_failure(err: Exception) -> str:
    """Why torch.load failed, in one line. Its weights-only refusal runs to six lines that advise weights_only=False,
    which would run whatever code the file holds: the one advice we never give."""
    text = str(err).strip()
    if isinstance(err, pickle.UnpicklingError) and text.startswith("Weights only load failed"):
        if "GLOBAL" in text:
            return ("it holds Python objects other than tensors, which microgpt refuses to unpickle (only load "
                    "checkpoints you trust)")
        return "it is not a checkpoint of tensors (torch's weights-only unpickler refused it)"
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read {path}: {err}") from None
