"""A distillation step with the teacher run on every batch against one that looks the batch up in the teacher table
(distill.TeacherTable): ms per training step of a `--preset mid` student whose teacher is K fresh `--preset mid`
models, a step without a teacher beside them, the table's one-time fill, and the largest difference between the two
targets (which must be float rounding at most). One thread, the trainer's own step, interleaved repeats.

Usage: python benchmarks/distill_speed.py [--data PATH] [--members 5] [--steps 20] [--repeats 3] [--preset mid]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import torch

from microgpt.config import resolve
from microgpt.data import load_dataset, pack
from microgpt.distill import TeacherTable, live_probs
from microgpt.ensemble import Ensemble
from microgpt.model import GPT, init_weights
from microgpt.precision import SHOWN_CPU_FLAGS, cpu_flags
from microgpt.train import Run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("MICROGPT_DATA"))
    parser.add_argument("--members", type=int, default=5, help="teacher models")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preset", default="mid")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset(args.data)
    model_cfg, cfg = resolve({}, args.preset, data.tokenizer.vocab_size, data.max_len + 1)
    models = []
    for k in range(args.members):
        model = GPT(model_cfg)
        init_weights(model, torch.Generator().manual_seed(100 + k))
        models.append(model)
    teacher = Ensemble(models, "prob", (data.sha256, data.split_seed, tuple(data.tokenizer.chars)))
    t0 = time.perf_counter()
    table = TeacherTable(teacher, data.encoded("train"), data.tokenizer.bos, "cpu")
    fill = time.perf_counter() - t0

    distilled = dataclasses.replace(cfg, distill_from="(fresh models)", distill_mix=0.5)
    runs = {"no teacher": Run(model_cfg, cfg, data),
            "teacher run on each batch": Run(model_cfg, distilled, data, teacher=teacher),
            "teacher table": Run(model_cfg, distilled, data, teacher=table)}
    runs["teacher run on each batch"].teacher = teacher  # the path before the table: the Ensemble itself
    ms: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            run.train_step()  # one untimed step: first-call costs
            t0 = time.perf_counter()
            for _ in range(args.steps):
                run.train_step()
            ms[name].append(1e3 * (time.perf_counter() - t0) / args.steps)

    seqs = data.encoded("train")
    batch = pack(seqs[:args.members * 64:args.members], data.tokenizer.bos, data.max_len + 1)
    gap = (table.probs(batch) - live_probs(teacher, batch)).abs().max().item()
    flags = ", ".join(f for f in SHOWN_CPU_FLAGS if f in cpu_flags()) or "none"
    print(f"torch {torch.__version__}, 1 thread, CPU flags: {flags}; --preset {args.preset} student, "
          f"{args.members} teacher models, median of {args.repeats} x {args.steps} steps")
    print(f"table  {table.table.shape[0]:,} predictions of {len(seqs):,} train names filled in {fill:.1f} s; "
          f"largest |table - live| {gap:.1e}")
    base = statistics.median(ms["no teacher"])
    for name, values in ms.items():
        m = statistics.median(values)
        print(f"{name:<26} {m:8.1f} ms/step  ({m / base:.2f}x no teacher)")


if __name__ == "__main__":
    main()
