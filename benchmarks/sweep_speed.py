"""Sweep throughput: the seed's runner grid (64 runs x 500 steps, plans/runner.toml) with 1 and with 2 worker
processes, in the same invocation. Prints wall time, runs per minute, and the per-run overhead beyond training
(worker wall time not spent in training steps: start-up, evaluation, sampling, records, storage).

Usage: python benchmarks/sweep_speed.py [--data PATH] [--plan plans/runner.toml] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

from microgpt.plan import load_plan_file, plan_from_dict
from microgpt.sweep import run_sweep

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data")
    parser.add_argument("--plan", default=str(REPO / "plans" / "runner.toml"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    plan = plan_from_dict(load_plan_file(args.plan), args.plan)
    print(f"plan {plan.name}: {plan.total_runs()} runs, base {plan.base}")
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as root:
            t0 = time.perf_counter()
            run_sweep(plan, Path(root), None, workers, args.data, progress=False, say=lambda line: None)
            wall = time.perf_counter() - t0
            with (Path(root) / plan.name / "results.csv").open() as fh:
                rows = list(csv.DictReader(fh))
        train_s = sum(float(r["train_seconds"]) for r in rows)
        run_s = sum(float(r["wall_seconds"]) for r in rows)
        complete = sum(r["state"] == "complete" for r in rows)
        overhead = (wall * workers - train_s) / len(rows)
        print(f"workers {workers}: {wall:6.1f} s wall | {60 * len(rows) / wall:5.1f} runs/min | {complete}/{len(rows)} complete"
              f" | training {train_s:5.1f} s, in-run evaluation {run_s - train_s:5.1f} s (summed over runs)"
              f" | overhead beyond training {overhead:.2f} s/run")


if __name__ == "__main__":
    main()
