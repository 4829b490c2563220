"""The arithmetic a training job runs in: bf16 mixed precision where the CPU multiplies bfloat16 natively, fp32
elsewhere (`precision: auto`, what triage's learned layer and the judges train with)."""

from __future__ import annotations

from core.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp32")


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX tiles or AVX512-BF16). There, bf16 matrix products run
    3-9x the fp32 rate (measured here: 0.40-1.2 TFLOP/s against 0.14); elsewhere bf16 is emulated and slower."""
    import torch

    checks = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return any(bool(check()) for check in checks if check is not None)


def train_bf16(precision: str) -> bool:
    """Whether a job asked for `precision` trains in bf16 mixed precision (torch.autocast: the weights and their
    updates stay fp32, matrix products run in bf16)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return native_bf16() if precision == "auto" else precision == "bf16"
