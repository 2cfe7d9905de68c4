"""The torch modules that become the exported ONNX graphs: one member (encoder + head + clip averaging)
and a whole ensemble (its members plus the aggregation, fitted parameters baked in).

Every module takes normalised clips ``(videos, clips per video, 3, frames, size, size)`` and reproduces,
op for op, what the torch runtime computes: :meth:`VideoClassifier.proba_from_clips` for a member and
:func:`picojepa.experiment.predict.aggregate` for an ensemble, including the hard-vote tie rule.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from ..ensemble.aggregation import LOG_FLOOR
from ..probe.classifier import VideoClassifier
from ..probe.heads import uses_pooled_features


def clip_average(head: nn.Module, pooled: bool, tokens: torch.Tensor, videos: torch.Tensor | int,
                 per_video: torch.Tensor | int) -> torch.Tensor:
    """Tokens (V·K, N, D) → (V, C): the mean of the K clips' softmax, as ``VideoClassifier.proba_from_clips``."""
    logits = head.pooled(tokens.mean(1)) if pooled else head(tokens)
    return logits.softmax(dim=-1).view(videos, per_video, -1).mean(dim=1)


class MemberGraph(nn.Module):
    """(V, K, 3, T, S, S) normalised clips → (V, C) probabilities: the mean of the K clips' softmax."""

    def __init__(self, classifier: VideoClassifier) -> None:
        super().__init__()
        self.encoder, self.head = classifier.encoder, classifier.head
        self.pooled = uses_pooled_features(classifier.head_kind)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return clip_average(self.head, self.pooled, self.encoder(clips.flatten(0, 1)), clips.shape[0], clips.shape[1])


def encoder_fingerprint(encoder: nn.Module) -> str:
    """Digest of an encoder's tensors (names, shapes, values): equal digests mean the same function."""
    digest = hashlib.sha256()
    for name, tensor in encoder.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class HardVote(nn.Module):
    """Member probabilities (M, V, C) → (vote fractions (V, C), predictions (V,)), exactly
    :func:`picojepa.ensemble.aggregation.hard_vote`: each member votes its argmax (first index on a tie);
    the most votes win; tied classes are split by the larger summed probability, in float64 with the same
    1e-9·M tolerance, then by the lower class index (ArgMax returns the first maximum)."""

    def __init__(self, num_members: int, num_classes: int) -> None:
        super().__init__()
        self.num_members = num_members
        self.register_buffer("classes", torch.arange(num_classes))

    def forward(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        votes = probs.argmax(dim=-1)  # (M, V)
        counts = (votes.unsqueeze(-1) == self.classes).sum(dim=0)  # (V, C)
        tied = counts == counts.max(dim=-1, keepdim=True).values
        summed = probs.double().sum(dim=0)
        summed = torch.where(tied, summed, torch.full_like(summed, float("-inf")))
        best = summed >= summed.max(dim=-1, keepdim=True).values - 1e-9 * self.num_members
        return counts.float() / self.num_members, best.float().argmax(dim=-1)


class SoftVote(nn.Module):
    """Weighted mean of temperature-scaled member probabilities (weights normalised to sum to 1)."""

    def __init__(self, weights: np.ndarray, temperature: float = 1.0) -> None:
        super().__init__()
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64) / np.sum(weights), dtype=torch.float32)
        self.register_buffer("weights", w.view(-1, 1, 1))
        self.temperature = float(temperature)

    def forward(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.temperature != 1.0:  # softmax(log p / T), as temperature_scale (log 0 = -inf gives 0)
            probs = (probs.log() / self.temperature).softmax(dim=-1)
        out = (probs * self.weights).sum(dim=0)
        return out, out.argmax(dim=-1)


class Stacking(nn.Module):
    """The fitted logistic-regression meta-model on the members' (log-)probabilities, as
    :func:`picojepa.experiment.predict.stack_from_params`: classes it never saw get probability 0."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, seen_classes: list[int], features: str) -> None:
        super().__init__()
        self.register_buffer("coef_t", torch.as_tensor(np.asarray(coef, dtype=np.float32).T.copy()))
        self.register_buffer("intercept", torch.as_tensor(np.asarray(intercept, dtype=np.float32)))
        seen = torch.zeros(len(intercept), dtype=torch.bool)
        seen[torch.as_tensor(seen_classes, dtype=torch.long)] = True
        self.register_buffer("seen", seen)
        self.log_features = features == "log"

    def forward(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = probs.clamp(LOG_FLOOR, 1.0).log() if self.log_features else probs
        x = x.permute(1, 0, 2).flatten(1)  # (V, M·C): member 0's classes first, as stack_features
        logits = x @ self.coef_t + self.intercept
        logits = torch.where(self.seen, logits, torch.full_like(logits, float("-inf")))
        out = logits.softmax(dim=-1)
        return out, out.argmax(dim=-1)


class EnsembleGraph(nn.Module):
    """Clips → (ensemble probabilities (V, C) — vote fractions for a hard vote —, predictions (V,),
    member probabilities (M, V, C)): one graph, one session for the whole ensemble. Members that share an
    encoder (the shared protocol) share its computation: each distinct encoder runs once."""

    def __init__(self, classifiers: list[VideoClassifier], aggregation: nn.Module) -> None:
        super().__init__()
        prints = [encoder_fingerprint(c.encoder) for c in classifiers]
        distinct = list(dict.fromkeys(prints))
        self.encoders = nn.ModuleList(classifiers[prints.index(p)].encoder for p in distinct)
        self.encoder_of = [distinct.index(p) for p in prints]
        self.heads = nn.ModuleList(c.head for c in classifiers)
        self.pooled = [uses_pooled_features(c.head_kind) for c in classifiers]
        self.aggregation = aggregation

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        videos, per_video = clips.shape[0], clips.shape[1]
        flat = clips.flatten(0, 1)
        tokens = [encoder(flat) for encoder in self.encoders]
        member_probs = torch.stack([clip_average(head, pooled, tokens[e], videos, per_video)
                                    for head, pooled, e in zip(self.heads, self.pooled, self.encoder_of, strict=True)])
        probs, prediction = self.aggregation(member_probs)
        return probs, prediction, member_probs
