"""Mixed precision: the autocast dtype a run uses, the autocast context, and the fp16 gradient scaler.

`amp = auto` is bf16 on a GPU that supports it and fp32 elsewhere (on CPU bf16 is slower than fp32 for these
small convolutions, so it is opt-in there). bf16 has fp32's exponent range, so it needs no loss scaling; fp16
does, with torch's GradScaler. Weights, optimiser state, BN statistics and the ensemble solve stay in fp32 /
float64: autocast only runs eligible operators (convolutions, matrix products) in the low precision and never
touches float64 tensors.
"""

from __future__ import annotations

import contextlib

import torch

from ennas.core.config import ConfigError


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `setting` on `device`, or None for fp32."""
    if setting == "off":
        return None
    if setting == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if setting == "fp16":
        if device.type != "cuda":
            raise ConfigError("amp=fp16 needs a CUDA GPU (its gradient scaler is GPU-only); use amp=bf16 or off on CPU")
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device`'s type, or nothing for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (a pass-through, enabled=False, for bf16 and fp32)."""
    return torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
