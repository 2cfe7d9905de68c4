"""Attention kernels at pico shapes (heads of 24 dims): forward+backward time per SDPA backend.

    PYTHONPATH=src python bench/speed/attention.py --device cuda --batch-size 256
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev = torch.device(args.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    for label, (tokens, heads, dim) in {"target_encoder": (784, 8, 24), "context_encoder": (196, 8, 24),
                                        "predictor": (784, 4, 24)}.items():
        for name, backend in [("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                              ("cudnn", SDPBackend.CUDNN_ATTENTION), ("math", SDPBackend.MATH)]:
            q, k, v = (torch.randn(args.batch_size, heads, tokens, dim, device=dev, dtype=dtype, requires_grad=True)
                       for _ in range(3))
            try:
                with sdpa_kernel(backend):
                    for i in range(args.repeats + 3):
                        if i == 3:
                            if dev.type == "cuda":
                                torch.cuda.synchronize()
                            t0 = time.perf_counter()
                        F.scaled_dot_product_attention(q, k, v).sum().backward()
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                ms = (time.perf_counter() - t0) / args.repeats * 1000
                print(json.dumps({"bench": "attention", "where": label, "backend": name, "tokens": tokens,
                                  "heads": heads, "head_dim": dim, "batch": args.batch_size,
                                  "ms_fwd_bwd": round(ms, 3)}))
            except RuntimeError as e:
                print(json.dumps({"bench": "attention", "where": label, "backend": name, "error": str(e)[:120]}))


if __name__ == "__main__":
    main()
