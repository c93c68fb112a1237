"""The CUDA path. Skipped without a GPU; run on one with `pytest tests/test_cuda.py`."""

import random

import pytest
import torch

from microgpt.config import ModelConfig, TrainConfig, resolve
from microgpt.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the CUDA path is not exercised")


def test_parity_on_cuda(names_data):
    model_cfg, cfg = resolve({"eval_every": 1}, "microgpt")
    _, r = train(model_cfg, cfg, names_data, device="cuda", py_rng=random.Random(42), on_eval=lambda s, _: s >= 3)
    assert [round(h["loss"], 4) for h in r.history] == [3.3660, 3.4243, 3.1778]


def test_cuda_matches_cpu(names_data):
    model_cfg = ModelConfig(n_embd=32, n_layer=2, dropout=0.0)
    cfg = TrainConfig(steps=50, batch_size=16, eval_every=50, dtype="float64")
    model, on_gpu = train(model_cfg, cfg, names_data, device="cuda")
    _, on_cpu = train(model_cfg, cfg, names_data, device="cpu")
    assert next(model.parameters()).device.type == "cuda"
    assert on_gpu.test_loss == pytest.approx(on_cpu.test_loss, abs=1e-6)


def test_cli_on_cuda(tmp_path, names_path):
    from microgpt.cli import main

    assert main(["train", "--data", str(names_path), "-s", "20", "--eval-every", "10", "--device", "cuda",
                 "--out-dir", str(tmp_path), "--name", "g", "-b", "8"]) == 0
    assert main(["sample", str(tmp_path / "g"), "-n", "3", "--device", "cuda"]) == 0


def test_stacked_members_on_cuda_match_their_runs_alone(names_data):
    import dataclasses

    from microgpt.stacked import train_stacked

    model_cfg = ModelConfig(n_embd=32, n_layer=2, dropout=0.0)
    base = TrainConfig(steps=30, batch_size=8, eval_every=10, dtype="float64")
    configs = [(model_cfg, dataclasses.replace(base, seed=s, lr=lr)) for s, lr in ((1, 0.01), (2, 0.003))]
    stacked = train_stacked(configs, names_data, device="cuda")
    for (m, c), (model, result) in zip(configs, stacked):
        _, alone = train(m, c, names_data, device="cuda")
        assert next(model.parameters()).device.type == "cuda"
        assert [h["loss"] for h in result.history] == pytest.approx([h["loss"] for h in alone.history], abs=1e-9)
        assert result.test_loss == pytest.approx(alone.test_loss, abs=1e-9)


def test_sweep_stacks_on_cuda(tmp_path, names_path):
    """`microgpt sweep --device cuda`: the runs train on the GPU, as one stack with each member's dropout rate."""
    import json

    from microgpt.cli import main

    assert main(["sweep", "--data", str(names_path), "--grid", "dropout=0.0,0.2", "--grid", "lr=0.01,0.02", "-s", "20",
                 "--eval-every", "10", "-b", "8", "--stack", "4", "--device", "cuda", "--out-dir", str(tmp_path),
                 "--name", "g"]) == 0
    configs = [json.loads(p.read_text()) for p in (tmp_path / "g").glob("runs/*/config.json")]
    assert len(configs) == 4 and {c["device"] for c in configs} == {"cuda"}
    assert {c["stack"]["dropout_masks"] for c in configs} == {"shared"} and len({c["stack"]["id"] for c in configs}) == 1
