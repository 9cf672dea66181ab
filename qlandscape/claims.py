"""Claims decided from intervals by a rule fixed before the run: PASS, FAIL or INCONCLUSIVE.

A notebook states each claim, its effect size and its :class:`Rule` *before* it runs anything; after the
run, :func:`check` turns the :class:`~qlandscape.stats.Estimate` into a verdict:

* ``Rule(below=t)`` -- the claim "the effect is below t": PASS when the whole interval is below ``t``
  (``hi < t``), FAIL when the whole interval is at or above it (``lo >= t``), INCONCLUSIVE when the interval
  contains ``t`` or there is no interval (fewer than 3 seeds);
* ``Rule(above=t)`` -- the mirror image (PASS when ``lo > t``, FAIL when ``hi <= t``);
* ``Rule(within=(a, b))`` -- the claim "the effect is in [a, b]": PASS when the whole interval is inside,
  FAIL when it is wholly outside (``hi < a`` or ``lo > b``), INCONCLUSIVE otherwise.

A claim made of several parts ("lambda_max falls at *every* step of the patch axis, at *every* depth") is
:func:`all_of` its parts: PASS when every part passes (an intersection-union test, valid at the parts'
level without correction), FAIL when some part fails at the Bonferroni level ``1 - (1 - level) / k`` for
``k`` parts (so that k chances do not inflate the error of a FAIL), INCONCLUSIVE otherwise.

A *consistency check* (:func:`consistency`) is a line that holds by construction when the code is right
(variance ~ 1/P^2 under mean aggregation, weight matching lowering a barrier, two routes giving the same
number): it tests the library, not the paper, is printed apart from the claims as ``OK`` / ``VIOLATED``,
and never as PASS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Optional, Sequence

from .stats import Estimate

__all__ = ["Check", "Consistency", "Rule", "Verdict", "all_of", "check", "consistency", "report_lines",
           "rows"]

Verdict = Literal["PASS", "FAIL", "INCONCLUSIVE"]


@dataclass(frozen=True)
class Rule:
    """A claim's decision rule: the effect is below ``below``, above ``above`` or within ``within`` (exactly
    one is given).

    Attributes
    ----------
    below, above : float, optional
        The threshold (the effect's own units: 1 for a ratio, 0 for a difference or a slope).
    within : (float, float), optional
        A closed range ``(a, b)``, ``a < b``.
    """

    below: Optional[float] = None
    above: Optional[float] = None
    within: Optional[tuple[float, float]] = None

    def __post_init__(self) -> None:
        given = [x for x in (self.below, self.above, self.within) if x is not None]
        if len(given) != 1:
            raise ValueError("a Rule needs exactly one of below=, above= or within= (the claim: effect < t, "
                             "effect > t or a <= effect <= b)")
        ends = list(self.within) if self.within is not None else given
        if not all(isinstance(t, (int, float)) and math.isfinite(float(t)) for t in ends):
            raise ValueError(f"the rule's threshold must be finite numbers, got {given[0]!r}")
        if self.within is not None and not (len(self.within) == 2 and self.within[0] < self.within[1]):
            raise ValueError(f"within= needs (a, b) with a < b, got {self.within!r}")

    @property
    def threshold(self) -> float:
        """The threshold of a below/above rule (the range's midpoint for within)."""
        if self.within is not None:
            return 0.5 * (self.within[0] + self.within[1])
        return float(self.below if self.below is not None else self.above)  # type: ignore[arg-type]

    def symbol(self) -> str:
        """``"< 1"``, ``"> 0.5"`` or ``"in [8, 11]"``."""
        if self.within is not None:
            return f"in [{self.within[0]:g}, {self.within[1]:g}]"
        return f"{'<' if self.below is not None else '>'} {self.threshold:g}"

    def describe(self) -> str:
        if self.within is not None:
            a, b = self.within
            return f"PASS if the interval is inside [{a:g}, {b:g}], FAIL if it is wholly outside"
        t = f"{self.threshold:g}"
        if self.below is not None:
            return f"PASS if the interval is below {t}, FAIL if it is at or above {t}"
        return f"PASS if the interval is above {t}, FAIL if it is at or below {t}"

    def decide(self, lo: float, hi: float) -> Verdict:
        """The verdict for the interval ``[lo, hi]`` (``nan`` ends: INCONCLUSIVE)."""
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return "INCONCLUSIVE"
        if self.within is not None:
            a, b = self.within
            return "PASS" if a <= lo and hi <= b else "FAIL" if hi < a or lo > b else "INCONCLUSIVE"
        t = self.threshold
        if self.below is not None:
            return "PASS" if hi < t else "FAIL" if lo >= t else "INCONCLUSIVE"
        return "PASS" if lo > t else "FAIL" if hi <= t else "INCONCLUSIVE"


@dataclass(frozen=True)
class Check:
    """A decided claim.

    Attributes
    ----------
    name : str
        The claim as a sentence.
    effect : str
        What the number is, e.g. ``"lambda(9) / lambda(4)"``.
    estimate : Estimate, optional
        The effect and its interval (``None`` for a composite claim, whose parts carry them).
    rule : Rule, optional
        The rule it was decided by (``None`` for a composite).
    verdict : {"PASS", "FAIL", "INCONCLUSIVE"}
    parts : tuple of Check
        The parts of a composite claim (:func:`all_of`).
    note : str
        Why a verdict is INCONCLUSIVE beyond the interval (e.g. runs not converged), or other context.
    """

    name: str
    effect: str
    estimate: Optional[Estimate]
    rule: Optional[Rule]
    verdict: Verdict
    parts: tuple["Check", ...] = ()
    note: str = ""

    def lines(self, indent: str = "") -> list[str]:
        """The verdict line (and the parts' lines, indented)."""
        if self.estimate is not None and self.rule is not None:
            e = self.estimate
            n = "/".join(str(k) for k in e.n)
            body = f"{self.effect} = {e.format()} ({e.level:.0%}, {e.method}, n {n}; rule: {self.rule.symbol()})"
        else:
            counts = {v: sum(p.verdict == v for p in self.parts) for v in ("PASS", "FAIL", "INCONCLUSIVE")}
            body = f"{self.effect}: all of {len(self.parts)} parts ({', '.join(f'{k} {v}' for k, v in counts.items())})"
        out = [f"{indent}{self.verdict:<12s} {self.name}  [{body}]" + (f"  ({self.note})" if self.note else "")]
        for p in self.parts:
            out += p.lines(indent + "    ")
        return out


@dataclass(frozen=True)
class Consistency:
    """A line that must hold when the code is right (not a claim): ``ok`` and the numbers behind it."""

    name: str
    ok: bool
    detail: str = ""

    def lines(self, indent: str = "") -> list[str]:
        return [f"{indent}{'OK' if self.ok else 'VIOLATED':<12s} (consistency) {self.name}"
                + (f"  [{self.detail}]" if self.detail else "")]


def check(name: str, estimate: Estimate, rule: Rule, *, effect: str = "effect", inconclusive_if: str = "") -> Check:
    """Decide one claim.

    Parameters
    ----------
    name : str
        The claim, as a sentence.
    estimate : Estimate
        Its effect size and interval.
    rule : Rule
        The rule fixed before the run.
    effect : str
        What the effect is, for the printed line.
    inconclusive_if : str
        Non-empty: a reason, known before looking at the effect, why the runs cannot decide the claim (e.g.
        "2 of 10 runs did not reach train loss 0.5"); the verdict is then INCONCLUSIVE and the reason printed.
    """
    verdict = rule.decide(estimate.lo, estimate.hi) if estimate.has_interval else "INCONCLUSIVE"
    note = ""  # without an interval (fewer than MIN_SAMPLES values) the estimate's method says so
    if inconclusive_if:
        verdict, note = "INCONCLUSIVE", inconclusive_if
    return Check(name, effect, estimate, rule, verdict, note=note)


def _at_level(part: Check, level: float) -> Verdict:
    if part.parts:  # a nested composite fails when one of its parts fails at this level
        return "FAIL" if any(_at_level(p, level) == "FAIL" for p in part.parts) else part.verdict
    assert part.estimate is not None and part.rule is not None
    if part.note and part.verdict == "INCONCLUSIVE":
        return "INCONCLUSIVE"
    lo, hi = part.estimate.interval(level)
    return part.rule.decide(lo, hi)


def all_of(name: str, parts: Sequence[Check], *, effect: str = "every part", note: str = "") -> Check:
    """A claim that holds when all of its parts hold (module docstring: PASS when all pass, FAIL when one
    fails at the Bonferroni level, else INCONCLUSIVE)."""
    parts = tuple(parts)
    if not parts:
        raise ValueError("all_of needs at least one part")
    if all(p.verdict == "PASS" for p in parts):
        verdict: Verdict = "PASS"
    else:
        k = len(parts)
        levels = [p.estimate.level for p in parts if p.estimate is not None]
        level = 1.0 - (1.0 - (min(levels) if levels else 0.95)) / k
        verdict = "FAIL" if any(_at_level(p, level) == "FAIL" for p in parts) else "INCONCLUSIVE"
    return Check(name, effect, None, None, verdict, parts, note)


def consistency(name: str, ok: bool, detail: str = "") -> Consistency:
    """A consistency check (module docstring)."""
    return Consistency(name, bool(ok), detail)


def report_lines(claims: Iterable[Check], checks: Iterable[Consistency] = ()) -> list[str]:
    """Claims first, then the consistency checks under their own heading."""
    out = ["Claims (verdicts from intervals, rules fixed before the run):"]
    for c in claims:
        out += c.lines("  ")
    consistency_checks = list(checks)
    if consistency_checks:
        out.append("Consistency checks (hold by construction when the code is right; not evidence for a claim):")
        for k in consistency_checks:
            out += k.lines("  ")
    return out


def rows(claims: Iterable[Check], checks: Iterable[Consistency] = ()) -> list[dict[str, Any]]:
    """Flat rows for a CSV file: one per claim and per part (``part_of`` names the composite), then one per
    consistency check (``kind="consistency"``, verdict ``OK`` / ``VIOLATED``)."""
    out: list[dict[str, Any]] = []

    def add(c: Check, parent: str) -> None:
        row: dict[str, Any] = {"kind": "claim", "claim": c.name, "part_of": parent, "verdict": c.verdict,
                               "effect": c.effect, "rule": c.rule.describe() if c.rule else "all parts",
                               "note": c.note}
        row.update(c.estimate.to_dict() if c.estimate else {"value": None, "lo": None, "hi": None})
        out.append(row)
        for p in c.parts:
            add(p, c.name)

    for c in claims:
        add(c, "")
    for k in checks:
        out.append({"kind": "consistency", "claim": k.name, "part_of": "", "verdict": "OK" if k.ok else "VIOLATED",
                    "effect": "", "rule": "holds by construction", "note": k.detail})
    return out

