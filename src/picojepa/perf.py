"""Hardware peaks for model-FLOPs utilisation (MFU)."""

from __future__ import annotations

import torch

# Dense bf16 matrix throughput used as "peak" for MFU. For Hopper we use the ~790 TFLOP/s that dense
# bf16 GEMMs reach in practice (as in the project's reference table), not the 989 TFLOP/s spec sheet.
_PEAK_BF16 = {"H200": 790e12, "H100": 790e12, "A100": 312e12, "L4": 121e12, "RTX 4090": 165e12,
              "A10": 125e12, "T4": 65e12}


def peak_flops(device: torch.device) -> float | None:
    """Peak FLOP/s of a CUDA device if known; None on CPU (no meaningful single number)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in _PEAK_BF16.items():
        if key in name:
            return value
    return None
