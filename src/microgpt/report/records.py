"""What the report reads: sweep directories (plan.json, storage.txt, results.csv) and run directories (config.json,
summary.json, metrics.csv, samples.txt), as Runs and Sweeps. What cannot be read goes to Records.skipped, with why."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import UsageError
from ..record import FIGURES as RECORD_FIGURES, SETTINGS, coerce, parse_figure, state_of

# The record's figures but its tier (shown as a category), plus loss_drop_per_second, derived (see Run).
FIGURES = (*(f for f in RECORD_FIGURES if f != "tier"), "loss_drop_per_second")
NOT_CONFIG = ("seed", "log_every", "samples", "temperature")  # cannot change a loss: runs differing only here are seeds


@dataclass
class Run:
    """One run as its records tell it. Figures are None where the record has no value."""

    name: str                     # results.csv's run id, or the run directory's name
    source: str                   # the sweep or directory it was read from
    config: str                   # results.csv's configuration id; "" for a bare run directory
    seed: int | None
    state: str                    # a key of record.STATES
    settings: dict[str, Any]      # resolved ModelConfig and TrainConfig fields, NOT_CONFIG left out; {} if unknown
    figures: dict[str, float | None]
    dir: Path | None              # its run directory, when there is one
    error: str = ""
    data: str = ""                # which data it trained on: config.json's sha256, else its sweep or directory
    stack: str = ""               # the id of the stack it trained in (stacked.py), "" for a run alone
    own_seconds: float | None = None  # an ensemble's: its command's own time (its wall_seconds adds its members')

    def __post_init__(self) -> None:
        # loss_drop_per_second: val loss gained over the uniform start ln(vocab_size), per second of training
        val, secs = self.figures.get("val_loss"), self.figures.get("train_seconds")
        vocab = self.settings.get("vocab_size")
        ok = val is not None and secs and vocab
        self.figures["loss_drop_per_second"] = (math.log(vocab) - val) / secs if ok else None
        self.data = self.data or self.source

    def key(self) -> str:
        """What its configuration is: the settings (seed aside), or its id where the record has none."""
        if self.settings:
            return json.dumps(self.settings, sort_keys=True)
        return f"{self.source}#{self.config or self.name}"


@dataclass
class Sweep:
    path: Path
    name: str
    plan: dict[str, Any]          # plan.json as written by `microgpt sweep`
    storage: str | None           # Optuna storage URL, from storage.txt or plan.json

    def swept(self) -> set[str]:
        """The parameters the plan varies: the keys of grid, points and space."""
        keys = set(self.plan.get("grid") or {}) | set(self.plan.get("space") or {})
        for point in self.plan.get("points") or []:
            keys |= set(point)
        return keys


@dataclass
class Records:
    """Everything read from the DIR arguments, and what could not be read, with why."""

    runs: list[Run] = field(default_factory=list)
    sweeps: list[Sweep] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    _metrics: dict[int, list[dict] | None] = field(default_factory=dict)

    def skip(self, what: Any, why: str) -> None:
        self.skipped.append((str(what), why))

    def metrics(self, run: Run) -> list[dict] | None:
        """The run's metrics.csv rows (step, loss, val_loss, elapsed_s; val_loss None where not evaluated), read once."""
        if id(run) not in self._metrics:
            self._metrics[id(run)] = read_metrics(run, self)
        return self._metrics[id(run)]


def load(paths: list[str]) -> Records:
    """Read every DIR: a sweep (results.csv or plan.json), a run (config.json or summary.json), or a folder of those."""
    records = Records()
    for arg in paths:
        path = Path(arg)
        if not path.exists():
            raise UsageError(f"{arg}: no such directory; pass sweep directories (sweeps/<name>) or run directories")
        if not path.is_dir():
            raise UsageError(f"{arg} is a file: pass the run or sweep directory that holds it ({path.parent})")
        try:
            children = sorted(path.iterdir())
        except OSError as err:
            raise UsageError(f"cannot read directory {arg}: {err.strerror}") from None
        found = [(path, kind_of(path))] if kind_of(path) else [(c, kind_of(c)) for c in children if c.is_dir()]
        found = [(p, kind) for p, kind in found if kind]
        if not found:
            raise UsageError(f"{arg} holds no run or sweep records: expected results.csv or plan.json (a sweep), "
                             "config.json or summary.json (a run), or directories holding them")
        for child, kind in found:
            if kind == "sweep":
                read_sweep(child, records)
            elif (run := read_run_dir(child, records)) is not None:
                records.runs.append(run)
    _drop_repeats(records)
    return records


def _drop_repeats(records: Records) -> None:
    """Keep one complete run per (configuration, seed) within one sweep or folder: a repeat of the same seed is not
    a new sample, and counting it would shrink every interval. Repeats go to records.skipped."""
    kept: dict[tuple[str, str, int], Run] = {}
    runs = []
    for run in records.runs:
        if run.state == "complete" and run.seed is not None:
            key = (run.source, run.key(), run.seed)
            if key in kept:
                records.skip(f"{run.source}: run {run.name}",
                             f"repeats seed {run.seed} of the configuration of run {kept[key].name}: counted once")
                continue
            kept[key] = run
        runs.append(run)
    records.runs = runs


def kind_of(path: Path) -> str | None:
    """"sweep", "run", or None: what the directory's files say it is."""
    if (path / "results.csv").is_file() or (path / "plan.json").is_file():
        return "sweep"
    if (path / "config.json").is_file() or (path / "summary.json").is_file():
        return "run"
    return None


def read_run_dir(path: Path, records: Records) -> Run | None:
    """A run directory as a Run; None (and a note in records.skipped) when it has no readable summary.json."""
    config = _read_json(path / "config.json", records)
    summary = _read_json(path / "summary.json", records)
    if summary is None:
        if not (path / "summary.json").exists():
            records.skip(path, "no summary.json: the run never finished (summary.json is written last)")
        return None
    settings: dict[str, Any] = {}
    if config is None:
        records.skip(path / "config.json", "missing or unreadable: the run is kept, as a configuration of its own")
    else:
        values = {**config.get("model", {}), **config.get("train", {})}
        settings = {k: v for k, v in values.items() if k in SETTINGS and k not in NOT_CONFIG}
    data = (config or {}).get("data")
    figures = {k: parse_figure(summary.get(k)) for k in FIGURES}
    stack = (config or {}).get("stack")
    ensemble = (config or {}).get("ensemble")
    own = parse_figure(ensemble.get("seconds")) if isinstance(ensemble, dict) else None
    return Run(path.name, str(path.parent), "", (config or {}).get("seed"), state_of(summary), settings, figures, path,
               summary.get("stop_reason") or "", str(data.get("sha256") or "") if isinstance(data, dict) else "",
               str(stack.get("id", "")) if isinstance(stack, dict) else "", own)


def read_sweep(path: Path, records: Records) -> None:
    """plan.json, storage.txt and every row of results.csv; bad rows go to records.skipped with their line number."""
    plan = (_read_json(path / "plan.json", records) if (path / "plan.json").exists() else {}) or {}
    storage = plan.get("storage")
    try:
        storage = (path / "storage.txt").read_text().split("\n")[0].strip() or storage
    except OSError:
        pass
    sweep = Sweep(path, str(plan.get("name") or path.name), plan, storage)
    records.sweeps.append(sweep)
    results = path / "results.csv"
    if not results.is_file():
        records.skip(results, "missing: the sweep has recorded no run yet")
        return
    try:
        rows = list(csv.reader(io.StringIO(results.read_text())))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        records.skip(results, f"unreadable: {err}")
        return
    if not rows:
        records.skip(results, "empty: no header, no runs")
        return
    header, body = rows[0], rows[1:]
    missing = [c for c in ("run", "config", "state") if c not in header]
    if missing:
        records.skip(results, f"no column {', '.join(missing)}: not a results.csv of `microgpt sweep`")
        return
    if not body:
        records.skip(results, "no runs: only the header")
    for lineno, row in enumerate(body, start=2):
        if len(row) != len(header):
            records.skip(f"{results} line {lineno}", f"{len(row)} of {len(header)} fields (a truncated write?)")
            continue
        try:
            records.runs.append(_sweep_run(sweep, {k: v.strip() for k, v in zip(header, row)}))
        except ValueError as err:
            records.skip(f"{results} line {lineno}", f"unreadable value: {err}")


def _sweep_run(sweep: Sweep, cells: dict[str, str]) -> Run:
    settings = {}
    for name in SETTINGS:
        if name in NOT_CONFIG or name not in cells:  # a column an older results.csv lacks: compare without it
            continue
        if cells[name] == "" and SETTINGS[name] is not str:  # "" is a text setting's value (distill_from: off)
            settings = {}  # an invalid run has no resolved values: it groups by its configuration id alone
            break
        settings[name] = coerce(name, cells[name])
    figures = {k: parse_figure(cells.get(k, ""), strict=True) for k in FIGURES}
    seed = int(float(cells["seed"])) if cells.get("seed") else None
    run_dir = sweep.path / cells["run_dir"] if cells.get("run_dir") else None
    return Run(cells["run"], sweep.name, cells["config"], seed, state_of(cells), settings, figures, run_dir,
               cells.get("error", ""), stack=f"{sweep.name}:{cells['stack']}" if cells.get("stack") else "")
    # one sweep, one dataset: its source names the data


def _read_json(path: Path, records: Records) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        records.skip(path, f"unreadable JSON: {err}")
        return None
    if not isinstance(value, dict):
        records.skip(path, "not a JSON object")
        return None
    return value


def read_metrics(run: Run, records: Records) -> list[dict] | None:
    """metrics.csv as numbers; malformed rows are dropped and counted in records.skipped."""
    path = run.dir / "metrics.csv" if run.dir else None
    if path is None or not path.is_file():
        records.skip(f"run {run.name}", "no metrics.csv: left out of the curves")
        return None
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        records.skip(path, f"unreadable: {err}")
        return None
    out, bad = [], 0
    for row in rows:
        try:
            out.append({"step": int(row["step"]), "loss": float(row["loss"]),
                        "val_loss": parse_figure(row["val_loss"], True), "elapsed_s": float(row["elapsed_s"])})
        except (KeyError, TypeError, ValueError):
            bad += 1
    if bad:
        records.skip(path, f"{bad} of {len(rows)} rows malformed (a truncated file?): plotted without them")
    return out or None


def read_samples(run: Run) -> list[tuple[str, str]] | None:
    """samples.txt as (name, tag) pairs; None when the run has none."""
    try:
        text = (run.dir / "samples.txt").read_text() if run.dir else None
    except (OSError, UnicodeDecodeError):
        return None
    pairs = [line.split("\t", 1) for line in (text or "").splitlines() if "\t" in line]
    return [(name, tag.strip()) for name, tag in pairs] or None
