"""torch.compile with fixed-shape batches: does compiling the model pay once its input stops changing shape?

Packed batches change their row count every step (names differ in length), so a compiled model keeps meeting new
shapes. Here every batch of a run is padded to one row count (the most rows any of the timed batches needs; padding
rows predict nothing, so the loss is the same number: checked below), and four steps are timed on the same batches,
interleaved, one thread: eager on packed batches (what the trainer does), eager on fixed-shape batches,
torch.compile on fixed-shape batches (dynamic=False: one graph), and torch.compile on packed batches. A step is the
trainer's: forward, backward, the preset's optimizer.

Usage: python benchmarks/compile_speed.py [--data PATH] [--preset best] [--steps 20] [--warmup 5] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from microgpt.config import resolve
from microgpt.data import Batch, load_dataset
from microgpt.precision import SHOWN_CPU_FLAGS, cpu_flags
from microgpt.train import Run


def padded(b: Batch, rows: int, bos: int) -> Batch:
    """b with padding rows (BOS inputs, -1 targets, causal attention over themselves) up to `rows`."""
    extra = rows - b.idx.size(0)
    W = b.idx.size(1)
    mask = b.mask if b.mask is not None else torch.ones(W, W, dtype=torch.bool).tril().expand(b.idx.size(0), 1, W, W)
    return Batch(torch.cat([b.idx, torch.full((extra, W), bos)]), torch.cat([b.targets, torch.full((extra, W), -1)]),
                 torch.cat([b.pos, torch.zeros(extra, W, dtype=torch.long)]),
                 torch.cat([mask, torch.ones(W, W, dtype=torch.bool).tril().expand(extra, 1, W, W)]), b.n_tokens)


def step_ms(run: Run, model, batches: list[Batch], warmup: int) -> tuple[float, float]:
    """(median ms of the steps after warm-up, seconds of the warm-up steps, compilation included)."""
    times = []
    for b in batches:
        t = time.perf_counter()
        _, loss = model(b.idx, b.targets, b.pos, b.mask)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times[warmup:]), sum(times[:warmup])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("MICROGPT_DATA"))
    parser.add_argument("--preset", default="best")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset(args.data)
    model_cfg, cfg = resolve({"autocast": "off"}, args.preset, data.tokenizer.vocab_size, data.max_len + 1)
    bos = data.tokenizer.bos
    sampler = Run(model_cfg, cfg, data).sampler  # the run's own batch stream
    packed = [sampler.next() for _ in range(args.warmup + args.steps)]
    rows = max(b.idx.size(0) for b in packed)
    fixed = [padded(b, rows, bos) for b in packed]
    check = Run(model_cfg, cfg, data).model.eval()
    with torch.no_grad():  # padding rows change no number: the same loss on the packed and the padded batch
        a, b = check(packed[0].idx, packed[0].targets, packed[0].pos, packed[0].mask)[1], check(
            fixed[0].idx, fixed[0].targets, fixed[0].pos, fixed[0].mask)[1]
    assert torch.allclose(a, b, atol=1e-6), (a, b)
    modes = {
        "eager, packed": (lambda m: m, packed),
        "eager, fixed rows": (lambda m: m, fixed),
        "compile, fixed rows": (lambda m: torch.compile(m, dynamic=False), fixed),
        "compile, packed": (lambda m: torch.compile(m), packed),
    }
    ms: dict[str, list[float]] = {m: [] for m in modes}
    warm: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.repeats):
        for name, (wrap, batches) in modes.items():  # interleaved: drift in the machine's load hits every mode alike
            run = Run(model_cfg, cfg, data)
            a, w = step_ms(run, wrap(run.model), batches, args.warmup)
            ms[name].append(a)
            warm[name].append(w)
    flags = ", ".join(f for f in SHOWN_CPU_FLAGS if f in cpu_flags()) or "none"
    print(f"torch {torch.__version__}, 1 thread, CPU flags: {flags}; --preset {args.preset} (float32), rows packed "
          f"{min(b.idx.size(0) for b in packed)}-{rows}, fixed {rows}; {args.steps} timed steps x {args.repeats}")
    base = statistics.median(ms["eager, packed"])
    for name in modes:
        m = statistics.median(ms[name])
        print(f"{name:20s} {m:8.1f} ms/step ({m / base:.2f}x eager packed) | warm-up {statistics.median(warm[name]):6.1f} s")


if __name__ == "__main__":
    main()
