"""An ensemble of trained runs used as one model: its next-character distribution is the mean of the members'
probabilities ("prob"), or, measured beside it, the softmax of the mean of their logits ("logit"); with
--calibrate, that distribution sharpened or flattened by one temperature fitted on val (temperature scaling).

Members are run directories of one data file, split and vocabulary. The ensemble is measured with train.evaluate, so
under docs/protocol.md's measure on the same packed batches as any single run; it samples names like a model, is the
teacher of distillation (distill.py), and `microgpt ensemble` records it as a run-like directory. Honesty: members
are ordered by their val loss alone, and test is measured once per finished ensemble, after every choice.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import MAX_CHARS, MAX_SAMPLES, UsageError
from .data import Dataset, load_dataset
from .files import write_atomic
from .model import GPT
from .protocol import tag_names, tag_shares, tier_of
from .record import RunResult, stack_seconds
from .rundir import cpu_info, git_commit, load_checkpoint, metrics_csv, new_run_dir, read_json, write_json
from .sample import sample_names
from .train import evaluate

COMBINES = ("prob", "logit")
SELECTS = ("all", "greedy")  # every member given, or forward selection on val (Caruana et al. 2004, no repeats)
SIZES = (1, 2, 4, 8)       # ensemble sizes of the loss-vs-K curve (issue 13); K itself is added if it is not one
ENSEMBLE_KEY = "ensemble"  # config.json's key that marks an ensemble directory (and names its members)


class Ensemble(nn.Module):
    """K models as one. forward returns log-probabilities in place of logits, so evaluate(), the sampler and a
    distillation step treat it as a model: softmax of log-probabilities is the same distribution."""

    def __init__(self, models: list[GPT], combine: str = "prob", data_id: tuple | None = None,
                 temperature: float = 1.0):
        super().__init__()
        if combine not in COMBINES:
            raise UsageError(f"--combine must be one of {', '.join(COMBINES)}; got {combine!r}")
        if not models:
            raise UsageError("an ensemble needs at least one run directory")
        self.models = nn.ModuleList(models)
        self.combine = combine
        self.data_id = data_id  # (sha256, split seed, characters) the members were trained on
        self.temperature = temperature  # divides the combined log-probabilities; 1 = as combined (fit_temperature)
        self.cfg = min((m.cfg for m in models), key=lambda c: c.block_size)  # the sampler reads block_size only
        self.train(False)

    def train(self, mode: bool = True) -> "Ensemble":
        """Set the ensemble's flag only: its members stay in eval mode (no dropout), for it is never trained."""
        self.training = mode
        for m in self.models:
            m.eval()
        return self

    def num_params(self) -> int:
        return sum(m.num_params() for m in self.models)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, pos: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) -> the ensemble's log-probabilities (B, T, vocab); loss = mean cross-entropy over targets != -1."""
        logits = torch.stack([m(idx, pos=pos, mask=mask)[0].float() for m in self.models])  # (K, B, T, V)
        log_probs = combine_logits(logits, self.combine)
        if self.temperature != 1.0:
            log_probs = F.log_softmax(log_probs / self.temperature, dim=-1)
        loss = None
        if targets is not None:
            loss = F.nll_loss(log_probs.view(-1, log_probs.size(-1)), targets.view(-1), ignore_index=-1)
        return log_probs, loss

    generate = GPT.generate  # the single model's sampler: it needs only self(idx) and self.cfg.block_size


def combine_logits(logits: torch.Tensor, combine: str) -> torch.Tensor:
    """Members' logits (K, ..., V) -> the ensemble's log-probabilities (..., V)."""
    if combine == "prob":
        # log of the mean softmax without leaving log space: logsumexp of the log-softmaxes, minus log K
        return torch.logsumexp(F.log_softmax(logits, dim=-1), dim=0) - math.log(logits.size(0))
    return F.log_softmax(logits.mean(0), dim=-1)


# --------------------------------------------------------------------------------------------------- loading runs

@dataclass
class Member:
    """One trained run: its directory, its model (eval mode) and the data its config.json records."""

    run_dir: Path
    model: GPT
    config: dict

    @property
    def data_id(self) -> tuple:
        """(sha256, split seed, characters): what must be equal across members and with the data measured on."""
        data = self.config["data"]
        return data["sha256"], data["split_seed"], tuple(self.model_chars)

    @property
    def model_chars(self) -> tuple[str, ...]:
        return tuple(self.config["data"]["chars"])


@dataclass
class Recorded:
    """How an ensemble directory combines its members: what a teacher named by that directory reproduces."""

    combine: str = "prob"
    temperature: float = 1.0


def expand(paths: list[str | Path]) -> tuple[list[Path], Recorded | None]:
    """Run directories, an ensemble directory standing for its members; and how such a directory combines them."""
    dirs: list[Path] = []
    recorded = None
    for path in map(Path, paths):
        config = read_json(path / "config.json") if (path / "config.json").is_file() else {}
        if ENSEMBLE_KEY in config:
            dirs += [Path(p) for p in config[ENSEMBLE_KEY]["members"]]
            recorded = Recorded(config[ENSEMBLE_KEY]["combine"], float(config[ENSEMBLE_KEY].get("temperature", 1.0)))
        else:
            dirs.append(path)
    if len(set(map(str, dirs))) != len(dirs):
        raise UsageError(f"a run directory is named twice among {', '.join(map(str, dirs))}: each member once")
    return dirs, recorded


def load_member(path: Path) -> Member:
    """A finished run directory as a Member; UsageError (one line) for anything else."""
    if not path.is_dir():
        raise UsageError(f"{path}: no such run directory; pass directories that `microgpt train` wrote")
    if not (path / "config.json").is_file():
        raise UsageError(f"{path} is not a run directory (no config.json): pass directories `microgpt train` wrote")
    if not (path / "model.pt").is_file():
        raise UsageError(f"{path} has no model.pt: the run never selected a model (it diverged or was interrupted)")
    config = read_json(path / "config.json")
    data = config.get("data")
    if not isinstance(data, dict) or not all(k in data for k in ("sha256", "split_seed", "chars")):
        raise UsageError(f"{path / 'config.json'} names no data sha256, split seed and characters: not a run of "
                         "`microgpt train`")
    if config.get("train", {}).get("parity"):
        raise UsageError(f"{path} was trained in microgpt parity mode on every name, val and test included: its "
                         "held-out losses are not held out; use runs trained on the train split")
    model, tokenizer, _ = load_checkpoint(path)
    if tuple(tokenizer.chars) != tuple(data["chars"]):
        raise UsageError(f"{path}: model.pt's vocabulary differs from its config.json's: the directory is inconsistent")
    return Member(path, model, config)


def check_members(members: list[Member], data: Dataset | None = None) -> None:
    """UsageError unless every member (and data, if given) has one data file, split seed and vocabulary."""
    first = members[0]
    for m in members[1:] + ([None] if data is not None else []):
        theirs = m.data_id if m is not None else (data.sha256, data.split_seed, tuple(data.tokenizer.chars))
        who = str(m.run_dir) if m is not None else f"the data {data.path}"
        for what, a, b in zip(("data file (sha256)", "split seed", "vocabulary"), first.data_id, theirs):
            if a != b:
                raise UsageError(f"{who} differs from {first.run_dir} in its {what} ({_short(b)} vs {_short(a)}): an "
                                 "ensemble's members must share the data file, split and vocabulary")


def _short(value) -> str:
    text = "".join(value) if isinstance(value, tuple) else str(value)
    return text[:12] + "..." if len(text) > 15 else text


def load_members(paths: list[str | Path]) -> tuple[list[Member], Recorded | None]:
    """The members named by paths (an ensemble directory expanded), checked to share data; and how that directory
    combines them."""
    dirs, recorded = expand(paths)
    if not dirs:
        raise UsageError("an ensemble needs at least one run directory")
    members = [load_member(d) for d in dirs]
    check_members(members)
    return members, recorded


def members_data(members: list[Member], path: str | None = None) -> Dataset:
    """The dataset the members were trained on (or the file at path), split as they were, checked by sha256."""
    recorded = members[0].config["data"]
    data = load_dataset(path or recorded["path"], recorded["split_seed"], recorded.get("max_chars", MAX_CHARS))
    check_members(members, data)
    return data


def load_teacher(spec: str, data: Dataset) -> Ensemble:
    """The teacher of --distill-from: comma-separated run directories (probabilities averaged) or an ensemble
    directory (combined, and calibrated, as it records), checked against data's file, split and vocabulary."""
    paths = [p.strip() for p in spec.split(",") if p.strip()]
    if not paths:
        raise UsageError(f"--distill-from {spec!r} names no run directory")
    members, recorded = load_members(paths)
    check_members(members, data)
    recorded = recorded or Recorded()
    return Ensemble([m.model for m in members], recorded.combine, members[0].data_id, recorded.temperature)


# ------------------------------------------------------------------------------------- choosing, then measuring

def order_by_val(members: list[Member], data: Dataset) -> tuple[list[Member], list[float]]:
    """The members, best val loss first, and those losses: the only order and the only figure any choice uses."""
    vals = [evaluate(m.model, data.eval_batches("val")) for m in members]
    order = sorted(range(len(members)), key=lambda i: vals[i])
    return [members[i] for i in order], [vals[i] for i in order]


def sizes_for(k: int) -> list[int]:
    """The ensemble sizes measured for k members: those of SIZES up to k, and k."""
    return sorted({s for s in SIZES if s <= k} | {k})


def loss_vs_k(members: list[Member], data: Dataset, split: str, combine: str) -> dict[int, float]:
    """The split's loss of the ensemble of the first K members (in the order given) for each K of sizes_for."""
    models = [m.model for m in members]
    return {k: evaluate(Ensemble(models[:k], combine), data.eval_batches(split)) for k in sizes_for(len(models))}


@dataclass
class Choice:
    """What val decided and measured: the member order, their val losses, and the val curve of each combine."""

    members: list[Member]
    member_val: list[float]
    val: dict[str, dict[int, float]]  # combine -> K -> val loss
    left_out: list[Member] = field(default_factory=list)  # candidates greedy selection did not take
    temperature: float = 1.0            # --calibrate's, fitted on val for the full ensemble; 1 = not calibrated
    calibrated_val: float | None = None  # the full ensemble's val loss at that temperature (None: not calibrated)

    def model(self, combine: str) -> Ensemble:
        """The recorded model: every chosen member, combined, at the fitted temperature."""
        return Ensemble([m.model for m in self.members], combine, temperature=self.temperature)


def val_log_probs(model: nn.Module, data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """A model's log-probabilities (n, V) at every real val prediction, and the n targets: what greedy selection
    compares (a few hundred kilobytes a member for names.txt's val split)."""
    out, targets = [], []
    model.eval()
    with torch.no_grad():
        for b in data.eval_batches("val"):
            logits, _ = model(b.idx, pos=b.pos, mask=b.mask)
            keep = b.targets.reshape(-1) >= 0
            out.append(F.log_softmax(logits.float().reshape(-1, logits.size(-1))[keep], dim=-1))
            targets.append(b.targets.reshape(-1)[keep])
    return torch.cat(out), torch.cat(targets)


def greedy(members: list[Member], data: Dataset, combine: str) -> list[Member]:
    """Forward selection on val: start from the best member, then add the one that lowers the ensemble's val loss
    most (combine as given), until none lowers it. The chosen members in the order they were added."""
    scored = [val_log_probs(m.model, data) for m in members]
    targets = scored[0][1]
    stacked = torch.stack([lp for lp, _ in scored])  # (M, n, V)

    def loss(indices: list[int]) -> float:
        log_probs = combine_logits(stacked[indices], combine)  # log-softmaxes stand in for logits: same softmax
        return F.nll_loss(log_probs, targets).item()

    chosen: list[int] = []
    best = math.inf
    while len(chosen) < len(members):
        value, candidate = min((loss(chosen + [i]), i) for i in range(len(members)) if i not in chosen)
        if value >= best:
            break
        chosen.append(candidate)
        best = value
    return [members[i] for i in chosen]


def fit_temperature(log_probs: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature T minimising the mean cross-entropy of softmax(log_probs / T) at targets (temperature scaling,
    Guo et al. 2017). That loss is convex in 1/T, so a golden-section search over 1/T in [0.05, 20] finds it."""
    log_probs = log_probs.double()

    def loss(inv_t: float) -> float:
        return F.cross_entropy(log_probs * inv_t, targets).item()

    lo, hi = 0.05, 20.0
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    while hi - lo > 1e-7:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return 1.0 / ((lo + hi) / 2)


def choose(members: list[Member], data: Dataset, select: str = "all", combine: str = "prob",
           calibrate: bool = False) -> Choice:
    """Every choice of the ensemble, on val only: which members (all, or greedy's), their order (best val first, or
    greedy's order of adding), the val loss of each size and combine, and with calibrate the full ensemble's
    temperature."""
    if select not in SELECTS:
        raise UsageError(f"--select must be one of {', '.join(SELECTS)}; got {select!r}")
    if select == "greedy":
        chosen = greedy(members, data, combine)
        vals = [evaluate(m.model, data.eval_batches("val")) for m in chosen]
        choice = Choice(chosen, vals, {c: loss_vs_k(chosen, data, "val", c) for c in COMBINES},
                        [m for m in members if all(m is not c for c in chosen)])
    else:
        ordered, vals = order_by_val(members, data)
        choice = Choice(ordered, vals, {c: loss_vs_k(ordered, data, "val", c) for c in COMBINES})
    if calibrate:
        choice.temperature = fit_temperature(*val_log_probs(choice.model(combine), data))
        choice.calibrated_val = evaluate(choice.model(combine), data.eval_batches("val"))
    return choice


@dataclass
class Measured:
    """The reported figures, measured after every choice: test once per member and per ensemble, train once."""

    member_test: list[float]
    test: dict[str, dict[int, float]]  # combine -> K -> test loss
    train: float                       # the recorded model's (chosen combine, fitted temperature)
    calibrated_test: float | None = None  # the recorded model's test loss where it is calibrated


def measure(choice: Choice, data: Dataset, combine: str) -> Measured:
    """Test loss of each member and each ensemble of the curve (and of the calibrated ensemble), and the recorded
    model's train loss."""
    member_test = [evaluate(m.model, data.eval_batches("test")) for m in choice.members]
    test = {c: loss_vs_k(choice.members, data, "test", c) for c in COMBINES}
    full = choice.model(combine)
    calibrated = evaluate(full, data.eval_batches("test")) if choice.calibrated_val is not None else None
    return Measured(member_test, test, evaluate(full, data.eval_batches("train")), calibrated)


# --------------------------------------------------------------------------------------------------- the record

def curve_csv(choice: Choice, measured: Measured) -> str:
    """loss_vs_k.csv: one row per ensemble size K, val and test of each combine."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["k", *(f"{split}_{c}" for split in ("val", "test") for c in COMBINES)])
    for k in choice.val["prob"]:
        row = [choice.val[c][k] for c in COMBINES] + [measured.test[c][k] for c in COMBINES]
        writer.writerow([k, *(f"{x:.6f}" for x in row)])
    return out.getvalue()


def plot_curve(choice: Choice, measured: Measured, path: Path, greedy: bool = False) -> bool:
    """loss_vs_k.png: val and test loss against K for both combines, the members in the order K counts them (best
    val first, or greedy's order of adding); False where matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for c, marker in zip(COMBINES, ("o", "s")):
        ks = list(choice.val[c])
        ax.plot(ks, [choice.val[c][k] for k in ks], marker=marker, label=f"val, {c} average")
        ax.plot(ks, [measured.test[c][k] for k in ks], marker=marker, linestyle="--", label=f"test, {c} average")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel(f"members K ({'in the order greedy added them' if greedy else 'best val first'})")
    ax.set_ylabel("loss (nats per token)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
    return True


def ensemble_result(choice: Choice, measured: Measured, combine: str, seconds: float,
                    cost: tuple[float, float]) -> RunResult:
    """The full ensemble's figures as a run's record (record.py's schema), so `microgpt report` shows it as a row.
    Its time is what it cost: the members' train and wall seconds, plus this command's seconds in wall_seconds."""
    k = len(choice.members)
    val, test = choice.val[combine][k], measured.test[combine][k]
    how = f"{combine} average"
    if choice.calibrated_val is not None:
        val, test = choice.calibrated_val, measured.calibrated_test
        how += f", temperature {choice.temperature:.4f} (fitted on val)"
    return RunResult(
        state="complete", stop_reason=f"ensemble of {k} runs, {how}", steps_done=0,
        n_params=sum(m.model.num_params() for m in choice.members), train_loss=measured.train, val_loss=val,
        test_loss=test, best_val=val, best_val_step=None, seconds_to_best=None, target=math.nan,
        steps_to_target=None, seconds_to_target=None, wall_seconds=cost[1] + seconds, train_seconds=cost[0],
        tokens_per_second=0.0, stability=None, tier=tier_of(test), diverged_step=None,
        trained_on=f"train split ({k} members)",
    )


def members_cost(members: list[Member]) -> tuple[float, float]:
    """The members' train and wall seconds from their summary.json (0 where one has none; nothing else of it is
    read), summed, members trained as one stack counting the stack's once (record.stack_seconds)."""
    train, wall = [], []
    for m in members:
        summary = read_json(m.run_dir / "summary.json") if (m.run_dir / "summary.json").is_file() else {}
        stack = m.config.get("stack")
        stack_id = str(stack.get("id", "")) if isinstance(stack, dict) else ""
        train.append((stack_id, _seconds(summary.get("train_seconds"))))
        wall.append((stack_id, _seconds(summary.get("wall_seconds"))))
    return stack_seconds(train), stack_seconds(wall)


def _seconds(value) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


def ensemble_config(choice: Choice, data: Dataset, combine: str, argv: list[str]) -> dict:
    """config.json of an ensemble directory: its members (best val first) and how they are combined."""
    from . import __version__

    return {
        ENSEMBLE_KEY: {"members": [str(m.run_dir.resolve()) for m in choice.members], "combine": combine,
                       "member_val": choice.member_val, "sizes": list(choice.val[combine]),
                       "left_out": [str(m.run_dir.resolve()) for m in choice.left_out],
                       "temperature": choice.temperature},
        "data": {"path": str(Path(data.path).resolve()), "sha256": data.sha256, "examples": len(data.words),
                 "chars": "".join(data.tokenizer.chars), "split_seed": data.split_seed, "max_chars": data.max_chars,
                 "splits": {"train": len(data.train), "val": len(data.val), "test": len(data.test)}},
        "argv": argv,
        "threads": torch.get_num_threads(),
        "versions": {"microgpt": __version__, "torch": torch.__version__},
        "git_commit": git_commit(),
        "cpu": cpu_info(),
    }


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Execute `microgpt ensemble`: choose on val, measure test once, write the directory, print the figures."""
    import shlex

    t0 = time.perf_counter()
    if args.combine not in COMBINES:
        raise UsageError(f"--combine must be one of {', '.join(COMBINES)}; got {args.combine!r}")
    if not 0 <= args.samples <= MAX_SAMPLES:
        raise UsageError(f"--samples must be in 0..{MAX_SAMPLES:,}, got {args.samples:,}")
    if not 0 < args.temperature < math.inf:
        raise UsageError(f"--temperature must be a finite number > 0, got {args.temperature}")
    if args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    members, _ = load_members(args.run_dirs)
    data = members_data(members, args.data)
    # val only, before any test figure exists
    choice = choose(members, data, args.select, args.combine, args.calibrate)
    measured = measure(choice, data, args.combine)  # test read once, for the report
    names = sample_names(choice.model(args.combine), data.tokenizer, args.samples,
                         args.temperature, generator=torch.Generator().manual_seed(args.seed)) if args.samples else []
    tags = tag_names(names, data.train, data.val + data.test)
    run_dir = new_run_dir(args.out_dir, args.name, prefix="ensemble")
    seconds = time.perf_counter() - t0
    result = ensemble_result(choice, measured, args.combine, seconds, members_cost(choice.members))
    config = ensemble_config(choice, data, args.combine, ["microgpt", *argv])
    config[ENSEMBLE_KEY]["seconds"] = seconds  # this command's own time; wall_seconds adds the members' to it
    if choice.calibrated_val is not None:  # the figures at temperature 1, beside the recorded (calibrated) ones
        k = len(choice.members)
        config[ENSEMBLE_KEY]["uncalibrated"] = {"val": choice.val[args.combine][k],
                                                "test": measured.test[args.combine][k]}
    write_atomic(run_dir / "args.txt", shlex.join(config["argv"]) + "\n")
    write_json(run_dir / "config.json", config)
    write_atomic(run_dir / "metrics.csv", metrics_csv([]))  # no steps of its own: the header alone
    write_atomic(run_dir / "samples.txt", "".join(f"{n}\t{t}\n" for n, t in zip(names, tags)))
    write_atomic(run_dir / "loss_vs_k.csv", curve_csv(choice, measured))
    plotted = plot_curve(choice, measured, run_dir / "loss_vs_k.png", greedy=args.select == "greedy")
    write_json(run_dir / "summary.json", result.summary())  # last: its presence means the record is complete
    print_figures(data, choice, measured, args.combine, result, names, tags)
    print(f"curve  {run_dir / 'loss_vs_k.csv'}" + (f", {run_dir / 'loss_vs_k.png'}" if plotted else ""))
    print(f"run    {run_dir}")
    return 0


def print_figures(data: Dataset, choice: Choice, measured: Measured, combine: str, result: RunResult,
                  names: list[str], tags: list[str]) -> None:
    """The console lines: data, each member (val order), the loss-vs-K table, the ensemble, prob vs logit, samples."""
    k = len(choice.members)
    print(f"data   {data.path}: {len(data.words):,} examples, vocab {data.tokenizer.vocab_size} | train "
          f"{len(data.train):,} / val {len(data.val):,} / test {len(data.test):,} (split seed {data.split_seed})")
    for m, val, test in zip(choice.members, choice.member_val, measured.member_test):
        print(f"member {str(m.run_dir):<32} val {val:.4f} | test {test:.4f}")
    if choice.left_out:
        print(f"select greedy on val took {k} of {k + len(choice.left_out)} (in the order added); left out: "
              + ", ".join(str(m.run_dir) for m in choice.left_out))
    print("K      val prob | val logit | test prob | test logit")
    for size in choice.val["prob"]:
        print(f"{size:<6} {choice.val['prob'][size]:8.4f} | {choice.val['logit'][size]:9.4f} | "
              f"{measured.test['prob'][size]:9.4f} | {measured.test['logit'][size]:10.4f}")
    tier = f"tier {result.tier}" if result.tier else "no tier (test >= 2.2)"
    how = f"{combine} average" + (", calibrated" if choice.calibrated_val is not None else "")
    print(f"loss   ensemble of {k}, {how}: train {result.train_loss:.4f} | val {result.val_loss:.4f} | "
          f"test {result.test_loss:.4f} | {tier}")
    dv = choice.val["prob"][k] - choice.val["logit"][k]
    dt = measured.test["prob"][k] - measured.test["logit"][k]
    print(f"combine prob - logit: val {dv:+.4f} | test {dt:+.4f} (negative: averaging probabilities is better)")
    if choice.calibrated_val is not None:
        print(f"calibrate temperature {choice.temperature:.4f}, fitted on val: val {choice.val[combine][k]:.4f} -> "
              f"{choice.calibrated_val:.4f} | test {measured.test[combine][k]:.4f} -> {measured.calibrated_test:.4f}")
    if names:
        shares = tag_shares(tags)
        print(f"sample {', '.join(names[:8])} ... ({shares['new']:.0%} new, {shares['in train']:.0%} in train, "
              f"{shares['in val-test']:.0%} in val-test)")
