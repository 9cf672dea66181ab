"""``[adversarial]``: adversarial training and the ``robust`` job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .checks import check_bool, check_choice, check_int, check_number, normalize

ATTACK_KINDS: tuple[str, ...] = ("fgsm", "pgd")
ATTACK_NORMS: tuple[str, ...] = ("linf", "l2")


@dataclass(frozen=True)
class AdversarialConfig:
    """The attack of adversarial training (``train.adversarial``) and of ``qlandscape robust``
    (Prabhu et al.; Madry et al. 2018). ``kind`` "fgsm" or "pgd", ``norm`` "linf" or "l2", radius ``epsilon``
    >= 0 in the units of the model's inputs (standardized features for digits), ``steps`` >= 1 PGD steps of
    ``step_size`` > 0 (unset: ``2.5 * epsilon / steps``; FGSM: ``epsilon``), ``random_start``, ``clamp``
    "data" (inputs kept within the data's [min, max]) or "none"; robust accuracy is measured with
    ``eval_steps`` >= 1 PGD steps of the same kind of attack. epsilon-sharpness: the largest loss increase in
    the filter-normalized ball of relative radius ``sharpness_epsilon`` > 0, ``sharpness_steps`` >= 1 steps of
    projected gradient ascent."""

    kind: str = "pgd"
    norm: str = "linf"
    epsilon: float = 0.3
    steps: int = 7
    step_size: Optional[float] = None
    random_start: bool = True
    clamp: str = "data"
    eval_steps: int = 20
    sharpness_epsilon: float = 0.05
    sharpness_steps: int = 20

    def __post_init__(self) -> None:
        normalize(self)
        s = "adversarial"
        check_choice(s, "kind", self.kind, ATTACK_KINDS)
        check_choice(s, "norm", self.norm, ATTACK_NORMS)
        check_number(s, "epsilon", self.epsilon, low=0)
        check_int(s, "steps", self.steps, 1)
        check_number(s, "step_size", self.step_size, positive=True, optional="2.5 * epsilon / steps")
        check_bool(s, "random_start", self.random_start)
        check_choice(s, "clamp", self.clamp, ("data", "none"))
        check_int(s, "eval_steps", self.eval_steps, 1)
        check_number(s, "sharpness_epsilon", self.sharpness_epsilon, positive=True)
        check_int(s, "sharpness_steps", self.sharpness_steps, 1)
