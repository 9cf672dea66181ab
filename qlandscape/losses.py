"""Per-sample losses and metrics.

The engine sums per-sample losses over chunks and divides by the dataset's denominator
itself, so an uneven last batch is weighted correctly and ``reduction`` is a property of
the :class:`~qlandscape.objective.Objective`, never of the loss function. What "per sample"
means for each kind of loss specification, and how a torch loss module's own ``reduction``
is honoured, is stated in :func:`make_loss`.

Every per-sample loss and metric is checked on every call: it must return shape ``(B,)``
for a batch of ``B`` samples (a callable that averages over the batch, such as
``F.cross_entropy`` with its default ``reduction="mean"``, would otherwise divide every
result by ``N`` without a trace).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PerSampleLoss = Callable[[Tensor, Tensor], Tensor]
"""``(outputs (B, ...), targets (B, ...)) -> per-sample losses (B,)``."""

TargetWeight = Callable[[Tensor], Tensor]
"""``targets (B, ...) -> (B,)``: each sample's share of the denominator of a mean."""

LossSpec = Union[str, nn.Module, PerSampleLoss, "LossFunction"]
"""A loss: a name (``"cross_entropy"``, ...), a torch loss module, a per-sample callable or a :class:`LossFunction`."""

BatchReduction = Literal["mean", "sum"]

IGNORE_INDEX = -100
"""torch's default ``ignore_index`` of ``F.cross_entropy`` / ``F.nll_loss``."""

# Losses whose 'none' output has one entry per output element and whose target has the
# output's shape: torch broadcasts mismatched shapes here (with a warning, or silently), so
# a (B, 1) output against a (B,) target would become a (B, B) loss matrix.
_ELEMENTWISE: tuple[type, ...] = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.BCELoss,
                                  nn.BCEWithLogitsLoss, nn.KLDivLoss, nn.SoftMarginLoss, nn.PoissonNLLLoss,
                                  nn.HingeEmbeddingLoss, nn.MultiLabelSoftMarginLoss)
_CLASS_INDEX: tuple[type, ...] = (nn.CrossEntropyLoss, nn.NLLLoss)

_FIX = ("the engine needs one loss per sample, shape (B,) (a batch mean would divide every result by "
        "N without a trace): pass reduction='none' to a functional loss "
        "(lambda out, y: F.cross_entropy(out, y, reduction='none')), reduce any non-batch dimensions "
        "yourself, or give a loss name ('cross_entropy', 'nll', 'mse', 'bce_with_logits') or a torch "
        "loss module (nn.CrossEntropyLoss())")


def _batch_size(y: Tensor) -> int:
    if not isinstance(y, Tensor) or y.dim() == 0:
        raise ValueError("targets must be a tensor with a batch dimension, got "
                         f"{type(y).__name__ if not isinstance(y, Tensor) else 'a 0-d tensor'}")
    return int(y.shape[0])


def _check_per_sample(values: object, y: Tensor, name: str, what: str) -> Tensor:
    """``values`` if it is a tensor of shape ``(B,)``, else a ValueError naming the fix."""
    B = _batch_size(y)
    shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
    if not isinstance(values, Tensor) or tuple(values.shape) != (B,):
        raise ValueError(f"the {what} {name!r} returned shape {shape} for a batch of {B} samples; {_FIX}"
                         if what == "loss" else
                         f"the {what} {name!r} returned shape {shape} for a batch of {B} samples; a "
                         f"per-sample {what} must have shape ({B},)")
    return values


def _reduce_sample(per_element: Tensor, how: Literal["mean", "sum"] = "mean") -> Tensor:
    """Reduce a ``(B, ...)`` per-element tensor to ``(B,)`` over the non-batch dims."""
    if per_element.dim() <= 1:
        return per_element
    flat = per_element.reshape(per_element.shape[0], -1)
    return flat.mean(dim=1) if how == "mean" else flat.sum(dim=1)


def _mean_over_sample(per_element: Tensor) -> Tensor:
    """Reduce a ``(B, ...)`` per-element loss to ``(B,)`` by averaging the non-batch dims."""
    return _reduce_sample(per_element, "mean")


def match_target(out: Tensor, y: Tensor, name: str) -> Tensor:
    """Targets for an elementwise loss, shaped like the outputs ``out`` (shape ``(B, ...)``).

    A target may differ from the output only by size-1 dimensions (a ``(B,)`` target for a
    ``(B, 1)`` output); anything else would broadcast into a different, plausible-looking
    number (a ``(B,)`` target against a ``(B, 3)`` output), so it raises ValueError.
    """
    if y.shape == out.shape:
        return y
    if (out.dim() >= 1 and y.dim() >= 1 and out.shape[0] == y.shape[0]
            and [s for s in out.shape[1:] if s != 1] == [s for s in y.shape[1:] if s != 1]):
        return y.reshape(out.shape)
    raise ValueError(f"loss {name!r}: targets of shape {tuple(y.shape)} do not match model outputs of shape "
                     f"{tuple(out.shape)}; an elementwise loss needs one target per output element (torch would "
                     "broadcast the two into a different number). Reshape the targets or the model's output")


def _float_target(out: Tensor, y: Tensor) -> Tensor:
    return y if y.is_floating_point() else y.to(out.dtype)


def _cross_entropy(out: Tensor, y: Tensor) -> Tensor:
    return _mean_over_sample(F.cross_entropy(out, y, reduction="none"))


def _nll(out: Tensor, y: Tensor) -> Tensor:
    return _mean_over_sample(F.nll_loss(out, y, reduction="none"))


def _mse(out: Tensor, y: Tensor) -> Tensor:
    return _mean_over_sample(F.mse_loss(out, match_target(out, y, "mse").to(out.dtype), reduction="none"))


def _bce_logits(out: Tensor, y: Tensor) -> Tensor:
    return _mean_over_sample(F.binary_cross_entropy_with_logits(
        out, match_target(out, y, "bce_with_logits").to(out.dtype), reduction="none"))


def _class_dim_argmax(out: Tensor) -> Tensor:
    # torch's class dimension is 1 for (B, C, d1, ...) outputs (and the last one for (B, C))
    return out.argmax(dim=1 if out.dim() >= 2 else -1)


def _accuracy_classes(ignore_index: int = IGNORE_INDEX) -> PerSampleLoss:
    """Per-sample accuracy of a classifier: the fraction of a sample's positions whose argmax
    over the class dimension equals the target (targets equal to ``ignore_index`` count as
    neither right nor wrong: see :func:`_valid_share`)."""

    def accuracy(out: Tensor, y: Tensor) -> Tensor:
        pred = _class_dim_argmax(out)
        if y.is_floating_point() and y.shape == out.shape and out.dim() >= 2:  # class probabilities
            target, valid = y.argmax(dim=1), None
        else:
            target, valid = y, y != ignore_index
        if pred.shape != target.shape:
            raise ValueError(f"accuracy: the predicted classes have shape {tuple(pred.shape)} (argmax over dim 1 of "
                             f"outputs {tuple(out.shape)}) but the targets have shape {tuple(y.shape)}")
        hits = pred == target
        if valid is not None:
            hits = hits & valid
        return _mean_over_sample(hits.to(out.dtype))

    return accuracy


def _accuracy_argmax(out: Tensor, y: Tensor) -> Tensor:
    return _accuracy_classes()(out, y)


def _accuracy_sign(out: Tensor, y: Tensor) -> Tensor:
    target = match_target(out, y, "accuracy")
    return _mean_over_sample(((out > 0).to(out.dtype) == target.to(out.dtype)).to(out.dtype))


def _valid_share(ignore_index: int) -> TargetWeight:
    """Fraction of a sample's positions whose target is not ``ignore_index`` (shape ``(B,)``)."""

    def share(y: Tensor) -> Tensor:
        if y.is_floating_point():  # class probabilities: every sample counts 1
            return torch.ones(_batch_size(y), dtype=torch.float64, device=y.device)
        return _mean_over_sample((y != ignore_index).to(torch.float64))

    return share


def _class_weight_share(weight: Optional[Tensor], ignore_index: int) -> TargetWeight:
    """Each sample's share of the denominator of torch's ``'mean'`` for CrossEntropyLoss /
    NLLLoss: ``weight[y]`` averaged over the sample's positions, 0 where ``y == ignore_index``.
    With class-probability (floating) targets torch averages over positions: share 1."""

    def share(y: Tensor) -> Tensor:
        if y.is_floating_point():
            return torch.ones(_batch_size(y), dtype=torch.float64, device=y.device)
        valid = y != ignore_index
        if weight is None:
            w = valid.to(torch.float64)
        else:
            wt = weight.detach().to(y.device, torch.float64)
            w = torch.where(valid, wt[torch.where(valid, y, torch.zeros_like(y))], torch.zeros((), dtype=torch.float64))
        return _mean_over_sample(w)

    return share


_NAMED: dict[str, tuple[PerSampleLoss, Optional[PerSampleLoss], Optional[TargetWeight], Optional[TargetWeight]]] = {
    "cross_entropy": (_cross_entropy, _accuracy_argmax, _valid_share(IGNORE_INDEX), _valid_share(IGNORE_INDEX)),
    "nll": (_nll, _accuracy_argmax, _valid_share(IGNORE_INDEX), _valid_share(IGNORE_INDEX)),
    "mse": (_mse, None, None, None),
    "bce_with_logits": (_bce_logits, _accuracy_sign, None, None),
}


@dataclass(frozen=True)
class ClassTargets:
    """What the targets of a class-index loss (cross-entropy, NLL) may be.

    Attributes
    ----------
    ignore_index : int
        The target value the loss skips (torch's default -100).
    probabilities : bool
        Whether floating targets of the outputs' shape (class probabilities) are accepted too
        (cross-entropy: yes; NLL: no).
    """

    ignore_index: int = IGNORE_INDEX
    probabilities: bool = False


def _check_class_targets(spec: ClassTargets, name: str, out: Tensor, targets: Iterable[Tensor], what: str) -> None:
    """Raise ValueError unless every target tensor holds class indices in ``0..C-1`` (``C`` = the size
    of the outputs' class dimension 1) or ``spec.ignore_index``, or, where accepted, class probabilities
    of the outputs' shape. Sample numbers in messages count across the tensors, in order."""
    if out.dim() < 2:
        return  # (B,) outputs have no class dimension: the per-sample shape check reports them
    C = int(out.shape[1])
    lo: Optional[int] = None
    hi: Optional[int] = None
    first_bad: Optional[tuple[int, int]] = None
    offset = 0
    for y in targets:
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            if spec.probabilities and y.is_floating_point() and tuple(y.shape[1:]) == tuple(out.shape[1:]):
                offset += int(y.shape[0])
                continue  # class probabilities
            probs = (f", or class probabilities of the outputs' shape (B, {', '.join(map(str, out.shape[1:]))})"
                     if spec.probabilities else "")
            raise ValueError(f"loss {name!r} needs integer class indices 0..{C - 1} as {what}, got {y.dtype} {what} "
                             f"of shape {tuple(y.shape)}; convert them with y.long(){probs}")
        valid = y != spec.ignore_index
        if bool(valid.any()):
            vals = y[valid]
            lo = int(vals.min()) if lo is None else min(lo, int(vals.min()))
            hi = int(vals.max()) if hi is None else max(hi, int(vals.max()))
        bad = valid & ((y < 0) | (y >= C))
        if first_bad is None and bool(bad.any()):
            row = int(bad.reshape(int(y.shape[0]), -1).any(dim=1).nonzero()[0, 0])
            first_bad = (offset + row, int(y[row].reshape(-1)[bad[row].reshape(-1)][0]))
        offset += int(y.shape[0])
    if first_bad is not None:
        sample, value = first_bad
        assert lo is not None and hi is not None  # a bad target is a valid (non-ignored) one
        fix = (f"fix the labels, or give the model {hi + 1} outputs (n_classes={hi + 1})" if value >= C
               else "fix the labels (negative classes are invalid)")
        raise ValueError(f"loss {name!r}: the {what} hold class {value} (sample {sample}; labels span {lo}..{hi}) "
                         f"but the model has {C} outputs, so classes must be in 0..{C - 1} (or ignore_index="
                         f"{spec.ignore_index}); {fix}")


_NAMED_CLASSES: dict[str, ClassTargets] = {"cross_entropy": ClassTargets(IGNORE_INDEX, probabilities=True),
                                            "nll": ClassTargets(IGNORE_INDEX, probabilities=False)}


def _checked(fn: PerSampleLoss, name: str, what: str) -> PerSampleLoss:
    if getattr(fn, "_qlandscape_checked", False):
        return fn

    def checked(out: Tensor, y: Tensor) -> Tensor:
        return _check_per_sample(fn(out, y), y, name, what)

    checked._qlandscape_checked = True  # type: ignore[attr-defined]
    checked.__name__ = getattr(fn, "__name__", name)
    checked.__wrapped__ = fn  # type: ignore[attr-defined]
    return checked


@dataclass(frozen=True)
class LossFunction:
    """A per-sample loss with an optional per-sample metric (accuracy for classifiers).

    Attributes
    ----------
    name : str
        Human-readable name recorded in result provenance.
    per_sample : callable
        ``(outputs (B, ...), targets (B, ...)) -> (B,)`` losses (checked on every call).
    metric : callable or None
        ``(outputs, targets) -> (B,)`` per-sample metric in ``[0, 1]`` (accuracy), or None.
    weight : callable or None
        ``targets (B, ...) -> (B,)``: each sample's share of the denominator of a mean, for
        losses whose torch ``'mean'`` is not a plain average over samples (class weights,
        ``ignore_index``); None: every sample counts 1.
    metric_weight : callable or None
        The same for the metric (targets equal to ``ignore_index`` count 0).
    reduction : {"mean", "sum"}
        How torch's own loss combines the per-sample losses of a batch: ``"sum"`` for a module
        built with ``reduction="sum"``, else ``"mean"`` (a :class:`~qlandscape.objective.Objective`
        with ``reduction="mean"`` refuses a ``"sum"`` loss, whose torch value is a sum).
    reference : callable or None
        The torch module with its own reduction, ``(outputs, targets) -> scalar``: used once,
        at objective construction, to check that the per-sample decomposition reproduces it.
    classes : ClassTargets or None
        For class-index losses (cross-entropy, NLL by name or as torch modules): what their targets
        may be, checked by :meth:`check_targets`; None for other losses.
    """

    name: str
    per_sample: PerSampleLoss
    metric: Optional[PerSampleLoss] = None
    weight: Optional[TargetWeight] = None
    metric_weight: Optional[TargetWeight] = None
    reduction: BatchReduction = "mean"
    reference: Optional[Callable[[Tensor, Tensor], Tensor]] = None
    classes: Optional[ClassTargets] = None

    def __post_init__(self) -> None:
        if self.reduction not in ("mean", "sum"):
            raise ValueError(f"LossFunction.reduction must be 'mean' or 'sum', got {self.reduction!r}")
        object.__setattr__(self, "per_sample", _checked(self.per_sample, self.name, "loss"))
        if self.metric is not None:
            object.__setattr__(self, "metric", _checked(self.metric, self.name, "metric"))

    def denominator(self, y: Tensor) -> Tensor:
        """Per-sample shares ``(B,)`` (float64) of the denominator of this loss's mean."""
        if self.weight is None:
            return torch.ones(_batch_size(y), dtype=torch.float64, device=y.device)
        return _check_per_sample(self.weight(y), y, self.name, "denominator weight").to(torch.float64)

    def metric_denominator(self, y: Tensor) -> Tensor:
        """Per-sample shares ``(B,)`` (float64) of the denominator of the mean metric."""
        if self.metric_weight is None:
            return torch.ones(_batch_size(y), dtype=torch.float64, device=y.device)
        return _check_per_sample(self.metric_weight(y), y, self.name, "metric weight").to(torch.float64)

    def batch_loss(self, out: Tensor, y: Tensor) -> Tensor:
        """The loss of one batch as torch's own loss reduces it (scalar): ``sum(per_sample)``
        for a ``"sum"`` loss, else ``sum(per_sample) / sum(denominator)`` (the plain mean over
        samples unless class weights or ignored targets make torch's mean a weighted one)."""
        values = self.per_sample(out, y)
        if self.reduction == "sum":
            return values.sum()
        return values.sum() / self.denominator(y).sum().to(values.dtype)

    def check_targets(self, out: Tensor, targets: Iterable[Tensor], what: str = "targets") -> None:
        """Check the targets of a class-index loss before any expensive work.

        Parameters
        ----------
        out : Tensor, shape (b, C, ...)
            Model outputs on a few samples (their class dimension 1 gives ``C``).
        targets : iterable of Tensor
            Every target tensor to be used (e.g. all chunks), first dimension the samples.
        what : str
            How messages name them ("targets", "training targets").

        Raises
        ------
        ValueError
            For targets that are not integer class indices in ``0..C-1`` (or ``ignore_index``),
            unless they are class probabilities of the outputs' shape and the loss accepts them
            (cross-entropy). Losses without class-index targets accept anything here.
        """
        if self.classes is not None:
            _check_class_targets(self.classes, self.name, out, targets, what)

    def check_reduction(self, objective_reduction: str) -> None:
        """Refuse an objective that averages over samples a loss whose torch value is a sum."""
        if self.reduction == "sum" and objective_reduction == "mean":
            raise ValueError(
                f"the loss {self.name} sums over the batch (reduction='sum'), but the objective averages over "
                "samples (reduction='mean'), which would give 1/N of torch's value. Pass reduction='sum' to the "
                "Objective to reproduce torch's sum; or build the module with reduction='mean'; or, for the mean "
                "over samples of per-sample sums, pass a callable such as "
                "lambda out, y: F.mse_loss(out, y, reduction='none').flatten(1).sum(1)")

    def check_against_reference(self, out: Tensor, y: Tensor) -> None:
        """Compare :meth:`batch_loss` with torch's own value of the module on one batch.

        Raises
        ------
        ValueError
            If they differ beyond rounding: the module's reduction cannot be decomposed into
            per-sample losses (then pass a per-sample callable instead).
        """
        if self.reference is None:
            return
        ours = self.batch_loss(out, y)
        with torch.no_grad():
            theirs = self.reference(out, y)
        if not isinstance(theirs, Tensor) or theirs.dim() != 0:
            return  # reduction='none': no scalar of torch's to compare with
        a, b = float(ours), float(theirs)
        if not (math.isfinite(a) and math.isfinite(b)):
            return  # non-finite values are reported where they are used
        eps = torch.finfo(out.dtype).eps if out.is_floating_point() else torch.finfo(torch.float64).eps
        rtol = min(1e-2, max(1e-12, 1e4 * eps))
        scale = float(self.per_sample(out, y).abs().sum() / max(float(self.denominator(y).sum()), 1e-300))
        if not math.isclose(a, b, rel_tol=rtol, abs_tol=rtol * scale):
            raise ValueError(
                f"cannot reproduce torch's value of the loss module {self.name} from per-sample losses "
                f"({a!r} here vs {b!r} from the module itself on the first samples): its reduction is not a "
                "(weighted) mean or sum of per-sample losses. Pass a callable returning per-sample losses (B,)")


def _module_loss(spec: nn.Module, metric: Optional[PerSampleLoss]) -> LossFunction:
    own = getattr(spec, "reduction")
    if own not in ("mean", "sum", "none", "batchmean"):
        raise ValueError(f"{type(spec).__name__} has reduction={own!r}; expected 'mean', 'sum', 'none' or "
                         "(KLDivLoss) 'batchmean'")
    if own == "batchmean" and not isinstance(spec, nn.KLDivLoss):
        raise ValueError(f"reduction='batchmean' is only defined for nn.KLDivLoss, got {type(spec).__name__}")
    module = copy.deepcopy(spec)
    setattr(module, "reduction", "none")  # every torch loss module has it (checked above); untyped on nn.Module
    name = type(spec).__name__
    # within a sample: summed for 'sum' and 'batchmean' (= sum / batch size), else averaged
    within: Literal["mean", "sum"] = "sum" if own in ("sum", "batchmean") else "mean"
    elementwise = isinstance(spec, _ELEMENTWISE)
    weight: Optional[TargetWeight] = None
    metric_weight: Optional[TargetWeight] = None
    default_metric: Optional[PerSampleLoss] = None
    classes: Optional[ClassTargets] = None
    if isinstance(spec, _CLASS_INDEX):
        ignore_index = int(getattr(spec, "ignore_index", IGNORE_INDEX))
        classes = ClassTargets(ignore_index, probabilities=isinstance(spec, nn.CrossEntropyLoss))
        weight = _class_weight_share(getattr(spec, "weight", None), ignore_index)
        metric_weight = _valid_share(ignore_index)
        default_metric = _accuracy_classes(ignore_index)
    elif isinstance(spec, nn.BCEWithLogitsLoss):
        default_metric = _accuracy_sign

    def per_sample(out: Tensor, y: Tensor) -> Tensor:
        if elementwise:
            y = _float_target(out, match_target(out, y, name))
        values = module(out, y)
        if not isinstance(values, Tensor) or values.dim() == 0:
            raise ValueError(f"{name} with reduction='none' returned a scalar; it does not give per-element "
                             f"losses, so its reduction cannot be taken apart. {_FIX}")
        if values.numel() > max(out.numel(), y.numel()):
            raise ValueError(f"{name}: outputs {tuple(out.shape)} and targets {tuple(y.shape)} were broadcast "
                             f"to a loss of shape {tuple(values.shape)}; make the targets match the outputs")
        return _reduce_sample(values, within)

    reference: Optional[Callable[[Tensor, Tensor], Tensor]] = None
    if own != "none":
        def reference(out: Tensor, y: Tensor) -> Tensor:
            if elementwise:
                y = _float_target(out, match_target(out, y, name))
            return spec(out, y)

    return LossFunction(name, per_sample, metric if metric is not None else default_metric, weight=weight,
                        metric_weight=metric_weight if metric is None else None,
                        reduction="sum" if own == "sum" else "mean", reference=reference, classes=classes)


def make_loss(spec: LossSpec, metric: Optional[PerSampleLoss] = None) -> LossFunction:
    """Normalize a loss specification into per-sample losses.

    Parameters
    ----------
    spec : str, nn.Module or callable
        * a name: ``"cross_entropy"``, ``"nll"`` (as ``nn.CrossEntropyLoss()`` /
          ``nn.NLLLoss()``: targets equal to -100 are ignored, also in the mean's
          denominator), ``"mse"``, ``"bce_with_logits"`` (a ``(B,)`` target is accepted for
          a ``(B, 1)`` output; other shape mismatches raise instead of broadcasting);
        * a torch loss module with a ``reduction`` attribute (``nn.CrossEntropyLoss()``, ...),
          copied with ``reduction="none"`` (the given module is not modified);
        * a callable ``(outputs (B, ...), targets (B, ...)) -> (B,)`` returning one loss per
          sample (``lambda o, y: F.cross_entropy(o, y, reduction="none")``). A callable that
          returns anything else (a batch mean such as plain ``F.cross_entropy``) raises
          ValueError at the first call.
    metric : callable, optional
        Per-sample metric overriding the default (accuracy for classification losses).

    Notes
    -----
    **The module's own reduction is honoured**, so that ``Objective(model, module, (x, y),
    reduction=r)`` reproduces torch's ``module(model(x), y)``:

    ============================  ========================  ===================================
    module ``reduction``          per-sample loss           matches torch's value with
    ============================  ========================  ===================================
    ``"mean"`` (torch default)    mean over the sample's    ``Objective(reduction="mean")``
                                  elements
    ``"sum"``                     sum over the sample's     ``Objective(reduction="sum")``;
                                  elements                  ``reduction="mean"`` is refused
    ``"batchmean"`` (KLDivLoss)   sum over elements         ``Objective(reduction="mean")``
    ``"none"``                    mean over elements        (torch gives no scalar)
    ============================  ========================  ===================================

    ``Objective(reduction="sum")`` with a ``"mean"`` module sums the per-sample losses (``N``
    times torch's mean for an unweighted loss). For CrossEntropyLoss / NLLLoss with class
    ``weight`` or ignored targets (``ignore_index``), torch's ``"mean"`` divides by the sum of
    the targets' class weights (non-ignored ones), not by ``N``: the per-sample loss is then
    the weighted loss and the objective's mean divides by that same dataset-wide sum
    (:attr:`LossFunction.weight`), so it still equals torch's value, and its ``"sum"`` equals
    torch's ``reduction="sum"``. For elementwise losses (MSELoss, L1Loss, SmoothL1Loss,
    HuberLoss, BCE(WithLogits)Loss, KLDivLoss, ...) targets must have the output's shape up
    to size-1 dimensions, and integer targets are converted to the output dtype. Any other
    module is decomposed the same way and, once at objective construction, compared with
    torch's own value on the first samples (:meth:`LossFunction.check_against_reference`):
    a reduction that is no (weighted) mean or sum of per-sample losses raises ValueError.

    Raises
    ------
    ValueError
        For an unknown loss name or reduction.
    TypeError
        For a spec that is neither a name, a loss module nor a callable.
    """
    if isinstance(spec, LossFunction):
        if metric is None:
            return spec
        return LossFunction(spec.name, spec.per_sample, metric, weight=spec.weight, metric_weight=None,
                            reduction=spec.reduction, reference=spec.reference, classes=spec.classes)
    if isinstance(spec, str):
        if spec not in _NAMED:
            raise ValueError(f"unknown loss {spec!r}; choose one of {sorted(_NAMED)} "
                             "or pass a callable returning per-sample losses")
        fn, default_metric, weight, metric_weight = _NAMED[spec]
        return LossFunction(spec, fn, metric if metric is not None else default_metric, weight=weight,
                            metric_weight=metric_weight if metric is None else None, classes=_NAMED_CLASSES.get(spec))
    if isinstance(spec, nn.Module) and hasattr(spec, "reduction"):
        return _module_loss(spec, metric)
    if callable(spec):
        return LossFunction(getattr(spec, "__name__", type(spec).__name__), spec, metric)
    raise TypeError(f"loss must be a name, a torch loss module or a callable, got {type(spec).__name__}")
