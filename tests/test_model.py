import math

import pytest
import torch
from torch.func import functional_call

from microgpt.config import ModelConfig, UsageError
from microgpt.data import pack
from microgpt.model import GPT, init_weights


def build(**kw) -> GPT:
    cfg = ModelConfig(**{"vocab_size": 7, "block_size": 8, "n_embd": 8, "n_head": 2, "n_layer": 2, **kw})
    model = GPT(cfg).double()
    init_weights(model, torch.Generator().manual_seed(0))
    return model


def test_microgpt_size():
    assert GPT(ModelConfig()).num_params() == 4192


def test_initial_loss_is_near_uniform(names_data):
    model = GPT(ModelConfig())
    init_weights(model, torch.Generator().manual_seed(0))
    from microgpt.train import evaluate
    from microgpt.data import eval_batches

    loss = evaluate(model, eval_batches(names_data.val, names_data.tokenizer))
    assert abs(loss - math.log(27)) < 0.1


def test_causal_later_tokens_do_not_change_earlier_logits():
    model = build()
    idx = torch.tensor([[6, 1, 2, 3, 4, 5]])
    changed = idx.clone()
    changed[0, 4] = 0
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.equal(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_names_in_one_row_do_not_see_each_other():
    model = build()
    batch = pack([[1, 2], [3, 4, 5]], bos=6, width=8)
    other = pack([[1, 2], [0, 0, 0]], bos=6, width=8)
    la, _ = model(batch.idx, pos=batch.pos, mask=batch.mask)
    lb, _ = model(other.idx, pos=other.pos, mask=other.mask)
    # best fit by decreasing length puts the 3-character name at [0:4] and the 2-character one at [4:7]
    assert batch.pos[0].tolist()[:7] == [0, 1, 2, 3, 0, 1, 2]
    assert torch.equal(la[0, 4:7], lb[0, 4:7]) and not torch.allclose(la[0, :4], lb[0, :4])


OPTIONS = [
    {},
    {"norm": "rmsnorm_gain"},
    {"norm": "layernorm"},
    {"activation": "gelu"},
    {"activation": "relu2"},
    {"residual": False},
    {"final_norm": True, "embed_norm": False},
    {"tie_weights": True},
    {"init": "scaled"},
    {"qk_norm": True},
]


# ~6 s each: the plain `pytest` run checks microgpt's model, the full run (`-m "slow or not slow"`) every option
@pytest.mark.parametrize("options", [o if not o else pytest.param(o, marks=pytest.mark.slow) for o in OPTIONS],
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "microgpt")
def test_gradients_match_finite_differences(options):
    model = build(**options)
    batch = pack([[1, 2, 3], [4, 0], [5, 5, 1, 2]], bos=6, width=8)
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    names = list(params)

    def loss_of(*tensors):
        return functional_call(model, dict(zip(names, tensors)), (batch.idx, batch.targets, batch.pos, batch.mask))[1]

    assert torch.autograd.gradcheck(loss_of, tuple(params.values()), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_tied_head_shares_the_matrix():
    model = build(tie_weights=True)
    assert model.lm_head.weight is model.wte.weight
    assert model.num_params() == build().num_params() - 7 * 8


def test_dropout_is_active_in_train_mode_only():
    model = build(dropout=0.5)
    idx = torch.tensor([[6, 1, 2, 3]])
    model.train()
    a, _ = model(idx)
    b, _ = model(idx)
    assert not torch.equal(a, b)
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0])


def test_each_dropout_site_has_its_own_rate():
    idx = torch.tensor([[6, 1, 2, 3], [6, 2, 2, 1]])
    model = build(dropout=0.5, dropout_embed=0.0, dropout_attn=0.0, dropout_resid=0.0)  # every site overridden to 0
    model.train()
    model.dropout_generator = g = torch.Generator().manual_seed(1)
    state = g.get_state()
    a, _ = model(idx)
    model.eval()
    assert torch.equal(a, model(idx)[0]) and torch.equal(g.get_state(), state)  # no mask drawn anywhere
    for site in ("embed", "attn", "resid"):  # one site dropping: train mode differs, the others stay at 0
        cfg = ModelConfig(dropout=0.0, **{f"dropout_{site}": 0.3})
        assert cfg.rate(site) == 0.3 and all(cfg.rate(o) == 0.0 for o in ("embed", "attn", "resid") if o != site)
        one = build(dropout=0.0, **{f"dropout_{site}": 0.3})
        one.train()
        assert not torch.equal(one(idx)[0], a)
    assert ModelConfig(dropout=0.2).rate("attn") == 0.2  # -1, the default, is --dropout's


def test_drop_path_skips_whole_branches_per_row_deeper_more_often():
    cfg = ModelConfig(n_layer=4, drop_path=0.4)
    assert [cfg.path_rate(i) for i in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    model = build(drop_path=0.5, n_layer=2)
    idx = torch.tensor([[6, 1, 2, 3]] * 4000)
    branch = torch.ones(4000, 4, 8, dtype=torch.float64)
    block = model.blocks[1]  # rate 0.5
    block.train()
    block.attn.generator = torch.Generator().manual_seed(0)
    out = block.skipped(branch)
    rows = out[:, 0, 0]
    assert torch.equal(out, rows.view(-1, 1, 1).expand_as(out))  # a whole row kept or skipped
    assert set(rows.tolist()) == {0.0, 2.0} and (rows == 0).double().mean().item() == pytest.approx(0.5, abs=0.03)
    model.eval()
    plain = build(n_layer=2)
    assert torch.equal(model(idx[:2])[0], plain(idx[:2])[0])  # eval mode: every branch, as without drop_path
    model.train()
    model.dropout_generator = torch.Generator().manual_seed(0)
    assert not torch.equal(model(idx[:8])[0], plain(idx[:8])[0])


def test_swiglu_is_silu_gate_times_value_at_the_relu_mlps_size():
    from microgpt.model import GPT as G

    assert G(ModelConfig(n_embd=96, activation="swiglu")).num_params() == G(ModelConfig(n_embd=96)).num_params()
    model = build(activation="swiglu")
    mlp = model.blocks[0].mlp
    h = ModelConfig(n_embd=8, activation="swiglu").mlp_hidden()
    assert h == 22 and mlp.c_fc.weight.shape == (2 * h, 8) and mlp.c_proj.weight.shape == (8, h)
    x = torch.randn(3, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    gate, value = x @ mlp.c_fc.weight[:h].T, x @ mlp.c_fc.weight[h:].T
    by_hand = (gate * torch.sigmoid(gate) * value) @ mlp.c_proj.weight.T
    torch.testing.assert_close(mlp(x), by_hand)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"n_embd": 16, "n_head": 12}, "not divisible"),
        ({"n_layer": 0}, "n_layer must be a positive integer"),
        ({"n_embd": -4}, "n_embd must be a positive integer"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"dropout": -0.1}, "dropout must be in"),
        ({"norm": "batchnorm"}, "norm must be one of"),
        ({"dropout_attn": 1.5}, "dropout_attn must be in"),
        ({"dropout_embed": -0.5}, "or -1 for --dropout's rate"),
        ({"drop_path": 1.0}, "drop_path must be in"),
        ({"drop_path": 0.1, "residual": False}, "drop_path skips residual branches"),
        ({"activation": "swish"}, "activation must be one of"),
    ],
)
def test_bad_model_configs(bad, message):
    with pytest.raises(UsageError, match=message):
        GPT(ModelConfig(**bad))


def test_generate_stops_at_the_context():
    model = build()
    out = model.generate(torch.tensor([[6]]), max_new_tokens=100, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 9)  # block_size inputs can be fed, so block_size new tokens can be drawn
