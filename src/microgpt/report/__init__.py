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


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `microgpt report` to the CLI's subcommands."""
    p = subparsers.add_parser(
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
    return p


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
