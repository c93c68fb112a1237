import math

import pytest
import torch

from microgpt.config import ModelConfig, TrainConfig
from microgpt.data import pack
from microgpt.model import GPT, init_weights
from microgpt.optim import build_optimizer
from microgpt.rundir import load_checkpoint, save_checkpoint
from microgpt.train import tier_of, train

TINY_MODEL = ModelConfig(vocab_size=4, block_size=5, n_embd=16, n_head=4)


def test_overfits_one_batch():
    model = GPT(ModelConfig(vocab_size=6, block_size=8, n_embd=32, n_head=4, n_layer=2))
    init_weights(model, torch.Generator().manual_seed(0))
    batch = pack([[0, 1, 2, 3], [4, 4, 0], [2, 1]], bos=5)
    opt = build_optimizer(model, TrainConfig(lr=0.01))
    for _ in range(300):
        _, loss = model(batch.idx, batch.targets, batch.pos, batch.mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # after BOS the three first characters are equally likely: the floor is 3 ln 3 over 12 predictions
    assert loss.item() < 3 * math.log(3) / 12 + 0.01


def test_same_seed_same_history_other_seed_differs(tiny_data):
    cfg = TrainConfig(steps=30, batch_size=4, eval_every=10, seed=3)
    mcfg = ModelConfig(vocab_size=4, block_size=5, dropout=0.1)
    _, a = train(mcfg, cfg, tiny_data)
    _, b = train(mcfg, cfg, tiny_data)
    _, c = train(mcfg, TrainConfig(steps=30, batch_size=4, eval_every=10, seed=4), tiny_data)
    strip = lambda h: [(r["step"], r["lr"], r["loss"], r["val_loss"]) for r in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert strip(a.history) != strip(c.history)


def test_result_figures(tiny_data):
    model, r = train(TINY_MODEL, TrainConfig(steps=40, batch_size=4, eval_every=10, target=5.0), tiny_data)
    assert r.state == "complete" and r.steps_done == 40 and len(r.history) == 40
    assert [h["step"] for h in r.history if h["val_loss"] is not None] == [10, 20, 30, 40]
    assert r.best_val == min(h["val_loss"] for h in r.history if h["val_loss"] is not None)
    assert r.val_loss == r.best_val and r.best_val_step in (10, 20, 30, 40)
    assert r.steps_to_target == 10 and r.seconds_to_target > 0  # 5.0 nats is above any val here
    assert all(x is not None and math.isfinite(x) for x in (r.train_loss, r.test_loss, r.stability))
    assert r.tokens_per_second > 0 and r.wall_seconds >= r.train_seconds
    assert r.n_params == model.num_params()


def test_val_selected_model_is_the_one_returned(tiny_data):
    from microgpt.data import eval_batches
    from microgpt.train import evaluate

    model, r = train(TINY_MODEL, TrainConfig(steps=30, batch_size=2, lr=0.05, eval_every=5), tiny_data)
    assert evaluate(model, eval_batches(tiny_data.val, tiny_data.tokenizer)) == pytest.approx(r.best_val, abs=1e-6)


def test_divergence_is_recorded_not_raised(tiny_data):
    _, r = train(TINY_MODEL, TrainConfig(steps=50, lr=1e6, optimizer="sgd", momentum=0.0, eval_every=5), tiny_data)
    assert r.state == "diverged" and r.diverged_step is not None and r.diverged_step <= 50
    assert "became" in r.stop_reason


def test_patience_stops_on_val(tiny_data):
    _, r = train(TINY_MODEL, TrainConfig(steps=400, lr=0.3, schedule="constant", eval_every=2, patience=2), tiny_data)
    assert r.state == "complete" and "early stop" in r.stop_reason and r.steps_done < 400


def test_on_eval_can_stop_the_run(tiny_data):
    seen = []
    _, r = train(TINY_MODEL, TrainConfig(steps=100, eval_every=10),
                 tiny_data, on_eval=lambda step, val: seen.append((step, val)) or step >= 30)
    assert [s for s, _ in seen] == [10, 20, 30] and r.steps_done == 30 and r.state == "pruned"


def test_grad_clip_changes_training(tiny_data):
    base = TrainConfig(steps=20, batch_size=4, lr=0.05, eval_every=20)
    _, a = train(TINY_MODEL, base, tiny_data)
    _, b = train(TINY_MODEL, TrainConfig(**{**base.__dict__, "grad_clip": 0.01}), tiny_data)
    assert a.history[1]["loss"] != b.history[1]["loss"]


def test_no_residual_still_trains(names_data):
    _, r = train(ModelConfig(residual=False), TrainConfig(steps=300, batch_size=8, eval_every=300), names_data)
    assert r.val_loss < math.log(27) - 0.5


def test_checkpoint_round_trip(tmp_path, tiny_data):
    model, _ = train(ModelConfig(vocab_size=4, block_size=5, tie_weights=True, norm="layernorm"),
                     TrainConfig(steps=10, eval_every=10), tiny_data)
    save_checkpoint(tmp_path / "model.pt", model, tiny_data.tokenizer, 10)
    loaded, tok, payload = load_checkpoint(tmp_path)
    idx = torch.tensor([[3, 0, 1, 2]])
    model.eval()
    assert torch.equal(model(idx)[0], loaded(idx)[0])
    assert tok == tiny_data.tokenizer and payload["step"] == 10
    assert loaded.lm_head.weight is loaded.wte.weight


def test_tiers():
    assert [tier_of(x) for x in (1.85, 1.9, 1.95, 2.1, 2.2, None, float("nan"))] == [1, 2, 2, 3, None, None, None]


def test_ema_weights_are_what_gets_evaluated(tiny_data):
    from microgpt.data import eval_batches
    from microgpt.train import evaluate

    cfg = TrainConfig(steps=40, batch_size=4, lr=0.05, eval_every=40, ema=0.9)
    model, r = train(TINY_MODEL, cfg, tiny_data)
    _, plain = train(TINY_MODEL, TrainConfig(steps=40, batch_size=4, lr=0.05, eval_every=40), tiny_data)
    assert r.best_val != plain.best_val
    assert evaluate(model, eval_batches(tiny_data.val, tiny_data.tokenizer)) == pytest.approx(r.best_val, abs=1e-6)


@pytest.mark.slow
def test_muon_trains(names_data):
    _, r = train(ModelConfig(n_embd=32, n_layer=2), TrainConfig(steps=150, batch_size=8, optimizer="muon", lr=0.01,
                                                                muon_lr=0.02, eval_every=150), names_data)
    assert r.state == "complete" and r.val_loss < 2.6


@pytest.mark.slow
def test_bf16_autocast_trains_in_bf16_and_evaluates_in_float32(names_data):
    """Autocast changes the training forward (other batch losses) but not the weights' dtype or the evaluation."""
    from microgpt.config import resolve
    from microgpt.train import evaluate

    settings = {"steps": 200, "batch_size": 32, "eval_every": 100, "samples": 0, "n_embd": 32, "n_layer": 2,
                "lr": 3e-3, "optimizer": "adamw"}
    results = {}
    for autocast in ("off", "bfloat16"):
        model_cfg, cfg = resolve({**settings, "autocast": autocast}, None, 27, 16)
        model, r = train(model_cfg, cfg, names_data)
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert evaluate(model, names_data.eval_batches("val")) == pytest.approx(r.val_loss, abs=1e-6)
        results[autocast] = r
    a, b = results["off"], results["bfloat16"]
    assert a.history[0]["loss"] != b.history[0]["loss"]  # bf16 matmuls give other numbers from the first step
    assert abs(a.history[0]["loss"] - b.history[0]["loss"]) < 0.05
    assert abs(a.val_loss - b.val_loss) < 0.05  # and about the same model after 200 steps


@pytest.mark.parametrize("flags, expected", [({"avx2", "avx512f"}, "off"), ({"avx2", "avx512_bf16"}, "bfloat16"),
                                             ({"amx_bf16"}, "bfloat16")])
def test_autocast_auto_picks_bf16_only_where_it_is_native(monkeypatch, tmp_path, capsys, names_path, flags, expected):
    import json

    from microgpt import precision
    from microgpt.cli import main

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    precision.matmul_dtype.cache_clear()
    assert precision.resolve_autocast("auto", "cpu")[0] == expected
    assert precision.resolve_autocast("auto", "cpu", dtype="float64")[0] == "off"
    assert precision.matmul_dtype("cpu") == (torch.bfloat16 if expected == "bfloat16" else torch.float32)
    precision.matmul_dtype.cache_clear()
    code = main(["train", "--preset", "best", "-s", "2", "--warmup-steps", "0", "--eval-every", "1", "--samples", "0",
                 "-e", "16", "--n-head", "2", "-y", "1", "--data", str(names_path), "--out-dir", str(tmp_path),
                 "--name", "p"])
    out = capsys.readouterr().out
    assert code == 0
    chosen = json.loads((tmp_path / "p" / "config.json").read_text())["autocast"]
    assert chosen["chosen"] == expected and ("(bf16 autocast by --autocast auto: this CPU has" in out) == (expected == "bfloat16")
    assert ("(no autocast by --autocast auto: this CPU has no native bf16" in out) == (expected == "off")


def test_swa_is_the_uniform_mean_of_the_last_steps_weights(tiny_data):
    from microgpt.config import UsageError
    from microgpt.train import Run

    cfg = TrainConfig(steps=20, batch_size=4, eval_every=10, swa=0.25, lr=0.02)
    assert cfg.swa_start() == 15
    run = Run(TINY_MODEL, cfg, tiny_data)
    seen = []
    for _ in range(cfg.steps):
        run.train_step()
        seen.append([p.detach().clone() for p in run.model.parameters()])
    for averaged, *steps in zip(run.ema.params, *seen[15:]):
        torch.testing.assert_close(averaged, torch.stack(steps).mean(0), atol=1e-6, rtol=1e-5)
    for early, live in zip(Run(TINY_MODEL, TrainConfig(steps=20, batch_size=4, swa=0.25), tiny_data).ema.params,
                           seen[0]):
        assert early.shape == live.shape
    assert cfg.average_weight(3) == 1.0  # before its start the average is the live weights
    with pytest.raises(UsageError, match="pass one of them"):
        TrainConfig(swa=0.2, ema=0.99).validate()
    with pytest.raises(UsageError, match="swa must be in"):
        TrainConfig(swa=1.0).validate()
    _, result = train(TINY_MODEL, cfg, tiny_data)  # evaluations from step 15 on see the average
    assert result.state == "complete" and math.isfinite(result.test_loss)
