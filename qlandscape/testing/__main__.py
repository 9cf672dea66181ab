"""Run the conformance suite on a user's model from the command line (as PennyLane's ``pl-device-test``).

    python -m qlandscape.testing mypkg.models:make_model --input-shape 64 --classes 10
    python -m qlandscape.testing path/to/models.py:make_model --input-shape 1 28 28 --loss mse
    python -m qlandscape.testing mypkg.models:make_case          # returns (model, loss, (x, y)[, reference])

``FACTORY`` is ``module:function`` (an importable module or a ``.py`` file); the function is called with no
arguments and returns either

* an ``nn.Module``: the suite builds a random batch of ``--samples`` inputs of shape ``--input-shape`` (float,
  standard normal, ``--seed``) with targets for ``--loss`` (class labels ``0..--classes-1`` for cross-entropy;
  standard-normal targets of the model's output shape for ``mse``), or
* a tuple ``(model, loss, (x, y))`` or ``(model, loss, (x, y), reference)``, or a dict with those keys
  (``reference``: ``theta (n,) -> scalar`` full-data mean loss written independently of the engine; its
  dense Hessian is then the HVP reference).

Prints :meth:`ConformanceReport.summary`; exit code 0 when every check passes, 1 when one fails, 2 for bad
arguments or a factory that cannot be loaded or returns something else (one line naming the way out).
``--json PATH`` also writes the report (every check's error, tolerance and detail).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

DTYPES = ("float64", "float32")


class UsageError(ValueError):
    """A bad factory or argument (exit code 2)."""


def load_factory(spec: str) -> Callable[[], Any]:
    """``"pkg.mod:func"`` or ``"file.py:func"`` -> the callable (UsageError naming the problem)."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"FACTORY must be 'module:function' or 'file.py:function', got {spec!r}")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise UsageError(f"no such file: {path}")
        name = f"_qlandscape_factory_{path.stem}"  # not the bare stem: a file named json.py must not shadow json
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise UsageError(f"cannot import {path}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        mod_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UsageError(f"cannot import module {module_name!r} ({exc}); is it installed, or on PYTHONPATH?") \
                from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UsageError(f"{module_name!r} has no callable {attr!r}")
    return factory


def _random_batch(model: Any, loss: str, input_shape: Sequence[int], classes: Optional[int], samples: int,
                  seed: int) -> tuple[Any, Any]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, *input_shape, generator=gen, dtype=torch.float64)
    if loss == "cross_entropy":
        if classes is None or classes < 2:
            raise UsageError("--classes (>= 2) is needed to build cross-entropy targets")
        return x, torch.randint(0, classes, (samples,), generator=gen)
    with torch.no_grad():
        out = _forward_copy(model, x)
    return x, torch.randn(out.shape, generator=gen, dtype=torch.float64)


def _forward_copy(model: Any, x: Any) -> Any:
    """The output of a float64 copy in eval mode (the model under test is left untouched)."""
    import copy

    m = copy.deepcopy(model).double().eval()
    return m(x)


def _case(obj: Any, args: argparse.Namespace) -> tuple[Any, Any, tuple[Any, Any], Optional[Callable[..., Any]]]:
    from torch import nn

    if isinstance(obj, nn.Module):
        if not args.input_shape:
            raise UsageError("the factory returned a bare model: give --input-shape (one sample's shape, e.g. "
                             "'--input-shape 64' or '--input-shape 1 28 28'), or return (model, loss, (x, y))")
        return obj, args.loss, _random_batch(obj, args.loss, args.input_shape, args.classes, args.samples,
                                             args.seed), None
    if isinstance(obj, dict):
        missing = [k for k in ("model", "loss", "data") if k not in obj]
        if missing:
            raise UsageError(f"the factory's dict lacks {missing}; it needs model, loss, data (and may have "
                             "reference)")
        obj = (obj["model"], obj["loss"], obj["data"]) + ((obj["reference"],) if "reference" in obj else ())
    if isinstance(obj, tuple) and len(obj) in (3, 4) and isinstance(obj[0], nn.Module):
        data = obj[2]
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise UsageError("data must be a pair (inputs, targets)")
        return obj[0], obj[1], (data[0], data[1]), (obj[3] if len(obj) == 4 else None)
    raise UsageError(f"the factory returned {type(obj).__name__}; return an nn.Module, (model, loss, (x, y)), "
                     "(model, loss, (x, y), reference) or a dict with those keys")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m qlandscape.testing",
                                 description="Run qlandscape's conformance suite on a model factory.")
    ap.add_argument("factory", help="module:function or file.py:function returning the model (or a case)")
    ap.add_argument("--input-shape", type=int, nargs="+", help="one sample's input shape (bare-model factories)")
    ap.add_argument("--classes", type=int, default=None, help="number of classes (cross-entropy targets)")
    ap.add_argument("--loss", default="cross_entropy", choices=("cross_entropy", "mse"),
                    help="loss for bare-model factories (default cross_entropy)")
    ap.add_argument("--samples", type=int, default=8, help="batch size of the random batch (default 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float64", choices=DTYPES, help="objective dtype (default float64)")
    ap.add_argument("--no-train-check", action="store_true", help="skip the one-epoch qlandscape.train check")
    ap.add_argument("--json", type=Path, default=None, help="also write the report as JSON to this path")
    args = ap.parse_args(argv)
    try:
        if args.samples < 1:
            raise UsageError(f"--samples must be >= 1, got {args.samples}")
        if args.input_shape and min(args.input_shape) < 1:
            raise UsageError(f"--input-shape entries must be >= 1, got {args.input_shape}")
        factory = load_factory(args.factory)
        model, loss, data, reference = _case(factory(), args)
    except UsageError as exc:
        print(f"python -m qlandscape.testing: error: {exc}", file=sys.stderr)
        return 2
    import torch

    from .conformance import check_model

    report = check_model(model, loss, data, reference=reference, dtype=getattr(torch, args.dtype),
                         seed=args.seed, train_check=not args.no_train_check)
    print(report.summary())
    if args.json is not None:
        args.json.write_text(json.dumps({
            "model": report.model, "passed": report.passed, "factory": args.factory,
            "checks": [{"name": c.name, "passed": c.passed, "error": c.error, "tol": c.tol, "detail": c.detail}
                       for c in report.checks]}, indent=2, default=str))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
