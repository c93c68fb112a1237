"""Where the recipe's step time goes on this CPU: `--preset best` shapes (6 x 128, batch 64, packed) trained in float32,
in bf16 autocast (`--autocast bfloat16`), and through `torch.compile`, interleaved in one run, one thread.

For each: median ms per training step (forward, backward, AdamW) over --steps steps after --warmup, per repeat, then
the median over repeats and the ratio to float32. torch.compile is timed after its own warm-up steps (its compile
time is printed apart): packed batches change their row count from step to step, so it may recompile.

Usage: python benchmarks/recipe_speed.py [--data PATH] [--repeats 3] [--steps 60] [--warmup 10] [--no-compile]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from microgpt.config import resolve
from microgpt.data import BatchSampler, load_dataset
from microgpt.model import GPT, init_weights
from microgpt.optim import build_optimizer


def step_times(data, mode: str, steps: int, warmup: int) -> tuple[float, float]:
    """(median ms/step after warm-up, seconds the warm-up steps took) for one fresh model."""
    model_cfg, cfg = resolve({}, "best", data.tokenizer.vocab_size, data.max_len + 1)
    torch.manual_seed(0)
    model = GPT(model_cfg)
    init_weights(model, torch.Generator().manual_seed(0))
    model.train()
    optimizer = build_optimizer(model, cfg)
    sampler = BatchSampler(data.encoded("train"), data.tokenizer.bos, cfg.batch_size, seed=0)
    batches = [sampler.next() for _ in range(warmup + steps)]
    forward = torch.compile(model) if mode == "compile" else model
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "bf16 autocast" else contextlib.nullcontext()
    times = []
    for b in batches:
        t = time.perf_counter()
        with autocast:
            _, loss = forward(b.idx, b.targets, b.pos, b.mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times[warmup:]), sum(times[:warmup])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset(args.data)
    modes = ["float32", "bf16 autocast"] + ([] if args.no_compile else ["compile"])
    ms: dict[str, list[float]] = {m: [] for m in modes}
    warm: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.repeats):
        for mode in modes:  # interleaved, so drift in the machine's load hits every mode alike
            a, b = step_times(data, mode, args.steps, args.warmup)
            ms[mode].append(a)
            warm[mode].append(b)
    base = statistics.median(ms["float32"])
    print(f"torch {torch.__version__}, 1 thread, --preset best shapes, {args.steps} timed steps x {args.repeats} repeats")
    for mode in modes:
        m = statistics.median(ms[mode])
        print(f"{mode:14s} {m:7.1f} ms/step  ({m / base:.2f}x float32)  runs: "
              + ", ".join(f"{x:.1f}" for x in ms[mode])
              + f"  | first {args.warmup} steps {statistics.median(warm[mode]):.1f} s")


if __name__ == "__main__":
    main()
