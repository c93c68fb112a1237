"""The command line: `microgpt train`, `sample`, `ensemble`, `sweep`, `dashboard`, `report` and `ngram`. The only module that
reads argv, picks the device, sets thread counts and makes run directories.

Importing it loads no torch, optuna, matplotlib or scipy: `microgpt --help` and a mistyped flag answer at once, and
each command imports what it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import shutil
import socket
import sys
from pathlib import Path

from .config import (DATA_ENV, MAX_CHARS, MAX_SAMPLES, NGRAM_ORDER, PRESETS, ModelConfig, SystemFailure, TrainConfig,
                     UsageError, from_dict, resolve)
from .files import check_dir_name, make_dir, os_error_text
from .interrupt import stop_requests
from .precision import resolve_autocast  # torch-free until a CUDA device is asked about

DATA_HELP = (f"one example per line, UTF-8 (default: ${DATA_ENV}, else ~/.cache/microgpt/names.txt, else download "
             "makemore's names.txt, sha256-checked)")


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


# --help's groups of the run flags, in order, with a line under the title; a config field names its group in its
# metadata (config.setting), else it is "model" (ModelConfig) or "training" (TrainConfig)
RUN_GROUPS = {"data": None, "model": None, "training": None, "data augmentation": "training batches only",
              "evaluation and output": None}


def run_fields() -> list[dataclasses.Field]:
    """The config fields that are flags: those with help in their metadata (all but vocab_size and extra)."""
    return [f for cls in (ModelConfig, TrainConfig) for f in dataclasses.fields(cls) if "help" in f.metadata]


def default_text(value: object) -> str:
    """A default as --help shows it: on/off, 0.01, 1e-08, float32."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """--data, --max-chars and a flag per config field; default None, so only what the user typed overrides the
    preset."""
    groups = {title: p.add_argument_group(title, line) for title, line in RUN_GROUPS.items()}
    groups["data"].add_argument("--data", metavar="PATH", help=DATA_HELP)
    groups["data"].add_argument("--max-chars", type=int, default=MAX_CHARS, metavar="N",
                                help=f"longest example accepted, in characters (default {MAX_CHARS}): a longer line "
                                     "is an error, not a model sized to it")
    for f in run_fields():
        meta = f.metadata
        group = meta.get("group") or ("model" if f.name in ModelConfig.__dataclass_fields__ else "training")
        names = ([meta["short"]] if "short" in meta else []) + [f"--{f.name.replace('_', '-')}"]
        shown = meta.get("default_text", default_text(f.default))
        kwargs: dict = {"dest": f.name, "default": None, "help": f"{meta['help']} (default {shown})".replace("%", "%%")}
        if isinstance(f.default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=type(f.default), choices=meta.get("choices"), metavar=meta.get("metavar"))
        groups[group].add_argument(*names, **kwargs)


def build_parser() -> Parser:
    parser = Parser(prog="microgpt", description="Train tiny character-level GPTs on names; measure held-out loss.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    p = sub.add_parser("train", help="train one model and record the run",
                       description="Train one model; record it under --out-dir/<name>/.")
    p.add_argument("--preset", choices=tuple(PRESETS), help="start from a named recipe; flags override it")
    add_run_flags(p)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if present")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest for these sizes)")
    p.add_argument("--out-dir", default="runs", help="where run directories go (default runs/)")
    p.add_argument("--name", help="run directory name (default <preset|train>-<date>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted run from its resume.pt, with the settings its config.json records; "
                        "for a --seeds stack, the directory above its members")
    p.add_argument("--checkpoint-every", type=int, default=1000, metavar="STEPS",
                   help="write RUN_DIR/resume.pt (weights, optimizer, batch stream, RNG states) every this many steps "
                        "and on Ctrl-C/SIGTERM; 0 = only then (default 1000). Removed when the run completes")
    p.add_argument("--seeds", type=int, metavar="K",
                   help="train K runs of this configuration, seeds --seed, --seed+1, ..., as one stacked model in one "
                        "process (each its own run directory under --out-dir/<name>/s<seed>/), then their mean +- sd; "
                        "the stack checkpoints to --out-dir/<name>/resume.pt (default: one run)")
    p.add_argument("--ensemble", action="store_true",
                   help="with --seeds: then measure the K runs as one ensemble (mean of their probabilities), as "
                        "`microgpt ensemble` does, into --out-dir/<name>/ensemble/ (default: off)")
    p.add_argument("--calibrate", action="store_true",
                   help="with --ensemble: fit the ensemble's temperature on val, as `microgpt ensemble --calibrate` "
                        "does (default: off)")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="when the run ends (or is interrupted), write its train/loss, val/loss and lr per step as "
                        "TensorBoard events into DIR/<run name>/ (view: tensorboard --logdir DIR); needs "
                        "pip install -e \".[tensorboard]\" (default: none)")

    p = sub.add_parser("sweep", help="run a grid, random or TPE search over training settings",
                       description="Run a sweep from a plan file (see plans/) or from flags; rerun the same command to "
                                   "resume. `microgpt sweep export DIR` rewrites DIR/results.csv from the storage.")
    p.add_argument("plan_args", nargs="*", metavar="PLAN.toml | export DIR",
                   help="a plan file, or `export SWEEP_DIR`")
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                   help="a grid dimension (repeatable), e.g. --grid lr=0.005,0.01")
    p.add_argument("--space", action="append", default=[], metavar="NAME=LOW:HIGH[:log]|A,B",
                   help="a random/TPE dimension (repeatable), e.g. --space lr=1e-4:3e-2:log --space optimizer=adam,adamw")
    p.add_argument("--mode", choices=("grid", "random", "tpe"), help="default: grid with --grid, tpe with --space")
    p.add_argument("--trials", type=int, help="random/TPE: configurations to try")
    p.add_argument("--seeds", type=int, help="seeds per configuration (each its own run)")
    p.add_argument("--pruner", choices=("none", "asha", "hyperband", "median"), help="prune on val at eval steps")
    p.add_argument("--workers", type=int, help="worker processes on this machine, one torch thread each (default 1)")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage shared by machines, e.g. postgresql://user:pw@host/db "
                        "(default: a journal file in the sweep directory)")
    p.add_argument("--join", metavar="NAME", help="join the sweep NAME in --storage with this machine's workers")
    p.add_argument("--stack", default="auto", metavar="K|auto",
                   help="runs a worker claims at once; those of one model shape train as one stacked model (K models "
                        "for about the time of a few at microgpt's size); 1 = one run at a time. auto: an even share "
                        "of the plan per worker, at most 16 (4 for TPE) (default auto)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                   help="where every worker trains; cuda: all of them share the GPU, where a stack of K runs costs "
                        "about one run's time (auto: cuda if present) (default cpu: one core per worker)")
    p.add_argument("--heartbeat", type=int, default=15, metavar="SECONDS",
                   help="database storages: workers record a heartbeat this often, and a run silent for 4 heartbeats "
                        "is taken as its worker's death and redone (default 15; fixed when the sweep is created)")
    p.add_argument("--refine", metavar="SWEEP_DIR", help="search a narrowed range around SWEEP_DIR's best configurations")
    p.add_argument("--top", type=int, default=3, help="--refine: how many configurations to refine around (default 3)")
    p.add_argument("--preset", choices=tuple(PRESETS), help="base the runs on a preset")
    p.add_argument("--name", help="sweep name (default: the plan's, else sweep-<date>-<time>)")
    p.add_argument("--out-dir", default="sweeps", help="where sweep directories go (default sweeps/)")
    add_run_flags(p)

    p = sub.add_parser("dashboard", help="open optuna-dashboard on a sweep's storage",
                       description="Serve optuna-dashboard (pip install 'microgpt[dashboard]') on a sweep's storage.")
    p.add_argument("sweep_dir", metavar="SWEEP_DIR")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--storage", metavar="URL", help="the storage URL with its password (storage.txt keeps none)")

    p = sub.add_parser(
        "report", help="summarise runs and sweeps into report.html, report.md and summary.csv",
        description="Read run directories and sweep directories (CSV and JSON records only) and write a report: "
                    "report.html (self-contained), report.md, the PNG figures and summary.csv.")
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="sweep directories (sweeps/<name>), run directories, or folders of run directories")
    p.add_argument("--baseline", metavar="RUN_DIR|CONFIG",
                   help="what the others are compared with: a run directory or a configuration id (default: the "
                        "configuration equal to a plan's base, the defaults filling what base leaves open)")
    p.add_argument("--plan", metavar="PLAN.toml",
                   help="the plan file whose [hypotheses] the report judges (default: those in a plan.json, if any)")
    p.add_argument("--top", type=int, default=None,
                   help="configurations drawn and detailed, by mean val loss (default: all up to 12, else 3)")
    p.add_argument("-o", "--out", default="report", help="output directory (default report/)")

    p = sub.add_parser(
        "ngram", help="fit a Kneser-Ney character n-gram: the count-based reference for the transformer",
        description="Fit an interpolated Kneser-Ney character n-gram on the train split and print its train, val and "
                    "test loss under docs/protocol.md's measure (the same the transformer reports).")
    p.add_argument("--order", type=int, metavar="N",
                   help=f"n-gram order: a prediction sees the N-1 tokens before it (default {NGRAM_ORDER})")
    p.add_argument("--orders", metavar="LOW-HIGH",
                   help="fit each order of a range (e.g. 1-8) or list (e.g. 2,4,6) and print a table")
    p.add_argument("--discount", type=float, metavar="D",
                   help="one absolute discount in (0, 1) for every order (default: modified Kneser-Ney D1, D2, D3+ "
                        "per order, from count-of-counts)")
    p.add_argument("--data", metavar="PATH", help=DATA_HELP)
    p.add_argument("--split-seed", type=int, metavar="N",
                   help=f"seed of docs/protocol.md's split permutation (default {TrainConfig.split_seed})")
    p.add_argument("--max-chars", type=int, metavar="N", default=MAX_CHARS,
                   help=f"longest example accepted, in characters (default {MAX_CHARS})")

    p = sub.add_parser("sample", help="generate names from a trained run",
                       description="Generate names from a run's model.pt; tag each new / in train / in val-test.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `microgpt train`")
    p.add_argument("-n", "--num", type=int, default=20, help="how many names (default 20)")
    p.add_argument("-t", "--temperature", type=float, default=0.5, help="softmax temperature (default 0.5)")
    p.add_argument("--top-k", type=int, help="sample from the k most likely tokens only")
    p.add_argument("--prefix", default="", metavar="TEXT",
                   help="names that start with TEXT: the model continues BOS + TEXT (default: none)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--data", metavar="PATH", help="dataset for tagging (default: the one the run recorded)")
    p.add_argument("--max-chars", type=int, metavar="N",
                   help=f"longest example accepted in that dataset (default: the run's, else {MAX_CHARS})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")

    p = sub.add_parser(
        "ensemble", help="measure, sample and record an ensemble of trained runs",
        description="Average trained runs' next-character probabilities (--combine prob) or logits (logit); order the "
                    "members by val loss, measure val for K = 1, 2, 4, 8, ... and then test once, and record the "
                    "ensemble as a run-like directory that `microgpt report` reads and --distill-from accepts.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories of one data file and split")
    p.add_argument("--select", choices=("all", "greedy"), default="all",
                   help="all: every run given, best val first; greedy: forward selection on val, adding the run that "
                        "lowers the ensemble's val loss most until none does (default all)")
    p.add_argument("--combine", choices=("prob", "logit"), default="prob",
                   help="what the recorded ensemble averages: probabilities or logits (default prob); both are "
                        "measured and printed")
    p.add_argument("--calibrate", action="store_true",
                   help="fit one temperature on val that divides the ensemble's log-probabilities (temperature "
                        "scaling); the recorded ensemble, its samples and a student distilled from it use it, and the "
                        "figures at temperature 1 are printed and kept beside (default: off)")
    p.add_argument("--samples", type=int, default=20, help="names sampled from the ensemble into samples.txt "
                                                           "(default 20)")
    p.add_argument("-t", "--temperature", type=float, default=0.5, help="sampling temperature (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--data", metavar="PATH", help="the dataset (default: the one the runs recorded; sha256-checked)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out-dir", default="runs", help="where the ensemble's directory goes (default runs/)")
    p.add_argument("--name", help="its directory name (default ensemble-<date>-<time>)")
    return parser


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but torch sees no CUDA device: use --device cpu or auto")
    return name


def cmd_train(args: argparse.Namespace, argv: list[str]) -> int:
    import torch

    from .augment import check_synthetic_source
    from .data import load_dataset
    from .rundir import new_run_dir, run_config, write_json

    if args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if args.checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be >= 0 (0 = only on interrupt), got {args.checkpoint_every}")
    if args.tensorboard is not None:
        summary_writer()  # missing tensorboard is known before any training
    torch.set_num_threads(args.threads)
    overrides = {f.name: getattr(args, f.name) for f in run_fields() if getattr(args, f.name) is not None}
    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    resuming_stack = bool(args.resume) and is_stack_dir(Path(args.resume))
    if args.ensemble and (args.seeds or 1) < 2 and not resuming_stack:
        raise UsageError("--ensemble measures the runs of --seeds K (K >= 2) as one model: add --seeds")
    if args.calibrate and not args.ensemble and not resuming_stack:
        raise UsageError("--calibrate fits the temperature of the --ensemble of a --seeds stack: add --ensemble")
    if args.resume:
        if args.seeds is not None:
            raise UsageError("--resume continues a run or a stack with the members it started with: drop --seeds")
        if resuming_stack:
            return resume_stack(args, argv, overrides)
        return resume_train(args, argv, overrides)
    split_seed = overrides.get("split_seed", TrainConfig.split_seed)
    data = load_dataset(args.data, split_seed, args.max_chars)
    model_cfg, cfg = resolve(overrides, args.preset, data.tokenizer.vocab_size, data.max_len + 1)
    data.check_block_size(model_cfg.block_size)
    check_synthetic_source(data, cfg)
    teacher = load_teacher(cfg, data)  # before the run directory: a refused teacher leaves nothing behind
    device = resolve_device(args.device)
    if args.seeds is not None and args.seeds > 1:
        return train_seeds(args, argv, model_cfg, cfg, data, device, teacher)
    run_dir = new_run_dir(args.out_dir, args.name, prefix=args.preset or "train")  # input is valid: safe to create
    config = run_config(model_cfg, cfg, data, device, ["microgpt", *argv])
    config["autocast"] = dict(zip(("chosen", "why"), resolve_autocast(cfg.autocast, device, cfg.dtype, cfg.parity)))
    try:
        write_json(run_dir / "config.json", config)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    print_setup(data, model_cfg, cfg, device, args.threads)
    return run_training(run_dir, config, model_cfg, cfg, data, device, args.checkpoint_every,
                        tensorboard=args.tensorboard, teacher=teacher)


def optimizer_text(cfg: TrainConfig) -> str:
    """The optimizer and its peak rates as the header prints them (Muon's two: its matrices' and AdamW's)."""
    if cfg.optimizer == "muon":
        return f"muon lr {cfg.muon_lr:g} + adamw lr {cfg.lr:g}"
    return f"{cfg.optimizer} lr {cfg.lr:g}"


def load_teacher(cfg: TrainConfig, data):
    """The ensemble --distill-from names, checked against data; None without one."""
    if not cfg.distill_from:
        return None
    from .ensemble import load_teacher as load

    return load(cfg.distill_from, data)


def refuse_overrides(args: argparse.Namespace, overrides: dict, what: str) -> None:
    """--resume takes the settings a run (or stack) recorded: any setting, preset, name or data given is an error."""
    given = sorted(f"--{k.replace('_', '-')}" for k in overrides) + [f for f, v in (
        ("--preset", args.preset), ("--name", args.name), ("--data", args.data)) if v]
    if given:
        raise UsageError(f"--resume continues {what} with the settings it started with; drop {', '.join(given)}")


def recorded_data(path: str, split_seed: int, sha256: str, max_chars: int, what: str):
    """The dataset a recorded run trained on, split as it was; UsageError if the file changed since."""
    from .data import load_dataset

    data = load_dataset(path, split_seed, max_chars)
    if data.sha256 != sha256:
        raise UsageError(f"{path} changed since {what} started (sha256 differs): resume needs the same data")
    return data


def resume_train(args: argparse.Namespace, argv: list[str], overrides: dict) -> int:
    """`microgpt train --resume RUN_DIR`: the run's own settings, data and split, from its resume.pt onwards."""
    from .rundir import RESUME_FILE, load_resume, read_json, write_json

    refuse_overrides(args, overrides, "a run")
    run_dir = Path(args.resume)
    if not (run_dir / "config.json").is_file():
        raise UsageError(f"{run_dir} is not a run directory (no config.json): pass the directory `microgpt train` made")
    summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else {}
    if summary and summary.get("state") != "interrupted":
        raise UsageError(f"{run_dir} finished ({summary.get('state')}): there is nothing to resume")
    checkpoint = run_dir / RESUME_FILE
    if not checkpoint.is_file():
        raise UsageError(f"{run_dir} has no {RESUME_FILE} to resume from: it is written every --checkpoint-every "
                         "steps and on Ctrl-C/SIGTERM, so this run stopped before its first one")
    state = load_resume(checkpoint)
    config = read_json(run_dir / "config.json")
    try:
        model_cfg = from_dict(ModelConfig, config["model"])
        cfg = from_dict(TrainConfig, config["train"])
        data_path, split_seed, sha256 = config["data"]["path"], config["data"]["split_seed"], config["data"]["sha256"]
    except (KeyError, TypeError) as err:
        raise UsageError(f"{run_dir / 'config.json'} lacks {err}: it was not written by `microgpt train`") from None
    data = recorded_data(data_path, split_seed, sha256, config["data"].get("max_chars", MAX_CHARS), "the run")
    device = resolve_device(args.device)
    config.setdefault("resumed", []).append({"argv": ["microgpt", *argv], "step": state["progress"]["step"],
                                             "device": device})
    write_json(run_dir / "config.json", config)
    print(f"resume {run_dir} from step {state['progress']['step']}/{cfg.steps}")
    print_setup(data, model_cfg, cfg, device, args.threads)
    return run_training(run_dir, config, model_cfg, cfg, data, device, args.checkpoint_every, resume=state,
                        tensorboard=args.tensorboard, teacher=load_teacher(cfg, data))


def print_setup(data, model_cfg: ModelConfig, cfg: TrainConfig, device: str, threads: int) -> None:
    from .augment import augmentation_text
    from .model import GPT

    print(f"data   {data.path}: {len(data.words):,} examples, vocab {data.tokenizer.vocab_size} "
          f"| train {len(data.train):,} / val {len(data.val):,} / test {len(data.test):,} (split seed {data.split_seed})")
    print(f"model  {GPT(model_cfg).num_params():,} params: {model_cfg.n_layer} layer x {model_cfg.n_head} heads x {model_cfg.n_embd} wide, block "
          f"{model_cfg.block_size}, {model_cfg.norm}, {model_cfg.activation} | {optimizer_text(cfg)} "
          f"{cfg.schedule}, batch {cfg.batch_size}, {cfg.steps} steps | {device}, {threads} thread{'s' if threads > 1 else ''}, {cfg.dtype}"
          + precision_text(cfg, device) + augmentation_text(cfg)
          + (" | microgpt parity" if cfg.parity else ""))
    if cfg.distill_from:
        print(f"distil {cfg.distill_mix:g} x the teacher's distribution + {1 - cfg.distill_mix:g} x the true next "
              f"character, teacher {cfg.distill_from}")


def precision_text(cfg: TrainConfig, device: str) -> str:
    """The model line's note on precision: bf16 autocast or not, and why when --autocast auto decided it."""
    chosen, why = resolve_autocast(cfg.autocast, device, cfg.dtype, cfg.parity)
    if cfg.autocast != "auto":
        return " (bf16 autocast)" if chosen == "bfloat16" else ""
    return f" ({'bf16 autocast' if chosen == 'bfloat16' else 'no autocast'} by --autocast auto: {why})"


def run_training(run_dir: Path, config: dict, model_cfg: ModelConfig, cfg: TrainConfig, data, device: str,
                 checkpoint_every: int, resume: dict | None = None, tensorboard: str | None = None,
                 teacher=None) -> int:
    """Train, then write the run's records (and its TensorBoard events under tensorboard/<run name>); on
    Ctrl-C/SIGTERM save the best model so far and the resume checkpoint.

    If the records cannot be written (a full disk), a run directory that holds a resume checkpoint is kept for
    --resume, and one without is removed rather than left half-written.
    """
    from .augment import synthetic_pool
    from .rundir import RESUME_FILE, record_run, save_resume
    from .sample import tag_shares
    from .train import train

    checkpoint = run_dir / RESUME_FILE
    py_rng = random.Random(cfg.seed) if cfg.parity else None
    try:
        with stop_requests() as stop:
            model, result = train(model_cfg, cfg, data, device=device, log=print, progress=sys.stderr.isatty(),
                                  py_rng=py_rng, should_stop=stop.is_set, checkpoint_every=checkpoint_every,
                                  on_checkpoint=lambda state: save_resume(checkpoint, state), resume=resume,
                                  pool=synthetic_pool(data, cfg) if cfg.synthetic else None, teacher=teacher)
        names, tags = record_run(run_dir, config, cfg, data, model, result, py_rng)
        if result.state != "interrupted":
            checkpoint.unlink(missing_ok=True)  # the run is complete on disk: nothing left to resume
    except (OSError, KeyboardInterrupt) as err:
        if checkpoint.is_file():
            what = "interrupted again" if isinstance(err, KeyboardInterrupt) else f"cannot write: {err}"
            raise SystemFailure(f"{what}; {run_dir} keeps its last checkpoint: microgpt train --resume {run_dir}") from None
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if tensorboard is not None:  # after the records: the run is safe on disk whatever happens here
        write_tensorboard(Path(tensorboard) / run_dir.name, result.history, resume["progress"]["step"] if resume else 0)
    fmt = lambda x: "  -   " if x is None else f"{x:.4f}"  # noqa: E731
    if result.state == "interrupted":
        best = f"best val {result.best_val:.4f} (step {result.best_val_step})" if result.best_val is not None else "no evaluation yet"
        print(f"interrupted after step {result.steps_done}/{cfg.steps} ({getattr(stop, 'signal', 'signal')}): {best} "
              f"saved in {run_dir}; continue with: microgpt train --resume {run_dir}")
        return 130
    tier = f"tier {result.tier}" if result.tier else "no tier (test >= 2.2)" if result.test_loss is not None else "no tier"
    print(f"{result.state}: {result.stop_reason} in {result.wall_seconds:.1f} s "
          f"({1000 * result.train_seconds / max(1, result.steps_done):.2f} ms/step, {result.tokens_per_second:,.0f} tok/s)")
    if result.best_val is None:
        print("loss   no evaluation finished before the run diverged: no model was selected, none is saved")
    else:
        print(f"loss   train {fmt(result.train_loss)} | val {fmt(result.val_loss)} (best, step {result.best_val_step}) "
              f"| test {fmt(result.test_loss)} | {tier}")
    if cfg.parity:
        print("note   microgpt parity trains on every name, val/test included: these losses are not held out")
    if names:
        shares = tag_shares(tags)
        print(f"sample {', '.join(names[:8])} ... ({shares['new']:.0%} new, {shares['in train']:.0%} in train, "
              f"{shares['in val-test']:.0%} in val-test)")
    print(f"run    {run_dir}")
    if tensorboard is not None:
        print(f"tensorboard --logdir {tensorboard}")
    return 0


def train_seeds(args: argparse.Namespace, argv: list[str], model_cfg: ModelConfig, cfg: TrainConfig, data,
                device: str, teacher=None) -> int:
    """`microgpt train --seeds K`: K seeds of one configuration trained as one stack (stacked.py), one run
    directory each under --out-dir/<name>/, then a line per seed and their mean +- sd."""
    from .rundir import new_run_dir, run_config, write_json
    from .stacked import default_masks

    seeds = [cfg.seed + i for i in range(args.seeds)]
    configs = [(model_cfg, dataclasses.replace(cfg, seed=s)) for s in seeds]
    parent = new_run_dir(args.out_dir, args.name, prefix=args.preset or "train")
    run_dirs = [parent / f"s{s}" for s in seeds]
    stack_id = f"{parent.name}-{random.getrandbits(32):08x}"  # what the members' records share: one clock
    records = []
    try:
        for run_dir, (m, c) in zip(run_dirs, configs):
            run_dir.mkdir()
            config = run_config(m, c, data, device, ["microgpt", *argv])
            config["autocast"] = dict(zip(("chosen", "why"), resolve_autocast(c.autocast, device, c.dtype, c.parity)))
            config["stack"] = {"id": stack_id, "members": len(seeds), "seeds": seeds,
                               "dropout_masks": default_masks(device)}
            write_json(run_dir / "config.json", config)
            records.append(config)
    except BaseException:
        shutil.rmtree(parent, ignore_errors=True)
        raise
    print_setup(data, model_cfg, cfg, device, args.threads)
    print(f"stack  {len(seeds)} seeds ({seeds[0]}..{seeds[-1]}) trained as one stacked model")
    return train_stack(args, parent, run_dirs, records, configs, data, device, teacher=teacher)


def is_stack_dir(path: Path) -> bool:
    """A `microgpt train --seeds K` directory: no config.json of its own, members s<seed>/ that have one."""
    return path.is_dir() and not (path / "config.json").is_file() and any(path.glob("s*/config.json"))


def resume_stack(args: argparse.Namespace, argv: list[str], overrides: dict) -> int:
    """`microgpt train --resume STACK_DIR`: a --seeds stack from its resume.pt onwards, each member with the settings
    its config.json records."""
    from .rundir import RESUME_FILE, load_resume, read_json, write_json
    from .stacked import default_masks

    refuse_overrides(args, overrides, "a stack")
    parent = Path(args.resume)
    checkpoint = parent / RESUME_FILE
    if not checkpoint.is_file():
        raise UsageError(f"{parent} has no {RESUME_FILE} to resume from: the stack finished, or stopped before its "
                         "first checkpoint (every --checkpoint-every steps and on Ctrl-C/SIGTERM)")
    state = load_resume(checkpoint)
    members = state.get("members") if isinstance(state, dict) else None
    if not members:
        raise UsageError(f"{checkpoint} is not a stack's checkpoint: resume a single run by its own directory")
    run_dirs = [parent / f"s{m['train_config']['seed']}" for m in members]
    records = []
    for run_dir in run_dirs:
        if not (run_dir / "config.json").is_file():
            raise UsageError(f"{run_dir} is missing (no config.json): the stack's members must all be there to resume")
        records.append(read_json(run_dir / "config.json"))
    try:
        configs = [(from_dict(ModelConfig, c["model"]), from_dict(TrainConfig, c["train"])) for c in records]
        source = records[0]["data"]
        data_path, split_seed, sha256 = source["path"], source["split_seed"], source["sha256"]
    except (KeyError, TypeError) as err:
        raise UsageError(f"{run_dirs[0] / 'config.json'} lacks {err}: it was not written by `microgpt train`") from None
    data = recorded_data(data_path, split_seed, sha256, source.get("max_chars", MAX_CHARS), "the stack")
    device = resolve_device(args.device)
    if state.get("masks") != default_masks(device):
        raise UsageError(f"the stack drew its dropout masks {state.get('masks')} on its first device, {device} would "
                         "draw them otherwise: resume it with the --device it started on")
    for run_dir, config in zip(run_dirs, records):
        config.setdefault("resumed", []).append({"argv": ["microgpt", *argv], "step": state["step"], "device": device})
        write_json(run_dir / "config.json", config)
    model_cfg, cfg = configs[0]
    print(f"resume {parent} from step {state['step']}/{max(c.steps for _, c in configs)}, {len(state['active'])} of "
          f"{len(configs)} members still training")
    print_setup(data, model_cfg, cfg, device, args.threads)
    return train_stack(args, parent, run_dirs, records, configs, data, device, resume=state,
                       teacher=load_teacher(cfg, data))


def train_stack(args: argparse.Namespace, parent: Path, run_dirs: list[Path], records: list[dict], configs: list,
                data, device: str, resume: dict | None = None, teacher=None) -> int:
    """Train (or continue) a --seeds stack, checkpointing it to parent/resume.pt; record each member and print their
    mean +- sd (and the ensemble with --ensemble). teacher: every member's (--distill-from), as one table."""
    import statistics

    from .augment import synthetic_pool
    from .rundir import RESUME_FILE, record_run, save_resume
    from .stacked import train_stacked

    cfg = configs[0][1]
    checkpoint = parent / RESUME_FILE
    py_rngs = [random.Random(c.seed) if c.parity else None for _, c in configs]
    if teacher is not None:  # the teacher's distributions of the train names, computed once for all the members
        from .distill import teacher_table

        teacher = teacher_table(teacher, data, device)
    with stop_requests() as stop:
        trained = train_stacked(configs, data, device=device, log=print, should_stop=stop.is_set, py_rngs=py_rngs,
                                progress=sys.stderr.isatty(), resume=resume,
                                on_checkpoint=lambda state: save_resume(checkpoint, state),
                                checkpoint_every=args.checkpoint_every,
                                pools=[synthetic_pool(data, c) if c.synthetic else None for _, c in configs],
                                teachers=[teacher] * len(configs))
    fmt = lambda x: "  -   " if x is None else f"{x:.4f}"  # noqa: E731
    for run_dir, config, (_, c), (model, result), rng in zip(run_dirs, records, configs, trained, py_rngs):
        record_run(run_dir, config, c, data, model, result, rng)
        if args.tensorboard is not None:
            after = resume["step"] if resume is not None else 0
            write_tensorboard(Path(args.tensorboard) / parent.name / run_dir.name, result.history, after)
        print(f"s{c.seed:<6d} {result.state}: val {fmt(result.val_loss)} (step {result.best_val_step}) | "
              f"test {fmt(result.test_loss)} | {f'tier {result.tier}' if result.tier else 'no tier'} | {run_dir}")
    results = [r for _, r in trained]
    if any(r.state == "interrupted" for r in results):
        print(f"interrupted: continue with `microgpt train --resume {parent}`")
        return 130
    checkpoint.unlink(missing_ok=True)
    wall = max(r.wall_seconds for r in results)
    for what in ("val_loss", "test_loss"):
        values = [getattr(r, what) for r in results if getattr(r, what) is not None]
        if values:
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"{what[:-5]:<6} mean {statistics.fmean(values):.4f} +- {sd:.4f} (sd over {len(values)} seeds)")
    print(f"stack  {len(results)} runs in {wall:.1f} s | runs {parent}")
    first = records[0].get("argv", [])  # a resumed stack finishes the command it started with
    if args.ensemble or "--ensemble" in first:
        from . import ensemble

        done = [str(d) for d, r in zip(run_dirs, results) if r.best_val is not None]
        calibrate = args.calibrate or "--calibrate" in first
        return ensemble.run(argparse.Namespace(
            run_dirs=done, select="all", combine="prob", calibrate=calibrate, samples=cfg.samples,
            temperature=cfg.temperature, seed=0, data=None, threads=args.threads, out_dir=str(parent),
            name="ensemble"), ["ensemble", *done, *(["--calibrate"] if calibrate else [])])
    return 0


def summary_writer() -> type:
    """torch's TensorBoard SummaryWriter, or a UsageError saying how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError('--tensorboard needs the tensorboard package: pip install -e ".[tensorboard]" '
                         "(or pip install tensorboard)") from None
    return SummaryWriter


def write_tensorboard(log_dir: Path, history: list[dict], after_step: int = 0) -> None:
    """The steps of history after after_step (a resumed run's earlier ones are there already) as TensorBoard scalars:
    train/loss (the batch's), val/loss (at evaluations) and lr, at their wall-clock times."""
    import time

    rows = [r for r in history if r["step"] > after_step]
    if not rows:
        return
    end, last = time.time(), history[-1]["elapsed_s"]
    with summary_writer()(str(log_dir)) as writer:
        for row in rows:
            walltime = end - (last - row["elapsed_s"])
            if math.isfinite(row["loss"]):
                writer.add_scalar("train/loss", row["loss"], row["step"], walltime=walltime)
            if row["val_loss"] is not None:
                writer.add_scalar("val/loss", row["val_loss"], row["step"], walltime=walltime)
            writer.add_scalar("lr", row["lr"], row["step"], walltime=walltime)


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from .data import load_dataset
    from .rundir import load_checkpoint, read_json
    from .sample import sample_names, tag_names, tag_shares

    if not 1 <= args.num <= MAX_SAMPLES:
        raise UsageError(f"-n must be in 1..{MAX_SAMPLES:,}, got {args.num:,}; for more names, run again with another "
                         "--seed")
    if not 0 < args.temperature < math.inf:
        raise UsageError(f"-t must be a finite number > 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run directory not found: {run_dir}")
    device = resolve_device(args.device)
    model, tokenizer, _ = load_checkpoint(run_dir, device)
    config = read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else {}
    data_path = args.data or config.get("data", {}).get("path")
    split_seed = config.get("data", {}).get("split_seed", TrainConfig.split_seed)
    max_chars = config.get("data", {}).get("max_chars", MAX_CHARS) if args.max_chars is None else args.max_chars
    data = load_dataset(data_path, split_seed, max_chars)
    generator = torch.Generator().manual_seed(args.seed)
    names = sample_names(model, tokenizer, args.num, args.temperature, args.top_k, generator, prefix=args.prefix)
    tags = tag_names(names, data.train, data.val + data.test)
    for name, tag in zip(names, tags):
        print(f"{name:<18} {tag}")
    shares = tag_shares(tags)
    print(" | ".join(f"{t} {shares[t]:.0%}" for t in shares))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .plan import load_plan_file, parse_assignment, plan_from_dict
    from .sweep import load_study, open_storage, plan_toml, read_sweep, refine_plan, run_sweep, export_results

    if args.plan_args[:1] == ["export"]:
        if len(args.plan_args) != 2:
            raise UsageError("usage: microgpt sweep export SWEEP_DIR [--storage URL]")
        sweep_dir = Path(args.plan_args[1])
        plan, url = read_sweep(sweep_dir, args.storage)
        n = export_results(load_study(plan, url, say=print), sweep_dir)
        print(f"{n} runs written to {sweep_dir / 'results.csv'}")
        return 0
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if args.name is not None:
        check_dir_name(args.name, "--name")
    overrides = {f.name: getattr(args, f.name) for f in run_fields() if getattr(args, f.name) is not None}
    sources = sum(bool(x) for x in (args.plan_args, args.join, args.refine, args.grid or args.space))
    if sources != 1:
        raise UsageError("give exactly one of: a PLAN.toml, --grid/--space flags, --join NAME, --refine SWEEP_DIR")
    if len(args.plan_args) > 1:
        raise UsageError(f"one plan file at a time, got {len(args.plan_args)}: {' '.join(args.plan_args)}")
    if args.join:
        if not args.storage:
            raise UsageError("--join needs --storage URL: the storage the sweep lives in")
        import optuna

        try:
            study = optuna.load_study(study_name=args.join, storage=open_storage(args.storage))
        except KeyError:
            raise UsageError(f"no sweep named {args.join!r} in that storage") from None
        raw = dict(study.user_attrs.get("plan") or {})
        if not raw:
            raise UsageError(f"study {args.join!r} was not made by microgpt sweep (it has no plan)")
    elif args.refine:
        refined = refine_plan(Path(args.refine), args.top, args.trials, args.name)
        raw = refined.to_dict()
        raw["space"] = {k: (v["choices"] if v["type"] == "categorical" else
                            f"{v['low']}:{v['high']}" + (":log" if v["log"] else "")) for k, v in raw["space"].items()}
    elif args.plan_args:
        raw = load_plan_file(args.plan_args[0])
    else:
        import time

        grid: dict[str, str] = dict(parse_assignment(g, "--grid") for g in args.grid)
        space: dict[str, str] = dict(parse_assignment(s, "--space") for s in args.space)
        raw = {"name": args.name or time.strftime("sweep-%Y%m%d-%H%M%S"),
               "mode": args.mode or ("tpe" if space else "grid"), "grid": grid, "space": space}
    raw = {k: v for k, v in raw.items() if v not in (None, [], {})} | {"name": raw.get("name")}
    if not args.join:
        base = raw.get("base", {})
        raw["base"] = {**base, **overrides} if isinstance(base, dict) else base  # plan_from_dict rejects a non-table
        for key in ("mode", "trials", "seeds", "pruner", "preset"):
            if getattr(args, key) is not None:
                raw[key] = getattr(args, key)
        if args.name:
            raw["name"] = args.name
    plan = plan_from_dict(raw, args.plan_args[0] if args.plan_args else "flags")
    workers = args.workers or plan.workers
    if args.refine:
        target = Path(args.out_dir) / f"{plan.name}.toml"
        make_dir(args.out_dir, "sweep directory")
        target.write_text(plan_toml(plan))
        print(f"plan   {target} (refined around the top {args.top} of {args.refine})")
    if args.heartbeat < 1:
        raise UsageError(f"--heartbeat must be >= 1 second, got {args.heartbeat}")
    if args.stack == "auto":
        from .sweep import stack_size

        stack = stack_size(plan, workers)
    elif args.stack.isdigit() and int(args.stack) >= 1:
        stack = int(args.stack)
        if stack > 1 and "seconds" in plan.objectives:
            raise UsageError(f"--stack {stack}: plan {plan.name} searches for speed (objective seconds), which needs "
                             "each run timed alone, but a stack's members share one clock: use --stack 1 (or auto)")
    else:
        raise UsageError(f"--stack must be a positive integer or auto, got {args.stack!r}")
    outcome = run_sweep(plan, Path(args.out_dir), args.storage, workers, args.data, args.max_chars,
                        heartbeat=args.heartbeat, stack=stack, device=resolve_device(args.device))
    if outcome["interrupted"]:
        return 130
    return 1 if outcome["missing"] or outcome["died"] else 0


def check_port_free(host: str, port: int) -> None:
    """UsageError unless a server can listen on host:port, found out by binding it (the dashboard's server would die
    with a traceback, after printing its address)."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be in 1..65535, got {port}")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as HTTP servers do: a closed port is free
            s.bind((host, port))
    except OSError as err:  # in use, or a host that is not this machine's
        raise UsageError(f"cannot listen on {host}:{port}: {err.strerror or err}; pass another --port "
                         "(or --host)") from None


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .sweep import open_storage, read_sweep

    check_port_free(args.host, args.port)
    _, url = read_sweep(Path(args.sweep_dir), args.storage)
    try:
        import optuna_dashboard
    except ImportError:
        raise UsageError("optuna-dashboard is not installed: pip install 'microgpt[dashboard]'") from None
    print(f"dashboard for {args.sweep_dir} on http://{args.host}:{args.port}/ (Ctrl-C stops it)")
    optuna_dashboard.run_server(open_storage(url), host=args.host, port=args.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `microgpt` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return cmd_train(args, argv)
        if args.command == "sweep":
            return cmd_sweep(args)
        if args.command == "dashboard":
            return cmd_dashboard(args)
        if args.command == "report":
            from . import report

            return report.run(args)
        if args.command == "ngram":
            from . import ngram

            return ngram.run(args)
        if args.command == "ensemble":
            from . import ensemble

            return ensemble.run(args, argv)
        return cmd_sample(args)
    except UsageError as err:
        sys.stderr.write(f"microgpt: error: {err}\n")
        return 2
    except SystemFailure as err:
        sys.stderr.write(f"microgpt: error: {err}\n")
        return 1
    except OSError as err:  # the system failed (a full disk, a lost mount), not the input: one line, exit 1
        if isinstance(err, BrokenPipeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        sys.stderr.write(f"microgpt: error: {os_error_text(err)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("microgpt: interrupted\n")
        return 130
