"""The empirical neural tangent kernel (Fort et al. 2020) of any torch model, through the engine's model adapter.

Definitions
-----------
For a model ``f(x; theta)`` with ``C`` outputs (logits) and the flat vector ``theta`` (``P`` entries) of the
selected parameters, ``J(x) = d f(x) / d theta`` is a ``(C, P)`` matrix. On inputs ``x_1 .. x_N``:

* the **full** empirical NTK is the ``(N*C, N*C)`` Gram matrix
  ``K[(i, c), (j, d)] = J(x_i)[c] . J(x_j)[d]``, indexed **sample-major**: row ``i*C + c`` is sample ``i``,
  output ``c`` (so ``K.reshape(N, C, N, C)[i, c, j, d]`` is that entry);
* the **output-traced** NTK is the ``(N, N)`` matrix ``K_tr[i, j] = sum_c J(x_i)[c] . J(x_j)[c]``, the
  **sum** over outputs of the diagonal ``(c, c)`` entries. neural-tangents' ``trace_axes`` takes the *mean*
  over outputs instead: its traced kernel is this one divided by ``C``.

Routes (``implementation``)
---------------------------
``"structured"``
    For models whose selected parameters all belong to ``nn.Linear`` and ``nn.Conv2d`` modules (anything else
    in between acts as a fixed function: activations, pooling, Flatten, modules whose parameters are not
    selected). Forward hooks record each layer's input ``a_l`` and output; one ``torch.autograd.grad`` per output
    class ``c`` of ``sum_i f_i[c]`` with respect to the layers' outputs gives ``delta_l`` (``(N, C, out_l)``, or
    ``(N, C, Cout, Ho, Wo)`` for a conv) for all samples at once (this assumes samples do not interact and each
    layer sees row ``i`` of its input from sample ``i``). For a Linear layer no per-sample Jacobian is formed:
    ``K[(i, c), (j, d)] += (delta_l[i, c] . delta_l[j, d]) * (w_l * a_l[i] . a_l[j] + b_l)`` with
    ``w_l``/``b_l`` = 1 when the layer's weight/bias is selected (0 otherwise), work ``N^2 C^2 out_l`` instead of
    ``N^2 C^2 (in_l + 1) out_l``. For a Conv2d (``groups=1``, zero padding, any stride/dilation/``'same'``) the
    per-sample weight Jacobian is ``delta (Cout, L) @ unfold(a)^T (L, Cin*kh*kw)`` per sample and class (one
    batched matmul, no autograd per sample); the conv layers' Jacobians are contracted by one matrix product.
    Refused (ValueError naming ``"jacobian"``) for selected parameters in other modules (BatchNorm, ...),
    grouped or non-zero-padded convs, a layer called more than once per forward, a parameter shared between
    modules, layer inputs that are not ``(batch, in_features)`` / ``(batch, channels, h, w)``, or when the
    gradients rebuilt from the layer factors disagree with autograd's (one extra backward pass; a weight used
    outside its module's forward, or samples that interact).
``"jacobian"``
    Per block of points, ``torch.func.vmap`` over samples of ``jacrev`` (``jacfwd`` when ``P < C``: forward
    mode costs ``P`` pushes per sample, reverse mode ``C`` pulls) of the per-sample output
    ``theta -> apply(theta, x_i[None])[0]``. Needs ``Capabilities.torch_func``.
``"autograd"``
    The generic first-order route (any model, e.g. adjoint-differentiated QNodes on lightning simulators
    whose capabilities say ``torch_func=False``): per sample a forward pass and ``C`` calls of
    ``torch.autograd.grad`` (one per output, ``retain_graph``). Only first derivatives are needed, so
    ``autograd_order >= 1`` (always true) suffices.
``"auto"``
    ``"structured"`` when the model's module types allow it, else ``"jacobian"`` when the model declares
    ``torch_func``, else ``"autograd"``. Checks that only the forward pass reveals (a Linear called twice,
    the gradient check) also send ``"auto"`` on to the general routes.

Memory
------
Every route computes the kernel block pair by block pair ``(a, b)`` with ``b <= a`` only (``K_ab = J_a J_b^T``;
the upper blocks are mirrored, so ``K`` is exactly symmetric). A block holds ``block_size`` points; by default
one block's features (the Jacobian ``(block_size, C, P)``, or the structured route's factors) take at most
256 MiB (at least one point), and the points are split into at least ``MIN_BLOCKS`` = 8 blocks while a block
keeps ``MIN_BLOCK_ROWS`` = 320 kernel rows (8 blocks do 9/16 of the full product). Block features are kept for
reuse while their total stays within 1 GiB; blocks beyond that are recomputed when needed (then peak memory is
two blocks' features plus the kernel, at the cost of extra passes). The ``structured`` route keeps only the
Linear layers' inputs and output derivatives (``N * (C * out_l + in_l)`` numbers each) and the conv layers'
per-sample Jacobians.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Literal, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import jacfwd, jacrev, vmap

from ..adapter import CapabilityError, ModelAdapter
from ..objective import resolve_dtype
from ..params import ParamSelector
from ..progress import progress_bar

Kind = Literal["full", "trace"]
Implementation = Literal["auto", "structured", "jacobian", "autograd"]

KINDS: tuple[str, ...] = ("full", "trace")
IMPLEMENTATIONS: tuple[str, ...] = ("auto", "structured", "jacobian", "autograd")
MODES: tuple[str, ...] = ("eval", "train")

BLOCK_BYTES = 256 * 2**20
"""Default bound on one block's Jacobian ``(block_size, C, P)`` in bytes (jacobian/autograd routes)."""
CACHE_BYTES = 2**30
"""Block Jacobians kept for reuse across block pairs, in bytes; beyond it blocks are recomputed."""
MIN_BLOCKS = 8
"""By default the points are split into at least this many blocks (when blocks keep ``MIN_BLOCK_ROWS`` rows):
only block pairs ``b <= a`` are contracted, so ``n`` blocks do ``(n + 1) / (2 n)`` of the full product."""
MIN_BLOCK_ROWS = 320
"""Smallest default block in kernel rows (points x ``C`` for the full kernel, points for the traced one):
smaller blocks make the block products inefficient."""

_BATCH_NORMS = (nn.modules.batchnorm._BatchNorm,)


class _NotStructured(ValueError):
    """The structured route does not apply to this model (the reason is the message)."""


def empirical_ntk(model: nn.Module, inputs: Tensor, *, kind: Kind = "full", implementation: Implementation = "auto",
                  dtype: Union[torch.dtype, str, None] = torch.float64, params: ParamSelector = None,
                  block_size: Optional[int] = None, mode: Literal["eval", "train"] = "eval",
                  progress: bool = True) -> Tensor:
    """Empirical neural tangent kernel of ``model`` on ``inputs``.

    Parameters
    ----------
    model : nn.Module
        Any torch model mapping ``(N, ...)`` inputs to ``(N, C)`` outputs. It is only read: its parameters,
        buffers, ``training`` flags and ``requires_grad`` flags are unchanged afterwards.
    inputs : Tensor, shape (N, ...)
        ``N >= 1`` samples.
    kind : {"full", "trace"}
        ``"full"``: the ``(N*C, N*C)`` kernel, sample-major (row ``i*C + c``). ``"trace"``: the ``(N, N)``
        kernel summed (not averaged) over the outputs, ``K_tr[i, j] = sum_c J(x_i)[c] . J(x_j)[c]``.
    implementation : {"auto", "structured", "jacobian", "autograd"}
        See the module docstring; all agree to rounding (about 1e-12 relative in float64).
    dtype : torch.dtype, str or None
        Floating dtype of parameters, buffers, inputs and the result (default float64; names such as
        ``"float32"`` accepted); None keeps the model's.
    params : ParamSelector
        Which parameters ``theta`` covers (default: all with ``requires_grad``); see
        :func:`qlandscape.params.select_parameter_names`. The others stay fixed at their values.
    block_size : int, optional
        Points per block (bounds memory; see the module docstring for the default).
    mode : {"eval", "train"}
        Module mode during evaluation (default eval: Dropout off, BatchNorm with running statistics).
        ``"train"`` is refused for models with Dropout (random) or BatchNorm (batch statistics couple the
        samples, so per-sample Jacobians are undefined); buffers are private copies either way.
    progress : bool
        Progress bar over block pairs (also disabled by ``QLANDSCAPE_PROGRESS=0``).

    Returns
    -------
    Tensor
        Shape ``(N*C, N*C)`` for ``kind="full"``, ``(N, N)`` for ``kind="trace"``; dtype ``dtype``; exactly
        symmetric.

    Raises
    ------
    ValueError
        Bad arguments, empty inputs, outputs not of shape ``(N, C)``, ``"structured"`` on a model it does not
        apply to (the message names ``"jacobian"``).
    CapabilityError
        ``"jacobian"`` on a model that does not declare ``torch.func`` support (the message names
        ``"autograd"``).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {list(KINDS)}")
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {implementation!r}; choose one of {list(IMPLEMENTATIONS)}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {list(MODES)}")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1):
        raise ValueError(f"block_size must be a positive int or None, got {block_size!r}")
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a torch.Tensor of shape (N, ...), got {type(inputs).__name__}")
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must have shape (N, ...) with N >= 1, got shape {tuple(inputs.shape)}")

    adapter = ModelAdapter(model, params, resolve_dtype(dtype))
    x = adapter.cast(inputs)
    adapter.probe(x[:1])
    train = mode == "train"
    if train:
        if adapter.capabilities.stochastic:
            raise ValueError("mode='train' with a random module (Dropout) makes the kernel random; use mode='eval'")
        if any(isinstance(m, _BATCH_NORMS) for m in model.modules()):
            raise ValueError("mode='train' with BatchNorm: batch statistics couple the samples, so per-sample "
                             "Jacobians are undefined; use mode='eval'")

    with adapter.mode(train):
        C = _output_dim(adapter, x, train)
        P = adapter.n_params
        route = implementation
        if route == "structured":
            layers = _structured_layers(adapter, probe_only=False)
            assert layers is not None
            return _structured(adapter, x, C, layers, kind, block_size, train, progress)
        if route == "auto":
            layers = _structured_layers(adapter, probe_only=True)
            if layers is not None:
                try:
                    return _structured(adapter, x, C, layers, kind, block_size, train, progress)
                except _NotStructured:
                    pass  # found during the forward pass (a Linear called twice, ...): a general route
            route = "jacobian" if adapter.capabilities.torch_func else "autograd"
        if route == "jacobian" and not adapter.capabilities.torch_func:
            raise CapabilityError("implementation='jacobian' needs torch.func transforms, which this model does not "
                                  f"declare ({'; '.join(adapter.capabilities.notes)}); use implementation="
                                  "'autograd' (or 'auto')")
        itemsize = torch.empty((), dtype=adapter.dtype).element_size()
        bs = block_size or _default_block(int(x.shape[0]), C * P * itemsize, C if kind == "full" else 1)
        compute = _jacobian_fn(adapter, C, P, train) if route == "jacobian" else _autograd_fn(adapter, C, P, train)
        pair = _pair_full if kind == "full" else _pair_trace
        return _block_pairs(x, bs, compute, pair, C if kind == "full" else 1, CACHE_BYTES, progress)


# ---------------------------------------------------------------------------------------------- common pieces
def _buffers(adapter: ModelAdapter, train: bool) -> Optional[dict[str, Tensor]]:
    """Private buffer copies in train mode (nothing leaks into the adapter's), the adapter's own in eval."""
    return {k: v.clone() for k, v in adapter.buffers.items()} if train else None


def _output_dim(adapter: ModelAdapter, x: Tensor, train: bool) -> int:
    """Number of outputs ``C``, checking on the first (up to two) samples that outputs are ``(n, C)``."""
    n = min(2, int(x.shape[0]))
    with torch.no_grad():
        out = adapter.apply(adapter.theta0, x[:n], _buffers(adapter, train))
    if not isinstance(out, Tensor):
        raise ValueError(f"the model must return a tensor of shape (N, C), got {type(out).__name__}")
    if out.dim() != 2 or out.shape[0] != n:
        raise ValueError(f"the model must return outputs of shape (N, C); on {n} sample(s) of shape "
                         f"{tuple(x.shape[1:])} it returned shape {tuple(out.shape)} (reshape scalar outputs to "
                         "(N, 1))")
    if out.shape[1] == 0:
        raise ValueError(f"the model returned shape {tuple(out.shape)}: no outputs (C = 0)")
    return int(out.shape[1])


def _default_block(n_points: int, bytes_per_point: int, rows_per_point: int) -> int:
    """Default points per block: one block's features within ``BLOCK_BYTES`` (at least one point), and at most
    ``ceil(N / MIN_BLOCKS)`` points unless that gives fewer than ``MIN_BLOCK_ROWS`` kernel rows."""
    cap = max(1, BLOCK_BYTES // max(1, bytes_per_point))
    return min(cap, max(-(-MIN_BLOCK_ROWS // rows_per_point), -(-n_points // MIN_BLOCKS)))


def _pair_full(Ja: Tensor, Jb: Tensor) -> Tensor:
    """``(Ba*C, Bb*C)`` block of the full kernel from block Jacobians ``(Ba, C, P)``, ``(Bb, C, P)``."""
    return Ja.reshape(-1, Ja.shape[-1]) @ Jb.reshape(-1, Jb.shape[-1]).T


def _pair_trace(Ja: Tensor, Jb: Tensor) -> Tensor:
    """``(Ba, Bb)`` block of the traced kernel: flattening ``(C, P)`` sums over outputs."""
    return Ja.reshape(Ja.shape[0], -1) @ Jb.reshape(Jb.shape[0], -1).T


def _block_pairs(x: Tensor, bs: int, compute: Callable[[Tensor], Any], pair: Callable[[Any, Any], Tensor],
                 rows_per_point: int, cache_bytes: int, progress: bool) -> Tensor:
    """Kernel from per-block features: ``pair(F_a, F_b)`` for ``b <= a``, upper blocks mirrored.

    ``compute(x_block)`` returns the block's features (a tensor or a tuple of tensors); they are cached while
    the cache stays within ``cache_bytes`` and recomputed otherwise.
    """
    N = int(x.shape[0])
    starts = list(range(0, N, bs))
    n_blocks = len(starts)
    cache: dict[int, object] = {}
    used = 0

    def get(k: int) -> object:
        nonlocal used
        if k in cache:
            return cache[k]
        feats = compute(x[starts[k]:starts[k] + bs])
        size = sum(t.numel() * t.element_size() for t in (feats if isinstance(feats, tuple) else (feats,)))
        if used + size <= cache_bytes:
            cache[k] = feats
            used += size
        return feats

    K: Optional[Tensor] = None
    r = rows_per_point
    with progress_bar(n_blocks * (n_blocks + 1) // 2, "ntk", progress) as bar:
        for a in range(n_blocks):
            Fa = get(a)
            ra = slice(starts[a] * r, min(starts[a] + bs, N) * r)
            for b in range(a + 1):
                Kab = pair(Fa, Fa if b == a else get(b))
                if K is None:
                    K = torch.empty(N * r, N * r, dtype=Kab.dtype, device=Kab.device)
                rb = slice(starts[b] * r, min(starts[b] + bs, N) * r)
                if b == a:  # exact symmetry: the lower triangle, mirrored
                    Kab = torch.tril(Kab) + torch.tril(Kab, -1).T
                    K[ra, ra] = Kab
                else:
                    K[ra, rb] = Kab
                    K[rb, ra] = Kab.T
                bar.update(1)
    assert K is not None
    return K


# ---------------------------------------------------------------------------------------------- jacobian routes
def _jacobian_fn(adapter: ModelAdapter, C: int, P: int, train: bool) -> Callable[[Tensor], Tensor]:
    """``x_block (B, ...) -> J (B, C, P)`` with ``vmap`` over samples of ``jacrev`` (``jacfwd`` if ``P < C``)."""
    theta0 = adapter.theta0

    def per_sample(theta: Tensor, xi: Tensor) -> Tensor:
        return adapter.apply(theta, xi[None], _buffers(adapter, train))[0]

    jac = jacfwd(per_sample) if P < C else jacrev(per_sample)

    def compute(xb: Tensor) -> Tensor:
        with warnings.catch_warnings():  # torch's notice that some op's batching rule falls back to a loop
            warnings.filterwarnings("ignore", message="There is a performance drop")
            return vmap(jac, in_dims=(None, 0))(theta0, xb).detach()

    return compute


def _autograd_fn(adapter: ModelAdapter, C: int, P: int, train: bool) -> Callable[[Tensor], Tensor]:
    """``x_block (B, ...) -> J (B, C, P)``: per sample one forward, ``C`` reverse passes (plain autograd)."""

    def compute(xb: Tensor) -> Tensor:
        J = torch.zeros(int(xb.shape[0]), C, P, dtype=adapter.dtype, device=adapter.device)
        theta = adapter.theta0.detach().clone().requires_grad_(True)
        for i in range(int(xb.shape[0])):
            with torch.enable_grad():
                out = adapter.apply(theta, xb[i:i + 1], _buffers(adapter, train))
            for c in range(C):
                if not out.requires_grad:
                    break  # output independent of theta: zero rows
                (g,) = torch.autograd.grad(out[0, c], theta, retain_graph=c < C - 1, allow_unused=True)
                if g is not None:
                    J[i, c] = g
        return J

    return compute


# ---------------------------------------------------------------------------------------------- structured route
_STRUCTURED_TYPES = (nn.Linear, nn.Conv2d)


class _Layer:
    """A Linear or Conv2d layer of the structured route: its flat-vector slices and what is selected."""

    def __init__(self, name: str, module: nn.Module, weight: Optional[slice], bias: Optional[slice]) -> None:
        self.name, self.module, self.weight, self.bias = name, module, weight, bias
        self.conv = isinstance(module, nn.Conv2d)
        self.out: int = int(getattr(module, "out_channels" if self.conv else "out_features"))

    def n_explicit(self) -> int:
        """Columns of the explicit per-sample Jacobian this layer contributes (conv layers; 0 for Linear)."""
        if not self.conv:
            return 0
        return sum(s.stop - s.start for s in (self.weight, self.bias) if s is not None)


def _conv_padding(m: nn.Conv2d) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """``(unfold padding, explicit F.pad amounts)`` that reproduce ``m``'s zero padding (``'same'`` may be
    asymmetric: torch puts the extra row/column on the right/bottom, as done here)."""
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return (0, 0), (0, 0, 0, 0)
        pads = []
        for d, k in zip(reversed(m.dilation), reversed(m.kernel_size)):  # F.pad order: last dim first
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return (0, 0), (pads[0], pads[1], pads[2], pads[3])
    return (int(m.padding[0]), int(m.padding[1])), (0, 0, 0, 0)


def _structured_layers(adapter: ModelAdapter, probe_only: bool) -> Optional[list[_Layer]]:
    """The Linear/Conv2d layers carrying the selected parameters, or None (``probe_only``) / ValueError naming
    "jacobian" when the structured route does not apply to the model's module types."""
    model = adapter.model
    try:
        named = list(model.named_parameters(remove_duplicate=False))
        if len({id(p) for _, p in named}) < len(named):
            raise _NotStructured("a parameter is shared between modules (tied weights)")
        slices = {name: sl for name, sl, _ in adapter.space.slices()}
        layers = []
        for mname, m in model.named_modules():
            prefix = f"{mname}." if mname else ""
            if not any(prefix + n in slices for n, _ in m.named_parameters(recurse=False)):
                continue  # unselected parameters are constants: their module is a parameter-free function
            if type(m) not in _STRUCTURED_TYPES:
                raise _NotStructured(f"module {mname or '<model>'!r} ({type(m).__name__}) has selected parameters "
                                     "and is not an nn.Linear or nn.Conv2d")
            if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros"):
                raise _NotStructured(f"nn.Conv2d {mname!r} has groups={m.groups}, padding_mode={m.padding_mode!r} "
                                     "(the structured route handles groups=1 with zero padding)")
            w = slices.get(prefix + "weight")
            b = slices.get(prefix + "bias") if m.bias is not None else None
            if w is not None or b is not None:
                layers.append(_Layer(mname, m, w, b))
        if not layers:
            raise _NotStructured("no selected parameter belongs to an nn.Linear or nn.Conv2d")
        return layers
    except _NotStructured as exc:
        if probe_only:
            return None
        raise ValueError(f"implementation='structured' does not apply: {exc}; use implementation='jacobian' "
                         "(or 'auto')") from None


def _not_structured(what: str) -> _NotStructured:
    return _NotStructured(f"implementation='structured' does not apply: {what}; use implementation='jacobian' "
                          "(or 'auto')")


def _conv_jacobian(layer: _Layer, a: Tensor, delta: Tensor) -> Tensor:
    """Per-sample Jacobian ``(B, C, n_explicit)`` of a Conv2d's selected weight/bias from its input ``a``
    ``(B, Cin, H, W)`` and output derivatives ``delta`` ``(B, C, Cout, Ho, Wo)``: per sample and output,
    ``delta (Cout, L) @ [unfold(a); 1]^T (L, Cin*kh*kw + 1)`` over the ``L = Ho * Wo`` positions (the row of
    ones gives the bias). Columns are ordered ``(Cout, Cin*kh*kw [+ 1])``, not in the flat parameter order: the
    kernel does not depend on the column order (see :func:`_conv_column_sums` for the mapping)."""
    m = layer.module
    assert isinstance(m, nn.Conv2d)
    B, C = int(delta.shape[0]), int(delta.shape[1])
    d = delta.reshape(B, C * m.out_channels, -1)  # (B, C*Cout, L)
    if layer.weight is None:  # bias only
        return d.sum(dim=-1).reshape(B, C, -1)
    unfold_pad, pad = _conv_padding(m)
    src = F.pad(a, pad) if any(pad) else a
    U = F.unfold(src, m.kernel_size, dilation=m.dilation, padding=unfold_pad, stride=m.stride)  # (B, K, L)
    if U.shape[-1] != d.shape[-1]:
        raise _not_structured(f"nn.Conv2d {layer.name!r}: {U.shape[-1]} patches for {d.shape[-1]} output positions")
    if layer.bias is not None:
        U = torch.cat([U, U.new_ones(B, 1, U.shape[-1])], dim=1)
    return torch.bmm(d, U.transpose(1, 2)).reshape(B, C, -1)


def _conv_column_sums(layer: _Layer, sums: Tensor, rebuilt: Tensor) -> None:
    """Scatter the column sums ``(n_explicit,)`` of :func:`_conv_jacobian` into the flat vector ``rebuilt``."""
    m = layer.module
    assert isinstance(m, nn.Conv2d)
    if layer.weight is None:
        assert layer.bias is not None
        rebuilt[layer.bias] = sums
        return
    cols = sums.reshape(m.out_channels, -1)
    K = layer.weight.stop - layer.weight.start
    rebuilt[layer.weight] = cols[:, :K // m.out_channels].reshape(-1)
    if layer.bias is not None:
        rebuilt[layer.bias] = cols[:, -1]


def _structured_features(adapter: ModelAdapter, layers: list[_Layer], C: int, train: bool,
                         xb: Tensor) -> tuple[Tensor, ...]:
    """For one block: per Linear layer ``a_l (B, in_l)`` (zero width when the weight is not selected) and
    ``delta_l (B, C, out_l)``, then the conv layers' explicit Jacobian ``(B, C, sum n_explicit)``; checks the
    gradients rebuilt from them against autograd's."""
    B = int(xb.shape[0])
    acts: dict[int, list[tuple[Tensor, Tensor]]] = {k: [] for k in range(len(layers))}

    def hook(k: int) -> Callable[[nn.Module, tuple, Tensor], None]:
        def f(module: nn.Module, args: tuple, out: Tensor) -> None:
            acts[k].append((args[0], out))
        return f

    handles = [layer.module.register_forward_hook(hook(k)) for k, layer in enumerate(layers)]
    theta = adapter.theta0.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            out = adapter.apply(theta, xb, _buffers(adapter, train))
    finally:
        for h in handles:
            h.remove()
    for k, layer in enumerate(layers):
        calls = acts[k]
        kind = type(layer.module).__name__
        if len(calls) != 1:
            raise _not_structured(f"nn.{kind} {layer.name!r} was called {len(calls)} times in one forward pass "
                                  "(weight sharing or unused)")
        a, y = calls[0]
        m = layer.module
        if layer.conv:
            ok = a.dim() == 4 and a.shape[0] == B and y.dim() == 4 and tuple(y.shape[:2]) == (B, layer.out)
            need = "(batch, channels, height, width)"
        else:
            ok = a.dim() == 2 and tuple(a.shape) == (B, m.in_features) and tuple(y.shape) == (B, layer.out)
            need = "(batch, in_features)"
        if not ok:
            raise _not_structured(f"nn.{kind} {layer.name!r} got input {tuple(a.shape)} on a batch of {B} "
                                  f"(needs {need})")
    ys = [acts[k][0][1] for k in range(len(layers))]
    deltas = [torch.empty((B, C) + tuple(y.shape[1:]), dtype=adapter.dtype, device=adapter.device) for y in ys]
    for c in range(C):
        grads = torch.autograd.grad(out[:, c].sum(), ys, retain_graph=True, allow_unused=True)
        for k in range(len(layers)):
            deltas[k][:, c] = 0.0 if grads[k] is None else grads[k]
    # sum_i,c J_i[c] from autograd in one pass, for the check below
    (grad_sum,) = torch.autograd.grad(out.sum(), theta, allow_unused=True, materialize_grads=True)
    feats: list[Tensor] = []
    explicit: list[Tensor] = []
    # rebuild sum_i,c J_i[c] from the layer factors: a weight used outside its module's forward, or samples that
    # interact, would make it differ
    rebuilt = torch.zeros_like(grad_sum)
    for k, layer in enumerate(layers):
        a = acts[k][0][0].detach()
        if layer.conv:
            Jk = _conv_jacobian(layer, a, deltas[k])
            explicit.append(Jk)
            _conv_column_sums(layer, Jk.sum(dim=(0, 1)), rebuilt)
            continue
        dsum = deltas[k].sum(dim=1)  # (B, out)
        if layer.weight is not None:
            rebuilt[layer.weight] = (dsum.T @ a).reshape(-1)
        if layer.bias is not None:
            rebuilt[layer.bias] = dsum.sum(dim=0)
        feats += [a if layer.weight is not None else a.new_zeros(B, 0), deltas[k]]
    tol = 1e3 * torch.finfo(adapter.dtype).eps * (float(grad_sum.abs().max()) + 1e-300)
    if float((rebuilt - grad_sum).abs().max()) > tol:
        raise _not_structured("the gradients rebuilt from the Linear/Conv2d layers' inputs and output derivatives "
                              "differ from autograd's (a parameter is used outside its module's forward, or samples "
                              "interact)")
    if explicit:
        feats.append(torch.cat(explicit, dim=-1) if len(explicit) > 1 else explicit[0])
    return tuple(feats)


def _structured_block(layers: list[_Layer], C: int, x: Tensor, itemsize: int, rows_per_point: int) -> int:
    """Default points per block of the structured route: features of one block within ``BLOCK_BYTES`` and at
    least ``MIN_BLOCKS`` blocks when blocks keep ``MIN_BLOCK_ROWS`` rows (only block pairs
    ``b <= a`` are contracted, so more blocks skip more of the symmetric work)."""
    per_point = 0
    for layer in layers:
        m = layer.module
        if layer.conv:
            # explicit Jacobian columns + a generous bound on the deltas/unfold buffers (C * Cout * H * W each)
            hw = int(x[0].numel()) if x.dim() > 1 else 1
            per_point += C * layer.n_explicit() + 2 * C * layer.out * hw
        else:
            per_point += C * layer.out + int(getattr(m, "in_features"))
    return _default_block(int(x.shape[0]), per_point * itemsize, rows_per_point)


def _structured(adapter: ModelAdapter, x: Tensor, C: int, layers: list[_Layer], kind: str,
                block_size: Optional[int], train: bool, progress: bool) -> Tensor:
    linear = [layer for layer in layers if not layer.conv]
    has_bias = [1.0 if layer.bias is not None else 0.0 for layer in linear]
    has_explicit = any(layer.conv for layer in layers)

    def compute(xb: Tensor) -> tuple[Tensor, ...]:
        return _structured_features(adapter, layers, C, train, xb)

    def pair(Fa: object, Fb: object) -> Tensor:
        assert isinstance(Fa, tuple) and isinstance(Fb, tuple)
        total: Optional[Tensor] = None
        if has_explicit:
            total = (_pair_full if kind == "full" else _pair_trace)(Fa[-1], Fb[-1])
        for k in range(len(linear)):
            aa, da, ab, db = Fa[2 * k], Fa[2 * k + 1], Fb[2 * k], Fb[2 * k + 1]
            S = aa @ ab.T + has_bias[k]  # (Ba, Bb)
            if kind == "full":
                D = da.reshape(-1, da.shape[-1]) @ db.reshape(-1, db.shape[-1]).T  # (Ba*C, Bb*C)
                term = (D.reshape(da.shape[0], C, db.shape[0], C) * S[:, None, :, None]).reshape(D.shape)
            else:
                term = (da.reshape(da.shape[0], -1) @ db.reshape(db.shape[0], -1).T) * S
            total = term if total is None else total + term
        assert total is not None
        return total

    itemsize = torch.empty((), dtype=adapter.dtype).element_size()
    bs = block_size or _structured_block(layers, C, x, itemsize, C if kind == "full" else 1)
    return _block_pairs(x, bs, compute, pair, C if kind == "full" else 1, CACHE_BYTES, progress)
