"""Speedrun: wall seconds to held-out levels, Karpathy's makemore.py beside our presets, in one script on one machine.

makemore.py (../shared/peers/makemore, unmodified) runs as a separate process on one thread; its test loss (printed
every 500 steps) is timed from its first step. Each of our presets runs through the trainer's own stages
(train.Run) on one thread; at every evaluation it also measures test, outside the clock and for timing only: nothing
is selected by it (makemore.py trains on our val names, so the side-by-side compares test). Reported per run: ms per
step, seconds to val < 2.0 / 1.95 / 1.92, to our makemore preset's final val, to test < 1.9 (tier 1's bound), and to
makemore.py's best test loss; then its whole wall time and its best val with the test there (the checkpoint the
trainer keeps). With `best` among the presets, each other preset's wall time as a share of best's: goal (b) asks for
<= 1/3 with test < 1.9.

Usage: python benchmarks/speedrun.py [--data PATH] [--presets makemore,fast,best] [--makemore-steps 15000]
                                     [--peer PATH/makemore.py | --no-peer] [--steps N]
A preset may carry its own step count, `fast:1500` (the preset shortened, its intervals scaled with it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from microgpt.config import resolve
from microgpt.data import load_dataset
from microgpt.precision import SHOWN_CPU_FLAGS, cpu_flags
from microgpt.train import Run, evaluate

LEVELS = (2.0, 1.95, 1.92)
PEER = Path(__file__).resolve().parents[2] / "shared" / "peers" / "makemore" / "makemore.py"


def run_peer(path: Path, data: str, steps: int) -> dict:
    """makemore.py's default transformer for `steps` steps: ms/step and [(seconds since step 0, step, test loss)]."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    points, step_ms = [], []
    with tempfile.TemporaryDirectory() as work:
        cmd = [sys.executable, "-u", str(path), "-i", data, "-o", work, "-n", "0", "--max-steps", str(steps)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        t0 = None
        for line in proc.stdout:
            now = time.perf_counter()
            m = re.match(r"step (\d+) \| loss [\d.]+ \| step time ([\d.]+)ms", line)
            if m:
                t0 = t0 if t0 is not None else now - float(m.group(2)) / 1000
                step_ms.append(float(m.group(2)))
            m = re.match(r"step (\d+) train loss: ([\d.]+) test loss: ([\d.]+)", line)
            if m and t0 is not None:
                points.append((now - t0, int(m.group(1)), float(m.group(3))))
        if proc.wait() != 0:
            raise SystemExit(f"makemore.py exited with {proc.returncode}: is tensorboard installed? ({' '.join(cmd)})")
    step_ms.sort()
    return {"ms": step_ms[len(step_ms) // 2], "points": points}


def run_ours(data, preset: str, steps: int | None, seed: int) -> dict:
    """One preset through train.Run's stages; at each evaluation: (seconds without the test evaluations, step, val,
    test)."""
    overrides = {"seed": seed, "samples": 0, **({"steps": steps} if steps else {})}
    model_cfg, cfg = resolve(overrides, preset, data.tokenizer.vocab_size, data.max_len + 1)
    run = Run(model_cfg, cfg, data)
    test_batches = data.eval_batches("test")
    points, off_clock = [], 0.0
    while run.step < cfg.steps:
        if run.train_step() is None:
            break
        if run.step % cfg.eval_every == 0 or run.step == cfg.steps:
            val = run.evaluate()
            run.stopped_by(val, None)
            t = time.perf_counter()
            with run.ema.applied(run.model) if run.ema is not None else contextlib.nullcontext():
                test = evaluate(run.model, test_batches)
            off_clock += time.perf_counter() - t
            points.append((run.elapsed() - off_clock, run.step, val, test))
    ms = 1000 * (run.elapsed() - off_clock - run.eval_seconds) / max(1, run.step)
    return {"ms": ms, "points": points, "best_val": run.best_val, "steps": run.step}


def first(points, index: int, level: float):
    """(seconds, step) of the first point whose figure at index is below level; None if none is."""
    return next(((p[0], p[1]) for p in points if p[index] < level), None)


def cell(hit) -> str:
    return f"{hit[0]:.1f} s (step {hit[1]:,})" if hit else "not reached"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data")
    parser.add_argument("--presets", default="makemore,fast,best")
    parser.add_argument("--steps", type=int, help="override every preset's steps (a quick check of the script)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--makemore-steps", type=int, default=15000)
    parser.add_argument("--peer", default=str(PEER))
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset(args.data)
    flags = ", ".join(f for f in SHOWN_CPU_FLAGS if f in cpu_flags()) or "none"
    print(f"torch {torch.__version__}, one thread each, CPU flags: {flags}")
    rows = {}
    peer = None if args.no_peer else run_peer(Path(args.peer), data.path, args.makemore_steps)
    for entry in args.presets.split(","):
        preset, _, steps = entry.partition(":")
        rows[entry] = run_ours(data, preset, int(steps) if steps else args.steps, args.seed)
    mm_level = rows["makemore"]["best_val"] if "makemore" in rows else None
    peer_best = min((p[2] for p in peer["points"]), default=None) if peer else None
    print("| run | ms/step | " + " | ".join(f"val < {lv}" for lv in LEVELS)
          + (f" | val < {mm_level:.4f} (makemore preset's final)" if mm_level else "") + " | test < 1.9"
          + (f" | test <= {peer_best:.4f} (makemore.py's best)" if peer_best else "") + " |")
    print("|---" * (3 + len(LEVELS) + bool(mm_level) + bool(peer_best)) + "|")
    if peer:
        hit = next(((t, s) for t, s, test in peer["points"] if test <= peer_best), None)
        tier = next(((t, s) for t, s, test in peer["points"] if test < 1.9), None)
        print(f"| makemore.py ({args.makemore_steps:,} steps) | {peer['ms']:.1f} | " + " | ".join(["trains on val"] * len(LEVELS))
              + (" | -" if mm_level else "") + f" | {cell(tier)} | {cell(hit)} |")
    for preset, r in rows.items():
        cells = [cell(first(r["points"], 2, lv)) for lv in LEVELS]
        if mm_level:
            cells.append(cell(first(r["points"], 2, mm_level + 1e-12)))
        cells.append(cell(first(r["points"], 3, 1.9)))
        if peer_best:
            cells.append(cell(next(((p[0], p[1]) for p in r["points"] if p[3] <= peer_best), None)))
        name = preset.replace(":", " -s ")  # fast:1500 is `--preset fast -s 1500`
        print(f"| --preset {name} ({r['steps']:,} steps) | {r['ms']:.1f} | " + " | ".join(cells) + " |")
    print("\n| run | wall s | best val (step) | test there |\n|---|---|---|---|")
    wall = {preset: r["points"][-1][0] for preset, r in rows.items()}
    kept = {preset: min(r["points"], key=lambda p: p[2]) for preset, r in rows.items()}  # the best-val checkpoint
    for preset, (_, step, val, test) in kept.items():
        print(f"| --preset {preset.replace(':', ' -s ')} | {wall[preset]:.1f} | {val:.4f} (step {step:,}) | {test:.4f} |")
    for preset in [p for p in rows if p != "best"] if "best" in rows else []:  # in the order given
        test = kept[preset][3]
        print(f"--preset {preset} takes {wall[preset] / wall['best']:.3f}x best's wall time ({wall[preset]:.1f} s vs "
              f"{wall['best']:.1f} s; goal (b) <= 1/3), test {test:.4f} ({'tier 1' if test < 1.9 else 'not tier 1'})")
    if peer and peer_best:
        peer_t = next(t for t, s, test in peer["points"] if test <= peer_best)
        for preset, r in rows.items():
            ours = next((p[0] for p in r["points"] if p[3] <= peer_best), None)
            if ours is not None:
                print(f"--preset {preset} reaches makemore.py's best test {peer_best:.4f} in {ours / peer_t:.3f}x "
                      f"its time ({ours:.1f} s vs {peer_t:.1f} s; goal <= 0.1x)")


if __name__ == "__main__":
    main()
