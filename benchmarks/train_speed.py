"""Training speed on this machine, printed as figures for BENCHMARKS.md.

1. --preset microgpt: wall seconds of its 1000 training steps (evaluation excluded), median of --repeats runs.
2. --preset makemore shapes (4 layers, 64 wide, batch 32): ms/step and real tokens/s with packed batches (what
   `microgpt train` uses) next to one-name-per-row padded batches, interleaved in the same run, medians.

Usage: python benchmarks/train_speed.py [--data PATH] [--repeats 5] [--steps 300] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time

import torch

from microgpt.config import resolve
from microgpt.data import load_dataset, pack, pad
from microgpt.model import GPT, init_weights
from microgpt.optim import build_optimizer
from microgpt.train import train


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def bench_microgpt(data, repeats: int, device: str) -> list[float]:
    seconds = []
    for _ in range(repeats):
        model_cfg, cfg = resolve({"eval_every": 1000, "samples": 0}, "microgpt")
        _, result = train(model_cfg, cfg, data, device=device, py_rng=random.Random(cfg.seed))
        assert round(result.history[-1]["loss"], 4) == 2.6497, "parity broke: this is not the microgpt run"
        seconds.append(result.train_seconds)
    return seconds


def bench_layouts(data, steps: int, repeats: int, device: str) -> dict[str, dict[str, float]]:
    model_cfg, cfg = resolve({}, "makemore", data.tokenizer.vocab_size, data.max_len + 1)
    rng = random.Random(0)
    seqs = [data.tokenizer.encode(w) for w in data.train]
    batches = [[rng.choice(seqs) for _ in range(cfg.batch_size)] for _ in range(steps)]
    width = data.max_len + 1  # what microgpt train's sampler packs to
    layouts = {"packed": lambda names, bos: pack(names, bos, width), "padded": pad}
    times: dict[str, list[float]] = {k: [] for k in layouts}
    slots: dict[str, int] = {}
    tokens = sum(len(s) + 1 for b in batches for s in b)
    for _ in range(repeats):
        for name, layout in layouts.items():  # interleaved, so drift in machine load hits both alike
            model = GPT(model_cfg)
            init_weights(model, torch.Generator().manual_seed(0))
            model.to(device).train()
            opt = build_optimizer(model, cfg)
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            used = 0
            for names in batches:
                b = layout(names, data.tokenizer.bos).to(device)
                used += b.idx.numel()
                _, loss = model(b.idx, b.targets, b.pos, b.mask)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            loss.item()
            times[name].append(time.perf_counter() - t0)
            slots[name] = used
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name] = {"ms_per_step": 1000 * med / steps, "tokens_per_s": tokens / med,
                     "slots_per_real_token": slots[name] / tokens}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(args.data)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{cpu_name()}, {args.threads} thread(s)"
    print(f"machine: {where} | torch {torch.__version__} | python {platform.python_version()}")

    secs = bench_microgpt(data, args.repeats, args.device)
    print(f"microgpt preset, 1000 steps (float64, batch 1): median {statistics.median(secs):.2f} s "
          f"(min {min(secs):.2f}, max {max(secs):.2f}, {args.repeats} runs; goal <= 1.5 s)")

    res = bench_layouts(data, args.steps, args.repeats, args.device)
    for name, r in res.items():
        print(f"makemore shapes, batch 32, {name:6s}: {r['ms_per_step']:6.2f} ms/step | {r['tokens_per_s']:9,.0f} real tokens/s"
              f" | {r['slots_per_real_token']:.2f} token slots per real token")
    print(f"packed / padded time per step: {res['packed']['ms_per_step'] / res['padded']['ms_per_step']:.2f}")


if __name__ == "__main__":
    main()
