"""Data augmentation: noise keeps targets clean, the curriculum caps lengths, synthetic names come from the train split
only, and every augmentation leaves the real names of each batch and the held-out splits untouched."""

import random
import subprocess
import sys

import pytest
import torch

from microgpt.augment import AugmentedSampler, corrupt, ngram_names
from microgpt.config import TrainConfig, UsageError, resolve
from microgpt.data import BatchSampler
from microgpt.train import train

BOS = 26


def real_targets(batch) -> list[list[int]]:
    """Each packed name's targets without its final BOS, found by the positions restarting at 0."""
    names = []
    for pos, tgt in zip(batch.pos.tolist(), batch.targets.tolist()):
        for p, t in zip(pos, tgt):
            if t == -1:
                continue
            if p == 0:
                names.append([])
            if t != BOS:
                names[-1].append(t)
    return sorted(names)


def test_no_noise_is_the_clean_frame():
    seq = [4, 12, 12, 0]
    assert corrupt(seq, BOS, 0.0, random.Random(0)) == ([BOS, 4, 12, 12, 0], [4, 12, 12, 0, BOS])


def test_noise_corrupts_inputs_and_keeps_targets_clean():
    rng = random.Random(0)
    seq = list(range(10))
    subs = dels = kept = 0
    for _ in range(2000):
        inputs, targets = corrupt(seq, BOS, 0.2, rng)
        assert len(inputs) == len(targets) and inputs[0] == BOS and targets[0] == seq[0]
        clean_targets = seq + [BOS]
        # targets are the clean ones minus the deleted positions, in order
        positions = [clean_targets.index(t) for t in targets]
        assert positions == sorted(positions)
        dels += len(seq) + 1 - len(targets)
        for pos_, x in zip(positions[1:], inputs[1:]):
            if x != seq[pos_ - 1]:
                assert 0 <= x < BOS  # a substitution is another character, never BOS
                subs += 1
            else:
                kept += 1
    n = 2000 * len(seq)
    assert abs(dels / n - 0.1) < 0.01 and abs(subs / n - 0.1) < 0.01  # half substitutions, half deletions
    assert kept + subs + dels == n


def test_noise_leaves_the_batch_names_unchanged(names_data):
    cfg = TrainConfig(batch_size=32, noise=0.3, seed=5)
    plain = BatchSampler(names_data.encoded("train"), BOS, 32, seed=5)
    noisy = AugmentedSampler(names_data, cfg, None)
    for _ in range(5):
        a, b = plain.next(), noisy.next()
        assert real_targets(a) == sorted(noisy.names)  # the same names as without noise
        assert b.n_tokens < a.n_tokens  # deletions drop their predictions
        kept = set(map(tuple, noisy.names))
        for name in real_targets(b):  # each noisy example's targets: a clean name's, minus deleted predictions
            assert any(_subsequence(name, k) for k in kept)


def _subsequence(short, long) -> bool:
    it = iter(long)
    return all(t in it for t in short)


def test_augmented_sampler_without_augmentation_equals_batch_sampler(names_data):
    cfg = TrainConfig(batch_size=16, seed=3)
    plain = BatchSampler(names_data.encoded("train"), BOS, 16, seed=3)
    same = AugmentedSampler(names_data, cfg, None)
    for _ in range(3):
        a, b = plain.next(), same.next()
        assert torch.equal(a.idx, b.idx) and torch.equal(a.targets, b.targets) and torch.equal(a.pos, b.pos)


def test_curriculum_grows_the_length_cap_then_draws_every_name(names_data):
    cfg = TrainConfig(steps=100, batch_size=64, curriculum=50, seed=1)
    sampler = AugmentedSampler(names_data, cfg, None)
    caps, longest = [], []
    for step in range(100):
        names = real_targets(sampler.next())
        longest.append(max(len(n) for n in names))
        cap = sampler.cap(step)
        if step < 50:
            assert longest[-1] <= cap
            caps.append(cap)
        else:
            assert cap is None
    assert caps == sorted(caps) and caps[0] == 2 and caps[-1] == names_data.max_len
    assert max(longest[:5]) <= 3 and max(longest[50:]) > 10


def test_synthetic_share_of_each_batch(names_data):
    cfg = TrainConfig(batch_size=16, synthetic=0.25, seed=2)
    pool = [[0] * 15] * 10  # marked: 15 'a's is no real name
    sampler = AugmentedSampler(names_data, cfg, pool)
    plain = BatchSampler(names_data.encoded("train"), BOS, 12, seed=2)
    for _ in range(3):
        names = real_targets(sampler.next())
        synthetic = [n for n in names if n == [0] * 15]
        assert len(synthetic) == 4
        assert sorted(n for n in names if n != [0] * 15) == real_targets(plain.next())  # the real names, in order


@pytest.mark.slow
def test_ngram_names_are_valid_and_seeded(names_data):
    a = ngram_names(names_data, 4, 2000, seed=0)
    assert a == ngram_names(names_data, 4, 2000, seed=0) and a != ngram_names(names_data, 4, 2000, seed=1)
    assert all(1 <= len(n) <= names_data.max_len and all(0 <= t < BOS for t in n) for n in a)
    mean = sum(map(len, a)) / len(a)
    real = sum(map(len, names_data.encoded("train"))) / len(names_data.train)
    assert abs(mean - real) < 0.5  # a 4-gram gets the length distribution about right
    decoded = [names_data.tokenizer.decode(n) for n in a]
    assert len(set(decoded)) > 1500  # a pool, not a handful repeated


def test_training_with_each_augmentation_on_tiny_data(tiny_data):
    base = {"steps": 30, "batch_size": 8, "eval_every": 10, "samples": 0, "n_embd": 8, "n_head": 2}
    for extra, said in (({"noise": 0.2}, "input noise 0.2"), ({"curriculum": 20}, "curriculum over 20 steps"),
                        ({"synthetic": 0.25, "synthetic_order": 3}, "25% of each batch synthetic names from a 3-gram")):
        model_cfg, cfg = resolve({**base, **extra}, None, tiny_data.tokenizer.vocab_size, tiny_data.max_len + 1)
        _, result = train(model_cfg, cfg, tiny_data)
        assert result.state == "complete" and said in result.trained_on
        assert result.val_loss < 3.0


def test_bad_augmentation_settings_are_usage_errors():
    for bad in ({"noise": 1.0}, {"noise": -0.1}, {"synthetic": 1.5}, {"curriculum": 2000},
                {"synthetic": 0.1, "batch_size": 2}, {"synthetic_order": 0}, {"parity": True, "noise": 0.1}):
        with pytest.raises(UsageError):
            resolve(bad)


@pytest.mark.slow
def test_synthetic_from_a_model_of_another_split_is_refused(tmp_path, tiny_file):
    env_cmd = [sys.executable, "-m", "microgpt", "train", "--data", str(tiny_file), "-s", "20", "--eval-every", "10",
               "--samples", "0", "--out-dir", str(tmp_path)]
    subprocess.run(env_cmd + ["--name", "src", "--split-seed", "7"], check=True, capture_output=True)
    bad = subprocess.run(env_cmd + ["--name", "bad", "--batch-size", "4", "--synthetic", "0.5", "--synthetic-from",
                                    str(tmp_path / "src")], capture_output=True, text=True)
    assert bad.returncode == 2 and "split seed 7" in bad.stderr and not (tmp_path / "bad").exists()
    assert "Traceback" not in bad.stderr
    subprocess.run(env_cmd + ["--name", "src2"], check=True, capture_output=True)
    good = subprocess.run(env_cmd + ["--name", "good", "--batch-size", "4", "--synthetic", "0.5", "--synthetic-from",
                                     str(tmp_path / "src2")], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert "synthetic names from" in good.stdout
