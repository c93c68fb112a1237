"""The protocol's evaluation pass, whole 4,096-name batches against cache-sized chunks of rows (train.EVAL_FLOATS):
seconds for the train split's loss (30,033 names) of a fresh model of each preset, one thread, and the two losses
(which must agree to float rounding).

Usage: python benchmarks/eval_speed.py [--data PATH] [--repeats 3] [--presets default,makemore,fast,mid,best]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import microgpt.train as train_module
from microgpt.config import resolve
from microgpt.data import load_dataset
from microgpt.precision import SHOWN_CPU_FLAGS, cpu_flags
from microgpt.train import Run, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("MICROGPT_DATA"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--presets", default="default,makemore,fast,mid,best")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset(args.data)
    batches = data.eval_batches("train")
    chunked = train_module.EVAL_FLOATS
    flags = ", ".join(f for f in SHOWN_CPU_FLAGS if f in cpu_flags()) or "none"
    print(f"torch {torch.__version__}, 1 thread, CPU flags: {flags}; median of {args.repeats}")
    for preset in args.presets.split(","):
        model_cfg, cfg = resolve({}, None if preset == "default" else preset, data.tokenizer.vocab_size, data.max_len + 1)
        model = Run(model_cfg, cfg, data).model
        seconds: dict[str, list[float]] = {"whole": [], "chunked": []}
        losses = {}
        for _ in range(args.repeats):
            for how, floats in (("whole", 1 << 62), ("chunked", chunked)):  # interleaved: drift hits both alike
                train_module.EVAL_FLOATS = floats
                t = time.perf_counter()
                losses[how] = evaluate(model, batches)
                seconds[how].append(time.perf_counter() - t)
        train_module.EVAL_FLOATS = chunked
        whole, chunk = statistics.median(seconds["whole"]), statistics.median(seconds["chunked"])
        print(f"{preset:9s} whole batches {whole:6.2f} s | chunks {chunk:6.2f} s | ratio {chunk / whole:.2f} | "
              f"loss {losses['whole']:.6f} vs {losses['chunked']:.6f}")


if __name__ == "__main__":
    main()
