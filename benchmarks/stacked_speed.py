"""Stacked training (stacked.py) against one run at a time: the wall time of whole commands, as a user runs them,
start-up, evaluation and records included, each in its own process with one torch thread.

Goals (the "many runs in one process" issue), each a ratio measured here, on this machine, in one script:
  seeds     16 seeds of the default `microgpt train` (microgpt's size) with --seeds 16  <= 2x one run
  makemore  4 seeds of --preset makemore with --seeds 4  <= 0.6x the four run one after another
  runner    the seed's runner grid (plans/runner.toml, 64 runs x 500 steps, 2 workers) with --stack auto  <= 0.25x
            the same sweep with --stack 1
  gpu       (a GPU only) --preset best's step, in this process: one run against stacks of K members (--gpu-members),
            dropout masks each member's own against one shared draw; per step, over --gpu-steps after a warm-up
Prints the CPU's flags (what decides these kernels' speed) and each measurement's median over --repeats.

Usage: python benchmarks/stacked_speed.py [--data PATH] [--repeats 1] [--only seeds,makemore,runner]
                                          [--makemore-steps 10000]
       python benchmarks/stacked_speed.py --only gpu [--gpu-members 1,8,16,32] [--gpu-steps 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    have = set(text.split())
    return ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in have) or "none"


def timed(args: list[str], data: str, out: Path) -> float:
    """Seconds one `microgpt ...` command takes, start-up included; fails loudly if it fails."""
    env = {**os.environ, "MICROGPT_DATA": data}
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "microgpt", *args], cwd=out, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds


def median_of(repeats: int, measure) -> float:
    return statistics.median(measure(i) for i in range(repeats))


def gpu_steps(data_path: str, members: list[int], steps: int, device: str = "cuda") -> None:
    """ms per step of --preset best on the GPU: train.Run alone, then StackedRun of K members (seeds 0..K-1), with
    each masks source; each after 20 warm-up steps, timed to the step's end (its losses come back to the host)."""
    import torch

    from microgpt.config import resolve
    from microgpt.data import load_dataset
    from microgpt.stacked import StackedRun
    from microgpt.train import Run

    data = load_dataset(data_path)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    print(f"{torch.cuda.get_device_name() if device == 'cuda' else device}, torch {torch.__version__}; --preset best, {steps} steps after 20")

    def timed_steps(step) -> float:
        for _ in range(20):
            step()
        sync()
        t = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        return 1000 * (time.perf_counter() - t) / steps

    def runs(k: int) -> list:
        return [Run(*resolve({"seed": s, "samples": 0}, "best", data.tokenizer.vocab_size, data.max_len + 1), data,
                    device, own_optimizer=k == 1) for s in range(k)]

    alone = timed_steps(runs(1)[0].train_step)
    print(f"gpu       one run (train.Run): {alone:.2f} ms/step")
    for k in members:
        for masks in ("shared", "own"):
            if masks == "own" and k > 16:
                continue  # one draw per member and site: the slow path this measures, at sizes that still finish
            ms = timed_steps(StackedRun(runs(k), masks).train_step)
            print(f"gpu       stack of {k:>2} ({masks} masks): {ms:.2f} ms/step = {ms / alone:.2f}x one run, "
                  f"{ms / alone / k:.3f}x per member")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("MICROGPT_DATA"), help="names.txt (default $MICROGPT_DATA)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", default="seeds,makemore,runner")
    parser.add_argument("--gpu-members", default="1,8,16,32")
    parser.add_argument("--gpu-steps", type=int, default=200)
    parser.add_argument("--makemore-steps", type=int, default=10000,
                        help="steps of each makemore run (the preset's 10,000 by default; fewer for a quicker figure)")
    args = parser.parse_args()
    if not args.data:
        raise SystemExit("pass --data PATH or set MICROGPT_DATA")
    only = set(args.only.split(","))
    if "gpu" in only:
        gpu_steps(args.data, [int(k) for k in args.gpu_members.split(",")], args.gpu_steps)
        only.discard("gpu")
    print(f"CPU flags: {cpu_flags()}; one torch thread per process; median of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        n = iter(range(10_000))
        name = lambda: f"r{next(n)}"  # noqa: E731
        if "seeds" in only:
            one = median_of(args.repeats, lambda i: timed(["train", "--name", name()], args.data, out))
            many = median_of(args.repeats, lambda i: timed(["train", "--seeds", "16", "--name", name()], args.data, out))
            print(f"seeds     1 run {one:.1f} s | 16 seeds stacked {many:.1f} s | ratio {many / one:.2f} (goal <= 2)")
        if "makemore" in only:
            steps = ["-s", str(args.makemore_steps)]

            def one_by_one(i: int) -> float:
                return sum(timed(["train", "--preset", "makemore", *steps, "--seed", str(s), "--name", name()],
                                 args.data, out) for s in range(4))

            alone = median_of(args.repeats, one_by_one)
            stacked = median_of(args.repeats, lambda i: timed(
                ["train", "--preset", "makemore", *steps, "--seed", "0", "--seeds", "4", "--name", name()], args.data, out))
            print(f"makemore  4 runs one after another {alone:.1f} s | --seeds 4 {stacked:.1f} s | ratio "
                  f"{stacked / alone:.2f} (goal <= 0.6; {args.makemore_steps} steps each)")
        if "runner" in only:
            plan = str(REPO / "plans" / "runner.toml")
            sweep = lambda stack: lambda i: timed(  # noqa: E731
                ["sweep", plan, "--workers", "2", "--stack", stack, "--name", name(), "--out-dir", "sweeps"],
                args.data, out)
            one = median_of(args.repeats, sweep("1"))
            stacked = median_of(args.repeats, sweep("auto"))
            print(f"runner    --stack 1 {one:.1f} s | --stack auto (16) {stacked:.1f} s | ratio {stacked / one:.2f} "
                  "(goal <= 0.25)")


if __name__ == "__main__":
    main()
