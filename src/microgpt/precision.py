"""Which precision is fast on the machine a run is on: bf16 only where the hardware computes it natively.

A CPU with AVX512-BF16 or AMX runs the recipe's step 1.7x faster in bf16 autocast (BENCHMARKS.md); one with only AVX2
(most laptops, many servers) emulates bf16, and the same step measured 1,463.5 ms against 163.6 ms in float32 on an
AVX2-only AMD EPYC, 9x slower. So `--autocast auto` (what `--preset best` uses) and Muon's Newton-Schulz iterations
pick bf16 only when the CPU's flags, or the CUDA device, say it is native.
"""

from __future__ import annotations

import functools
from pathlib import Path

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")   # /proc/cpuinfo flags of native bf16 arithmetic
SHOWN_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first CPU's fields in /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    return frozenset(_cpuinfo().get("flags", "").split())


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo; None where there is none."""
    return _cpuinfo().get("model name") or None


def native_bf16(device: str = "cpu") -> tuple[bool, str]:
    """(whether bf16 arithmetic is native on device, why in words)."""
    if str(device).startswith("cuda"):
        import torch

        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
        return ok, f"{name} {'supports' if ok else 'lacks'} bf16"
    flags = cpu_flags()
    have = [f for f in BF16_CPU_FLAGS if f in flags]
    if have:
        return True, f"this CPU has {', '.join(have)}"
    shown = ", ".join(f for f in SHOWN_CPU_FLAGS if f in flags) or "none of " + ", ".join(SHOWN_CPU_FLAGS)
    return False, f"this CPU has no native bf16 (flags: {shown})"


def resolve_autocast(setting: str, device: str = "cpu", dtype: str = "float32", parity: bool = False) -> tuple[str, str]:
    """What a run's autocast setting means here: ("bfloat16" | "off", why). auto picks bf16 only where it is native."""
    if setting != "auto":
        return setting, f"set by --autocast {setting}"
    if parity or dtype != "float32":
        return "off", f"{dtype} weights{' (microgpt parity)' if parity else ''} train without autocast"
    ok, why = native_bf16(device)
    return ("bfloat16" if ok else "off"), why


@functools.lru_cache(maxsize=4)
def matmul_dtype(device_type: str):
    """bf16 where it is native on this device type, else float32 (Muon's Newton-Schulz iterations use it)."""
    import torch

    return torch.bfloat16 if native_bf16(device_type)[0] else torch.float32
