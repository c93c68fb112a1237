"""Speed to the target: `--preset makemore` and `--preset best` trained one after the other in the same invocation,
each on one thread; for each, the steps and wall seconds (evaluation included) until val first drops below 2.0,
1.95 and 1.92, and below makemore's own final (best) val; then best's time as a fraction of makemore's.

Usage: python benchmarks/time_to_target.py [--data PATH] [--seed 1337] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform

import torch

from microgpt.config import resolve
from microgpt.data import load_dataset
from microgpt.train import train

LEVELS = (2.0, 1.95, 1.92)


def first_below(history: list[dict], level: float) -> tuple[int, float] | None:
    for row in history:
        if row["val_loss"] is not None and row["val_loss"] < level:
            return row["step"], row["elapsed_s"]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset(args.data)
    print(f"machine: {platform.processor() or platform.machine()} | torch {torch.__version__} | device {args.device}")
    results = {}
    for preset in ("makemore", "best"):
        model_cfg, cfg = resolve({"seed": args.seed, "samples": 0}, preset, data.tokenizer.vocab_size, data.max_len + 1)
        _, r = train(model_cfg, cfg, data, device=args.device)
        results[preset] = r
        cells = []
        for level in LEVELS:
            hit = first_below(r.history, level)
            cells.append(f"< {level}: " + (f"step {hit[0]:>5}, {hit[1]:7.1f} s" if hit else "not reached"))
        print(f"{preset:9s} {r.steps_done} steps in {r.wall_seconds:7.1f} s | best val {r.best_val:.4f} | "
              f"test {r.test_loss:.4f} | " + " | ".join(cells))
    level = results["makemore"].best_val
    mm = first_below(results["makemore"].history, level + 1e-12)
    best = first_below(results["best"].history, level)
    if mm and best:
        print(f"makemore's final level (val {level:.4f}): makemore {mm[1]:.1f} s at step {mm[0]}, best {best[1]:.1f} s "
              f"at step {best[0]} -> best takes {best[1] / mm[1]:.2f} of makemore's time (goal <= 0.20)")
    else:
        print(f"best never reached makemore's final val {level:.4f}")


if __name__ == "__main__":
    main()
