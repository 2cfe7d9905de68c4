"""GPU-resident clip bank: every cached video in one uint8 device tensor, batches gathered on device.

Batches are the same as the DataLoader path's (same per-epoch permutation, same random starts, same
slice of the global batch per data-parallel rank), so switching paths changes speed, not results. Masks
are drawn on the CPU in a background thread. Under data parallelism every rank holds its own bank.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
import torch

from ..masks import MaskSampler
from .dataset import EpochBatchSampler, FrameStore, TrainBatch, global_rows, select_rows


def bank_bytes(store: FrameStore) -> int:
    """Bytes the bank would take: every video padded to the longest one."""
    shapes = [store.frames(i).shape for i in range(len(store))]
    longest = max(s[0] for s in shapes)
    return len(shapes) * longest * int(np.prod(shapes[0][1:]))


def fits_on_device(store: FrameStore, device: torch.device, fraction: float = 0.5) -> bool:
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return bank_bytes(store) < fraction * free


class DeviceClipBank:
    def __init__(self, store: FrameStore, device: torch.device, num_frames: int, seed: int) -> None:
        arrays = [store.frames(i) for i in range(len(store))]
        longest = max(len(a) for a in arrays)
        side = arrays[0].shape[1:]
        self.lengths = torch.tensor([len(a) for a in arrays], device=device)
        self.frames = torch.empty((len(arrays), longest, *side), dtype=torch.uint8, device=device)
        for i, a in enumerate(arrays):
            self.frames[i, : len(a)] = torch.from_numpy(np.array(a)).to(device)
            self.frames[i, len(a):] = self.frames[i, len(a) - 1]  # pad with the last frame, as clip_indices does
        self.device, self.num_frames, self.seed = device, num_frames, seed

    def gather(self, indices: list[int], starts: list[int]) -> torch.Tensor:
        """(B, T, S, S, 3) uint8 clips, gathered on the device."""
        idx = torch.tensor(indices, device=self.device)
        start = torch.tensor(starts, device=self.device)
        t = start[:, None] + torch.arange(self.num_frames, device=self.device)[None]
        t = torch.minimum(t, self.lengths[idx][:, None] - 1)
        return self.frames[idx[:, None], t]

    def batches(self, masks: MaskSampler, batch_size: int, total_steps: int, start_step: int = 0,
                prefetch: int = 4, rank: int = 0, world: int = 1) -> Iterator[TrainBatch]:
        """This rank's slice of each global batch of ``batch_size`` clips."""
        sampler = EpochBatchSampler(len(self.lengths), batch_size, self.seed, total_steps, start_step, rank, world)
        rows = global_rows(list(range(sampler.offset, sampler.offset + sampler.local)), batch_size)
        lengths = self.lengths.tolist()
        plan: queue.Queue = queue.Queue(maxsize=prefetch)

        def produce() -> None:  # CPU side: indices, starts and masks, ahead of the GPU
            for keys in sampler:
                starts = []
                for index, epoch, _ in keys:
                    rng = np.random.default_rng([self.seed, epoch, index])
                    starts.append(int(rng.integers(0, max(1, lengths[index] - self.num_frames + 1))))
                step = keys[0][2]
                mask = select_rows(masks(batch_size, [self.seed, 7, step]), rows)
                mask = [m.pin_memory() for m in mask] if self.device.type == "cuda" else mask
                plan.put(([k[0] for k in keys], starts, step, mask))
            plan.put(None)

        threading.Thread(target=produce, daemon=True).start()
        while (item := plan.get()) is not None:
            indices, starts, step, mask = item
            yield TrainBatch(self.gather(indices, starts), mask, step, [], rows, batch_size)
