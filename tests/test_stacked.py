"""The stacked trainer (stacked.py): K runs as one computation give each run's own history, to float32 rounding."""

import dataclasses
import math
import random

import pytest
import torch

from microgpt.cli import main
from microgpt.config import ModelConfig, TrainConfig, UsageError, resolve
from microgpt.precision import native_bf16
from microgpt.stacked import groups, stack_key, train_stacked
from microgpt.train import train

TOL = 2e-6  # float32 rounding: bmm against mm, a reduction order; measured differences were <= 1e-6 over 40 steps
# Where bf16 is native, Muon's Newton-Schulz iterations run in bf16 (precision.matmul_dtype), and bmm against mm
# round differently there, which the updates carry on: on an AMD EPYC with AVX512-BF16, members("muon", 0.01) stacked
# against alone differed by up to 2.1e-3 on a batch loss and 1.5e-4 on test. These bounds leave room for that
# rounding only; the exact check of the stacking is the float32 one (float32_newton_schulz).
TOL_BF16_BATCH, TOL_BF16_HELD_OUT = 1e-2, 1e-3
MODEL = ModelConfig(vocab_size=27, block_size=16, n_layer=2, n_head=4, n_embd=16)
SCHEDULES = ("constant", "linear", "cosine", "exponential", "wsd")


def members(optimizer: str, lr: float) -> list[tuple[ModelConfig, TrainConfig]]:
    """One member per schedule, each with other settings too: dropout (per site), stochastic depth, EMA or SWA,
    clipping, decay, batch size, seed."""
    out = []
    for i, schedule in enumerate(SCHEDULES):
        model = dataclasses.replace(MODEL, dropout=(0.0, 0.1, 0.2, 0.1, 0.0)[i], init_std=(0.08, 0.05, 0.1, 0.08, 0.06)[i],
                                    dropout_attn=(-1, 0.0, -1, 0.3, -1)[i], dropout_embed=(-1, -1, 0.0, -1, 0.1)[i],
                                    drop_path=(0.0, 0.2, 0.0, 0.1, 0.3)[i])
        cfg = TrainConfig(optimizer=optimizer, lr=lr * (1.0, 0.5, 1.5, 0.8, 1.2)[i], min_lr=lr / 100, schedule=schedule,
                          warmup_steps=(0, 3, 0, 2, 5)[i], steps=(24, 24, 16, 24, 20)[i], batch_size=(4, 4, 2, 6, 3)[i],
                          eval_every=(6, 6, 4, 8, 5)[i], seed=10 + i, ema=(0.0, 0.9, 0.0, 0.95, 0.8)[i],
                          grad_clip=(0.0, 0.5, 0.0, 1.0, 0.0)[i], weight_decay=(0.0, 0.01, 0.1, 0.0, 0.05)[i],
                          beta1=(0.85, 0.9, 0.8, 0.85, 0.9)[i], momentum=(0.9, 0.8, 0.3, 0.9, 0.5)[i],
                          decay_all=i == 2, nesterov=optimizer == "sgd", swa=(0.5, 0.0, 0.25, 0.0, 0.0)[i])
        out.append((model, cfg))
    return out


def assert_same(alone, stacked, batch_tol: float = TOL, held_out_tol: float = TOL) -> None:
    """Every batch loss, val loss and the held-out figures of a stacked member equal the run's alone."""
    assert alone.state == stacked.state and alone.stop_reason == stacked.stop_reason
    assert [r["step"] for r in alone.history] == [r["step"] for r in stacked.history]
    for a, b in zip(alone.history, stacked.history):
        assert a["lr"] == b["lr"]
        assert b["loss"] == pytest.approx(a["loss"], abs=batch_tol)
        assert (a["val_loss"] is None) == (b["val_loss"] is None)
        if a["val_loss"] is not None:
            assert b["val_loss"] == pytest.approx(a["val_loss"], abs=held_out_tol)
    assert alone.best_val_step == stacked.best_val_step
    for figure in ("test_loss", "train_loss", "val_loss"):
        assert getattr(stacked, figure) == pytest.approx(getattr(alone, figure), abs=held_out_tol)


@pytest.fixture
def float32_newton_schulz(monkeypatch):
    """Muon's orthogonalisation in float32 alone and stacked, whatever the CPU: the stacking is then checked to float32
    rounding on every machine (test_muon_members_match_in_native_bf16 covers the bf16 path). optim and stacked look
    matmul_dtype up in precision at each call, so one patch there reaches both."""
    import microgpt.precision

    monkeypatch.setattr(microgpt.precision, "matmul_dtype", lambda device_type: torch.float32)


@pytest.mark.parametrize("optimizer,lr", [("adam", 0.01), ("adamw", 0.01), ("rmsprop", 0.001), ("sgd", 0.1),
                                          ("muon", 0.01)])
def test_each_member_matches_its_run_alone(names_data, optimizer, lr, float32_newton_schulz):
    configs = members(optimizer, lr)
    stacked = train_stacked(configs, names_data)
    for (model_cfg, cfg), (model, result) in zip(configs, stacked):
        alone_model, alone = train(model_cfg, cfg, names_data)
        assert_same(alone, result)
        for name, tensor in alone_model.state_dict().items():  # the val-selected weights (RMSprop divides by tiny
            # second moments, so a 1e-7 gradient difference can move a weight by 3e-5 over 24 steps)
            torch.testing.assert_close(model.state_dict()[name], tensor, atol=1e-4, rtol=1e-3)


def test_swiglu_members_match_their_runs_alone(names_data, float32_newton_schulz):
    model = dataclasses.replace(MODEL, activation="swiglu", dropout_resid=0.1, drop_path=0.2)
    configs = [(model, TrainConfig(optimizer="muon", lr=0.01, steps=12, batch_size=4, eval_every=6, seed=s))
               for s in (1, 2)]
    for (model_cfg, cfg), (_, result) in zip(configs, train_stacked(configs, names_data)):
        assert_same(train(model_cfg, cfg, names_data)[1], result)


@pytest.mark.skipif(not native_bf16("cpu")[0], reason="this CPU has no native bf16: Muon orthogonalises in float32, covered above")
def test_muon_members_match_in_native_bf16(names_data):
    configs = members("muon", 0.01)
    for (model_cfg, cfg), (_, result) in zip(configs, train_stacked(configs, names_data)):
        assert_same(train(model_cfg, cfg, names_data)[1], result, TOL_BF16_BATCH, TOL_BF16_HELD_OUT)


def test_per_member_settings_really_differ(names_data):
    configs = members("adam", 0.01)
    results = [r for _, r in train_stacked(configs, names_data)]
    first_lrs = [r.history[0]["lr"] for r in results]
    assert len(set(first_lrs)) == len(first_lrs)  # warmup and peak differ per member
    assert len({round(r.history[0]["loss"], 6) for r in results}) == len(results)  # own init and batch
    assert [len(r.history) for r in results] == [c.steps for _, c in configs]  # each its own length


def test_microgpt_parity_members_match(names_data):
    configs = [resolve({"seed": s, "steps": 20}, "microgpt", 27, names_data.max_len + 1) for s in (42, 7)]
    stacked = train_stacked(configs, names_data, py_rngs=[random.Random(c.seed) for _, c in configs])
    for (model_cfg, cfg), (_, result) in zip(configs, stacked):
        _, alone = train(model_cfg, cfg, names_data, py_rng=random.Random(cfg.seed))
        assert [r["loss"] for r in alone.history] == pytest.approx([r["loss"] for r in result.history], abs=1e-12)


def test_a_diverged_member_stops_and_the_others_go_on(names_data):
    good = (MODEL, TrainConfig(steps=20, batch_size=4, lr=0.1, optimizer="sgd", momentum=0.0, eval_every=5, seed=1))
    bad = (MODEL, dataclasses.replace(good[1], lr=1e6, seed=2))
    (_, r_good), (_, r_bad) = train_stacked([good, bad], names_data)
    assert r_bad.state == "diverged" and "became" in r_bad.stop_reason and r_bad.diverged_step <= 20
    assert not math.isfinite(r_bad.history[-1]["loss"])
    _, alone = train(*bad, names_data)
    assert (alone.state, alone.diverged_step) == (r_bad.state, r_bad.diverged_step)
    assert_same(train(*good, names_data)[1], r_good)


def test_pruning_stops_one_member_only(names_data):
    configs = [(MODEL, TrainConfig(steps=20, batch_size=4, eval_every=5, seed=s)) for s in (1, 2, 3)]
    seen = []

    def prune_at_10(step, val):
        seen.append(step)
        return step >= 10

    results = [r for _, r in train_stacked(configs, names_data, on_eval=[None, prune_at_10, None])]
    assert [r.state for r in results] == ["complete", "pruned", "complete"]
    assert seen == [5, 10] and results[1].steps_done == 10 and results[1].test_loss is not None
    for (model_cfg, cfg), r in zip(configs[::2], results[::2]):
        assert_same(train(model_cfg, cfg, names_data)[1], r)


def test_interrupt_ends_every_member_as_interrupted(names_data):
    configs = [(MODEL, TrainConfig(steps=50, batch_size=2, eval_every=4, seed=s)) for s in (1, 2)]
    calls = []
    results = train_stacked(configs, names_data, should_stop=lambda: calls.append(1) or len(calls) >= 6)
    assert [r.state for _, r in results] == ["interrupted", "interrupted"]
    assert all(r.steps_done == 6 and r.test_loss is None and r.best_val is not None for _, r in results)


def test_only_compatible_runs_stack(names_data):
    wide = dataclasses.replace(MODEL, n_embd=32)
    a, b = TrainConfig(steps=5), TrainConfig(steps=5, optimizer="adamw")
    assert stack_key(MODEL, a) == stack_key(dataclasses.replace(MODEL, dropout=0.3), dataclasses.replace(a, lr=0.5))
    assert stack_key(MODEL, a) != stack_key(wide, a) and stack_key(MODEL, a) != stack_key(MODEL, b)
    assert groups([(MODEL, a), (wide, a), (MODEL, a), (MODEL, a), (MODEL, b)], size=2) == [[0, 2], [1], [3], [4]]
    with pytest.raises(UsageError, match="n_embd"):
        train_stacked([(MODEL, a), (wide, a)], names_data)


def test_cli_seeds_writes_one_run_directory_per_seed(tmp_path, names_path, capsys):
    args = ["train", "--data", str(names_path), "-s", "30", "-b", "4", "--seed", "5", "--out-dir", str(tmp_path)]
    assert main([*args, "--seeds", "3", "--name", "stack"]) == 0
    out = capsys.readouterr().out
    assert "3 seeds (5..7) trained as one stacked model" in out and "test   mean" in out
    import json

    runs = sorted((tmp_path / "stack").iterdir())
    assert [p.name for p in runs] == ["s5", "s6", "s7"]
    summaries = [json.loads((p / "summary.json").read_text()) for p in runs]
    assert all(s["state"] == "complete" and (p / "model.pt").is_file() for s, p in zip(summaries, runs))
    assert [json.loads((p / "config.json").read_text())["train"]["seed"] for p in runs] == [5, 6, 7]
    stacks = {json.loads((p / "config.json").read_text())["stack"]["id"] for p in runs}
    assert len(stacks) == 1
    assert main(["report", str(tmp_path / "stack"), "-o", str(tmp_path / "report")]) == 0
    overview = (tmp_path / "report" / "report.md").read_text()
    total = max(s["wall_seconds"] for s in summaries)  # the stack's clock, once, not three members' sum
    assert f"Total wall time {total:.1f} s" in overview and "each of the 1 stacks" in overview
    assert main([*args, "--seed", "6", "--name", "alone"]) == 0  # the s6 member is the run of seed 6 alone
    alone = json.loads((tmp_path / "alone" / "summary.json").read_text())
    assert summaries[1]["val_loss"] == pytest.approx(alone["val_loss"], abs=TOL)
    assert summaries[1]["test_loss"] == pytest.approx(alone["test_loss"], abs=TOL)


def test_cli_seeds_ensemble_measures_the_stack_as_one_model(tmp_path, names_path, capsys):
    import json

    assert main(["train", "--data", str(names_path), "-s", "20", "-b", "4", "--out-dir", str(tmp_path), "--name", "e",
                 "--seeds", "2", "--ensemble", "--samples", "3"]) == 0
    summary = json.loads((tmp_path / "e" / "ensemble" / "summary.json").read_text())
    members = [json.loads((tmp_path / "e" / s / "summary.json").read_text()) for s in ("s1337", "s1338")]
    assert summary["state"] == "complete" and summary["val_loss"] <= max(m["val_loss"] for m in members)
    own = json.loads((tmp_path / "e" / "ensemble" / "config.json").read_text())["ensemble"]["seconds"]
    stack_wall = max(m["wall_seconds"] for m in members)  # the two members share one clock: counted once
    assert summary["wall_seconds"] == pytest.approx(stack_wall + own)
    assert main(["report", str(tmp_path / "e"), "-o", str(tmp_path / "report")]) == 0
    overview = (tmp_path / "report" / "report.md").read_text()
    assert f"Total wall time {stack_wall + own:.1f} s" in overview  # the ensemble's members are not counted twice


def test_cli_seeds_ensemble_calibrate_records_a_val_fitted_temperature(tmp_path, names_path, capsys):
    import json

    assert main(["train", "--data", str(names_path), "-s", "20", "-b", "4", "--out-dir", str(tmp_path), "--name", "e",
                 "--seeds", "2", "--ensemble", "--calibrate", "--samples", "0"]) == 0
    recorded = json.loads((tmp_path / "e" / "ensemble" / "config.json").read_text())["ensemble"]
    summary = json.loads((tmp_path / "e" / "ensemble" / "summary.json").read_text())
    assert recorded["temperature"] != 1.0 and "calibrate temperature" in capsys.readouterr().out
    assert summary["val_loss"] <= recorded["uncalibrated"]["val"]  # fitted on val: never worse there


@pytest.mark.parametrize("flags,message", [(["--seeds", "0"], "--seeds must be >= 1, got 0"),
                                           (["--ensemble"], "add --seeds"),
                                           (["--calibrate"], "add --ensemble"),
                                           (["--seeds", "2", "--resume", "x"], "drop --seeds")])
def test_cli_seeds_bad_input(tmp_path, names_path, capsys, flags, message):
    assert main(["train", "--data", str(names_path), "--out-dir", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not any(tmp_path.iterdir())


def test_stack_seconds_counts_a_stack_once():
    from microgpt.record import stack_seconds

    assert stack_seconds([("", 2.0), ("a", 10.0), ("a", 10.5), ("b", 3.0), ("", 1.0)]) == 2.0 + 10.5 + 3.0 + 1.0


def test_shared_masks_keep_each_members_rate_and_leave_undropped_members_exact(names_data):
    """masks="shared" (a GPU's default): one draw per site for the whole stack. A member without dropout still
    equals its run alone; one with dropout keeps its own rate (0 or 1/keep, the right share of zeros) and the stack is
    reproducible from its members' seeds."""
    from microgpt.stacked import StackedRun, default_masks

    assert default_masks("cpu") == "own" and default_masks("cuda") == "shared"
    configs = [(dataclasses.replace(MODEL, dropout=p), TrainConfig(steps=12, batch_size=4, eval_every=6, seed=s))
               for p, s in ((0.0, 3), (0.3, 4), (0.1, 5))]
    first = train_stacked(configs, names_data, masks="shared")
    again = train_stacked(configs, names_data, masks="shared")
    own = train_stacked(configs, names_data, masks="own")
    _, alone = train(*configs[0], names_data)
    assert_same(alone, first[0][1])
    for (_, a), (_, b) in zip(first, again):
        assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert [h["loss"] for h in first[1][1].history] != [h["loss"] for h in own[1][1].history]  # other masks
    assert all(math.isfinite(h["loss"]) for _, r in first for h in r.history)

    from microgpt.train import Run

    runs = [Run(m, c, names_data, own_optimizer=False) for m, c in configs]
    stack = StackedRun(runs, masks="shared")
    draw = stack.noise(runs, [(4, 16)] * 3)
    noise = draw("mlp", torch.Size((3, 64, 16, 200)), torch.float32)
    for k, p in enumerate((0.0, 0.3, 0.1)):
        kept = noise[k][noise[k] != 0]
        torch.testing.assert_close(kept, torch.full_like(kept, 1.0 / (1.0 - p)))
        assert (noise[k] == 0).float().mean().item() == pytest.approx(p, abs=0.01)
    with pytest.raises(UsageError, match="masks must be one of own, shared"):
        StackedRun(runs, masks="mine")


@pytest.mark.parametrize("optimizer,masks", [("adamw", "own"), ("muon", "own"), ("sgd", "shared")])
def test_stack_stopped_and_resumed_equals_one_never_stopped(names_data, optimizer, masks):
    """Ctrl-C's checkpoint (and a periodic one) continue a stack exactly: every member's history, val choice and
    held-out figures as if it had never stopped, members that had already left included."""
    import io

    def roundtrip(state: dict) -> dict:
        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)
        return torch.load(buf, weights_only=True)

    configs = [(dataclasses.replace(MODEL, dropout=p), TrainConfig(
        optimizer=optimizer, lr=lr, steps=steps, batch_size=4, eval_every=4, seed=seed, ema=ema, grad_clip=1.0,
        weight_decay=0.05, nesterov=optimizer == "sgd"))
        for p, lr, steps, seed, ema in ((0.1, 0.01, 24, 1, 0.9), (0.2, 0.005, 10, 2, 0.0), (0.0, 0.02, 20, 3, 0.8))]
    whole = train_stacked(configs, names_data, masks=masks)
    saved: list[dict] = []
    calls: list[int] = []
    first = train_stacked(configs, names_data, masks=masks, on_checkpoint=saved.append, checkpoint_every=8,
                          should_stop=lambda: calls.append(1) or len(calls) == 13)
    assert [r.state for _, r in first] == ["interrupted", "complete", "interrupted"]
    assert [s["step"] for s in saved] == [8, 13] and saved[-1]["active"] == [0, 2]
    for state in (saved[-1], saved[0]):
        resumed = train_stacked(configs, names_data, masks=masks, resume=roundtrip(state))
        for (_, a), (_, b) in zip(whole, resumed):
            assert [(h["step"], h["lr"], h["loss"], h["val_loss"]) for h in a.history] == \
                [(h["step"], h["lr"], h["loss"], h["val_loss"]) for h in b.history]
            assert (a.state, a.best_val_step, a.val_loss, a.test_loss, a.train_loss) == \
                (b.state, b.best_val_step, b.val_loss, b.test_loss, b.train_loss)
    with pytest.raises(UsageError, match="holds 3 members, this stack 2"):
        train_stacked(configs[:2], names_data, masks=masks, resume=saved[-1])
