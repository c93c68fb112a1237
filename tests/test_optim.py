import math

import pytest
import torch

from microgpt.config import TrainConfig, UsageError
from microgpt.model import GPT
from microgpt.config import ModelConfig
from microgpt.optim import build_optimizer, lr_at, param_groups


def test_linear_is_microgpts():
    cfg = TrainConfig(steps=1000, lr=0.01, schedule="linear")
    assert [lr_at(s, cfg) for s in (0, 1, 500, 999)] == pytest.approx([0.01, 0.01 * 0.999, 0.005, 0.01 / 1000])


def test_schedules_start_at_lr_and_end_at_min_lr():
    for schedule in ("linear", "cosine", "exponential"):
        cfg = TrainConfig(steps=100, lr=0.02, min_lr=1e-4, schedule=schedule)
        assert lr_at(0, cfg) == pytest.approx(0.02)
        assert lr_at(100, cfg) == pytest.approx(1e-4)
        values = [lr_at(s, cfg) for s in range(100)]
        assert all(a > b for a, b in zip(values, values[1:]))
    cos = TrainConfig(steps=100, lr=0.02, min_lr=0.0, schedule="cosine")
    assert lr_at(50, cos) == pytest.approx(0.01)
    exp = TrainConfig(steps=100, lr=0.01, min_lr=1e-4, schedule="exponential")
    assert lr_at(50, exp) == pytest.approx(1e-3)
    const = TrainConfig(steps=100, lr=0.03, schedule="constant")
    assert {lr_at(s, const) for s in range(100)} == {0.03}


def test_wsd_holds_then_decays():
    cfg = TrainConfig(steps=100, lr=0.01, min_lr=0.001, schedule="wsd", decay_frac=0.2, warmup_steps=10)
    assert lr_at(5, cfg) == pytest.approx(0.006)
    assert [lr_at(s, cfg) for s in (10, 50, 82)] == pytest.approx([0.01, 0.01, 0.01])
    assert lr_at(91, cfg) == pytest.approx(0.01 - 0.009 * 0.5)
    assert lr_at(100, cfg) == pytest.approx(0.001)


def test_orthogonalise_gives_near_orthogonal_updates():
    from microgpt.optim import orthogonalise

    g = torch.randn(16, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for dtype in (torch.bfloat16, torch.float32):
        out = orthogonalise(g, dtype=dtype)
        assert out.dtype == torch.float64  # computed in dtype, returned in the gradient's dtype
        s = torch.linalg.svdvals(out)
        assert s.min() > 0.5 and s.max() < 1.3  # Newton-Schulz with these coefficients lands near 1, not exactly on it
        tall = orthogonalise(g.T, dtype=dtype)
        assert tall.shape == (64, 16)
    # bf16 and float32 iterations agree to bf16's precision
    assert torch.allclose(orthogonalise(g), orthogonalise(g, dtype=torch.float32), atol=0.05)


def test_muon_updates_hidden_matrices_with_orthogonal_steps_and_the_rest_with_adamw():
    from microgpt.optim import hidden_matrices

    cfg = TrainConfig(optimizer="muon", lr=0.1, muon_lr=0.05)
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_embd=8, n_head=2, vocab_size=5, block_size=4))
    opt = build_optimizer(model, cfg)
    assert {g["muon"] for g in opt.param_groups} == {True, False}
    muon_ids = {id(p) for p in hidden_matrices(model)}
    assert id(model.wte.weight) not in muon_ids and id(model.blocks[0].mlp.c_fc.weight) in muon_ids
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    delta_emb = model.wte.weight.detach() - before["wte.weight"]
    assert torch.allclose(delta_emb.abs(), torch.full_like(delta_emb, 0.1), rtol=1e-4)  # Adam's first step: lr * sign
    delta_fc = model.blocks[0].mlp.c_fc.weight.detach() - before["blocks.0.mlp.c_fc.weight"]
    s = torch.linalg.svdvals(delta_fc / (0.05 * (32 / 8) ** 0.5))
    assert s.max() < 1.3 and s.min() > 0.5


def test_warmup_ramps_then_hands_over():
    cfg = TrainConfig(steps=110, lr=0.01, warmup_steps=10, schedule="linear")
    assert lr_at(0, cfg) == pytest.approx(0.001)
    assert lr_at(9, cfg) == pytest.approx(0.01)
    assert lr_at(10, cfg) == pytest.approx(0.01)
    assert lr_at(60, cfg) == pytest.approx(0.005)


def test_weight_decay_hits_matrices_only_unless_asked():
    model = GPT(ModelConfig(norm="layernorm"))
    groups = param_groups(model, TrainConfig(weight_decay=0.1))
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert id(model.blocks[0].attn.c_attn.weight) in decayed and id(model.lm_head.weight) in decayed
    assert id(model.wte.weight) not in decayed and id(model.blocks[0].norm_1.weight) not in decayed
    everything = param_groups(model, TrainConfig(weight_decay=0.1, decay_all=True))
    assert sum(len(g["params"]) for g in everything if g["weight_decay"]) == len(list(model.parameters()))


def one_step(cfg: TrainConfig, grad_scale: float = 1.0) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_embd=8, n_head=2, vocab_size=5, block_size=4)).double()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = build_optimizer(model, cfg)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5 * grad_scale)
    opt.step()
    return {k: (v.detach() - before[k]) for k, v in model.named_parameters()}


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "rmsprop", "sgd"])
def test_each_optimizer_moves_against_the_gradient(optimizer):
    delta = one_step(TrainConfig(optimizer=optimizer, lr=0.1))
    assert all((d < 0).all() for d in delta.values())


def test_optimizers_differ():
    steps = {o: one_step(TrainConfig(optimizer=o, lr=0.1))["wte.weight"][0, 0].item() for o in ("adam", "rmsprop", "sgd")}
    assert steps["adam"] == pytest.approx(-0.1, rel=1e-6)  # Adam's first step is lr * sign(grad)
    assert steps["sgd"] == pytest.approx(-0.05)           # lr * grad
    assert steps["rmsprop"] == pytest.approx(-0.1 * 0.5 / math.sqrt(0.01 * 0.25), rel=1e-5)


def test_adamw_decay_is_decoupled_adam_decay_is_l2():
    plain = one_step(TrainConfig(optimizer="adamw", lr=0.1, weight_decay=0.0))
    decayed = one_step(TrainConfig(optimizer="adamw", lr=0.1, weight_decay=0.5))
    l2 = one_step(TrainConfig(optimizer="adam", lr=0.1, weight_decay=0.5))
    key = "blocks.0.attn.c_attn.weight"
    assert not torch.allclose(plain[key], decayed[key])
    assert torch.equal(plain["wte.weight"], decayed["wte.weight"])  # embeddings are not decayed by default
    assert not torch.allclose(decayed[key], l2[key])


def test_nesterov_changes_sgd():
    a = one_step(TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9))
    b = one_step(TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True))
    assert not torch.allclose(a["wte.weight"], b["wte.weight"])


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"steps": 0}, "steps must be a positive integer"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"min_lr": 1.0}, "min_lr must be in"),
        ({"schedule": "exponential"}, "min_lr"),
        ({"warmup_steps": 1000}, "warmup_steps"),
        ({"optimizer": "lion"}, "optimizer must be one of"),
        ({"nesterov": True, "optimizer": "adam"}, "--nesterov"),
        ({"grad_clip": -1.0}, "grad_clip"),
    ],
)
def test_bad_train_configs(bad, message):
    with pytest.raises(UsageError, match=message):
        TrainConfig(**bad).validate()
