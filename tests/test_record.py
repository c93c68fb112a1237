"""The record schema is the one source of a run's states, figures and columns, and the lower modules import without
torch and without a cycle."""

import csv
import json
import subprocess
import sys

import pytest

from microgpt import record
from microgpt.config import UsageError


def test_a_sweep_writes_exactly_the_schema(tmp_path, names_data):
    from microgpt.plan import plan_from_dict
    from microgpt.sweep import load_study, prepare, reconcile, work

    plan = plan_from_dict({"name": "s", "base": {"steps": 4, "eval_every": 2, "samples": 0}, "grid": {"lr": [0.01]}})
    sweep_dir, url = prepare(plan, tmp_path, None)
    study = load_study(plan, url)
    reconcile(study, plan, sweep_dir, url)
    work(study, plan, names_data, sweep_dir, url)
    with (sweep_dir / "results.csv").open() as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert tuple(reader.fieldnames) == record.RESULTS_COLUMNS and len(set(reader.fieldnames)) == len(reader.fieldnames)
    summary = json.loads((sweep_dir / rows[0]["run_dir"] / "summary.json").read_text())
    assert set(record.FIGURES) <= set(summary) and summary["state"] in record.STATES
    with (sweep_dir / rows[0]["run_dir"] / "metrics.csv").open() as fh:
        assert tuple(csv.DictReader(fh).fieldnames) == record.METRICS_COLUMNS
    for name, kind in record.FIGURES.items():  # every figure reads back as the type the schema names
        value = record.parse_figure(rows[0][name], strict=True)
        assert value is None or kind(value) == value


def test_states_old_and_new():
    assert record.state_of({"state": "stopped", "stop_reason": "stopped by on_eval at step 5"}) == "pruned"
    assert record.state_of({"state": "stopped", "stop_reason": "early stop at step 5: ..."}) == "complete"
    assert record.state_of({}) == "failed" and record.state_of({"state": "interrupted"}) == "interrupted"


@pytest.mark.parametrize("text, value", [("true", True), ("on", True), ("1", True), ("no", False), ("False", False)])
def test_one_rule_for_booleans(text, value):
    assert record.coerce("residual", text) is value
    with pytest.raises(UsageError):
        record.coerce("residual", "maybe")


def test_text_becomes_typed_settings():
    assert record.coerce("n_embd", "32") == 32 and record.coerce("lr", "0.01") == 0.01 and record.coerce("lr", 1) == 1.0
    for bad in (("n_embd", "3.5"), ("lr", "inf"), ("colour", "red")):
        with pytest.raises(UsageError):
            record.coerce(*bad)


@pytest.mark.parametrize("module", ["config", "protocol", "record", "plan", "files"])
def test_the_schema_and_protocol_need_no_torch(module):
    code = f"import sys, microgpt.{module}; assert 'torch' not in sys.modules, sorted(sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-500:]


@pytest.mark.parametrize("module", ["augment", "ngram", "rundir", "train", "sample", "sweep", "report", "data"])
def test_every_module_imports_first(module):
    """Importing a module before any other works only if no import cycle depends on the order."""
    done = subprocess.run([sys.executable, "-c", f"import microgpt.{module}"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-500:]


def test_no_import_cycle_even_through_imports_inside_functions():
    import ast
    from pathlib import Path

    import microgpt

    package = Path(microgpt.__file__).parent
    modules = {p.stem for p in package.glob("*.py")}
    graph = {}
    for path in package.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                deps.update(n for n in names if n in modules)
        graph[path.stem] = deps

    def reach(start, node, seen):
        for dep in graph[node]:
            if dep == start:
                return True
            if dep not in seen:
                seen.add(dep)
                if reach(start, dep, seen):
                    return True
        return False

    assert [m for m in graph if reach(m, m, set())] == []
