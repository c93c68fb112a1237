"""Ensembles of trained runs (ensemble.py, `microgpt ensemble`) and distillation from them (distill.py)."""

import csv
import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from microgpt import ensemble as ens
from microgpt import train as train_module
from microgpt.cli import main
from microgpt.config import UsageError, resolve
from microgpt.data import Dataset, frame, pack, pack_examples
from microgpt.distill import TeacherTable, distill_loss, live_probs, names_in
from microgpt.ensemble import Ensemble, load_members, load_teacher
from microgpt.rundir import load_checkpoint
from microgpt.train import evaluate, train

TINY = ["-s", "40", "-e", "16", "-b", "8", "--eval-every", "20", "--samples", "0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, names_path):
    """Three tiny runs on the protocol's split (seeds 1-3) and one on split seed 1, written by `microgpt train`."""
    root = tmp_path_factory.mktemp("runs")
    torch.set_num_threads(1)
    for name, extra in (("s1", ["--seed", "1"]), ("s2", ["--seed", "2"]), ("s3", ["--seed", "3"]),
                        ("split1", ["--seed", "1", "--split-seed", "1"])):
        assert main(["train", "--data", str(names_path), *TINY, *extra, "--out-dir", str(root), "--name", name]) == 0
    return root


def summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def test_ensemble_of_one_is_the_member(runs, names_data):
    model, _, _ = load_checkpoint(runs / "s1")
    for combine in ens.COMBINES:
        one = Ensemble([model], combine)
        for split, recorded in (("val", "val_loss"), ("test", "test_loss")):
            assert evaluate(one, names_data.eval_batches(split)) == pytest.approx(summary(runs / "s1")[recorded],
                                                                                  abs=1e-6)


def test_prob_average_is_jensen_and_the_hand_computation(runs, names_data):
    models = [load_checkpoint(runs / n)[0] for n in ("s1", "s2")]
    batches = names_data.eval_batches("val")
    alone = [evaluate(m, batches) for m in models]
    prob = evaluate(Ensemble(models, "prob"), batches)
    logit = evaluate(Ensemble(models, "logit"), batches)
    assert prob <= sum(alone) / 2  # -log of a mean probability is at most the mean of -log (Jensen)
    assert abs(prob - logit) > 1e-5  # averaging logits is another model

    # by hand, in float64, on five names packed into one batch
    tok = names_data.tokenizer
    batch = pack(names_data.encoded("val")[:5], tok.bos, names_data.max_len + 1)
    with torch.no_grad():
        probs = [F.softmax(m(batch.idx, pos=batch.pos, mask=batch.mask)[0].double(), -1) for m in models]
    mean = (probs[0] + probs[1]) / 2
    real = batch.targets >= 0
    hand = -mean[real].gather(-1, batch.targets[real][:, None]).log().sum().item() / batch.n_tokens
    assert evaluate(Ensemble(models, "prob"), [batch]) == pytest.approx(hand, abs=1e-5)
    logits = [m(batch.idx, pos=batch.pos, mask=batch.mask)[0].double() for m in models]
    by_logit = F.log_softmax((logits[0] + logits[1]) / 2, -1)
    hand_logit = -by_logit[real].gather(-1, batch.targets[real][:, None]).sum().item() / batch.n_tokens
    assert evaluate(Ensemble(models, "logit"), [batch]) == pytest.approx(hand_logit, abs=1e-5)


def test_members_of_other_splits_or_data_are_refused(runs, tmp_path, tiny_file, capsys):
    with pytest.raises(UsageError, match="split seed"):
        load_members([runs / "s1", runs / "split1"])
    assert main(["train", "--data", str(tiny_file), "-s", "4", "-e", "8", "--samples", "0", "--out-dir",
                 str(tmp_path), "--name", "tiny"]) == 0
    capsys.readouterr()
    (tmp_path / "nomodel").mkdir()
    (tmp_path / "nomodel" / "config.json").write_text((runs / "s1" / "config.json").read_text())
    for bad, message in (([runs / "s1", tmp_path / "tiny"], "data file (sha256)"),
                         ([runs / "s1", tmp_path / "missing"], "no such run directory"),
                         ([runs / "s1", tmp_path], "not a run directory"),
                         ([runs / "s1", tmp_path / "nomodel"], "has no model.pt"),
                         ([runs / "s1", runs / "s1"], "named twice")):
        code = main(["ensemble", *map(str, bad), "--out-dir", str(tmp_path / "out")])
        out, err = capsys.readouterr()
        assert code == 2 and message in err and err.count("\n") == 1 and not out, (bad, err)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_cli_writes_an_ensemble_that_report_reads(runs, tmp_path, capsys):
    code = main(["ensemble", str(runs / "s1"), str(runs / "s2"), str(runs / "s3"), "--out-dir", str(tmp_path),
                 "--name", "e3", "--samples", "4"])
    out, err = capsys.readouterr()
    assert code == 0, err
    e3 = tmp_path / "e3"
    assert {"args.txt", "config.json", "summary.json", "samples.txt", "metrics.csv", "loss_vs_k.csv"} <= {
        p.name for p in e3.iterdir()}
    config, result = json.loads((e3 / "config.json").read_text()), summary(e3)
    member_vals = {n: summary(runs / n)["val_loss"] for n in ("s1", "s2", "s3")}
    by_val = sorted(member_vals, key=member_vals.get)
    assert [p.rsplit("/", 1)[-1] for p in config["ensemble"]["members"]] == by_val
    assert config["ensemble"]["combine"] == "prob" and config["ensemble"]["sizes"] == [1, 2, 3]
    assert result["state"] == "complete" and result["val_loss"] <= sum(member_vals.values()) / 3
    rows = list(csv.DictReader((e3 / "loss_vs_k.csv").open()))
    assert [r["k"] for r in rows] == ["1", "2", "3"]
    assert float(rows[0]["val_prob"]) == pytest.approx(member_vals[by_val[0]], abs=1e-6)
    assert float(rows[-1]["test_prob"]) == pytest.approx(result["test_loss"], abs=1e-6)
    assert len((e3 / "samples.txt").read_text().splitlines()) == 4
    assert out.count("member ") == 3 and "combine prob - logit" in out and str(e3) in out

    code = main(["report", str(e3), str(runs / "s1"), "-o", str(tmp_path / "report")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "| e3 |" in (tmp_path / "report" / "report.md").read_text()

    # an ensemble directory stands for its members: as --distill-from and as an ensemble's argument
    teacher = load_teacher(str(e3), _data_of(runs))
    assert len(teacher.models) == 3 and teacher.combine == "prob"


def _data_of(runs):
    from microgpt.ensemble import members_data

    members, _ = load_members([runs / "s1"])
    return members_data(members)


def _tiny_train(names_data, **changes):
    model_cfg, cfg = resolve({"steps": 12, "batch_size": 8, "n_embd": 16, "eval_every": 4, "seed": 7, **changes},
                             vocab_size=names_data.tokenizer.vocab_size, default_block_size=names_data.max_len + 1)
    return model_cfg, cfg


def test_distill_mix_zero_is_the_undistilled_run(runs, names_data):
    model_cfg, cfg = _tiny_train(names_data)
    _, plain = train(model_cfg, cfg, names_data)
    teacher_spec = f"{runs / 's1'},{runs / 's2'}"
    mixed_cfg = dataclasses.replace(cfg, distill_from=teacher_spec, distill_mix=0.0)
    _, zero = train(model_cfg, mixed_cfg, names_data, teacher=load_teacher(teacher_spec, names_data))
    assert [(r["loss"], r["val_loss"]) for r in zero.history] == [(r["loss"], r["val_loss"]) for r in plain.history]
    assert zero.test_loss == plain.test_loss

    half_cfg = dataclasses.replace(cfg, distill_from=teacher_spec, distill_mix=0.5)
    _, half = train(model_cfg, half_cfg, names_data, teacher=load_teacher(teacher_spec, names_data))
    assert half.history[0]["loss"] != plain.history[0]["loss"]
    assert half.history[-1]["val_loss"] != plain.history[-1]["val_loss"]
    assert "distilled from" in half.trained_on


def test_distill_loss_by_hand(runs, names_data):
    torch.manual_seed(0)
    student, _, _ = load_checkpoint(runs / "s3")
    student.train()
    teacher = Ensemble([load_checkpoint(runs / n)[0] for n in ("s1", "s2")], "prob")
    batch = pack(names_data.encoded("train")[:6], names_data.tokenizer.bos, names_data.max_len + 1)
    logits, loss = student(batch.idx, batch.targets, batch.pos, batch.mask)
    mixed = distill_loss(logits, batch, teacher, loss, 0.3)
    with torch.no_grad():
        real = batch.targets >= 0
        t_probs = sum(F.softmax(m(batch.idx, pos=batch.pos, mask=batch.mask)[0].double(), -1)
                      for m in teacher.models) / 2
        s_logp = F.log_softmax(logits.double(), -1)
        soft = -(t_probs[real] * s_logp[real]).sum().item() / batch.n_tokens
        hard = -s_logp[real].gather(-1, batch.targets[real][:, None]).sum().item() / batch.n_tokens
    assert mixed.item() == pytest.approx(0.3 * soft + 0.7 * hard, abs=1e-5)
    mixed.backward()  # the student learns; the teacher gets no gradient
    assert all(p.grad is None for p in teacher.parameters())
    assert all(not m.training for m in teacher.models)


def test_teacher_table_is_the_teacher_run_on_the_batch(runs, names_data, monkeypatch):
    teacher = Ensemble([load_checkpoint(runs / n)[0] for n in ("s1", "s2")], "prob")
    train_names, bos = names_data.encoded("train"), names_data.tokenizer.bos
    monkeypatch.setattr("microgpt.distill.TABLE_NAMES", 700)  # several fills, the last one short
    table = TeacherTable(teacher, train_names, bos, "cpu")
    assert table.table.shape == (sum(len(s) + 1 for s in train_names), names_data.tokenizer.vocab_size)
    g = torch.Generator().manual_seed(3)
    for size in (1, 5, 64):  # one name a row (no mask) and packed rows
        batch = pack([train_names[i] for i in torch.randint(len(train_names), (size,), generator=g).tolist()], bos,
                     names_data.max_len + 1)
        assert len(names_in(batch)) == size
        assert torch.allclose(table.probs(batch), live_probs(teacher, batch), atol=1e-6)

    # a name outside the train split (a noised one) is not in the table: its batch runs the teacher
    ran = []
    real_forward = Ensemble.forward
    monkeypatch.setattr(Ensemble, "forward", lambda self, *a, **k: ran.append(1) or real_forward(self, *a, **k))
    val_name = names_data.encoded("val")[0]
    assert tuple(frame(val_name, bos)[0]) not in table.where
    batch = pack_examples([frame(train_names[0], bos), frame(val_name, bos)], bos, names_data.max_len + 1)
    assert torch.equal(table.probs(batch), live_probs(teacher, batch)) and len(ran) == 2
    table.probs(pack(train_names[:3], bos, names_data.max_len + 1))
    assert len(ran) == 2  # train names only: looked up


def test_a_teacher_of_another_split_is_refused(runs, names_data, tmp_path, names_path, capsys):
    with pytest.raises(UsageError, match="split seed"):
        load_teacher(str(runs / "split1"), names_data)
    model_cfg, cfg = _tiny_train(names_data, distill_from=str(runs / "split1"))
    with pytest.raises(UsageError, match="teacher=ensemble.load_teacher"):
        train(model_cfg, cfg, names_data)  # train() loads no teacher itself
    split1 = names_data.with_split(1)
    with pytest.raises(UsageError, match="other data, another split"):
        train(model_cfg, cfg, names_data, teacher=load_teacher(str(runs / "split1"), split1))
    code = main(["train", "--data", str(names_path), *TINY, "--distill-from", str(runs / "split1"), "--out-dir",
                 str(tmp_path), "--name", "d"])
    out, err = capsys.readouterr()
    assert code == 2 and "split seed" in err and err.count("\n") == 1
    assert not (tmp_path / "d").exists()
    for bad in ("-0.1", "1.5"):
        assert main(["train", "--data", str(names_path), "--distill-mix", bad, "--out-dir", str(tmp_path)]) == 2
        assert "distill_mix must be in [0, 1]" in capsys.readouterr().err


def test_cli_train_distills(runs, tmp_path, names_path, capsys):
    code = main(["train", "--data", str(names_path), *TINY, "--distill-from", f"{runs / 's1'},{runs / 's2'}",
                 "--distill-mix", "0.7", "--out-dir", str(tmp_path), "--name", "d"])
    out, err = capsys.readouterr()
    assert code == 0, err
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert config["train"]["distill_mix"] == 0.7 and config["train"]["distill_from"].endswith("s2")
    assert "distil 0.7 x the teacher's distribution" in out
    assert "distilled from" in summary(tmp_path / "d")["trained_on"]

    # --seeds: one stack, every member distilled from the one teacher table
    code = main(["train", "--data", str(names_path), *TINY, "--seeds", "2", "--distill-from", str(runs / "s1"),
                 "--out-dir", str(tmp_path), "--name", "ds"])
    out, err = capsys.readouterr()
    assert code == 0, err
    for seed in (1337, 1338):
        assert "distilled from" in summary(tmp_path / "ds" / f"s{seed}")["trained_on"]


def test_the_student_preset_distils_at_its_own_mix(runs, tmp_path, names_path, capsys):
    """`--preset student --distill-from RUN`: the search winner's 4 x 128 model, distilled at mix 0.8 unless told."""
    short = ["-s", "2", "--warmup-steps", "0", "--eval-every", "1", "--samples", "0", "--autocast", "off"]
    code = main(["train", "--preset", "student", *short, "--data", str(names_path), "--distill-from", str(runs / "s1"),
                 "--out-dir", str(tmp_path), "--name", "st"])
    out, err = capsys.readouterr()
    assert code == 0, err
    config = json.loads((tmp_path / "st" / "config.json").read_text())
    assert (config["model"]["n_layer"], config["model"]["n_embd"], config["model"]["activation"]) == (4, 128, "relu2")
    assert (config["train"]["optimizer"], config["train"]["ema"], config["train"]["distill_mix"]) == ("muon", 0.9995, 0.8)
    assert "distil 0.8 x the teacher's distribution" in out and "distilled from" in summary(tmp_path / "st")["trained_on"]
    code = main(["train", "--preset", "student", *short, "--data", str(names_path), "--distill-from", str(runs / "s1"),
                 "--distill-mix", "0.5", "--out-dir", str(tmp_path), "--name", "st5"])
    assert code == 0 and "distil 0.5 x" in capsys.readouterr().out


class SplitLog:
    """Which split each evaluation measured, in order: eval_batches' results are recognised by their first batch."""

    def __init__(self, monkeypatch):
        self.splits: list[str] = []
        self.of: dict[int, str] = {}
        original = Dataset.eval_batches
        log = self

        def eval_batches(data, name):
            batches = original(data, name)
            log.of[id(batches[0])] = name
            return batches

        def evaluate(model, batches):
            log.splits.append(log.of.get(id(batches[0]), "other"))
            return real_evaluate(model, batches)

        real_evaluate = train_module.evaluate
        monkeypatch.setattr(Dataset, "eval_batches", eval_batches)
        for module in (train_module, ens):
            monkeypatch.setattr(module, "evaluate", evaluate)


def test_choices_never_read_test(runs, tmp_path, monkeypatch, names_data, capsys):
    # choosing (member order, val curves) works with test unreadable
    members, _ = load_members([runs / "s1", runs / "s2", runs / "s3"])

    def no_test(data, name):
        if name == "test":
            raise AssertionError("test read while choosing")
        return original(data, name)

    original = Dataset.eval_batches
    monkeypatch.setattr(Dataset, "eval_batches", no_test)
    choice = ens.choose(members, names_data)
    assert choice.member_val == sorted(choice.member_val)
    for combine in ens.COMBINES:
        assert ens.choose(members, names_data, "greedy", combine).members  # greedy selection reads val only too
    assert ens.choose(members, names_data, calibrate=True).temperature != 1.0  # so does fitting the temperature
    monkeypatch.undo()

    # the whole command: every val evaluation comes before the first test one, test only at the end
    log = SplitLog(monkeypatch)
    assert main(["ensemble", str(runs / "s1"), str(runs / "s2"), "--out-dir", str(tmp_path), "--samples", "0"]) == 0
    first_test = log.splits.index("test")
    assert "test" not in log.splits[:first_test] and "val" not in log.splits[first_test:]
    assert log.splits.count("test") == 2 + 2 * 2  # each member once, K = 1 and 2 for each combine once

    # distillation: the teacher sees training batches only; val during the run, test once at the end
    log.splits.clear()
    model_cfg, cfg = _tiny_train(names_data, distill_from=str(runs / "s1"))
    train(model_cfg, cfg, names_data, teacher=load_teacher(str(runs / "s1"), names_data))
    assert log.splits == ["val"] * 3 + ["test", "train"]


def test_a_sweep_distils_its_points_in_one_stack_and_refuses_a_foreign_teacher(runs, names_data, tmp_path):
    import csv

    from microgpt.plan import plan_from_dict
    from microgpt.sweep import load_study, prepare, reconcile, work

    base = {"steps": 20, "eval_every": 10, "samples": 0, "batch_size": 8, "n_embd": 16}
    plan = plan_from_dict({"name": "d", "base": base, "grid": {
        "distill_mix": [0.0, 0.5], "distill_from": [str(runs / "s1"), str(runs / "split1")]}})
    sweep_dir, url = prepare(plan, tmp_path, None)
    study = load_study(plan, url)
    reconcile(study, plan, sweep_dir, url)
    work(study, plan, names_data, sweep_dir, url, stack=4)  # the two valid points share one stack
    rows = list(csv.DictReader(open(sweep_dir / "results.csv")))
    stacks = {json.loads((sweep_dir / "runs" / r["run"] / "config.json").read_text()).get("stack", {}).get("id")
              for r in rows if r["state"] == "complete"}
    assert len(stacks) == 1 and None not in stacks
    states = {(r["distill_from"].rsplit("/", 1)[-1], r["distill_mix"]): r["state"] for r in rows}
    assert states == {("s1", "0.0"): "complete", ("s1", "0.5"): "complete",
                      ("split1", "0.0"): "invalid", ("split1", "0.5"): "invalid"}
    assert all("split seed" in r["error"] for r in rows if r["state"] == "invalid")
    plain = next(r for r in rows if r["state"] == "complete" and r["distill_mix"] == "0.0")
    mixed = next(r for r in rows if r["state"] == "complete" and r["distill_mix"] == "0.5")
    assert plain["val_loss"] != mixed["val_loss"]


def test_a_stack_distils_each_member_as_it_would_alone(runs, names_data):
    from microgpt.stacked import train_stacked

    teacher = load_teacher(f"{runs / 's1'},{runs / 's2'}", names_data)
    table = TeacherTable(teacher, names_data.encoded("train"), names_data.tokenizer.bos, "cpu")
    configs = []
    for seed, mix, dropout in ((4, 0.5, 0.0), (5, 0.0, 0.1), (6, 0.8, 0.1)):
        model_cfg, cfg = _tiny_train(names_data, seed=seed, distill_mix=mix, distill_from=f"{runs / 's1'},{runs / 's2'}")
        configs.append((dataclasses.replace(model_cfg, dropout=dropout), cfg))
    configs.append(_tiny_train(names_data, seed=7))  # a member without a teacher
    stacked = train_stacked(configs, names_data, teachers=[table, table, table, None])
    for (model_cfg, cfg), (_, result) in zip(configs, stacked):
        _, alone = train(model_cfg, cfg, names_data, teacher=teacher if cfg.distill_from else None)
        assert [h["loss"] for h in result.history] == pytest.approx([h["loss"] for h in alone.history], abs=2e-6)
        assert result.val_loss == pytest.approx(alone.val_loss, abs=2e-6)
        assert result.test_loss == pytest.approx(alone.test_loss, abs=2e-6)
    assert stacked[0][1].history[0]["loss"] != stacked[3][1].history[0]["loss"]
    assert "distilled from" in stacked[0][1].trained_on and "distilled from" not in stacked[3][1].trained_on


def test_synthetic_names_are_in_the_table_too(runs, names_data, monkeypatch):
    from microgpt.train import Run

    spec = str(runs / "s1")
    model_cfg, cfg = _tiny_train(names_data, distill_from=spec, synthetic=0.5)
    run = Run(model_cfg, cfg, names_data, teacher=load_teacher(spec, names_data))
    assert len(run.teacher.where) > len(set(map(tuple, names_data.encoded("train"))))  # the pool's names are in
    ran = []
    real_forward = Ensemble.forward
    monkeypatch.setattr(Ensemble, "forward", lambda self, *a, **k: ran.append(1) or real_forward(self, *a, **k))
    for _ in range(5):
        assert run.train_step() is not None
    assert ran == []  # every real and synthetic name looked up


def test_greedy_selection_adds_members_while_val_falls_and_leaves_out_a_bad_one(runs, names_data, tmp_path,
                                                                                 names_path, capsys):
    assert main(["train", "--data", str(names_path), *TINY, "-s", "1", "--seed", "9", "--out-dir", str(tmp_path),
                 "--name", "untrained"]) == 0
    members, _ = load_members([runs / "s1", runs / "s2", runs / "s3", tmp_path / "untrained"])
    choice = ens.choose(members, names_data, "greedy", "prob")
    assert tmp_path / "untrained" in [m.run_dir for m in choice.left_out]
    assert len(choice.members) + len(choice.left_out) == 4
    batches = names_data.eval_batches("val")
    curve = [evaluate(Ensemble([m.model for m in choice.members[:k]], "prob"), batches)
             for k in range(1, len(choice.members) + 1)]
    assert curve == sorted(curve, reverse=True) and len(set(curve)) == len(curve)  # each addition lowered val
    assert curve[0] == pytest.approx(min(choice.member_val), abs=1e-6)  # it started from the best member
    for m in choice.left_out:  # and no left-out run would have lowered it further
        worse = evaluate(Ensemble([c.model for c in choice.members] + [m.model], "prob"), batches)
        assert worse >= curve[-1] - 1e-6
    capsys.readouterr()
    assert main(["ensemble", *(str(m.run_dir) for m in members), "--select", "greedy", "--samples", "0",
                 "--out-dir", str(tmp_path), "--name", "g"]) == 0
    out = capsys.readouterr().out
    assert "select greedy on val took" in out and "untrained" in out.split("left out:")[1]
    config = json.loads((tmp_path / "g" / "config.json").read_text())["ensemble"]
    assert config["left_out"] == [str((tmp_path / "untrained").resolve())]
    assert len(config["members"]) == len(choice.members)


def test_fit_temperature_recovers_the_temperature_that_made_the_targets():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40_000, 27, generator=g) * 2
    for true in (0.7, 1.0, 1.6):  # targets drawn from softmax(logits / true): the fit should find about true
        targets = torch.multinomial(F.softmax(logits / true, -1), 1, generator=g).squeeze(1)
        fitted = ens.fit_temperature(F.log_softmax(logits, -1), targets)
        assert fitted == pytest.approx(true, rel=0.03)
        nll = [F.cross_entropy(logits / t, targets).item() for t in (fitted * 0.98, fitted, fitted * 1.02)]
        assert nll[1] <= min(nll[0], nll[2])  # and it is the minimum, not merely near the truth


def test_calibrate_records_the_val_fitted_ensemble_and_a_teacher_reproduces_it(runs, tmp_path, names_data, capsys):
    assert main(["ensemble", str(runs / "s1"), str(runs / "s2"), "--calibrate", "--samples", "3", "--out-dir",
                 str(tmp_path), "--name", "cal"]) == 0
    out = capsys.readouterr().out
    config, result = json.loads((tmp_path / "cal" / "config.json").read_text())["ensemble"], summary(tmp_path / "cal")
    t, raw = config["temperature"], config["uncalibrated"]
    assert t != 1.0 and f"calibrate temperature {t:.4f}, fitted on val" in out
    assert result["val_loss"] < raw["val"]  # temperature 1 was a candidate, so the fitted one is no worse on val
    rows = list(csv.DictReader((tmp_path / "cal" / "loss_vs_k.csv").open()))
    assert float(rows[-1]["val_prob"]) == pytest.approx(raw["val"], abs=1e-6)  # the curve stays at temperature 1
    assert float(rows[-1]["test_prob"]) == pytest.approx(raw["test"], abs=1e-6)

    # the recorded figures are those of the two members' mean probability, divided in log space by t, by hand
    models = [load_checkpoint(runs / n)[0] for n in ("s1", "s2")]
    batch = pack(names_data.encoded("test"), names_data.tokenizer.bos, names_data.max_len + 1)
    with torch.no_grad():
        mean = sum(F.softmax(m(batch.idx, pos=batch.pos, mask=batch.mask)[0].double(), -1) for m in models) / 2
    real = batch.targets >= 0
    hand = -F.log_softmax(mean.log() / t, -1)[real].gather(-1, batch.targets[real][:, None]).sum().item()
    assert result["test_loss"] == pytest.approx(hand / batch.n_tokens, abs=1e-5)

    teacher = load_teacher(str(tmp_path / "cal"), names_data)  # a student of this directory learns from it
    assert teacher.temperature == t
    assert evaluate(teacher, names_data.eval_batches("val")) == pytest.approx(result["val_loss"], abs=1e-6)
    members, recorded = load_members([tmp_path / "cal"])  # as an argument it stands for its members
    assert len(members) == 2 and recorded.temperature == t
