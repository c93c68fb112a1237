"""The README's Python API example, run as it is written, with fewer steps."""

import ast
import re
from pathlib import Path

from microgpt.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_example() -> str:
    match = re.search(r"^## Python API\n.*?^```python\n(.*?)^```", README.read_text(), re.S | re.M)
    assert match, "README.md has no python block under '## Python API'"
    return match.group(1)


def test_the_python_api_example_runs(tmp_path, monkeypatch, capsys, names_path):
    monkeypatch.setenv("MICROGPT_DATA", str(names_path))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "-s", "5", "--eval-every", "5", "--samples", "0", "--name", "seed"]) == 0  # runs/seed
    capsys.readouterr()
    code = python_api_example()
    assert code.count('"steps": 1000') == 1
    exec(compile(code.replace('"steps": 1000', '"steps": 20'), str(README), "exec"), {})
    lines = capsys.readouterr().out.splitlines()[-5:]
    assert lines[0].startswith("step    20/20 | loss")
    val, test = (float(x) for x in re.fullmatch(r"val (\S+) test (\S+) tier None", lines[1]).groups())
    assert lines[2] == f"val again {val:.4f}" and 2.0 < test < 3.3
    assert len(ast.literal_eval(lines[3])) == 5
    assert [name[:2] for name in ast.literal_eval(lines[4])] == ["ka"] * 3


def test_the_flags_table_lists_every_train_flag():
    from microgpt.cli import build_parser

    text = README.read_text()
    table = text[text.index("## Flags of `microgpt train`"):text.index("## What a run leaves behind")]
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = [o for a in train._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
    missing = [o for o in flags if f"`{o}" not in table and f"{o}`" not in table and f", {o}" not in table
               and not (o.startswith("--no-") and f"--[no-]{o[5:]}" in table)
               and f"--[no-]{o[2:]}" not in table]
    assert not missing, f"README's flags table lacks {missing}"
