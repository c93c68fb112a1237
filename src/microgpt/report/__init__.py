"""`microgpt report`: read run and sweep records (CSV and JSON only) and write one report of what they measured.

It never builds or loads a model: every number comes from results.csv, summary.json, metrics.csv, samples.txt and the
sweep's Optuna storage (read-only), and every loss is docs/protocol.md's held-out, token-weighted mean (nats/token).
Val ranks; test is what the report compares.

  records.py     read the directories into Runs and Sweeps       tables.py    configurations, baseline, statistics
  hypotheses.py  a plan's predictions and their verdicts         figures.py   matplotlib and Optuna's plots
  render.py      the sections, through templates/ into:

out/
  report.html    one self-contained file: the figures inline as base64 PNGs, a click on a header sorts a table
  report.md      the same text, figures linked by relative path
  *.png          the figures
  summary.csv    one row per configuration: mean, sd and n over its seeds of every figure
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import UsageError
from .records import load
from .render import write_report


def run(args: argparse.Namespace) -> int:
    """Execute `microgpt report`; UsageError on bad input."""
    if args.top is not None and args.top < 1:
        raise UsageError(f"--top must be >= 1, got {args.top}")
    records = load(args.dirs)
    page = write_report(records, args.baseline, args.top, args.plan, Path(args.out))
    runs, configs, skipped = len(records.runs), len({r.key() for r in records.runs}), len(records.skipped)
    print(f"report {page} ({runs} run{'s' * (runs != 1)}, {configs} configuration{'s' * (configs != 1)}, "
          f"{skipped} skipped)")
    print(f"       {page.with_name('report.md')}, {page.with_name('summary.csv')}")
    return 0
