"""The console's step lines: when train() writes one, and which loss it shows."""

import statistics

from microgpt import train as train_module
from microgpt.config import ModelConfig, TrainConfig, resolve
from microgpt.train import LogWindow, train

TINY_MODEL = ModelConfig(vocab_size=4, block_size=5, n_embd=16, n_head=4)


def steps_logged(lines: list[str]) -> list[int]:
    return [int(line.split()[1].split("/")[0]) for line in lines]


def test_a_line_every_log_every_steps_and_at_evaluations(tiny_data):
    lines: list[str] = []
    train(TINY_MODEL, TrainConfig(steps=12, batch_size=2, eval_every=5, log_every=4), tiny_data, log=lines.append)
    assert steps_logged(lines) == [4, 5, 8, 10, 12]


def test_a_line_at_least_every_log_seconds(tiny_data, monkeypatch):
    """A run logging every 1,000 steps still prints while it trains: a line once LOG_SECONDS pass without one
    (here 0 s, so every step)."""
    monkeypatch.setattr(train_module, "LOG_SECONDS", 0.0)
    lines: list[str] = []
    train(TINY_MODEL, TrainConfig(steps=6, batch_size=2, eval_every=1000, log_every=1000), tiny_data, log=lines.append)
    assert steps_logged(lines) == [1, 2, 3, 4, 5, 6]


def test_the_window_knows_how_long_since_its_last_line():
    window = LogWindow()
    window.start -= train_module.LOG_SECONDS + 1  # as if the last line was written that long ago
    assert window.seconds() > train_module.LOG_SECONDS
    window.add(2.0)
    window.line(1, 10, 0.01, None)
    assert window.seconds() < train_module.LOG_SECONDS


def test_a_line_shows_the_window_mean_or_in_parity_the_last_loss(tiny_data):
    """microgpt.py prints each step's own loss; the default line averages the steps since the last one."""
    for parity in (False, True):
        _, cfg = resolve({"steps": 6, "eval_every": 1000, "log_every": 3, "parity": parity, "batch_size": 1,
                          "dtype": "float64" if parity else "float32"}, None, 4, 5)
        lines: list[str] = []
        _, result = train(TINY_MODEL, cfg, tiny_data, log=lines.append)
        losses = [r["loss"] for r in result.history]
        shown = [float(line.split("| loss ")[1].split()[0]) for line in lines]
        expected = [losses[2], losses[5]] if parity else [statistics.fmean(losses[:3]), statistics.fmean(losses[3:])]
        assert shown == [round(x, 4) for x in expected], parity


def test_log_every_help_names_the_wall_clock_floor():
    assert f"{train_module.LOG_SECONDS:g} s" in TrainConfig.__dataclass_fields__["log_every"].metadata["help"]
