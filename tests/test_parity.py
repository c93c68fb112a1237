"""--preset microgpt reproduces Karpathy's microgpt.py (Feb 2026) run: the printed losses and the sampled names."""

import random

import pytest

from microgpt.config import resolve
from microgpt.sample import sample_names_microgpt
from microgpt.train import train


def parity_run(data, stop_at=None, log=None):
    model_cfg, cfg = resolve({"eval_every": 1 if stop_at else 1000}, "microgpt")
    rng = random.Random(cfg.seed)
    model, result = train(model_cfg, cfg, data, py_rng=rng, on_eval=(lambda step, _: step >= stop_at) if stop_at else None,
                          log=log)
    return model, result, rng


def test_first_three_steps(names_data):
    _, result, _ = parity_run(names_data, stop_at=3)
    assert [round(r["loss"], 4) for r in result.history] == [3.3660, 3.4243, 3.1778]
    assert result.n_params == 4192


@pytest.mark.slow
def test_step_1000_and_samples(names_data):
    lines: list[str] = []
    model, result, rng = parity_run(names_data, log=lines.append)
    assert round(result.history[-1]["loss"], 4) == 2.6497
    assert lines[-1].startswith("step  1000/1000 | loss 2.6497 |")  # the console prints the step's loss, as microgpt
    names = sample_names_microgpt(model, names_data.tokenizer, 8, 0.5, rng)
    # microgpt.py's own first eight samples after its 1000 steps
    assert names == ["kamon", "ann", "karai", "jaire", "vialan", "karia", "yeran", "anna"]
