"""The recipe's step time on this machine: `--preset best` (6 x 128, batch 64, packed) through the trainer's own step
(train.Run.train_step: forward, backward, AdamW, EMA), with `--autocast off`, `bfloat16` and `auto` (what the preset
uses: bf16 only where it is native), optionally through torch.compile; interleaved in one process, one thread.

For each: median ms per step over --steps steps after --warmup, per repeat, then the median over repeats and the
ratio to `off`. The goal: `auto` no slower than `off` on any machine. Prints the CPU's flags, which decide `auto`.

Usage: python benchmarks/recipe_speed.py [--data PATH] [--repeats 3] [--steps 30] [--warmup 5] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from microgpt.config import resolve
from microgpt.data import load_dataset
from microgpt.precision import SHOWN_CPU_FLAGS, cpu_flags, resolve_autocast
from microgpt.train import Run


def step_times(data, autocast: str, steps: int, warmup: int, compile_: bool = False) -> tuple[float, float]:
    """(median ms/step after warm-up, seconds the warm-up steps took) for one fresh run of the recipe."""
    model_cfg, cfg = resolve({"autocast": autocast}, "best", data.tokenizer.vocab_size, data.max_len + 1)
    run = Run(model_cfg, cfg, data)
    if compile_:
        run.model = torch.compile(run.model)
    times = []
    for _ in range(warmup + steps):
        t = time.perf_counter()
        run.train_step()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times[warmup:]), sum(times[:warmup])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the model (float32)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset(args.data)
    modes = ["off", "auto", "bfloat16"] + (["compile"] if args.compile else [])
    ms: dict[str, list[float]] = {m: [] for m in modes}
    warm: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.repeats):
        for mode in modes:  # interleaved, so drift in the machine's load hits every mode alike
            a, b = step_times(data, "off" if mode == "compile" else mode, args.steps, args.warmup, mode == "compile")
            ms[mode].append(a)
            warm[mode].append(b)
    flags = ", ".join(f for f in SHOWN_CPU_FLAGS if f in cpu_flags()) or "none"
    chosen, why = resolve_autocast("auto", "cpu")
    print(f"torch {torch.__version__}, 1 thread, CPU flags: {flags}; --autocast auto -> {chosen} ({why})")
    print(f"--preset best step (train.Run.train_step), {args.steps} timed steps x {args.repeats} repeats")
    base = statistics.median(ms["off"])
    for mode in modes:
        m = statistics.median(ms[mode])
        print(f"{mode:9s} {m:8.1f} ms/step  ({m / base:.2f}x off)  runs: " + ", ".join(f"{x:.1f}" for x in ms[mode])
              + f"  | first {args.warmup} steps {statistics.median(warm[mode]):.1f} s")


if __name__ == "__main__":
    main()
