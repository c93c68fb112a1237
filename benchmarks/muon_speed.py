"""Muon's Newton-Schulz on this CPU: torch.optim.Muon (bf16 iterations) against microgpt's float32 orthogonalise(),
on the hidden matrices of `--preset best` (6 layers x 128 wide), one thread, interleaved, medians.

Prints ms per full orthogonalisation of every hidden matrix (one Muon step's extra work), for each path, and a whole
optimizer step of torch.optim.Muon next to microgpt's MuonWithAdamW on the same matrices and gradients.

Usage: python benchmarks/muon_speed.py [--repeats 7] [--inner 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.optim._muon import _zeropower_via_newtonschulz  # the bf16 routine torch.optim.Muon calls

from microgpt.config import resolve
from microgpt.model import GPT
from microgpt.optim import NS_COEFFICIENTS, MuonWithAdamW, hidden_matrices, orthogonalise


def timed(fn, inner: int) -> float:
    t = time.perf_counter()
    for _ in range(inner):
        fn()
    return 1000 * (time.perf_counter() - t) / inner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--inner", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model_cfg, _ = resolve({}, "best")
    model = GPT(model_cfg)
    mats = hidden_matrices(model)
    grads = [torch.randn_like(m) for m in mats]
    shapes = sorted({tuple(m.shape) for m in mats})

    def ours():
        for g in grads:
            orthogonalise(g)

    def torch_bf16():
        for g in grads:
            _zeropower_via_newtonschulz(g, NS_COEFFICIENTS, 5, 1e-7)

    params_a = [torch.nn.Parameter(m.detach().clone()) for m in mats]
    params_b = [torch.nn.Parameter(m.detach().clone()) for m in mats]
    for p, g in zip(params_a + params_b, grads + grads):
        p.grad = g.clone()
    torch_muon = torch.optim.Muon(params_a, lr=0.02, weight_decay=0.1, momentum=0.95)
    our_muon = MuonWithAdamW([{"params": params_b, "muon": True, "weight_decay": 0.1, "lr": 0.02}], lr=0.02)

    results: dict[str, list[float]] = {"orthogonalise, float32 (microgpt)": [], "orthogonalise, bf16 (torch)": [],
                                       "optimizer step, MuonWithAdamW": [], "optimizer step, torch.optim.Muon": []}
    for _ in range(args.repeats):
        results["orthogonalise, float32 (microgpt)"].append(timed(ours, args.inner))
        results["orthogonalise, bf16 (torch)"].append(timed(torch_bf16, args.inner))
        results["optimizer step, MuonWithAdamW"].append(timed(our_muon.step, args.inner))
        results["optimizer step, torch.optim.Muon"].append(timed(torch_muon.step, args.inner))
    print(f"torch {torch.__version__}, 1 thread, {len(mats)} hidden matrices of shapes {shapes}")
    for name, values in results.items():
        print(f"{name:36s} {statistics.median(values):7.2f} ms  (runs: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
