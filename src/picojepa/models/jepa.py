"""The JEPA training module: context encoder, predictor and the EMA target encoder."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import BATCH_TARGET_NORMS, MaskConfig, ModelConfig
from ..masks import context_tokens, mask_configs
from .predictor import Predictor
from .regularizers import content_residual, local_residual, regularizer_loss, sigreg, vicreg
from .vit import VideoViT, gather_tokens


@dataclass
class StepOutput:
    loss: torch.Tensor  # what is optimised: mean prediction loss over the masks + weighted regulariser
    targets: torch.Tensor  # (B, M, D) layer-normalised target features of the first mask, detached
    prediction_loss: torch.Tensor  # detached, for logging
    regularizer: torch.Tensor  # detached, 0 when none


class JEPA(nn.Module):
    """Context encoder + predictor, regressing at the masked tubelets what ``targets`` names: ``ema`` the
    layer-normed tokens of an EMA copy of the context encoder (V-JEPA), ``frozen`` those of a teacher that
    never changes (SALT; the copy made at initialisation unless other weights are loaded into it), ``pixels``
    the tubelets' own pixels normalised per tubelet (VideoMAE), ``motion`` their frame-to-frame differences
    (scaled per clip). ``evaluation_encoder`` is the one to keep.
    """

    # Under data parallelism: gathers every rank's rows (differentiably) before a batch-statistic regulariser
    # and its residuals, so they see the global batch as in a single process. None: the local batch is the batch.
    gather_embeddings: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __init__(self, cfg: ModelConfig, loss: str = "l1", regularizer: str = "none", reg_weight: float = 0.0,
                 sigreg_directions: int = 256, reg_on: str = "local", target_norm: str = "layer",
                 vicreg_std: float = 0.7, targets: str = "ema", reg_scale_free: bool = True,
                 pixel_weight: float = 0.0, vicreg_cov_weight: float = 1.0, reg_projector: int = 0,
                 target_layers: int = 1, clip_reg_weight: float = 0.0, clip_reg_std: float = 0.5,
                 clip_reg_projector: int = 0, global_weight: float = 0.0) -> None:
        super().__init__()
        if targets not in ("ema", "frozen", "pixels", "motion"):
            raise ValueError(f"unknown targets {targets!r}")
        if global_weight > 0 and targets not in ("ema", "frozen"):
            raise ValueError("the clip-level term (global_weight) predicts a teacher's tokens: targets ema or frozen")
        self.cfg, self.targets = cfg, targets
        self.loss_name, self.target_norm = loss, target_norm
        self.regularizer, self.reg_weight, self.sigreg_directions = regularizer, reg_weight, sigreg_directions
        self.reg_on, self.vicreg_std, self.reg_scale_free = reg_on, vicreg_std, reg_scale_free
        self.vicreg_cov_weight, self.target_layers = vicreg_cov_weight, target_layers
        self.clip_reg_weight, self.clip_reg_std = clip_reg_weight, clip_reg_std
        self.encoder = VideoViT(cfg)
        frames = {"pixels": cfg.tubelet_size, "motion": cfg.tubelet_size - 1}.get(targets, 0)
        if targets == "motion" and not frames:
            raise ValueError("motion targets need tubelets of at least 2 frames")
        out_dim = cfg.in_chans * frames * cfg.patch_size**2 if frames else None
        self.pixel_weight = pixel_weight
        tubelet_pixels = cfg.in_chans * cfg.tubelet_size * cfg.patch_size**2
        self.predictor = Predictor(cfg, self.encoder.grid, out_dim=out_dim,
                                   pixel_dim=tubelet_pixels if pixel_weight > 0 else 0)
        # > 0: the regulariser sees an MLP projection of the tokens (VICReg's expander, LeJEPA's projector), so
        # its push need not be met by the probed tokens themselves. Absent by default: old checkpoints load strictly.
        self.reg_projector = nn.Sequential(nn.Linear(cfg.embed_dim, reg_projector), nn.GELU(),
                                           nn.Linear(reg_projector, reg_projector)) if reg_projector > 0 else None
        # > 0: the clip term is LeJEPA's SIGReg on an MLP projection (this width) of each clip's mean context
        # token, not a variance hinge on the mean token itself: only clip embeddings that all look alike are
        # pushed, through a head the probes never read.
        self.clip_projector = nn.Sequential(nn.Linear(cfg.embed_dim, 4 * clip_reg_projector), nn.GELU(),
                                            nn.Linear(4 * clip_reg_projector, clip_reg_projector)
                                            ) if clip_reg_projector > 0 else None
        # > 0: MSN's idea in a JEPA: an MLP on each mask's mean context token predicts the clip's mean target
        # token (full view), both standardised over the batch per dimension, so the probed tokens' pooled view
        # must carry what tells clips apart whatever is masked. Absent by default: old checkpoints load strictly.
        self.global_weight = global_weight
        self.global_head = nn.Sequential(nn.Linear(cfg.embed_dim, 4 * cfg.embed_dim), nn.GELU(),
                                         nn.Linear(4 * cfg.embed_dim, cfg.embed_dim)) if global_weight > 0 else None
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_encoder.requires_grad_(False)
        self.target_encoder.eval()

    @property
    def evaluation_encoder(self) -> VideoViT:
        """The encoder a run saves and downstream tools read: the EMA copy when there is one (V-JEPA evaluates
        its target encoder), else the trained context encoder (a frozen teacher is not what was learned)."""
        return self.target_encoder if self.targets == "ema" else self.encoder

    def train(self, mode: bool = True) -> JEPA:
        super().train(mode)
        self.target_encoder.eval()  # never dropout/noise in the target
        return self

    def forward(self, video: torch.Tensor, keep: torch.Tensor | Sequence[torch.Tensor],
                target: torch.Tensor | Sequence[torch.Tensor], context_only: bool = True,
                generator: torch.Generator | None = None) -> StepOutput:
        """video (B, C, T, H, W); keep (B, K) context and target (B, M) masked token indices, or one pair per
        mask generator (V-JEPA's short- and long-range masks): the target encoder runs once, the context
        encoder and predictor once per mask, and the prediction losses are averaged.

        ``context_only=False`` runs the context encoder on every token and gathers the visible ones
        afterwards: it leaks masked content and exists only to measure what dropping tokens saves.
        """
        keeps = [keep] if isinstance(keep, torch.Tensor) else list(keep)
        targets_idx = [target] if isinstance(target, torch.Tensor) else list(target)
        with torch.no_grad():
            if self.targets == "pixels":
                feats = pixel_targets(self.encoder.patchify(video))
            elif self.targets == "motion":
                feats = motion_targets(self.encoder.patchify(video), self.cfg.in_chans, self.cfg.tubelet_size)
            else:
                feats = normalise_targets(self.target_tokens(video), self.target_norm, self.encoder.grid[0])
        losses, contexts, first_targets = [], [], None
        for k, t in zip(keeps, targets_idx, strict=True):
            targets = gather_tokens(feats, t)
            first_targets = targets if first_targets is None else first_targets
            context = self.encoder(video, k) if context_only else gather_tokens(self.encoder(video), k)
            contexts.append(context)
            if self.pixel_weight > 0:  # the latent loss plus a pixel read-out anchoring the features to the input
                prediction, pixels = self.predictor.forward_with_pixels(context, k, t)
                pixel_loss = jepa_loss(pixels, gather_tokens(pixel_targets(self.encoder.patchify(video)), t), "l2")
                losses.append(jepa_loss(prediction, targets, self.loss_name) + self.pixel_weight * pixel_loss)
            else:
                losses.append(jepa_loss(self.predictor(context, k, t), targets, self.loss_name))
        prediction = torch.stack(losses).mean()
        clip_level = self.global_weight * self.global_loss(contexts, feats) if self.global_head is not None else None
        reg = torch.zeros((), device=video.device)
        if self.regularizer != "none" and self.reg_weight > 0:
            if self.gather_embeddings is not None:  # data parallel: the global batch, in single-process order
                contexts = [self.gather_embeddings(c) for c in contexts]
                keeps = [self.gather_embeddings(k) for k in keeps]
            if self.reg_scale_free:  # the final LayerNorm's gain can then neither meet the hinge nor inflate the cov
                contexts = [F.layer_norm(c.float(), c.shape[-1:]) for c in contexts]
            if self.reg_projector is not None:
                contexts = [self.reg_projector(c.float()) for c in contexts]
                if self.reg_scale_free:  # nor can the projector's output scale meet the hinge
                    contexts = [F.layer_norm(c, c.shape[-1:]) for c in contexts]
            if self.reg_on in ("content", "local"):
                residual = content_residual if self.reg_on == "content" else local_residual
                n = self.encoder.num_tokens
                embeddings = torch.cat([residual(c, k, n) for c, k in zip(contexts, keeps, strict=True)])
            else:
                embeddings = torch.cat([c.reshape(-1, c.shape[-1]) for c in contexts])
            reg = regularizer_loss(self.regularizer, embeddings, self.sigreg_directions, generator, self.vicreg_std,
                                   self.vicreg_cov_weight)
            if self.clip_reg_weight > 0:  # a floor under what tells clips apart, besides the local term
                n = self.encoder.num_tokens
                clips = torch.cat([content_residual(c, k, n).view(c.shape).mean(dim=1)
                                   for c, k in zip(contexts, keeps, strict=True)])
                clip_term = (sigreg(self.clip_projector(clips), self.sigreg_directions, generator)
                             if self.clip_projector is not None else vicreg(clips, self.clip_reg_std, cov_weight=0.0))
                reg = reg + self.clip_reg_weight * clip_term
        loss = prediction + self.reg_weight * reg if self.regularizer != "none" else prediction
        if clip_level is not None:  # optimised, not logged: prediction_loss stays comparable across recipes
            loss = loss + clip_level
        return StepOutput(loss, first_targets, prediction.detach(), reg.detach())

    def global_loss(self, contexts: list[torch.Tensor], feats: torch.Tensor) -> torch.Tensor:
        """1 − the mean per-dimension correlation, over the batch, between the head's prediction from each mask's
        mean context token and the clip's mean target token: what all clips share costs nothing, and a constant
        prediction scores 1."""
        target = feats.mean(dim=1).float()
        if self.gather_embeddings is not None:
            target = self.gather_embeddings(target)
        terms = []
        for context in contexts:
            predicted = self.global_head(context.float().mean(dim=1))
            if self.gather_embeddings is not None:
                predicted = self.gather_embeddings(predicted)
            terms.append(0.5 * (standardised(predicted) - standardised(target)).pow(2).mean())
        return torch.stack(terms).mean()

    def target_tokens(self, video: torch.Tensor) -> torch.Tensor:
        """The target encoder's tokens (B, N, D): its output, or the mean of its last ``target_layers`` blocks,
        each layer-normed (data2vec's averaged teacher layers)."""
        if self.target_layers == 1:
            return self.target_encoder(video)
        x, outputs = self.target_encoder.tokenize(video), []
        for block in self.target_encoder.blocks:
            x = block(x)
            outputs.append(x)
        return torch.stack([F.layer_norm(o, o.shape[-1:]) for o in outputs[-self.target_layers:]]).mean(0)

    @torch.no_grad()
    def update_target(self, momentum: float, foreach: bool = True) -> None:
        """target ← momentum · target + (1 − momentum) · online, in one foreach call by default. Only an EMA
        target moves: a frozen teacher (or the unused copy under pixel targets) stays as it is."""
        if self.targets != "ema":
            return
        online = list(self.encoder.parameters())
        tgt = list(self.target_encoder.parameters())
        if foreach:
            torch._foreach_lerp_(tgt, online, 1.0 - momentum)
        else:
            for t, o in zip(tgt, online, strict=True):
                t.lerp_(o, 1.0 - momentum)


def standardised(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B, D) rows minus their batch mean, over their batch std, per dimension."""
    centred = x - x.mean(dim=0, keepdim=True)
    return centred / centred.pow(2).mean(dim=0, keepdim=True).add(eps).sqrt()


def normalise_targets(feats: torch.Tensor, kind: str = "layer", time_slices: int = 1) -> torch.Tensor:
    """Target-encoder tokens (B, N, D), time-major over ``time_slices`` slices → prediction targets.
    ``layer``: V-JEPA's layer norm per token.
    ``clip``: layer norm, then minus the clip's mean token, scaled to unit RMS per clip — what is the same
    all over a clip (a plain background) costs nothing to predict, so the loss sits where things differ.
    ``temporal``: layer norm, then minus each spatial position's mean over the clip's time slices, scaled to
    unit RMS over the batch — what stays put (a static background) costs nothing to predict, so the loss sits
    on what changes (Sobal et al. 2022: JEPAs otherwise settle on the slow features)."""
    feats = F.layer_norm(feats, feats.shape[-1:])
    if kind == "layer":
        return feats
    if kind == "temporal":
        B, N, D = feats.shape
        if time_slices < 2 or N % time_slices:
            raise ValueError(f"target normalisation 'temporal' needs at least 2 time slices dividing the {N} "
                             f"tokens, got {time_slices}")
        grid = feats.view(B, time_slices, N // time_slices, D)
        residual = (grid - grid.mean(dim=1, keepdim=True)).view(B, N, D)
        # Over the batch, not per clip: a clip with nothing moving must stay near 0, not have its noise inflated.
        return residual / residual.pow(2).mean().add(1e-6).sqrt()
    if kind == "clip":
        residual = feats - feats.mean(dim=1, keepdim=True)
        return residual / residual.pow(2).mean(dim=(1, 2), keepdim=True).add(1e-6).sqrt()
    if kind in BATCH_TARGET_NORMS:
        # Minus the position's mean over the batch (content) and also the clip's mean token (local), scaled to
        # unit RMS over the batch: what only says *where* a token is costs nothing to predict, so growing it
        # cannot lower the loss.
        if feats.shape[0] < 2:
            raise ValueError(f"target normalisation {kind!r} needs at least 2 clips per batch")
        residual = feats - feats.mean(dim=0, keepdim=True)
        if kind == "local":
            residual = residual - residual.mean(dim=1, keepdim=True)
        return residual / residual.pow(2).mean().add(1e-6).sqrt()
    raise ValueError(f"unknown target normalisation {kind!r}")


def pixel_targets(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Flattened tubelets (B, N, C·t·p·p) → each normalised to zero mean and unit variance over its own
    values (VideoMAE's normalised-pixel target: the prediction is of structure, not of brightness)."""
    patches = patches.float()
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True, unbiased=False)
    return (patches - mean) / (var + eps).sqrt()


def motion_targets(patches: torch.Tensor, channels: int, frames: int, eps: float = 1e-6) -> torch.Tensor:
    """Flattened tubelets (B, N, C·t·p·p) → their frame-to-frame differences (B, N, C·(t−1)·p·p), scaled to
    unit RMS per clip. Not per tubelet: a static tubelet's difference is sensor noise, which must stay small
    rather than be blown up to unit variance; what is left to predict is where and how things move."""
    B, N, _ = patches.shape
    x = patches.float().view(B, N, channels, frames, -1)
    diff = (x[:, :, :, 1:] - x[:, :, :, :-1]).reshape(B, N, -1)
    return diff / diff.pow(2).mean(dim=(1, 2), keepdim=True).add(eps).sqrt()


def jepa_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    pred, target = pred.float(), target.float()
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target)
    if kind == "l2":
        return F.mse_loss(pred, target)
    raise ValueError(f"unknown loss {kind!r}")


def _transformer_flops(tokens: int, dim: int, depth: int, mlp_ratio: float) -> float:
    linear = 2 * tokens * (4 + 2 * mlp_ratio) * dim * dim  # qkv, proj, two MLP layers
    attention = 4 * tokens * tokens * dim  # QKᵀ and AV
    return depth * (linear + attention)


def train_flops_per_clip(cfg: ModelConfig, mask: MaskConfig | float) -> float:
    """Model FLOPs of one training step per clip (forward + 2× for backward where gradients flow): the
    target encoder once, the context encoder and predictor once per mask generator. A bare float is a
    ``multiblock`` ratio with no future slices."""
    mask_cfg = mask if isinstance(mask, MaskConfig) else MaskConfig(ratio=float(mask))
    grid = (cfg.num_frames // cfg.tubelet_size, cfg.img_size // cfg.patch_size, cfg.img_size // cfg.patch_size)
    n = grid[0] * grid[1] * grid[2]
    per_token_patch = 2 * cfg.in_chans * cfg.tubelet_size * cfg.patch_size**2 * cfg.embed_dim
    total = n * per_token_patch + _transformer_flops(n, cfg.embed_dim, cfg.depth, cfg.mlp_ratio)
    for generator in mask_configs(mask_cfg):
        keep = context_tokens(grid, generator)
        total += 3 * (keep * per_token_patch + _transformer_flops(keep, cfg.embed_dim, cfg.depth, cfg.mlp_ratio))
        total += 3 * _transformer_flops(n, cfg.pred_embed_dim, cfg.pred_depth, cfg.mlp_ratio)  # context + queries
    return float(total)


def encoder_flops_per_clip(cfg: ModelConfig) -> float:
    n = (cfg.num_frames // cfg.tubelet_size) * (cfg.img_size // cfg.patch_size) ** 2
    patch = 2 * n * cfg.in_chans * cfg.tubelet_size * cfg.patch_size**2 * cfg.embed_dim
    return float(patch + _transformer_flops(n, cfg.embed_dim, cfg.depth, cfg.mlp_ratio))
