"""The attentive probe's training step: its folded one-query attention against nn.MultiheadAttention
(the same head, every token projected), and what the default grid of four heads costs per epoch.

    PYTHONPATH=src python bench/speed/probe_head.py            # pico shapes: 64 tokens of 192 dims, batch 64
    PYTHONPATH=src python bench/speed/probe_head.py --tokens 196
    PYTHONPATH=src python bench/speed/probe_head.py --threads-sweep 1,2   # quiet, then with the cores busy

The library trains heads on one CPU thread (probe/classifier.py): run the sweep on a quiet machine and beside a
busy one to see why.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from picojepa.probe.classifier import PROBE_GRID
from picojepa.probe.heads import AttentiveHead


def step_ms(head: AttentiveHead, forward, tokens: torch.Tensor, labels: torch.Tensor, repeats: int) -> float:
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    for i in range(repeats + 3):  # 3 warm-up steps
        if i == 3:
            start = time.perf_counter()
        loss = F.cross_entropy(forward(head, tokens), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if tokens.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--clips", type=int, default=1600, help="training clips per epoch (the demo: 800 videos × 2)")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--threads-sweep", default="", help="also time the folded step at these CPU thread counts")
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device(args.device)
    head = AttentiveHead(args.dim, 4).to(dev)
    tokens = torch.randn(args.batch_size, args.tokens, args.dim, device=dev)
    labels = torch.randint(0, 4, (args.batch_size,), device=dev)
    with torch.no_grad():
        diff = (head(tokens) - head.forward_unfolded(tokens)).abs().max().item()
    folded = step_ms(head, AttentiveHead.forward, tokens, labels, args.repeats)
    reference = step_ms(head, AttentiveHead.forward_unfolded, tokens, labels, args.repeats)
    steps = -(-args.clips // args.batch_size)
    row = {"device": args.device, "threads": torch.get_num_threads(), "batch": args.batch_size, "tokens": args.tokens,
           "dim": args.dim, "max_abs_logit_difference": diff, "folded_ms_per_step": round(folded, 2),
           "multihead_attention_ms_per_step": round(reference, 2), "speed-up": round(reference / folded, 2),
           "grid_heads": len(PROBE_GRID), "grid_s_per_epoch": round(len(PROBE_GRID) * steps * folded / 1000, 2),
           "one_reference_head_s_per_epoch": round(steps * reference / 1000, 2)}
    if args.threads_sweep:
        by_threads = {}
        for n in (int(x) for x in args.threads_sweep.split(",")):
            torch.set_num_threads(n)
            by_threads[n] = round(step_ms(head, AttentiveHead.forward, tokens, labels, args.repeats), 2)
        row["folded_ms_per_step_by_threads"] = by_threads
    print(json.dumps(row))


if __name__ == "__main__":
    main()
