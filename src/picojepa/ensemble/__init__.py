"""Ensembles of pico-JEPA members: splits and shards, aggregation, evaluation and reports.

The orchestration that trains members and writes reports lives one floor up, in
:mod:`picojepa.experiment`.
"""

from .aggregation import (
    HARD_VOTE_TIE_RULE,
    METHODS,
    Ensemble,
    PrecomputedMember,
    best_single_member,
    hard_vote,
    oracle_accuracy,
    soft_vote,
    vote_fractions,
)

__all__ = [
    "HARD_VOTE_TIE_RULE",
    "METHODS",
    "Ensemble",
    "PrecomputedMember",
    "best_single_member",
    "hard_vote",
    "oracle_accuracy",
    "soft_vote",
    "vote_fractions",
]
