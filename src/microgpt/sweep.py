"""Sweeps: many runs of train() over a plan, searched by Optuna, run by long-lived worker processes, every finished
run recorded the moment it finishes.

One Optuna trial is one run: a configuration with one seed. Grid points (x seeds) are enqueued once, up front, so
each is claimed by exactly one worker; random/TPE trials sample a configuration and enqueue its other seeds. The
objective is the run's best val loss; test loss is stored beside it and never read by the search.

sweeps/<name>/
  plan.json     the plan as resolved          storage.txt   the Optuna storage URL, without its password
  journal.log   the default storage           results.csv   one row per finished run, rewritten after each
  runs/<run>/   one run directory per run (the layout of rundir.py)
  workers/      one lock file per live worker (how a journal sweep tells a dead worker from a live one)

Nothing is stranded: a run whose worker died (killed, crashed, its machine lost) is failed and queued again, found by
the worker's presence lock (journal) or by Optuna's heartbeats (databases); workers with nothing to claim wait for
runs in flight and redo those whose worker dies. A sweep ends by comparing its records with its plan.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import io
import json
import math
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

from .config import ModelConfig, TrainConfig, UsageError, resolve
from .data import MAX_CHARS, Dataset, load_dataset
from .files import make_dir, os_error_text
from .interrupt import stop_requests
from .plan import OBJECTIVES, Dimension, Plan, config_id, plan_from_dict
from .rundir import record_run, run_config, write_atomic, write_json
from .record import FIGURES, RESULTS_COLUMNS, SETTINGS, STATES, coerce

HOST = socket.gethostname()


# ---------------------------------------------------------------------------------------------------------- storage

HEARTBEAT_S = 15   # RDB storages: a worker records a heartbeat for its run this often (seconds)
GRACE_BEATS = 4    # ... and a run whose heartbeat is this many intervals old belongs to a dead worker


def default_storage(sweep_dir: Path) -> str:
    return f"journal:{(Path(sweep_dir) / 'journal.log').resolve()}"


def open_storage(url: str, heartbeat: int | None = None, say: Callable[[str], None] | None = None):
    """An Optuna storage for url: 'journal:PATH' (a journal file) or any SQLAlchemy URL Optuna accepts.

    A journal whose last line was torn by a crash is repaired first (repair_journal). For a database, heartbeat
    (seconds) turns on Optuna's heartbeats: workers record one per run, and a run silent for GRACE_BEATS intervals is
    stale, which is how a worker that died on any machine is told from a live one. A password missing from the URL
    comes from PGPASSWORD or ~/.pgpass, as libpq reads them.
    """
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = url[len("journal:"):]
        repair_journal(Path(path), say or (lambda line: None))
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    beats: dict[str, Any] = {}
    if heartbeat:
        beats = {"heartbeat_interval": heartbeat, "grace_period": GRACE_BEATS * heartbeat}
    last = None
    for attempt in range(5):  # machines starting together race on creating Optuna's schema: retry
        try:
            with warnings.catch_warnings():  # heartbeat_interval is flagged experimental; we use it on purpose
                warnings.simplefilter("ignore")
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **beats)
        except Exception as err:  # sqlalchemy errors; a bad URL or an unreachable server
            last = err
            if "already exists" not in str(err) and "duplicate key" not in str(err):
                break
            time.sleep(0.5 * (attempt + 1))
    text = str(last).strip()
    first_line = scrub(text.splitlines()[0], url) if text else type(last).__name__
    hint = ""
    if "password" in text.lower() and not _password(url):
        hint = "; the password is never stored: set PGPASSWORD, add it to ~/.pgpass, or pass --storage URL again"
    raise UsageError(f"cannot open storage {redact(url)}: {first_line}{hint}") from None


def repair_journal(path: Path, say: Callable[[str], None]) -> None:
    """Set aside a torn last line of an Optuna journal (a crash mid-write), keeping its bytes in a side file.

    Optuna would append the next record onto the partial line and fail to read the journal from then on. Done under
    Optuna's own journal lock, so a writer in another process is never cut.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        with open(path, "rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - 1))
            if fh.read(1) == b"\n":
                return
            fh.seek(0)
            data = fh.read()
            keep = data.rfind(b"\n") + 1
            side = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
            write_atomic(side, data[keep:])
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        say(f"repair {path}: its last line was torn by a crash; {size - keep} bytes set aside in {side.name}")
    finally:
        lock.release()


def _password(url: str) -> str | None:
    """The password a database URL carries, in its user info or as ?password=; None without one."""
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        return urllib.parse.unquote(parts.password)
    query = urllib.parse.parse_qs(parts.query).get("password")
    return query[0] if query else None


def redact(url: str) -> str:
    """url with its password (in the user info or as ?password=) masked: safe to print."""
    return _mask(url, "***")


def storable(url: str) -> str:
    """url without its password: what storage.txt keeps. Reopening it takes the password from PGPASSWORD or
    ~/.pgpass (libpq reads both) or from --storage URL given again."""
    return _mask(url, None)


def _mask(url: str, mask: str | None) -> str:
    if "://" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{mask}@{host}" if mask else f"{user}@{host}"
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "password" for k, _ in query):
        kept = [(k, mask) for k, v in query if k == "password" and mask] + [(k, v) for k, v in query if k != "password"]
        query = kept
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, urllib.parse.urlencode(query, safe="*"),
                                    parts.fragment))


def scrub(text: str, url: str) -> str:
    """text with url's password replaced wherever it appears (driver errors may quote the URL or the password)."""
    secret = _password(url)
    return text.replace(secret, "***") if secret else text


@contextlib.contextmanager
def sweep_lock(sweep_dir: Path, url: str, name: str) -> Iterator[None]:
    """Serialise claim, enqueue and recovery steps: a file lock among this machine's workers, plus a PostgreSQL
    advisory lock among machines when the storage is PostgreSQL."""
    lock_path = Path(sweep_dir) / ".lock"
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            if url.startswith("postgresql"):
                with _pg_lock(url, name):
                    yield
            else:
                yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_ENGINES: dict[str, Any] = {}


@contextlib.contextmanager
def _pg_lock(url: str, name: str) -> Iterator[None]:
    import sqlalchemy

    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = sqlalchemy.create_engine(url, pool_pre_ping=True)
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": f"microgpt-sweep:{name}"})
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": f"microgpt-sweep:{name}"})
            conn.commit()


# --------------------------------------------------------------------------------------------- workers and liveness

_WORKER_ID: str | None = None


def worker_id() -> str:
    """This process's name in the storage: host, pid and a random part, so two machines with one hostname, or a
    recycled pid, never pass for each other."""
    global _WORKER_ID
    if _WORKER_ID is None or not _WORKER_ID.startswith(f"{HOST}-{os.getpid()}-"):
        _WORKER_ID = f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return _WORKER_ID


@contextlib.contextmanager
def presence(sweep_dir: Path) -> Iterator[str]:
    """Hold this worker's presence lock (sweeps/<name>/workers/<id>.lock) while it works; the kernel drops it when
    the process dies, however it dies, which is how a journal sweep tells a dead worker from a live one."""
    wid = worker_id()
    folder = Path(sweep_dir) / "workers"
    folder.mkdir(exist_ok=True)
    path = folder / f"{wid}.lock"
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield wid
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            path.unlink(missing_ok=True)


def _present(sweep_dir: Path, wid: str) -> bool:
    """Whether worker wid still holds its presence lock (flock locks belong to an open file, so this answers
    truly even in the worker's own process)."""
    path = Path(sweep_dir) / "workers" / f"{wid}.lock"
    try:
        fh = open(path, "r")
    except FileNotFoundError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def heartbeat_enabled(study) -> bool:
    return bool(getattr(study._storage, "get_heartbeat_interval", lambda: None)())


@contextlib.contextmanager
def heartbeat(study, trial) -> Iterator[None]:
    """Record the trial's heartbeat every interval while the block runs (database storages with heartbeats on)."""
    if not heartbeat_enabled(study):
        yield
        return
    storage, interval = study._storage, study._storage.get_heartbeat_interval()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(interval):
            try:
                storage.record_heartbeat(trial._trial_id)
            except Exception:  # a dropped connection: the next beat retries; a long silence makes the run stale
                pass

    thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{trial.number}")
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def dead_runs(study, sweep_dir: Path) -> list:
    """RUNNING trials whose worker is gone. Call under sweep_lock: claims name their worker under it, so a RUNNING
    trial with no worker named was claimed by a process that died before it could."""
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    stale: set[int] = set()
    if heartbeat_enabled(study):
        stale = set(study._storage._get_stale_trial_ids(study._study_id))  # Optuna's own test of the heartbeats
    dead = []
    for t in running:
        wid = t.user_attrs.get("worker")
        if wid is None or t._trial_id in stale or (not heartbeat_enabled(study) and not _present(sweep_dir, wid)):
            dead.append(t)
    return dead


def requeue(study, trial, state: str, reason: str) -> None:
    """Record trial as `state` (failed: its worker died; interrupted: its worker was stopped) and queue its point
    again, with the same seed, for the next worker."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, "state", state)
        storage.set_trial_user_attr(trial._trial_id, "error", reason)
        storage.set_trial_user_attr(trial._trial_id, "redone", True)
        storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        return  # another process finished or recovered it first
    params = dict(trial.params) or trial.system_attrs.get("fixed_params", {})
    study.enqueue_trial(params, user_attrs={k: trial.user_attrs[k] for k in ("seed", "seed_index", "config")
                                            if k in trial.user_attrs})


def recover(study, plan: Plan, sweep_dir: Path, url: str) -> int:
    """Fail and queue again every run whose worker died (on any machine). Returns how many."""
    with sweep_lock(sweep_dir, url, plan.name):
        dead = dead_runs(study, sweep_dir)
        for t in dead:
            who = t.user_attrs.get("worker") or "a worker that died while claiming it"
            requeue(study, t, "failed", f"worker {who} died mid-run; redone")
    return len(dead)


def make_sampler(plan: Plan, seed: int | None = None):
    """The plan's sampler. Each worker process needs its own seed: with one shared seed every worker draws the same
    random start-up points (a 14-worker search once ran one configuration 14 times)."""
    import optuna

    if plan.mode == "tpe":
        # constant_liar: parallel workers do not all sample the same promising point while runs are in flight
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True,
                                          n_startup_trials=min(10, max(2, (plan.trials or 10) // 4)))
    return optuna.samplers.RandomSampler(seed=seed)


def worker_seed() -> int:
    """A sampler seed unique to this process and moment (a resumed sweep must not redraw its earlier points)."""
    return (os.getpid() * 1_000_003 + time.time_ns()) % 2**32


def make_pruner(plan: Plan, base_train: TrainConfig):
    """The pruner, with resources counted in optimizer steps (val is reported at every eval step)."""
    import optuna

    steps, every = base_train.steps, base_train.eval_every
    if plan.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=every, reduction_factor=3)
    if plan.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=every, max_resource=steps, reduction_factor=3)
    if plan.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=every)
    return optuna.pruners.NopPruner()


def load_study(plan: Plan, url: str, base_train: TrainConfig | None = None, seed: int | None = None,
               heartbeat: int | None = None, say: Callable[[str], None] | None = None):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if base_train is None:
        try:
            base_train = resolve(plan.base, plan.preset)[1]
        except UsageError:  # the base alone may be incomplete (e.g. its points supply a valid n_head)
            base_train = TrainConfig()
    return optuna.create_study(
        study_name=plan.name, storage=open_storage(url, heartbeat, say),
        sampler=make_sampler(plan, worker_seed() if seed is None else seed),
        pruner=make_pruner(plan, base_train), directions=["minimize"] * len(plan.objectives), load_if_exists=True,
    )


# ------------------------------------------------------------------------------------------------------------ setup

def prepare(plan: Plan, root: Path, storage: str | None, heartbeat: int = HEARTBEAT_S,
            say: Callable[[str], None] | None = None) -> tuple[Path, str]:
    """Check the storage, then create (or reopen) sweeps/<name>/ with plan.json and storage.txt, and the study.

    The study keeps the heartbeat (seconds) it was created with as its user attribute heartbeat_s, so every machine
    that joins it judges liveness alike. storage.txt never holds a password.
    """
    sweep_dir = Path(root) / plan.name
    url = storage or default_storage(sweep_dir)
    if not url.startswith("journal:"):
        open_storage(url)  # unreachable or malformed URLs fail here, before anything is written
    plan_path = sweep_dir / "plan.json"
    if plan_path.is_file():
        existing = json.loads(plan_path.read_text())
        if _comparable(existing) != _comparable(plan.to_dict()):
            raise UsageError(f"sweep {sweep_dir} exists with a different plan: rerun the same plan to resume, "
                             "or pick another --name")
    make_dir(root, "sweep directory", plan.name)
    (sweep_dir / "runs").mkdir(exist_ok=True)
    write_json(plan_path, plan.to_dict())
    write_atomic(sweep_dir / "storage.txt", storable(url) + "\n")
    study = load_study(plan, url, say=say)
    if "plan" not in study.user_attrs:
        study.set_user_attr("plan", plan.to_dict())
    if "heartbeat_s" not in study.user_attrs:
        study.set_user_attr("heartbeat_s", heartbeat)
    return sweep_dir, url


def _comparable(plan_dict: dict) -> dict:
    """The parts of a plan that define its runs (workers and the data path may differ between invocations)."""
    defaults = {"objectives": ["val"]}  # plan.json files from before a plan could name its objectives
    return {k: v for k, v in {**defaults, **plan_dict}.items() if k not in ("workers", "data", "hypotheses")}


def reconcile(study, plan: Plan, sweep_dir: Path, url: str) -> dict[str, int]:
    """Fail and queue again the runs of dead workers (any machine); enqueue grid points x seeds not yet present."""
    counts = {"redone": recover(study, plan, sweep_dir, url), "enqueued": 0}
    if plan.mode == "grid":
        with sweep_lock(sweep_dir, url, plan.name):
            present = {(t.user_attrs.get("config"), t.user_attrs.get("seed")) for t in study.get_trials(deepcopy=False)
                       if not t.user_attrs.get("redone")}
            for params in sorted(plan.grid_configs(), key=_shape_first):
                cid = config_id(params)
                for i, seed in enumerate(plan.seeds):
                    if (cid, seed) not in present:
                        study.enqueue_trial(params, user_attrs={"seed": seed, "seed_index": i, "config": cid})
                        counts["enqueued"] += 1
    return counts


def _shape_first(params: dict) -> tuple:
    """Sort key that queues grid points of one model shape (and optimizer, precision, split) next to each other, so
    a worker claiming several at once can train them as one stack (stacked.stack_key), and within a shape those of
    one batch size, so a stack pads few members' batches to a larger one's rows."""
    from .stacked import MEMBER_MODEL_FIELDS, SHARED_TRAIN_FIELDS

    model_fields = {f.name for f in dataclasses.fields(ModelConfig)} - set(MEMBER_MODEL_FIELDS)
    shaping = model_fields | set(SHARED_TRAIN_FIELDS)
    sortable = lambda v: (0, v, "") if isinstance(v, (int, float)) else (1, 0, repr(v))  # noqa: E731
    return (tuple(sortable(v) for k, v in sorted(params.items()) if k in shaping),
            sortable(params.get("batch_size", 0)))


def stack_size(plan: Plan, workers: int) -> int:
    """--stack auto: enough runs per worker to share the stack's per-step overhead (up to 16, where 64 microgpt-sized
    members still gained: BENCHMARKS.md), but no more than an even share of the plan, so no worker is left with
    all the work; TPE learns from finished runs, so it proposes at most 4 at a time. A plan that searches for speed
    (a seconds objective) times every run alone: a stack's members share one clock."""
    if "seconds" in plan.objectives:
        return 1
    share = math.ceil(plan.total_runs() / max(1, workers))
    return max(1, min(4 if plan.mode == "tpe" else 16, share))


def missing_runs(study, plan: Plan) -> list[str]:
    """What the plan asks for that no finished record answers, in words (empty when the sweep is complete)."""
    rows = trial_rows(study)
    if plan.mode == "grid":
        done = {(r["config"], r["seed"]) for r in rows}
        missing = []
        for params in plan.grid_configs():
            cid = config_id(params)
            settings = " ".join(f"{k}={_short(v)}" for k, v in params.items())
            missing += [f"{cid} ({settings}) seed {s}" for s in plan.seeds if (cid, s) not in done]
        return missing
    short = plan.total_runs() - len(rows)
    return [f"{short} of {plan.total_runs()} runs"] if short > 0 else []


# ----------------------------------------------------------------------------------------------------------- worker

def _grid_choices(plan: Plan) -> dict[str, list]:
    choices: dict[str, list] = {}
    for c in plan.grid_configs():
        for k, v in c.items():
            if v not in choices.setdefault(k, []):
                choices[k].append(v)
    return choices


def _suggest(trial, plan: Plan, grid_choices: dict[str, list]) -> dict:
    params = {}
    if plan.mode == "grid":
        for name, choices in grid_choices.items():
            params[name] = trial.suggest_categorical(name, choices)
        return params
    for d in plan.space:
        params[d.name] = _suggest_dimension(trial, d)
    return params


def _suggest_dimension(trial, d: Dimension):
    if d.kind == "float":
        return trial.suggest_float(d.name, d.low, d.high, log=d.log)
    if d.kind == "int":
        return trial.suggest_int(d.name, int(d.low), int(d.high), log=d.log)
    return trial.suggest_categorical(d.name, list(d.choices))


def claim(study, plan: Plan, sweep_dir: Path, url: str, grid_choices: dict[str, list], size: int = 1) -> list:
    """The next runs to do (up to size), as [(trial, params)], empty when nothing is left to claim. Serialised by
    sweep_lock, and each trial names its worker (and, on a database, records its first heartbeat) before the lock is
    let go. TPE proposes the size points one after another, its constant liar keeping them apart."""
    with sweep_lock(sweep_dir, url, plan.name):
        claimed = []
        while len(claimed) < size:
            one = _claim_one(study, plan, grid_choices)
            if one is None:
                break
            claimed.append(one)
        return claimed


def _claim_one(study, plan: Plan, grid_choices: dict[str, list]):
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    if not waiting:
        if plan.mode == "grid":
            return None
        started = sum(1 for t in trials if t.user_attrs.get("seed_index") == 0 and not t.user_attrs.get("redone"))
        if started >= (plan.trials or 0):
            return None
    trial = study.ask()
    trial.set_user_attr("worker", worker_id())
    trial.set_user_attr("host", HOST)
    trial.set_user_attr("pid", os.getpid())
    if heartbeat_enabled(study):
        study._storage.record_heartbeat(trial._trial_id)
    params = _suggest(trial, plan, grid_choices)
    if "seed" not in trial.user_attrs:  # a fresh random/TPE configuration: first seed here, the others queued
        cid = config_id(params)
        trial.set_user_attr("seed", plan.seeds[0])
        trial.set_user_attr("seed_index", 0)
        trial.set_user_attr("config", cid)
        for i, seed in enumerate(plan.seeds[1:], start=1):
            study.enqueue_trial(params, user_attrs={"seed": seed, "seed_index": i, "config": cid})
    return trial, params


@dataclasses.dataclass
class Member:
    """One claimed run, set up: its trial, resolved configs, the data split it trains on and its run directory."""

    trial: Any
    model_cfg: Any
    cfg: TrainConfig
    data: Dataset
    run_dir: Path
    config: dict
    dead: bool = False  # its trial was declared dead (and queued again) while it trained
    teacher: Any = None  # the ensemble of cfg.distill_from, loaded and checked at setup


def execute(
    trial, params: dict, plan: Plan, data: Dataset, sweep_dir: Path, train_fn: Callable | None = None,
    should_stop: Callable[[], bool] | None = None, device: str = "cpu",
) -> str:
    """Run one trial: build its configs, train on its own split, record the run directory, tell Optuna. Returns the
    run's state; "interrupted" (should_stop said so) records nothing and queues the point again; "superseded" when
    the trial was declared dead meanwhile (no heartbeat for the grace period) and queued again by another worker."""
    return execute_group([(trial, params)], plan, data, sweep_dir, train_fn, should_stop, device)[0]


def execute_group(claimed: list, plan: Plan, data: Dataset, sweep_dir: Path, train_fn: Callable | None = None,
                  should_stop: Callable[[], bool] | None = None, device: str = "cpu") -> list[str]:
    """execute() for several claimed runs: those that can share a stack (stacked.stack_key, one split) train as
    one stacked model, the rest one at a time; each is still one trial and one run directory, recorded as soon as its
    stack finishes. Every claimed trial beats its heartbeat until then. Returns their states, in order."""
    from .stacked import default_masks, stack_key

    states: dict[int, str] = {}
    members: dict[int, Member] = {}
    for i, (trial, params) in enumerate(claimed):
        member = _guarded(trial, sweep_dir, lambda: _setup(trial, params, plan, data, sweep_dir, device))
        if isinstance(member, str):
            states[i] = member
        else:
            members[i] = member
    stacks: dict[tuple, list[int]] = {}
    for i, m in members.items():
        stacks.setdefault(stack_key(m.model_cfg, m.cfg), []).append(i)
    with contextlib.ExitStack() as beating:
        for i in members:
            beating.enter_context(heartbeat(claimed[i][0].study, claimed[i][0]))
        for indices in stacks.values():
            group = [members[i] for i in indices]
            if len(group) > 1:  # the members' records say they shared one stack, and so one clock
                stack = {"id": uuid.uuid4().hex[:12], "members": len(group), "dropout_masks": default_masks(device)}
                for m in group:
                    m.config["stack"] = stack
                    m.trial.set_user_attr("stack", stack["id"])
            if should_stop is not None and should_stop():
                outcomes: list = [None] * len(group)  # not started: queued again below
            else:
                outcomes = _train_group(group, plan, train_fn, should_stop, device)
            for i, m, outcome in zip(indices, group, outcomes):
                states[i] = _guarded(m.trial, sweep_dir, lambda: _record(m, outcome, plan))
    return [states[i] for i in range(len(claimed))]


def _guarded(trial, sweep_dir: Path, step: Callable):
    """step(), or "superseded" if the trial was declared dead meanwhile (its rerun replaces this record; its run
    directory stays, marked, so nothing is silently mixed in)."""
    from optuna.exceptions import UpdateFinishedTrialError

    try:
        return step()
    except UpdateFinishedTrialError:
        run_dir = Path(sweep_dir) / "runs" / trial.user_attrs.get("run", f"{trial.number:04d}")
        if run_dir.is_dir():
            write_atomic(run_dir / "SUPERSEDED", "this run's trial was declared dead before it finished and was redone\n")
        return "superseded"


def _setup(trial, params: dict, plan: Plan, data: Dataset, sweep_dir: Path, device: str = "cpu") -> Member | str:
    """Resolve a claimed run's configs and make its run directory; "invalid" (recorded) if the configs cannot train."""
    from optuna.trial import TrialState

    seed = trial.user_attrs["seed"]
    cid = trial.user_attrs["config"]
    run = f"{trial.number:04d}-{cid}-s{seed}"
    trial.set_user_attr("run", run)
    overrides = {**plan.base, **params, "seed": seed}
    teacher = None
    try:
        model_cfg, cfg = resolve(overrides, plan.preset, data.tokenizer.vocab_size, data.max_len + 1)
        data.check_block_size(model_cfg.block_size)
        if cfg.distill_from:  # a teacher from other data or another split is this point's input error
            from .ensemble import load_teacher

            teacher = load_teacher(cfg.distill_from, data.with_split(cfg.split_seed))
    except UsageError as err:
        trial.set_user_attr("state", "invalid")
        trial.set_user_attr("error", str(err))
        trial.set_user_attr("values", {k: overrides.get(k) for k in overrides})
        trial.study.tell(trial, state=TrialState.FAIL)
        return "invalid"
    data = data.with_split(cfg.split_seed)  # every run trains and is measured on the split its record names
    values = {**dataclasses.asdict(model_cfg), **dataclasses.asdict(cfg)}
    values.pop("extra", None)
    trial.set_user_attr("values", values)
    run_dir = Path(sweep_dir) / "runs" / run
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_config(model_cfg, cfg, data, device, ["microgpt", "sweep", plan.name, f"trial {trial.number}"])
    write_json(run_dir / "config.json", config)
    return Member(trial, model_cfg, cfg, data, run_dir, config, teacher=teacher)


def _on_eval(m: Member, plan: Plan) -> Callable[[int, float], bool]:
    """Report val to the member's trial and ask its pruner; a trial declared dead meanwhile stops the member."""
    from optuna.exceptions import UpdateFinishedTrialError

    def on_eval(step: int, val: float) -> bool:
        if len(plan.objectives) > 1:  # Optuna keeps intermediate values (and prunes) for one objective only
            return False
        try:
            m.trial.report(val, step)
        except UpdateFinishedTrialError:
            m.dead = True
            return True
        return m.trial.should_prune()

    return on_eval


def shared_tables(group: list[Member], device: str) -> list:
    """Each member's teacher as a distill.TeacherTable, one per --distill-from among the group (filled once)."""
    from .distill import TeacherTable, teacher_table

    tables: dict[str, TeacherTable] = {}
    for m in group:
        if m.teacher is not None and m.cfg.distill_from not in tables:
            tables[m.cfg.distill_from] = teacher_table(m.teacher, m.data, device)
    return [tables.get(m.cfg.distill_from) for m in group]


def _train_group(group: list[Member], plan: Plan, train_fn: Callable | None,
                 should_stop: Callable[[], bool] | None, device: str = "cpu") -> list:
    """Train the members (one stack when more than one); per member (model, result), or the exception that failed
    it."""
    from .augment import synthetic_pool
    from .stacked import train_stacked
    from .train import train as default_train

    try:
        pools = [synthetic_pool(m.data, m.cfg) if m.cfg.synthetic else None for m in group]  # loaded here, per run
        if len(group) == 1:
            m = group[0]
            kwargs: dict[str, Any] = {"device": device}
            if should_stop is not None:
                kwargs["should_stop"] = should_stop
            if pools[0] is not None:
                kwargs["pool"] = pools[0]
            if m.teacher is not None:
                kwargs["teacher"] = m.teacher
            return [(train_fn or default_train)(m.model_cfg, m.cfg, m.data, on_eval=_on_eval(m, plan), **kwargs)]
        return train_stacked([(m.model_cfg, m.cfg) for m in group], group[0].data, device=device,
                             on_eval=[_on_eval(m, plan) for m in group], should_stop=should_stop, pools=pools,
                             teachers=shared_tables(group, device))
    except Exception as err:  # a run that raises is recorded as failed; the sweep goes on
        err.__traceback_text__ = traceback.format_exc()[-2000:]  # type: ignore[attr-defined]
        return [err] * len(group)


def _record(m: Member, outcome, plan: Plan) -> str:
    """Write a trained member's run directory and tell Optuna; the state recorded."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    trial, cfg = m.trial, m.cfg
    if outcome is None:
        shutil.rmtree(m.run_dir, ignore_errors=True)
        requeue(trial.study, trial, "interrupted", "stopped before its stack started; queued again")
        return "interrupted"
    if m.dead:
        raise UpdateFinishedTrialError(f"trial {trial.number} was declared dead and queued again")
    if isinstance(outcome, Exception):
        trial.set_user_attr("state", "failed")
        trial.set_user_attr("error", f"{type(outcome).__name__}: {outcome}".splitlines()[0][:500])
        trial.set_user_attr("traceback", getattr(outcome, "__traceback_text__", ""))
        trial.set_user_attr("run_dir", f"runs/{m.run_dir.name}")
        trial.study.tell(trial, state=TrialState.FAIL)
        return "failed"
    model, result = outcome
    if result.state == "interrupted":
        shutil.rmtree(m.run_dir, ignore_errors=True)
        requeue(trial.study, trial, "interrupted", f"interrupted after step {result.steps_done}; queued again")
        return "interrupted"
    state = result.state
    summary = result.summary()
    record_run(m.run_dir, m.config, cfg, m.data, model, result)
    trial.set_user_attr("summary", summary)
    trial.set_user_attr("state", state)
    trial.set_user_attr("run_dir", f"runs/{m.run_dir.name}")
    if state == "complete":
        values = [summary[OBJECTIVES[o]] for o in plan.objectives]  # val and seconds, never test
        trial.study.tell(trial, values if len(values) > 1 else values[0])
    elif state == "pruned":
        trial.study.tell(trial, state=TrialState.PRUNED)
    else:
        trial.set_user_attr("error", result.stop_reason)
        trial.study.tell(trial, state=TrialState.FAIL)
    return state


def work(study, plan: Plan, data: Dataset, sweep_dir: Path, url: str, train_fn: Callable | None = None,
         max_runs: int | None = None, should_stop: Callable[[], bool] | None = None, poll: float = 1.0,
         stack: int = 1, device: str = "cpu") -> int:
    """A worker's loop: claim, run, record, export, until every run of the plan is recorded. Returns the runs it did.

    With nothing left to claim it does not leave while runs are in flight elsewhere: it waits, and redoes any whose
    worker dies (on this machine or another), so no point is stranded. should_stop() ends the loop after the current
    step of the current run, which is queued again. stack: runs claimed at once, those of one shape trained as one
    stacked model (stacked.py). device: where they train ("cpu" or "cuda").
    """
    from optuna.trial import TrialState

    grid_choices = _grid_choices(plan)
    stopping = should_stop or (lambda: False)
    done = 0
    with presence(sweep_dir):
        while (max_runs is None or done < max_runs) and not stopping():
            size = stack if max_runs is None else max(1, min(stack, max_runs - done))
            claimed = claim(study, plan, sweep_dir, url, grid_choices, size)
            if not claimed:
                if recover(study, plan, sweep_dir, url):
                    continue
                if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    break
                time.sleep(poll)
                continue
            states = execute_group(claimed, plan, data, sweep_dir, train_fn, should_stop, device)
            done += sum(1 for state in states if state not in ("interrupted", "superseded"))
            with sweep_lock(sweep_dir, url, plan.name):
                export_results(study, sweep_dir)
    return done


def _worker_entry(plan_dict: dict, sweep_dir: str, url: str, data_path: str | None, heartbeat: int,
                  max_chars: int = MAX_CHARS, stack: int = 1, device: str = "cpu") -> None:
    """A worker process: one torch thread, data and torch loaded once, then runs until the plan is used up.

    Ctrl-C or SIGTERM: the run in flight stops after its step and is queued again. A system failure (a full disk)
    ends the worker with one line and exit code 1; its run is redone when the sweep is run again.
    """
    import torch

    torch.set_num_threads(1)
    try:
        with stop_requests(escalate=False) as stop:
            plan = plan_from_dict(plan_dict, "plan.json")
            data = load_dataset(data_path, plan.base.get("split_seed", TrainConfig.split_seed), max_chars)
            study = load_study(plan, url, heartbeat=heartbeat)
            poll = min(5.0, heartbeat / 2) if not url.startswith("journal:") else 1.0
            work(study, plan, data, Path(sweep_dir), url, should_stop=stop.is_set, poll=poll, stack=stack, device=device)
    except OSError as err:
        sys.stderr.write(f"worker {worker_id()}: {os_error_text(err)}: stopped; rerun the same command "
                         "once that is fixed, and its run is redone\n")
        sys.exit(1)
    except Exception as err:  # the worker's own failure, not a run's: one line here, the traceback in a file
        log = Path(sweep_dir) / "workers" / f"{worker_id()}.err"
        with contextlib.suppress(OSError):
            log.parent.mkdir(exist_ok=True)
            log.write_text(traceback.format_exc())
        sys.stderr.write(f"worker {worker_id()}: {type(err).__name__}: {scrub(str(err), url).splitlines()[0] if str(err) else ''} "
                         f"(traceback in {log}); rerun the same command to redo its run\n")
        sys.exit(1)


# ---------------------------------------------------------------------------------------------------------- records

def trial_rows(study) -> list[dict]:
    """One row per finished run (complete, pruned, diverged, invalid, failed), in trial order. A run a dead worker
    left behind and that was queued again (user attr `redone`) is not one: its rerun has the row."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) or t.user_attrs.get("redone"):
            continue  # a run redone after its worker died or was stopped is recorded by its rerun
        ua = t.user_attrs
        state = ua.get("state") or {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(t.state, "failed")
        row: dict[str, Any] = {"run": ua.get("run", f"{t.number:04d}"), "trial": t.number, "config": ua.get("config", ""),
                               "seed": ua.get("seed", ""), "state": state, "error": ua.get("error", "")}
        if not ua.get("state") and t.state == TrialState.FAIL:
            row["error"] = row["error"] or "run ended without a record (worker stopped?)"
        values = ua.get("values", {})
        for k in SETTINGS:
            if k == "seed":
                continue
            row[k] = values.get(k, "")
        summary = ua.get("summary", {})
        for k in FIGURES:
            row[k] = summary.get(k, "")
        row["run_dir"] = ua.get("run_dir", "")
        row["stack"] = ua.get("stack", "")
        rows.append(row)
    return rows


def results_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=RESULTS_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k, "")) for k in RESULTS_COLUMNS})
    return out.getvalue()


def export_results(study, sweep_dir: Path) -> int:
    """Rewrite sweeps/<name>/results.csv from the storage, atomically. Returns the number of rows."""
    rows = trial_rows(study)
    write_atomic(Path(sweep_dir) / "results.csv", results_csv(rows))
    return len(rows)


def read_sweep(sweep_dir: Path, storage: str | None = None) -> tuple[Plan, str]:
    """(plan, storage URL) of an existing sweep directory; storage (the URL with its password) overrides storage.txt,
    which holds none."""
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / "plan.json").is_file() or not (sweep_dir / "storage.txt").is_file():
        raise UsageError(f"{sweep_dir} is not a sweep directory (no plan.json / storage.txt)")
    plan = plan_from_dict(json.loads((sweep_dir / "plan.json").read_text()), str(sweep_dir / "plan.json"))
    stored = (sweep_dir / "storage.txt").read_text().strip()
    if storage and storable(storage) != stored:
        raise UsageError(f"--storage {redact(storage)} is not this sweep's storage ({stored})")
    return plan, storage or stored


# ------------------------------------------------------------------------------------------------------------- run

def run_sweep(plan: Plan, root: Path, storage: str | None, workers: int, data_path: str | None,
              max_chars: int = MAX_CHARS, progress: bool | None = None, say: Callable[[str], None] = print,
              heartbeat: int = HEARTBEAT_S, stack: int = 1, device: str = "cpu") -> dict[str, Any]:
    """Run (or resume, or join) a sweep with `workers` processes on this machine, each claiming up to `stack` runs at
    a time and training those of one shape as one stacked model, on `device` ("cuda": every worker shares the GPU).

    Returns run counts by state, plus "missing" (the plan's points with no finished record, in words), "died"
    (workers that exited abnormally) and "interrupted" (Ctrl-C/SIGTERM stopped it); a caller exits non-zero unless the
    first two are empty and the last False.
    """
    data = load_dataset(data_path or plan.data, plan.base.get("split_seed", TrainConfig.split_seed), max_chars)  # fail early
    sweep_dir, url = prepare(plan, root, storage, heartbeat, say=say)
    study = load_study(plan, url)
    heartbeat = int(study.user_attrs["heartbeat_s"])  # the study's own, which every machine that joins uses
    if not url.startswith("journal:"):  # a database: reopen it with its heartbeats on
        study = load_study(plan, url, heartbeat=heartbeat)
    fixed = reconcile(study, plan, sweep_dir, url)
    total = plan.total_runs()
    say(f"sweep  {plan.name}: {plan.mode}, {total} runs ({len(plan.seeds)} seed{'s' * (len(plan.seeds) > 1)} each), "
        f"pruner {plan.pruner}, {workers} worker{'s' * (workers > 1)}"
        + (f", stacks of up to {stack}" if stack > 1 else "") + (f", on {device}" if device != "cpu" else "")
        + f" | storage {redact(url)} | {sweep_dir}")
    if fixed["redone"]:
        say(f"resume {fixed['redone']} run(s) left running by a dead worker are marked failed and queued again")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_entry, args=(plan.to_dict(), str(sweep_dir), url, data.path, heartbeat,
                                                              max_chars, stack, device),
                         daemon=False) for _ in range(workers)]
    seen: set[int] = {r["trial"] for r in trial_rows(study)}
    bar = None
    if progress if progress is not None else sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, initial=len(seen), unit="run", dynamic_ncols=True)
        say = bar.write
    best = None
    interrupted = False
    try:
        with stop_requests() as stop:
            # Workers start with Ctrl-C ignored (a spawned Python keeps an ignored SIGINT until its own handler is set
            # in _worker_entry): a Ctrl-C while one still imports torch would otherwise end it with a traceback. This
            # process stops them with SIGTERM either way.
            ours = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                for p in procs:
                    p.start()
            finally:
                signal.signal(signal.SIGINT, ours)
            while True:
                alive = any(p.is_alive() for p in procs)
                if stop.is_set() and not interrupted:
                    interrupted = True
                    say("stop   finishing the current step of each run in flight and queuing it again "
                        "(Ctrl-C again to kill the workers)")
                    for p in procs:
                        if p.is_alive():
                            os.kill(p.pid, signal.SIGTERM)  # a worker that already got the terminal's SIGINT ignores it
                for row in trial_rows(study):
                    if row["trial"] in seen:
                        continue
                    seen.add(row["trial"])
                    say(run_line(row, plan))
                    if row["state"] == "complete" and row["val_loss"] not in ("", None):
                        best = row["val_loss"] if best is None else min(best, row["val_loss"])
                    if bar is not None:
                        bar.update(1)
                        if best is not None:
                            bar.set_postfix_str(f"best val {best:.4f}")
                if not alive:
                    break
                time.sleep(0.5)
    except KeyboardInterrupt:  # the second Ctrl-C: kill the workers; their runs are redone on the next run
        for p in procs:
            if p.is_alive():
                p.kill()
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    for p in procs:
        p.join()
    with sweep_lock(sweep_dir, url, plan.name):
        rows_n = export_results(study, sweep_dir)
    rows = trial_rows(study)
    counts: dict[str, Any] = {s: sum(1 for r in rows if r["state"] == s) for s in STATES}
    died = [p.exitcode for p in procs if p.exitcode not in (0, None)] if not interrupted else []
    missing = missing_runs(study, plan)
    say(f"done   {rows_n} runs recorded: " + (", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none"))
    complete = [r for r in rows if r["state"] == "complete"]
    if complete:
        by_config: dict[str, list[float]] = {}
        for r in complete:
            by_config.setdefault(r["config"], []).append(r["val_loss"])
        cid, vals = min(by_config.items(), key=lambda kv: statistics.fmean(kv[1]))
        example = next(r for r in complete if r["config"] == cid)
        settings = " ".join(f"{k}={example[k]}" for k in plan.swept)
        say(f"best   config {cid} ({settings}): val {statistics.fmean(vals):.4f} mean of {len(vals)}")
    say(f"csv    {sweep_dir / 'results.csv'}")
    if interrupted:
        left = f"{len(missing)} run(s)" if plan.mode == "grid" else (missing[0] if missing else "no runs")
        say(f"stop   interrupted with {left} to do: run the same command again to resume")
    elif missing or died:
        shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
        say("incomplete " + (f"{len(died)} worker(s) exited abnormally (exit codes {died}); " if died else "")
            + (f"missing: {shown}" if missing else "every point is recorded")
            + ": run the same command again to redo what is missing")
    counts.update(missing=missing, died=died, interrupted=interrupted)
    return counts


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_line(row: dict, plan: Plan) -> str:
    """One console line for a finished run."""
    settings = " ".join(f"{k}={_short(row.get(k, ''))}" for k in plan.swept)
    fmt = lambda x: "   -  " if x in ("", None) else f"{x:.4f}"  # noqa: E731
    secs = row.get("wall_seconds")
    tail = f" | {row['error'][:80]}" if row["state"] in ("invalid", "failed", "diverged") and row.get("error") else ""
    return (f"run {row['run']:<18} {row['state']:<8} | {settings} seed={row['seed']} | val {fmt(row.get('val_loss'))} "
            f"| {'' if secs in ('', None) else f'{secs:.1f} s'}{tail}")


# ---------------------------------------------------------------------------------------------------------- refine

def refine_plan(sweep_dir: Path, top: int, trials: int | None = None, name: str | None = None) -> Plan:
    """A TPE plan over a range narrowed around the top configurations (mean val over seeds) of a finished sweep."""
    plan, url = read_sweep(sweep_dir)
    rows = [r for r in _read_results(Path(sweep_dir)) if r["state"] == "complete" and r["val_loss"]]
    if not rows:
        raise UsageError(f"{sweep_dir} has no complete runs to refine around")
    by_config: dict[str, list[dict]] = {}
    for r in rows:
        by_config.setdefault(r["config"], []).append(r)
    ranked = sorted(by_config.values(), key=lambda rs: statistics.fmean(float(r["val_loss"]) for r in rs))[:top]
    space: dict[str, Any] = {}
    base = dict(plan.base)
    original = {d.name: d for d in plan.space}
    for name_ in plan.swept:
        values = sorted({coerce(name_, r[name_]) for rs in ranked for r in rs}, key=lambda v: (str(type(v)), v))
        kind = type(values[0])
        if kind in (int, float) and kind is not bool and len(values) >= 1:
            lo, hi = min(values), max(values)
            log = original[name_].log if name_ in original else (lo > 0 and (hi / lo >= 3 or name_ in ("lr", "min_lr", "weight_decay")))
            if kind is float:
                if log and lo > 0:
                    lo, hi = lo / 2, hi * 2
                else:
                    pad = (hi - lo) / 2 or abs(lo) / 2 or 0.05
                    lo, hi = max(0.0, lo - pad), hi + pad
                if name_ == "dropout":
                    hi = min(hi, 0.9)
                space[name_] = f"{lo:g}:{hi:g}" + (":log" if log and lo > 0 else "")
            else:  # widths and counts keep the grid's spacing (so 8 and 16 refine to 8, 16, 24, not to 9 or 13)
                step = math.gcd(*[int(v) for v in values]) if len(values) > 1 else max(1, int(lo) // 2)
                lo_i, hi_i = max(step, int(lo) - step), int(hi) + step
                space[name_] = f"{lo_i}:{hi_i}" if step == 1 else list(range(lo_i, hi_i + 1, step))
        elif len(values) == 1:
            base[name_] = values[0]
        else:
            space[name_] = values
    if not space:
        raise UsageError(f"the top {top} configurations of {sweep_dir} agree on every setting: nothing to refine")
    raw = {"name": name or f"{plan.name}-refine", "mode": "tpe", "seeds": list(plan.seeds),
           "trials": trials or 20, "pruner": "asha", "base": base, "space": space}
    if plan.preset:
        raw["preset"] = plan.preset
    return plan_from_dict(raw, "refined plan")


def _read_results(sweep_dir: Path) -> list[dict]:
    path = sweep_dir / "results.csv"
    if not path.is_file():
        raise UsageError(f"{sweep_dir} has no results.csv: run `microgpt sweep export {sweep_dir}` first")
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def plan_toml(plan: Plan) -> str:
    """The plan as a TOML file a user can edit and rerun."""
    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return repr(v)

    d = plan.to_dict()
    lines = [f"name = {val(d['name'])}", f"mode = {val(d['mode'])}", f"seeds = {val(d['seeds'])}",
             f"pruner = {val(d['pruner'])}"]
    if d["trials"]:
        lines.append(f"trials = {d['trials']}")
    if d["preset"]:
        lines.append(f"preset = {val(d['preset'])}")
    lines.append("\n[base]")
    lines += [f"{k} = {val(v)}" for k, v in d["base"].items()]
    if d["grid"]:
        lines.append("\n[grid]")
        lines += [f"{k} = {val(v)}" for k, v in d["grid"].items()]
    for p in d["points"]:
        lines.append("\n[[points]]")
        lines += [f"{k} = {val(v)}" for k, v in p.items()]
    if d["space"]:
        lines.append("\n[space]")
        for k, spec in d["space"].items():
            if spec["type"] == "categorical":
                lines.append(f"{k} = {val(spec['choices'])}")
            else:
                lines.append(f"{k} = \"{spec['low']:g}:{spec['high']:g}{':log' if spec['log'] else ''}\"")
    return "\n".join(lines) + "\n"
