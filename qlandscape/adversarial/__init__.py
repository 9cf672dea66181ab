"""Adversarial robustness: input-space attacks (FGSM, PGD), robust accuracy, and the
epsilon-sharpness of the loss in weight space (Keskar et al. 2017)."""

from .attacks import (
    ATTACK_KINDS,
    ATTACK_NORMS,
    Attack,
    RobustEvaluation,
    eval_mode,
    robust_accuracy,
    robust_evaluate,
    valid_range,
)
from .sharpness import SharpnessResult, epsilon_sharpness, sharpness_groups

__all__ = ["ATTACK_KINDS", "ATTACK_NORMS", "Attack", "RobustEvaluation", "eval_mode", "robust_accuracy",
           "robust_evaluate", "valid_range", "SharpnessResult", "epsilon_sharpness", "sharpness_groups"]
