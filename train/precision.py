"""Which precision `python -m train lora` trains in: bf16 autocast where the hardware does bf16 natively, else fp32.

The setting `precision` is "auto" (default), "bf16" or "fp32". With "auto":
- CUDA: bf16 when the GPU supports it (torch.cuda.is_bf16_supported()), else fp32;
- CPU: bf16 autocast when the CPU has native bf16 matmul instructions, AMX (`amx_bf16`: Sapphire Rapids and later)
  or AVX-512 BF16 (`avx512_bf16`: Cooper Lake, Zen 4 and later), as listed in /proc/cpuinfo's flags; fp32 elsewhere.
  On an AVX2-only CPU torch has no bf16 matmul instructions to use: a (2048x576) @ (576x1536) linear took 7.4x as
  long under bf16 autocast as in fp32 on this AVX2 machine (1 thread, a busy CPU), so "auto" never picks bf16
  there ("bf16" forces it anyway; the reason it records says it will be slow).
On CPU the weights stay fp32 and the Trainer runs forward/backward under torch.autocast(dtype=bfloat16); the
LoRA weights and the optimizer state stay fp32.
"""
from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # best first: AMX tiles, then AVX-512 BF16 dot products


def cpu_flags(path: Path | None = None) -> set[str]:
    """The x86 feature flags of the first CPU in /proc/cpuinfo (empty where there is no such file, e.g. macOS)."""
    try:
        text = Path(path or CPUINFO).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def cpu_bf16(flags: set[str] | None = None) -> str | None:
    """The CPU's native bf16 instruction set ('amx_bf16' or 'avx512_bf16'); None when it has none."""
    flags = cpu_flags() if flags is None else flags
    return next((f for f in BF16_FLAGS if f in flags), None)


def choose(precision: str, cuda: bool) -> tuple[bool, str]:
    """(use bf16, why) for a precision setting on this machine."""
    if precision == "fp32":
        return False, "fp32 (precision=fp32)"
    if precision == "bf16":
        native = _cuda_bf16() if cuda else cpu_bf16() is not None
        return True, "bf16 (precision=bf16)" + ("" if native else ": no native bf16 here, expect it to be slow")
    if cuda:
        return (True, "bf16 (auto: the GPU supports it)") if _cuda_bf16() else \
            (False, "fp32 (auto: the GPU has no bf16)")
    kind = cpu_bf16()
    if kind:
        return True, f"bf16 autocast (auto: the CPU has {kind})"
    return False, "fp32 (auto: the CPU has neither amx_bf16 nor avx512_bf16)"


def _cuda_bf16() -> bool:
    import torch
    return torch.cuda.is_bf16_supported()
