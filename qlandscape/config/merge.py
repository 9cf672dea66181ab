"""``[merge]``: the ``merge`` job (barriers before and after permutation alignment)."""

from __future__ import annotations

from dataclasses import dataclass

from .checks import check_choice, check_int, check_int_list, fail, normalize

MERGE_ALIGNMENTS: tuple[str, ...] = ("weight", "activation")


@dataclass(frozen=True)
class MergeConfig:
    """``qlandscape merge``: two models of the configured architecture trained from different ``seeds`` (two
    distinct integers >= 0: initialization and minibatch order), the loss / 0-1 error barriers on the straight
    line between them (``n_points`` >= 3) before and after aligning the second to the first with each of
    ``align`` (distinct "weight", "activation"; empty: no alignment), on the ``split`` ("test" or "train")."""

    seeds: tuple[int, ...] = (0, 1)
    align: tuple[str, ...] = MERGE_ALIGNMENTS
    n_points: int = 21
    split: str = "test"

    def __post_init__(self) -> None:
        normalize(self)
        s = "merge"
        check_int_list(s, "seeds", self.seeds, 0, distinct=True, example="[0, 1]")
        if len(self.seeds) != 2:
            fail(s, "seeds", self.seeds, "a list of two distinct integers >= 0, e.g. [0, 1]")
        a = self.align
        if not (isinstance(a, tuple) and all(isinstance(v, str) and v in MERGE_ALIGNMENTS for v in a)
                and len(set(a)) == len(a)):
            fail(s, "align", a, f"a list of distinct methods from {list(MERGE_ALIGNMENTS)} (may be empty)")
        check_int(s, "n_points", self.n_points, 3)
        check_choice(s, "split", self.split, ("test", "train"))
