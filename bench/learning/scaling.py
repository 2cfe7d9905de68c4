"""Does more pretraining give better features? Gain over random init against clip-steps, per recipe.

For every recipe, seed and budget (clip-steps) this pretrains a fresh run, with schedules laid out over that
budget, on the demo's unlabelled pool (12 classes x 50 videos, difficulty medium), and scores its encoder
against **the same architecture at the same initialisation** with the experiment's own probe protocol on the
demo's labelled task (4 kinds of motion, 400 other videos per class, split 50/10/40 %, heads at their best
epoch on validation half A, every head the mean of the 2x2 learning-rate x weight-decay grid; with
``--probe-seeds N`` the whole read-out is trained from N seeds and the gains averaged, a steadier reading):

- attentive and linear gains with paired-bootstrap 95 % intervals over the test videos;
- low-shot gains (the attentive head trained on k labelled videos per class);
- held-out collapse diagnostics of both encoders (local share, token and clip effective rank, std) and the
  *actor sensitivity*: how far the tokens move when the actor is removed from a clip (its twin rendered with
  the same random draws), over the spread of tokens between clips — near 0 when the encoder ignores the actor.

The largest budget's run is also read at every smaller budget's clip-step count (``reading`` rows): the
learning monitor inside one run, next to the separate runs whose schedules end there.

Videos are rendered in memory (no video files, so no PyAV: it runs on a bare GPU image). Rows are appended
as JSON lines; ``--report`` turns them into a Markdown table and a figure.

    PYTHONPATH=src python bench/learning/scaling.py --recipes vicreg-ema --seeds 0,1,2 --budgets 10000,20000,40000,80000
    PYTHONPATH=src python bench/learning/scaling.py --report bench/results/scaling.jsonl --out-md docs/scaling.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import platform
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from inmemory import ArrayStore, check_recipes, pretrain_in_memory, render_set

from picojepa.config import Config, default_cache_side, load_config
from picojepa.data.splits import stratified_split
from picojepa.datasets.synth import BACKGROUNDS, CLASS_NAMES
from picojepa.experiment.run import low_shot_subset, validation_halves
from picojepa.metrics import paired_bootstrap_gap
from picojepa.models import VideoViT
from picojepa.probe.classifier import PROBE_GRID, ProbeConfig, head_probabilities, train_head
from picojepa.probe.features import Features, extract_features
from picojepa.train.diagnostics import effective_rank, feature_std, local_share, position_share
from picojepa.train.pretrain import Trainer, initial_encoder

# The demo's set-up (experiment/demo.py FULL): pico at 64 px, batch 32; and the recipe every name below starts
# from — the library default until 2026-12-04 (LR 3e-4 as the demo had it, VICReg's hinge on raw tokens at std 1)
# — pinned, so that a recipe's name keeps meaning what it measured when the library's defaults move.
BASE = ["model.img_size=64", "data.frame_stride=2", "train.batch_size=32", "train.lr=3e-4",
        "train.reg_scale_free=false", "train.vicreg_std=1.0", "train.vicreg_cov_weight=1.0", "mask.ratio=0.75",
        "train.pixel_weight=0.0", "model.drop_path=0.0"]
# The library default since 2026-12-04 (scale-free hinge at std 0.7, LR 1.5e-4), in full: the recipes after it
# each change one thing of it.
DEFAULT_2026_12_04 = ["train.targets=ema", "train.regularizer=vicreg", "train.reg_weight=1.0", "train.reg_on=local",
                      "train.reg_scale_free=true", "train.vicreg_std=0.7", "train.lr=1.5e-4"]
# The library default since 2026-12-06: the same with the covariance term weighted 4 (BASE pins 1 for the rest).
DEFAULT_2026_12_06 = [*DEFAULT_2026_12_04, "train.vicreg_cov_weight=4.0"]
# The library default since 2026-12-08: the same with stochastic depth 0.3 (BASE pins 0 for the rest).
DEFAULT_2026_12_08 = [*DEFAULT_2026_12_06, "model.drop_path=0.3"]
# Every recipe states its objective in full (regulariser and targets), so a change of library default can
# never silently change what a recipe measures.
RECIPES: dict[str, list[str]] = {
    "vicreg-ema": ["train.targets=ema", "train.regularizer=vicreg", "train.reg_weight=1.0", "train.reg_on=local"],
    "plain-ema": ["train.targets=ema", "train.regularizer=none"],
    "plain-frozen": ["train.targets=frozen", "train.regularizer=none"],
    "plain-pixels": ["train.targets=pixels", "train.regularizer=none", "train.loss=l2"],
    "plain-motion": ["train.targets=motion", "train.regularizer=none", "train.loss=l2"],
    "vicreg-motion": ["train.targets=motion", "train.regularizer=vicreg", "train.reg_weight=1.0", "train.reg_on=local",
                      "train.loss=l2"],
    "vicreg-free-0.7": ["train.targets=ema", "train.regularizer=vicreg", "train.reg_weight=1.0",
                        "train.reg_on=local", "train.reg_scale_free=true", "train.vicreg_std=0.7"],
    "vicreg-free-0.5": ["train.targets=ema", "train.regularizer=vicreg", "train.reg_weight=1.0",
                        "train.reg_on=local", "train.reg_scale_free=true", "train.vicreg_std=0.5"],
    "vicreg-free-0.7-lr1.5e-4": list(DEFAULT_2026_12_04),
    "vicreg-free-0.7-mask0.5": ["train.targets=ema", "train.regularizer=vicreg", "train.reg_weight=1.0",
                                "train.reg_on=local", "train.reg_scale_free=true", "train.vicreg_std=0.7",
                                "mask.ratio=0.5"],
    "vicreg-free-0.7-lr1.5e-4-mask0.5": [*DEFAULT_2026_12_04, "mask.ratio=0.5"],
    "vicreg-free-0.7-pixels0.3": ["train.targets=ema", "train.regularizer=vicreg", "train.reg_weight=1.0",
                                  "train.reg_on=local", "train.reg_scale_free=true", "train.vicreg_std=0.7",
                                  "train.pixel_weight=0.3"],
    "vicreg-frozen": ["train.targets=frozen", "train.regularizer=vicreg", "train.reg_weight=1.0", "train.reg_on=local"],
    "vicreg-pixels": ["train.targets=pixels", "train.regularizer=vicreg", "train.reg_weight=1.0", "train.reg_on=local",
                      "train.loss=l2"],
    "plain-motion-mask0.5": ["train.targets=motion", "train.regularizer=none", "train.loss=l2", "mask.ratio=0.5"],
    "vicreg-ema-std0.5": ["train.targets=ema", "train.regularizer=vicreg", "train.reg_weight=1.0",
                          "train.reg_on=local", "train.vicreg_std=0.5"],
    "vicreg-ema-mask0.5": ["train.targets=ema", "train.regularizer=vicreg", "train.reg_weight=1.0",
                           "train.reg_on=local", "mask.ratio=0.5"],
    "plain-frozen-mask0.5": ["train.targets=frozen", "train.regularizer=none", "mask.ratio=0.5"],
    "plain-pixels-mask0.5": ["train.targets=pixels", "train.regularizer=none", "train.loss=l2", "mask.ratio=0.5"],
    "vicreg-ema-0.999": ["train.targets=ema", "train.regularizer=vicreg", "train.reg_weight=1.0",
                         "train.reg_on=local", "train.ema_start=0.999", "train.ema_end=0.999",
                         "train.ema_max_init_fraction=1.0"],
    "vicreg-ema-lr1e-4": ["train.targets=ema", "train.regularizer=vicreg", "train.reg_weight=1.0",
                          "train.reg_on=local", "train.lr=1e-4"],
    "plain-frozen-lr1e-4": ["train.targets=frozen", "train.regularizer=none", "train.lr=1e-4"],
    # the 2026-12-04 default (above) with VICReg's own hinge:covariance ratio (25:1), or with the term on an expander
    "vicreg-free-0.7-lr1.5e-4-cov0.04": [*DEFAULT_2026_12_04, "train.vicreg_cov_weight=0.04"],
    "vicreg-free-0.7-lr1.5e-4-proj768": [*DEFAULT_2026_12_04, "train.reg_projector=768"],
    # ... or predicting the last two time slices in full from the first two (no spatial mask)
    "vicreg-free-0.7-lr1.5e-4-future2": [*DEFAULT_2026_12_04, "mask.type=future", "mask.future_slices=2"],
    # ... or with a fixed, slow EMA teacher (0.999 at every step, no cap on the share of the initialisation left)
    "vicreg-free-0.7-lr1.5e-4-ema0.999": [*DEFAULT_2026_12_04, "train.ema_start=0.999", "train.ema_end=0.999",
                                          "train.ema_max_init_fraction=1.0"],
    # ... or with a lower hinge target (local share floor 0.25 instead of 0.49), or a 4x covariance term: the
    # local share keeps rising past the peak, and the covariance term was measured to restrain it
    "vicreg-free-0.5-lr1.5e-4": ["train.targets=ema", "train.regularizer=vicreg", "train.reg_weight=1.0",
                                 "train.reg_on=local", "train.reg_scale_free=true", "train.vicreg_std=0.5",
                                 "train.lr=1.5e-4"],
    "vicreg-free-0.7-lr1.5e-4-cov4": list(DEFAULT_2026_12_06),
    "vicreg-free-0.7-lr1.5e-4-cov16": [*DEFAULT_2026_12_04, "train.vicreg_cov_weight=16.0"],
    "vicreg-free-0.7-lr1.5e-4-cov64": [*DEFAULT_2026_12_04, "train.vicreg_cov_weight=64.0"],
    # ... and the LR held at its peak after warm-up (no cosine decay): is the turn in the decay phase?
    "vicreg-free-0.7-lr1.5e-4-cov16-constlr": [*DEFAULT_2026_12_04, "train.min_lr=1.5e-4",
                                               "train.vicreg_cov_weight=16.0"],
    # ... or with a predictor as wide as the encoder (192 instead of 96), so that it, not the encoder, does the
    # prediction-specific work (I-JEPA: a stronger predictor gives better encoder features)
    "vicreg-free-0.7-lr1.5e-4-pred192": [*DEFAULT_2026_12_04, "model.pred_embed_dim=192"],
    # ... or with the term's weight on a cosine from 1 to 0 (the push that lifts the encoder early, gone late)
    "vicreg-free-0.7-lr1.5e-4-regdecay": [*DEFAULT_2026_12_04, "train.reg_weight_final=0.0"],
    # the 2026-12-06 default with the weight decay held at 0.04 (no ramp to 0.4): the tokens are
    # layer-normed, so a growing decay shrinks the weights and raises the effective step late in the run
    "vicreg-free-0.7-lr1.5e-4-cov4-wd0.04": [*DEFAULT_2026_12_06, "train.final_weight_decay=0.04"],
    # ... or with the predictor also reading out the masked tubelets' pixels (weight 0.3):
    # an anchor to the input, against features that drop what the random encoder keeps
    "vicreg-free-0.7-lr1.5e-4-cov4-pixels0.3": [*DEFAULT_2026_12_06, "train.pixel_weight=0.3"],
    # the default since 2026-12-06 (covariance x4) with the two leads added on 2026-12-06 and not screened before:
    # a predictor as wide as the encoder, and the regulariser's weight on a cosine to 0
    "vicreg-free-0.7-lr1.5e-4-cov4-pred192": [*DEFAULT_2026_12_06, "model.pred_embed_dim=192"],
    "vicreg-free-0.7-lr1.5e-4-cov4-regdecay": [*DEFAULT_2026_12_06, "train.reg_weight_final=0.0"],
    # the 2026-12-06 default with targets minus their position's mean over the batch (content) or also minus the
    # clip's mean token (local): past the peak the tokens' position share rises towards 0.5 while their clip
    # share falls, and a position is free to predict
    "vicreg-free-0.7-lr1.5e-4-cov4-tcontent": [*DEFAULT_2026_12_06, "train.target_norm=content"],
    "vicreg-free-0.7-lr1.5e-4-cov4-tlocal": [*DEFAULT_2026_12_06, "train.target_norm=local"],
    # ... or with targets the mean of the teacher's last 4 of 8 blocks (data2vec averages its teacher's top half)
    "vicreg-free-0.7-lr1.5e-4-cov4-tlayers4": [*DEFAULT_2026_12_06, "train.target_layers=4"],
    # ... or with V-JEPA's second mask per clip (a few large blocks, 85 % masked), its own context and loss
    "vicreg-free-0.7-lr1.5e-4-cov4-longmask": [*DEFAULT_2026_12_06, "mask.long_range=true"],
    # ... or with a variance floor under each clip's mean context token (std 0.2 / 0.4, i.e. a clip share of at
    # least ~0.04 / ~0.16): past the peak the clips' share of the token variance falls towards 0.05
    "vicreg-free-0.7-lr1.5e-4-cov4-clipreg0.2": [*DEFAULT_2026_12_06, "train.clip_reg_weight=1.0",
                                                 "train.clip_reg_std=0.2"],
    "vicreg-free-0.7-lr1.5e-4-cov4-clipreg0.4": [*DEFAULT_2026_12_06, "train.clip_reg_weight=1.0",
                                                 "train.clip_reg_std=0.4"],
    # ... or with half its learning rate (7.5e-5): halving it from 3e-4 held more of the gain at 80k before
    "vicreg-free-0.7-lr7.5e-5-cov4": [*DEFAULT_2026_12_06, "train.lr=7.5e-5"],
    # ... or with a fast teacher at every budget (momentum 0.99, no ramp): the momentum cap makes a 20k run's
    # teacher ~0.993 while an 80k run's slows to ~0.999 late, and the peak sits near 20k
    "vicreg-free-0.7-lr1.5e-4-cov4-ema0.99": [*DEFAULT_2026_12_06, "train.ema_start=0.99", "train.ema_end=0.99",
                                              "train.ema_max_init_fraction=1.0"],
    # ... or with a predictor twice as deep (8 blocks): I-JEPA reads better encoder features with a deeper one
    "vicreg-free-0.7-lr1.5e-4-cov4-preddepth8": [*DEFAULT_2026_12_06, "model.pred_depth=8"],
    # ... or with targets minus each position's mean over the clip's time slices: ~80 % of target tokens are
    # static background, and a JEPA settles on slow features (Sobal et al. 2022); what stays put is free here
    "vicreg-free-0.7-lr1.5e-4-cov4-ttemporal": [*DEFAULT_2026_12_06, "train.target_norm=temporal"],
    # ... or with the hinge and covariance on the tokens minus their position's batch mean only (clip means kept):
    # past the peak the clips' share of the token variance falls to ~0.04 while the hinge holds the local share
    # at ~0.5; here the clip component can meet it too
    "vicreg-free-0.7-lr1.5e-4-cov4-regcontent": [*DEFAULT_2026_12_06, "train.reg_on=content"],
    # ... or with a predictor half as deep (2 blocks): 8 blocks read lower at 80k (linear +1.4 against +8.3), so a
    # weaker predictor may leave more of the prediction's work, and of the clip's content, to the encoder
    "vicreg-free-0.7-lr1.5e-4-cov4-preddepth2": [*DEFAULT_2026_12_06, "model.pred_depth=2"],
    # ... or with 8-pixel tubelets (an 8x8 grid, 256 tokens at 64 px): with 16-pixel ones the actor's motion
    # between time slices is often smaller than a patch; ~4.8x the cost per clip
    "vicreg-free-0.7-lr1.5e-4-cov4-patch8": [*DEFAULT_2026_12_06, "model.patch_size=8"],
    # ... plus LeJEPA's SIGReg (weight 0.05) on a 128-wide projection of each clip's mean context token: the
    # variance floor on the mean token itself (fourth round) held the clip share but cost gain; through a
    # projector only clips that look alike are pushed, and the probed tokens need not meet a set spread
    "vicreg-free-0.7-lr1.5e-4-cov4-clipsigreg": [*DEFAULT_2026_12_06, "train.clip_reg_weight=0.05",
                                                 "train.clip_reg_projector=128"],
    # ... or with an L2 prediction loss (I-JEPA's) instead of V-JEPA's L1: the actor's tokens are the hard ones to
    # predict, and L2 weighs large errors more, where L1 weighs the many small background errors alike
    "vicreg-free-0.7-lr1.5e-4-cov4-l2": [*DEFAULT_2026_12_06, "train.loss=l2"],
    # ... or pretrained on whole frames (crop area 1, only the aspect and the flip still drawn): crops down to 30 %
    # of the frame zoom in up to 1.8x, so the encoder trains on larger, faster actors than the probes show it,
    # and a long run may specialise to that shifted distribution
    "vicreg-free-0.7-lr1.5e-4-cov4-nocrop": [*DEFAULT_2026_12_06, "data.min_scale=1.0"],
    # ... or with the tubelet embedding frozen at its random initialisation (MoCo v3): random init alone reads
    # 53 % on the probes, and a long run may learn an input projection that drops the pixel detail the objective
    # finds hard to predict (the actor's motion); frozen, every layer above still sees it
    "vicreg-free-0.7-lr1.5e-4-cov4-frozenpatch": [*DEFAULT_2026_12_06, "train.freeze_patch_embed=true"],
    # ... or with ViT-Tiny's depth (12 blocks instead of 8: 4.7 M encoder parameters instead of 3.3 M, past the
    # brief): a diagnostic, not a candidate default. Does a larger encoder turn later (is the turn pico's limit)?
    "vicreg-free-0.7-lr1.5e-4-cov4-depth12": [*DEFAULT_2026_12_06, "model.depth=12"],
    # ... plus a clip-level term (Masked Siamese Networks, weight 0.5): an MLP on each mask's mean context token
    # predicts the clip's mean target token, standardised over the batch. Read with 4x the labels, long runs lose
    # label efficiency, not information (tenth round); invariance to masking is what MSN buys label efficiency with
    "vicreg-free-0.7-lr1.5e-4-cov4-global0.5": [*DEFAULT_2026_12_06, "train.global_weight=0.5"],
    # ... or with stochastic depth in the context encoder (0 → 0.1 over the blocks), the regulariser supervised ViTs
    # train long with: does a long run turn because nothing stops it fitting the pool's own predictions?
    "vicreg-free-0.7-lr1.5e-4-cov4-droppath0.1": [*DEFAULT_2026_12_06, "model.drop_path=0.1"],
    "vicreg-free-0.7-lr1.5e-4-cov4-droppath0.3": list(DEFAULT_2026_12_08),
    # 0.1 fell below the default at 80k and 0.3 held: is more better, or is 0.3 near the top of the curve?
    "vicreg-free-0.7-lr1.5e-4-cov4-droppath0.5": [*DEFAULT_2026_12_06, "model.drop_path=0.5"],
    # ... with the hinge and covariance on the content residual too (seventh round: the linear head's gain doubled,
    # the attentive one unchanged, before stochastic depth): do the two read-outs' remedies add up past 80k?
    "vicreg-free-0.7-lr1.5e-4-cov4-droppath0.3-regcontent": [*DEFAULT_2026_12_08, "train.reg_on=content"],
    # ... or with the encoder's weights pulled back towards their initialisation (L2-SP, lr × 5 × the distance per
    # step: a time constant of ~1,400 steps, about half an 80k run): the default's encoder is its init plus a 9 %
    # change at its 20k peak and 28 % at 80k, and its random init reads as well as any pretrained encoder with 4×
    # the labels. Does holding the change near the peak's size keep the peak's gain?
    "vicreg-free-0.7-lr1.5e-4-cov4-anchor5": [*DEFAULT_2026_12_06, "train.init_anchor=5.0"],
}
LABELLED = ("move_right", "rotate_cw", "approach", "oscillate")  # the demo's task
FRACTIONS = (0.5, 0.1, 0.4)


# ------------------------------------------------------------------------------------------- evaluation
class Evaluation:
    """The demo task's splits and the scoring of one encoder against the random-init one."""

    def __init__(self, args: argparse.Namespace, store: ArrayStore, labels: np.ndarray, twins: ArrayStore,
                 twin_idx: np.ndarray, seed: int, device: torch.device) -> None:
        self.args, self.store, self.labels, self.device, self.seed = args, store, labels, device, seed
        self.twins, self.twin_idx = twins, twin_idx
        names = list(LABELLED)
        split = stratified_split(labels, FRACTIONS, seed=seed, class_names=names)
        self.train, self.test = split["train"], split["test"]
        self.val_select, _ = validation_halves(split["val"], labels, seed, names)
        self.random: dict[str, Any] | None = None

    def features(self, encoder: VideoViT) -> Features:
        return extract_features(encoder.to(self.device).eval(), self.store, self.args.num_clips, keep_tokens=True,
                                progress=False, batch_size=256)

    def predictions(self, feats: Features) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
        """Test predictions (probe seeds × test videos) of every head setting — attentive, linear, attentive with
        k labelled videos per class — and the best epochs of its heads. Each probe seed trains the protocol's
        heads from its own initialisation and batch order on the same split; the first is the evaluation's seed
        (the one-probe-seed protocol)."""
        if self.args.centre_positions:
            feats = centred(feats, self.train)
        settings = [("attentive", self.train), ("linear", self.train)]
        settings += [(f"attentive@{k}", low_shot_subset(self.train, self.labels, k, self.seed))
                     for k in self.args.low_shot]
        out: dict[str, np.ndarray] = {}
        best_epochs: dict[str, list[int]] = {}
        for name, train in settings:
            head = name.split("@")[0]
            epochs = self.args.probe_epochs
            if self.args.low_shot_matched_steps:  # as many optimiser steps as the full training split's head
                epochs *= round(len(self.train) / len(train))
            preds, best_epochs[name] = [], []
            for probe_seed in probe_seeds(self.seed, self.args.probe_seeds):
                probe = ProbeConfig(head=head, epochs=epochs, num_clips=self.args.num_clips,
                                    seed=probe_seed, grid=PROBE_GRID)
                trained = train_head(feats, self.labels, train, self.val_select, len(LABELLED), probe,
                                     device=self.device)
                probs = head_probabilities(trained.head.to(self.device), feats, self.test, head, self.args.num_clips)
                preds.append(probs.argmax(1))
                best_epochs[name] += trained.member_epochs
            out[name] = np.stack(preds)
        return out, best_epochs

    def diagnostics(self, encoder: VideoViT, feats: Features) -> dict[str, float]:
        tokens = torch.from_numpy(feats.tokens[self.test].astype(np.float32))  # (V, K, N, D)
        clip_means = torch.from_numpy(feats.pooled[self.test].mean(axis=1))
        flat = tokens.reshape(-1, *tokens.shape[-2:])
        return {"local_share": local_share(flat), "position_share": position_share(flat),
                "token_rank": effective_rank(tokens), "clip_rank": effective_rank(clip_means),
                "std": feature_std(tokens), "actor_sensitivity": self.actor_sensitivity(encoder, feats)}

    def actor_sensitivity(self, encoder: VideoViT, feats: Features) -> float:
        """Mean squared change of a token when the actor is removed from its clip, over the tokens' variance
        across clips at the same position: 0 when the encoder ignores the actor."""
        twin = self.features_of(encoder, self.twins)
        full = feats.tokens[self.twin_idx].astype(np.float32)  # (V, K, N, D)
        change = ((full - twin.tokens.astype(np.float32)) ** 2).sum(-1).mean()
        spread = full.var(axis=0).sum(-1).mean()
        return float(change / max(spread, 1e-12))

    def features_of(self, encoder: VideoViT, store: ArrayStore) -> Features:
        return extract_features(encoder.to(self.device).eval(), store, self.args.num_clips, keep_tokens=True,
                                progress=False, batch_size=256)

    def score(self, encoder: VideoViT) -> dict[str, Any]:
        feats = self.features(encoder)
        preds, epochs = self.predictions(feats)
        diag = self.diagnostics(encoder, feats)
        if self.random is None:  # the first encoder scored is the random-init one
            self.random = {"preds": preds, "diag": diag, "epochs": epochs}
            return {}
        y = self.labels[self.test]
        row: dict[str, Any] = {"diagnostics": diag, "random_diagnostics": self.random["diag"],
                               "probe_seeds": self.args.probe_seeds, "centre_positions": self.args.centre_positions,
                               "low_shot_matched_steps": self.args.low_shot_matched_steps}
        for name, pred in preds.items():
            # the heads' best epochs (of the epochs given): a head that keeps its last epoch wanted more
            row[name] = {**seed_averaged_gain(y, pred, self.random["preds"][name], self.seed),
                         "best_epochs": epochs[name], "random_best_epochs": self.random["epochs"][name]}
        return row


def probe_seeds(seed: int, count: int) -> list[int]:
    """The evaluation's seed, then ``count - 1`` seeds derived from it on a stream of their own (not the one the grid
    derives its heads' seeds from)."""
    return [seed] + [int(np.random.SeedSequence([seed, 104729, i]).generate_state(1)[0]) for i in range(1, count)]


def centred(feats: Features, train: np.ndarray) -> Features:
    """Tokens minus each position's mean over the training videos' clips (no labels used): a position's fixed
    offset carries nothing about the clip, yet an attentive head's LayerNorm and attention see it whole."""
    offset = feats.tokens[train].astype(np.float32).mean(axis=(0, 1))  # (N, D)
    tokens = (feats.tokens.astype(np.float32) - offset).astype(feats.tokens.dtype)
    return dataclasses.replace(feats, tokens=tokens, pooled=feats.pooled - offset.mean(axis=0))


def seed_averaged_gain(y: np.ndarray, pretrained: np.ndarray, random_init: np.ndarray, seed: int,
                       n_resamples: int = 2000) -> dict[str, Any]:
    """Accuracy gain of (probe seeds × videos) predictions over the random-init ones, averaged over probe seeds,
    with a paired, class-stratified bootstrap interval over test videos (each video's correctness averaged over
    probe seeds first); ``gains``: each probe seed's own gain. One probe seed gives the protocol's usual gap."""
    if len(pretrained) == 1:
        gap = paired_bootstrap_gap(y, pretrained[0], random_init[0], n_resamples=n_resamples, seed=seed)
        acc_p, acc_r = float((pretrained[0] == y).mean()), float((random_init[0] == y).mean())
        return {"pretrained": acc_p, "random_init": acc_r, "gain": gap["mean"], "ci95": gap["ci95"],
                "gains": [gap["mean"]]}
    diff = (pretrained == y).mean(axis=0) - (random_init == y).mean(axis=0)  # per video
    rng = np.random.default_rng(seed)
    means = np.zeros(n_resamples)
    for c in np.unique(y):
        d = diff[y == c]
        means += rng.choice(d, size=(n_resamples, len(d)), replace=True).sum(axis=1)
    means /= len(y)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"pretrained": float((pretrained == y).mean()), "random_init": float((random_init == y).mean()),
            "gain": float(diff.mean()), "ci95": [float(lo), float(hi)],
            "gains": [float((p == y).mean() - (r == y).mean()) for p, r in zip(pretrained, random_init, strict=True)]}


# ------------------------------------------------------------------------------------------- study
def recipe_config(args: argparse.Namespace, recipe: str, seed: int) -> Config:
    cfg = load_config(args.preset, overrides=[*BASE, *RECIPES[recipe], *args.extra])
    cfg.train.seed = seed
    cfg.train.device = args.device
    return cfg


def append(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def summary_line(row: dict[str, Any]) -> str:
    parts = [f"{row['recipe']:22s} seed {row['seed']} {row['kind']:7s} {row['clip_steps']:>7d}"]
    for name in ("attentive", "linear", *[k for k in row if k.startswith("attentive@")]):
        if name in row:
            r = row[name]
            spread = f" ±{100 * np.std(r['gains']):.1f}" if len(r.get("gains", [])) > 1 else ""
            parts.append(f"{name} {100 * r['pretrained']:.1f} vs {100 * r['random_init']:.1f} "
                         f"({100 * r['gain']:+.1f}{spread})")
    d = row["diagnostics"]
    position = d.get("position_share", float("nan"))
    # the three shares split the token variance: what is left is the clips' mean tokens (what tells clips apart)
    parts.append(f"local {d['local_share']:.2f} position {position:.2f} clip {1 - d['local_share'] - position:.2f} "
                 f"actor {d['actor_sensitivity']:.2f}")
    return " · ".join(parts)


def snapshot(args: argparse.Namespace, trainer: Trainer, meta: dict[str, Any], clip_steps: int) -> None:
    """With --snapshots DIR: the evaluated encoder as a run folder, for read-out studies after the fact."""
    if not args.snapshots:
        return
    from picojepa.train import checkpoint as ckpt

    size = args.pool_classes * args.pool_per_class
    pool = pool_variant(args) + (f"-pool{size}" if size != 600 else "")  # runs on other pool sizes never collide
    name = f"{meta['recipe']}{pool}-s{meta['seed']}-b{meta['budget']}-at{clip_steps}"
    out = Path(args.snapshots) / name
    out.mkdir(parents=True, exist_ok=True)
    ckpt.save_encoder(trainer.model.evaluation_encoder, out)
    ckpt.write_run_config(out, trainer.cfg, finished=True, steps=clip_steps // args.batch, clip_steps=clip_steps)


def pool_variant(args: argparse.Namespace) -> str:
    """What names a non-default pretraining pool apart (cache files, snapshot folders); empty for the demo's."""
    return f"-poolbg-{args.pool_background}" if args.pool_background != "static" else ""


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def rendered_data(args: argparse.Namespace, side: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray,
                                                                   torch.Tensor, np.ndarray]:
    """Pool, labelled set, labels, actor-less twins and their indices; from ``--data-cache`` when it holds
    them (parallel processes of one session render once)."""
    render = dict(size=80, frames=32, difficulty=args.difficulty, stride=2, side=side, workers=args.workers)
    key = f"{args.difficulty}-{side}-pool{args.pool_classes}x{args.pool_per_class}-lab{args.labelled_per_class}"
    key += pool_variant(args)
    cache = Path(args.data_cache) / f"{key}-t{args.twins}.npz" if args.data_cache else None
    if cache is not None and cache.exists():
        z = np.load(cache)
        return (torch.from_numpy(z["pool"]), torch.from_numpy(z["labelled"]), z["labels"],
                torch.from_numpy(z["twins"]), z["twin_idx"])
    pool, _ = render_set(CLASS_NAMES[: args.pool_classes], args.pool_per_class, 1, background=args.pool_background,
                         **render)
    labelled, labels = render_set(LABELLED, args.labelled_per_class, 2, **render)
    twin_idx = np.sort(np.random.default_rng(0).choice(len(labels), args.twins, replace=False))
    twins, _ = render_set(LABELLED, args.labelled_per_class, 2, actor=False, indices=list(twin_idx), **render)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, pool=pool.numpy(), labelled=labelled.numpy(), labels=labels, twins=twins.numpy(),
                 twin_idx=twin_idx)
        tmp.rename(cache)
    return pool, labelled, labels, twins, twin_idx


def run_study(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 as on the CPU
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    first = load_config(args.preset, overrides=[*BASE, *args.extra])
    pool, labelled, labels, twins, twin_idx = rendered_data(args, default_cache_side(first.model.img_size))
    print(f"{len(pool)} pool + {len(labelled)} labelled + {len(twins)} actor-less twins ready in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    if args.prepare_only:
        return
    bank, store, twin_store = pool.to(device), ArrayStore(labelled), ArrayStore(twins)
    machine = torch.cuda.get_device_name() if device.type == "cuda" else f"{mp.cpu_count()} CPU cores"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    budgets = sorted(args.budgets)
    common = {"preset": args.preset, "batch": args.batch, "pool_videos": len(pool), "labelled_videos": len(labels),
              "difficulty": args.difficulty, "pool_background": args.pool_background, "device": machine,
              "torch": torch.__version__, "python": platform.python_version(), "tag": args.tag}
    for seed in args.seeds:
        evaluation = Evaluation(args, store, labels, twin_store, twin_idx, seed, device)
        for recipe in args.recipes:
            cfg = recipe_config(args, recipe, seed)
            if evaluation.random is None:
                evaluation.score(initial_encoder(cfg))
            runs = budgets[-1:] if args.longest_only else sorted(budgets, reverse=True)
            for budget in runs:  # the longest first: its readings come soonest
                if time.perf_counter() - t0 > args.time_limit:
                    print(f"time limit: {recipe} seed {seed} budget {budget} and later runs skipped", flush=True)
                    return
                steps = max(1, budget // args.batch)
                meta = {**common, "recipe": recipe, "overrides": RECIPES[recipe] + args.extra, "seed": seed,
                        "budget": budget, "steps": steps}

                reading_seconds: list[float] = []

                def read(trainer: Trainer, step: int, meta: dict[str, Any] = meta,
                         spent: list[float] = reading_seconds, evaluation: Evaluation = evaluation) -> None:
                    t_read = time.perf_counter()
                    snapshot(args, trainer, meta, step * args.batch)
                    row = {**meta, "kind": "reading", "clip_steps": step * args.batch,
                           **evaluation.score(trainer.model.evaluation_encoder)}
                    append(out, row)
                    print(summary_line(row), flush=True)
                    spent.append(time.perf_counter() - t_read)

                readings = ({b // args.batch: read for b in budgets if b < budget} if budget == budgets[-1]
                            and args.readings else {})
                t = time.perf_counter()
                trainer = pretrain_in_memory(cfg, bank, steps, args.batch, device, readings)
                seconds = time.perf_counter() - t - sum(reading_seconds)
                snapshot(args, trainer, meta, steps * args.batch)
                row = {**meta, "kind": "final", "clip_steps": steps * args.batch, "train_seconds": round(seconds, 1),
                       "clips_per_s": round(steps * args.batch / seconds, 1),
                       **evaluation.score(trainer.model.evaluation_encoder),
                       "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                append(out, row)
                print(summary_line(row), flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s; rows appended to {out}", flush=True)


# ------------------------------------------------------------------------------------------- report
def load_rows(paths: list[str]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        rows += [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return rows


def setting(row: dict[str, Any]) -> str:
    """The recipe, with what differs from the demo's set-up (batch 32, 600-video pool, a CPU)."""
    extra = [f"batch {row['batch']}"] if row["batch"] != 32 else []
    extra += [f"{row['pool_videos']:,}-video pool"] if row["pool_videos"] != 600 else []
    extra += ["GPU"] if "CPU" not in row["device"] else []
    extra += ["pool backgrounds change every frame"] if row.get("pool_background", "static") != "static" else []
    return f"{row['recipe']} ({', '.join(extra)})" if extra else row["recipe"]


def report(args: argparse.Namespace) -> None:
    rows = load_rows(args.report)
    if args.only:
        keep = set(args.only.split(","))
        rows = [r for r in rows if r["recipe"] in keep]
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(setting(r), r["kind"], r["clip_steps"])].append(r)
    heads = ["attentive", "linear", *sorted({k for r in rows for k in r if k.startswith("attentive@")},
                                            key=lambda k: int(k.split("@")[1]))]
    lines = ["| recipe | run | clip-steps | seeds | " + " | ".join(f"{h} gain (pp)" for h in heads)
             + " | local share | actor sensitivity |", "|" + " --- |" * (6 + len(heads))]
    for (recipe, kind, steps), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "final", kv[0][2])):
        cells = []
        for h in heads:
            gains = [100 * r[h]["gain"] for r in rs if h in r]
            lows = [100 * r[h]["ci95"][0] for r in rs if h in r]
            if not gains:
                cells.append("—")
                continue
            per_seed = " / ".join(f"{g:+.1f}" for g in gains)
            excl = sum(lo > 0 for lo in lows)
            cells.append(f"**{np.mean(gains):+.1f}** ({per_seed}; CI>0 in {excl})")
        diag = np.mean([r["diagnostics"]["local_share"] for r in rs])
        actor = np.mean([r["diagnostics"]["actor_sensitivity"] for r in rs])
        lines.append(f"| {recipe} | {'separate' if kind == 'final' else 'inside the longest'} | {steps:,} | "
                     f"{len(rs)} | " + " | ".join(cells) + f" | {diag:.2f} | {actor:.2f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out_md:
        Path(args.out_md).write_text(table)
    if args.figure:
        figure(rows, args.figure)


def figure(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharex=True)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {name: palette[i % len(palette)] for i, name in enumerate(sorted({setting(r) for r in rows}))}
    for ax, head in zip(axes, ("attentive", "linear"), strict=True):
        by_recipe: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
        for r in rows:
            if r["kind"] == "final" and head in r:
                by_recipe[setting(r)][r["clip_steps"]].append(r)
        for recipe, by_steps in sorted(by_recipe.items()):
            steps = sorted(by_steps)
            mean = [100 * np.mean([r[head]["gain"] for r in by_steps[s]]) for s in steps]
            ax.plot(steps, mean, marker="o", label=recipe, color=colours[recipe])
            for s in steps:
                for r in by_steps[s]:
                    lo, hi = (100 * v for v in r[head]["ci95"])
                    ax.plot([s, s], [lo, hi], color=colours[recipe], alpha=0.25, lw=3)
        labelled = set(by_recipe)
        for (recipe, _seed), curve in sorted(inside_runs(rows, head).items()):  # one run read as it trains
            ax.plot(*zip(*curve, strict=True), ls="--", lw=1, marker=".", color=colours[recipe],
                    label=None if recipe in labelled else f"{recipe}, inside one run")
            labelled.add(recipe)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("pretraining clip-steps")
        ax.set_ylabel(f"{head} gain over random init (pp)")
        ax.set_title(f"{head} head (dots: separate runs, mean over seeds, bars: each\nseed's 95 % CI; dashed: "
                     "one run read as it trains)", fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    print(f"figure written to {path}")


def inside_runs(rows: list[dict[str, Any]], head: str) -> dict[tuple[str, int], list[tuple[int, float]]]:
    """(setting, seed) → [(clip-steps, gain pp)] of each run read at smaller budgets, ending with its final."""
    curves: dict[tuple[str, int], list[tuple[int, float]]] = defaultdict(list)
    longest: dict[tuple[str, int], int] = {}
    for r in rows:
        if r["kind"] == "reading" and head in r:
            curves[(setting(r), r["seed"])].append((r["clip_steps"], 100 * r[head]["gain"]))
            longest[(setting(r), r["seed"])] = r["budget"]
    for r in rows:
        key = (setting(r), r["seed"])
        if r["kind"] == "final" and head in r and longest.get(key) == r["budget"]:
            curves[key].append((r["clip_steps"], 100 * r[head]["gain"]))
    return {k: sorted(v) for k, v in curves.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", default="pico")
    ap.add_argument("--recipes", default="vicreg-ema", help=f"comma-separated, from: {', '.join(RECIPES)}")
    ap.add_argument("--only", default="", help="--report: only these recipes (comma-separated)")
    ap.add_argument("--extra", action="append", default=[], help="override applied to every recipe")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budgets", default="10000,20000,40000,80000", help="clip-steps, one separate run each")
    ap.add_argument("--no-readings", dest="readings", action="store_false",
                    help="do not read the longest run at the smaller budgets")
    ap.add_argument("--longest-only", action="store_true",
                    help="one run per recipe and seed, at the largest budget, read at the others (a quick screen)")
    ap.add_argument("--data-cache", help="folder for the rendered arrays (reused by later or parallel runs)")
    ap.add_argument("--prepare-only", action="store_true", help="render (into --data-cache) and stop")
    ap.add_argument("--snapshots", help="folder to save every evaluated encoder in (as run folders)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--difficulty", default="medium")
    ap.add_argument("--pool-background", choices=BACKGROUNDS, default="static",
                    help="changing: the pretraining pool's background patterns are drawn anew in every frame (the "
                         "slow-feature lead); the labelled set the probes read is the demo's, static, either way")
    ap.add_argument("--pool-classes", type=int, default=12)
    ap.add_argument("--pool-per-class", type=int, default=50)
    ap.add_argument("--labelled-per-class", type=int, default=400)
    ap.add_argument("--twins", type=int, default=128, help="test videos re-rendered without their actor")
    ap.add_argument("--low-shot", default="10,25")
    ap.add_argument("--probe-epochs", type=int, default=40)
    ap.add_argument("--num-clips", type=int, default=2)
    ap.add_argument("--probe-seeds", type=positive_int, default=1,
                    help="train every head setting from this many seeds and average the gains (a steadier reading)")
    ap.add_argument("--centre-positions", action="store_true",
                    help="probe tokens minus each position's mean over the training videos (a read-out study)")
    ap.add_argument("--low-shot-matched-steps", action="store_true",
                    help="low-shot heads train for as many steps as the full-data head (more epochs; a read-out study)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--workers", type=int, default=mp.cpu_count())
    ap.add_argument("--time-limit", type=float, default=1e9, help="start no run after this many seconds")
    ap.add_argument("--out", default=f"bench/results/{datetime.now(timezone.utc):%Y-%m-%d}-scaling.jsonl")
    ap.add_argument("--tag", default="")
    ap.add_argument("--report", nargs="+", help="JSON-lines files to summarise instead of running")
    ap.add_argument("--out-md")
    ap.add_argument("--figure")
    args = ap.parse_args()
    check_recipes(RECIPES, BASE)
    if args.report:
        report(args)
        return
    args.recipes = args.recipes.split(",")
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.budgets = [int(b) for b in args.budgets.split(",")]
    args.low_shot = [int(k) for k in args.low_shot.split(",") if k]
    run_study(args)


if __name__ == "__main__":
    main()
