"""Predictions a plan makes about its own points ([hypotheses] in plans/seed-hypotheses.toml), and how they fare:
each against every configuration that changes the baseline in that factor alone, on mean test loss over the seeds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import stats
from ..config import UsageError
from ..plan import load_plan_file
from ..record import SETTINGS
from .records import Records
from .tables import Configuration, differences, same


@dataclass(frozen=True)
class Hypothesis:
    """Changing one factor of the baseline lowers test loss by `predicted` (relative)."""

    name: str
    predicted: float                            # predicted relative test-loss reduction, 0.30 = 30%
    fields: tuple[str, ...]                     # the settings this factor may change; every other must stay equal
    change: dict[str, tuple[Any, Any]]          # field -> (baseline value, changed value), where the plan names them
    grows: tuple[str, ...] = ()                 # at least one of these must be larger than in the baseline


@dataclass(frozen=True)
class Measured:
    hypothesis: Hypothesis
    variant: Configuration
    changed: list[str]
    comparison: stats.Comparison | None         # on test loss, baseline - variant
    verdict: str                                # stats.verdict's


def parse(table: Any, source: str) -> list[Hypothesis]:
    """The [hypotheses] table of a plan as Hypotheses; UsageError naming the first bad entry."""
    if not isinstance(table, dict) or not table:
        raise UsageError(f"{source} has no [hypotheses] table: add one [hypotheses.NAME] per predicted factor")
    out = []
    for name, entry in table.items():
        where = f"[hypotheses.{name}] in {source}"
        if not isinstance(entry, dict):
            raise UsageError(f"{where} must be a table with predicted = and change = or fields =, got {entry!r}")
        predicted, change = entry.get("predicted"), entry.get("change", {})
        if not isinstance(predicted, (int, float)) or isinstance(predicted, bool):
            raise UsageError(f"{where}: predicted must be a relative reduction such as 0.1, got {predicted!r}")
        if not isinstance(change, dict) or any(not isinstance(v, list) or len(v) != 2 for v in change.values()):
            raise UsageError(f"{where}: change must map settings to [baseline, changed], got {change!r}")
        fields, grows = entry.get("fields", list(change)), entry.get("grows", [])
        for setting in [*change, *fields, *grows]:
            if setting not in SETTINGS:
                raise UsageError(f"{where}: unknown setting {setting!r}")
        if not fields:
            raise UsageError(f"{where} names no setting: give change = {{...}} or fields = [...]")
        out.append(Hypothesis(str(name), float(predicted), tuple(fields), {k: tuple(v) for k, v in change.items()},
                              tuple(grows)))
    return out


def load(plan_file: str | None, records: Records) -> tuple[list[Hypothesis], str]:
    """(hypotheses, where they came from): the --plan file's, else the first plan.json that carries some."""
    if plan_file is not None:
        return parse(load_plan_file(plan_file).get("hypotheses"), plan_file), f"plan file {plan_file}"
    for sweep in records.sweeps:
        if sweep.plan.get("hypotheses"):
            return parse(sweep.plan["hypotheses"], f"{sweep.path}/plan.json"), f"{sweep.path}/plan.json"
    return [], ""


def measure(hypotheses: list[Hypothesis], baseline: Configuration | None,
            configs: list[Configuration]) -> list[Measured]:
    """Each hypothesis against every configuration that differs from the baseline in exactly its factor; the
    reduction is (baseline mean - variant mean) / baseline mean of test loss, judged by stats.verdict."""
    if baseline is None or not baseline.settings or not baseline.values("test_loss"):
        return []
    base, out = baseline.settings, []
    for h in hypotheses:
        for config in configs:
            if config is baseline or not config.settings or not config.values("test_loss"):
                continue
            changed = differences(base, config.settings)
            if not changed or not set(changed) <= set(h.fields):
                continue
            if any(not (same(base.get(k), a) and same(config.settings.get(k), b)) for k, (a, b) in h.change.items()):
                continue
            if h.grows and not any((config.settings.get(k) or 0) > (base.get(k) or 0) for k in h.grows):
                continue
            comparison = stats.compare(baseline.values("test_loss"), config.values("test_loss"))
            verdict = stats.verdict(h.predicted, comparison, baseline.spread("test_loss").mean)
            out.append(Measured(h, config, changed, comparison, verdict))
    return out
