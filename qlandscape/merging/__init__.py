"""Permutation alignment (Git Re-Basin) and weight-space merging of two networks."""

from .align import AlignmentResult, align_weights, check_same_architecture, hidden_activations, weight_similarity
from .merge import MergeResult, average_weights, interpolation_barriers
from .permutation import (
    SUPPORTED,
    PermutationSpec,
    apply_permutations,
    check_permutations,
    identity_permutations,
    permutation_spec,
    permute_state,
    random_permutations,
)

__all__ = ["AlignmentResult", "align_weights", "check_same_architecture", "hidden_activations", "weight_similarity",
           "MergeResult", "average_weights", "interpolation_barriers", "SUPPORTED", "PermutationSpec",
           "apply_permutations", "check_permutations", "identity_permutations", "permutation_spec", "permute_state",
           "random_permutations"]
