"""Distributed patch quantum neural network (Kawase 2025): one independent circuit per image
patch, patch scores aggregated into class logits.

``forward``: images -> ``x * input_scale + positional bias`` -> patches ``(B, P, F)`` -> one circuit
per patch -> ``(B, P, n_out)`` -> ``coefficient * mean`` (or ``sum``, or a linear head) -> logits.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Optional, Union, cast

import pennylane as qml
import torch
from torch import Tensor, nn

from ..adapter import Capabilities, ModuleInfo
from ..patches import PatchGrid, PatchNetwork
from . import program
from .circuits import CircuitSpec, QuantumFunction
from .compiled import CompiledCircuit
from .costmodel import COMPILED_MIN_LAYERS, COMPILED_MIN_QUBITS, default_budget, prefer_compiled
from .devices import DeviceChoice, check_state_memory, create_device, select_device
from .qnode_info import default_dtype as _default_dtype
from .qnode_info import qnode_capabilities
from .statevector import TorchStatevector

_log = logging.getLogger("qlandscape")

AGGREGATIONS = ("mean", "sum", "linear")
INITS = ("uniform_pi", "uniform_2pi")
PATCH_BATCHING = ("auto", "all", "per_patch")
_PARAM_SHIFT_CACHESIZE = 1_000_000  # second-order parameter-shift re-evaluates many shifted tapes

# Preset knobs. "kawase2025" is the paper exactly (its inputs: MNIST pooled to 14x14, pixels in [0, pi/4]).
# "digits" is a small analogue for sklearn's 8x8 digits (standardized pixels, see qlandscape.data):
#   coefficient 10: ten scores in [-1, 1] averaged over patches stay in about [-1, 1]; x10 lets softmax
#     reach confident predictions (p ~ 0.99 needs a logit gap of ~5-10) while keeping gradients moderate
#     (the paper's 100 is for 50-200 layers whose scores concentrate near 0).
#   input_scale pi/8: standardized pixels are mostly in [-2, 2] (with rare outliers of ~5-10 on nearly
#     constant border pixels); x pi/8 maps [-2, 2] onto [-pi/4, pi/4], the paper's angle range width,
#     so rotations stay in their monotone regime and the rare outliers do not wrap around many periods.
_PRESETS: dict[str, dict[str, Any]] = {
    "kawase2025": dict(image_shape=(14, 14), patch_size=8, n_patches=4, layers=50, n_qubits=8,
                       encoding="reupload", n_encodings=2, ansatz="rxry_cz", observables=None, n_classes=10,
                       aggregation="mean", coefficient=100.0, positional_bias=True, input_scale=1.0,
                       diff_method="auto", init="uniform_pi", seed=1001),
    "digits": dict(image_shape=(8, 8), patch_size=4, n_patches=4, layers=2, n_qubits=4,
                   encoding="reupload", n_encodings=2, ansatz="rxry_cz", observables=None, n_classes=10,
                   aggregation="mean", coefficient=10.0, positional_bias=True, input_scale=math.pi / 8,
                   diff_method="auto", init="uniform_pi", seed=0),
}
_EXTRA_KNOBS = dict(stride=None, batch_size=64, patch_batching="auto", c_dtype="complex128", order=2,
                    torch_device="auto", simulator="auto", memory_budget=None)
SIMULATORS = ("auto", "compiled", "tape")
KNOBS: tuple[str, ...] = tuple(sorted((set(_PRESETS["digits"]) | set(_EXTRA_KNOBS)) - {"n_patches", "layers"}))


_COMPILED_DTYPES = (torch.float32, torch.float64)


def _require_compiled_dtype(sim: Any, weights: Tensor) -> None:
    """The compiled simulator runs complex64 / complex128 states for float32 / float64 weights only."""
    if isinstance(sim, CompiledCircuit) and weights.dtype not in _COMPILED_DTYPES:
        raise ValueError(f"the compiled quantum simulator runs float32 or float64 parameters (complex64/complex128 "
                         f"states), got {weights.dtype}; use dtype='float64' or 'float32' (Objective(..., dtype=...), "
                         "model.double() / model.float()), or build the model with simulator='tape'")


class _Shared:
    """Holds the QNodes and their device; ``copy.deepcopy`` shares it (native simulators cannot be
    copied, and a QNode is a stateless function of its arguments).

    ``qnode_eval`` (``diff_method=None``) serves calls made with gradients disabled: PennyLane 0.45
    computes an adjoint QNode's Jacobian on every forward, even under ``no_grad`` (scans and loss
    evaluations pay 2.4-8x for nothing otherwise). On backprop devices both are the same QNode.
    """

    def __init__(self, qnode: Any, device: Any, qnode_eval: Any = None, sim: Any = None) -> None:
        self.qnode = qnode
        self.device = device
        self.qnode_eval = qnode if qnode_eval is None else qnode_eval
        self.sim = sim

    def __call__(self, *args: Any) -> Any:
        return (self.qnode if torch.is_grad_enabled() else self.qnode_eval)(*args)

    def __deepcopy__(self, memo: dict[int, Any]) -> "_Shared":
        return self


class PatchCircuit(nn.Module):
    """One patch's circuit with its own weights.

    Parameters
    ----------
    spec : CircuitSpec or QuantumFunction
    runner : _Shared
        The QNode (shared by all patches; a QNode is a pure function of inputs and weights).
    weights : Tensor, shape (spec.n_weights,)
        Initial angles (layout in :class:`CircuitSpec`).
    """

    weights: nn.Parameter

    def __init__(self, spec: Union[CircuitSpec, QuantumFunction], runner: _Shared, weights: Tensor) -> None:
        super().__init__()
        if tuple(weights.shape) != (spec.n_weights,):
            raise ValueError(f"weights must have shape ({spec.n_weights},), got {tuple(weights.shape)}")
        self.spec = spec
        self._runner = runner
        self.weights = nn.Parameter(weights.clone())

    def forward(self, patches: Tensor) -> Tensor:
        """``patches``: (B, n_features) -> scores (B, n_outputs), in the weights' dtype."""
        if self._runner.sim is not None:
            _require_compiled_dtype(self._runner.sim, self.weights)
            return self._runner.sim(patches[None], self.weights[None])[0]
        with _default_dtype(self.weights.dtype):
            out = self._runner(patches, self.weights)
        return torch.stack(list(out), dim=-1).to(self.weights.dtype)


class PatchQNN(PatchNetwork):
    """Patch quantum neural network.

    Parameters
    ----------
    preset : str
        ``"digits"`` (8x8 sklearn digits, 4x4 patches, 4 qubits, L=2) or ``"kawase2025"`` (the paper:
        14x14 images, 8x8 patches, 8 qubits, L=50, coefficient 100).
    n_patches : int, optional
        Patches ``k*k`` (paper: 4/9/16; digits: 4/9/25, or 1 = one 8x8 patch); the stride follows
        (:meth:`PatchGrid.from_count`). Exclusive with the ``stride`` override.
    layers : int, optional
        ``L``, layers per trainable block.
    device : str
        ``"auto"`` or a PennyLane device name (see :func:`qlandscape.quantum.devices.select_device`).
    circuit : QuantumFunction, optional
        The user's own patch circuit instead of the preset's (any PennyLane quantum function of the patch's
        inputs and weights; :class:`~qlandscape.quantum.circuits.QuantumFunction`). The patch grid,
        positional bias, aggregation, device selection and capability declaration are the same as for the
        built-in circuit; ``layers``, ``n_qubits``, ``encoding``, ``n_encodings``, ``ansatz`` and
        ``observables`` belong to the built-in circuit and are refused with it. ``device="auto"`` takes
        torch.statevector when the circuit records onto it (RX/RY/RZ/Rot/CZ/CNOT, each angle one input or
        weight, single-qubit Pauli readout) and default.qubit with backprop otherwise; an explicit
        torch.statevector for a circuit it cannot run raises, naming the gate.
    **overrides
        Any of :data:`KNOBS`: ``image_shape``, ``patch_size``, ``stride``, ``n_qubits``, ``encoding``,
        ``n_encodings``, ``ansatz``, ``observables``, ``n_classes``, ``aggregation`` ("mean" | "sum" |
        "linear"), ``coefficient`` (logit multiplier), ``positional_bias`` (bool), ``input_scale``
        (pixel multiplier before encoding), ``diff_method``, ``init`` ("uniform_pi" = U[0, pi) as the
        paper, "uniform_2pi"), ``seed``, ``batch_size`` (expected samples per forward; only guides the
        first-order speed crossover of ``device="auto"``), ``patch_batching`` ("auto" | "all" | "per_patch"),
        ``c_dtype`` (lightning devices; torch.statevector follows the weights: complex64 for float32),
        ``order`` (2: the jobs need Hessian-vector products, so ``device="auto"`` keeps an exact second-order
        route; 1: gradients only, lightning allowed where faster), ``torch_device`` (where torch.statevector
        runs: "auto" = CUDA when torch sees a GPU, "cpu", "cuda", "cuda:N"; the parameters are placed there),
        ``simulator`` (how torch.statevector runs: "compiled" = :class:`~qlandscape.quantum.compiled.CompiledCircuit`;
        "tape" = the plain autograd simulator :class:`~qlandscape.quantum.statevector.TorchStatevector`, memory
        growing with depth x batch; "auto" = compiled from 6 qubits or 12 variational layers, the tape below,
        as measured: :func:`qlandscape.quantum.costmodel.prefer_compiled`) and ``memory_budget`` (bytes the
        compiled simulator may hold; default :func:`qlandscape.quantum.costmodel.default_budget`; also the
        limit of the width check below).

    Attributes
    ----------
    circuits : nn.ModuleList of PatchCircuit
        One per patch, each with its own ``weights`` (shape ``(spec.n_weights,)``).
    pos_bias : nn.Parameter, shape (H, W), or None
        Added to the scaled image (in radians) before patching; zero-initialized.
    head : nn.Linear or None
        ``P * n_outputs -> n_classes`` when ``aggregation="linear"``.

    Raises
    ------
    qlandscape.objective.MemoryBudgetError
        Before any device or QNode is built, when the state vectors the chosen simulator holds at once at
        the least (see :meth:`_check_state_memory`) exceed ``memory_budget`` (default: a quarter of the
        machine's memory, at most 3 GiB): e.g. ``n_qubits=32`` needs 64 GiB for one complex128 state.

    Notes
    -----
    With ``patch_batching="all"`` (the default on default.qubit with backprop) all patches run in ONE
    QNode call: broadcast dimension ``P * B``, each row carrying its patch's weights. Otherwise one
    call per patch, the batch as the broadcast dimension (lightning devices split it into one tape
    per sample). No Python loop runs over samples.
    """

    spec: Union[CircuitSpec, QuantumFunction]

    def __init__(self, preset: str = "digits", *, n_patches: Optional[int] = None, layers: Optional[int] = None,
                 device: str = "auto", circuit: Optional[QuantumFunction] = None, **overrides: Any) -> None:
        super().__init__()
        if preset not in _PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(_PRESETS)}")
        unknown = sorted(set(overrides) - set(KNOBS))
        if unknown:
            raise TypeError(f"PatchQNN got unknown option(s) {unknown}; valid options: n_patches, layers, device, "
                            f"{', '.join(KNOBS)}")
        if circuit is not None:
            if not isinstance(circuit, QuantumFunction):
                raise TypeError(f"circuit must be a QuantumFunction(qfunc, n_qubits=..., n_weights=...), got "
                                f"{type(circuit).__name__}")
            builtin = sorted({"n_qubits", "encoding", "n_encodings", "ansatz", "observables"} & set(overrides)
                             | ({"layers"} if layers is not None else set()))
            if builtin:
                raise ValueError(f"{builtin} configure the built-in circuit; with circuit= the QuantumFunction "
                                 "defines the circuit (its n_qubits, n_weights, layers)")
        cfg: dict[str, Any] = {**_PRESETS[preset], **_EXTRA_KNOBS}
        if preset == "digits" and n_patches == 1 and "patch_size" not in overrides:
            cfg["patch_size"] = 8  # one patch must cover the whole 8x8 image
        if n_patches is not None and overrides.get("stride") is not None:
            raise ValueError("give n_patches or stride, not both")
        cfg.update(overrides)
        if n_patches is not None:
            cfg["n_patches"] = n_patches
        if layers is not None:
            cfg["layers"] = layers
        self._check_choices(cfg)

        image = tuple(cfg["image_shape"]) if not isinstance(cfg["image_shape"], int) else (cfg["image_shape"],) * 2
        patch = cfg["patch_size"]
        if cfg["stride"] is not None:
            self.grid = PatchGrid(image, patch, cfg["stride"])  # type: ignore[arg-type]
        else:
            self.grid = PatchGrid.from_count(image, patch, cfg["n_patches"])  # type: ignore[arg-type]
        if circuit is not None:
            self.spec = circuit.bind(self.grid.n_features)
            cfg.update(n_qubits=circuit.n_qubits, layers=circuit.layers, encoding="custom", n_encodings=0,
                       ansatz="custom", observables=list(self.spec.observables or ()), circuit=circuit.name)
        else:
            obs = None if cfg["observables"] is None else tuple(cfg["observables"])
            self.spec = CircuitSpec(n_qubits=cfg["n_qubits"], layers=cfg["layers"], n_features=self.grid.n_features,
                                    encoding=cfg["encoding"], n_encodings=cfg["n_encodings"], ansatz=cfg["ansatz"],
                                    observables=obs, n_outputs=cfg["n_classes"] if obs is None else None)
        if cfg["aggregation"] != "linear" and self.spec.n_outputs != cfg["n_classes"]:
            raise ValueError(f"aggregation={cfg['aggregation']!r} needs one observable per class "
                             f"({cfg['n_classes']}), got {self.spec.n_outputs}; give {cfg['n_classes']} "
                             "observables or use aggregation='linear'")
        self.n_classes: int = cfg["n_classes"]
        self.aggregation: str = cfg["aggregation"]
        self.coefficient = float(cfg["coefficient"])
        self.input_scale = float(cfg["input_scale"])
        P = self.grid.n_patches
        batching = cfg["patch_batching"]

        choice = select_device(device, n_qubits=self.spec.n_qubits,
                               batch_size=int(cfg["batch_size"]) * (P if batching != "per_patch" else 1),
                               n_layers=self.spec.layers * (self.spec.n_encodings + 1), diff_method=cfg["diff_method"],
                               order=cfg["order"], torch_device=cfg["torch_device"])
        if circuit is not None and choice.name == "torch.statevector":
            try:  # the torch simulators run a recorded program: the circuit's gates must record onto it
                program.record(self.spec.qfunc, self.spec.n_qubits, self.grid.n_features, self.spec.n_weights)
            except ValueError as exc:
                if device != "auto":
                    raise ValueError(f"circuit {circuit.name!r} cannot run on torch.statevector: {exc}") from None
                choice = select_device("default.qubit", n_qubits=self.spec.n_qubits, batch_size=1,
                                       n_layers=self.spec.layers, diff_method=cfg["diff_method"],
                                       order=cfg["order"], torch_device="cpu")
                choice = dataclasses.replace(choice, reason=f"auto: circuit {circuit.name!r} does not record onto "
                                             f"torch.statevector ({exc}); " + choice.reason)
                _log.info("quantum device: %s/%s (%s)", choice.name, choice.diff_method, choice.reason)
        if cfg["c_dtype"] != choice.c_dtype:
            choice = dataclasses.replace(choice, c_dtype=cfg["c_dtype"])
        self.device_choice: DeviceChoice = choice
        if batching == "auto":
            batching = "all" if choice.broadcast and choice.diff_method == "backprop" else "per_patch"
        elif batching == "all" and not choice.broadcast:
            raise ValueError(f"patch_batching='all' needs a broadcasting device (default.qubit), got {choice.name}; "
                             "use patch_batching='auto'")
        self.patch_batching: str = batching
        simulator = cfg["simulator"]
        if choice.name == "torch.statevector" and simulator == "auto":
            total_layers = self.spec.layers * (self.spec.n_encodings + 1)
            simulator = "compiled" if prefer_compiled(self.spec.n_qubits, total_layers) else "tape"
            _log.info("quantum simulator: %s (auto: %d qubits, %d layers; compiled from %d qubits or %d layers)",
                      simulator, self.spec.n_qubits, total_layers, COMPILED_MIN_QUBITS, COMPILED_MIN_LAYERS)
        self._check_state_memory(choice, simulator, batching, P, int(cfg["batch_size"]), cfg["memory_budget"])
        if choice.name == "torch.statevector":
            # the QNode stays the circuit's definition (draw it, run it on default.qubit); execution is the
            # same quantum function compiled into batched torch ops (qlandscape.quantum.statevector)
            ref_choice = dataclasses.replace(choice, name="default.qubit")
            qdev = create_device(ref_choice, self.spec.n_qubits)
            qnode_ref = qml.QNode(self.spec.qfunc, qdev, interface="torch", diff_method="backprop")
            sim: Any
            if simulator == "compiled":
                sim = CompiledCircuit(self.spec.qfunc, self.spec.n_qubits, self.grid.n_features, self.spec.n_weights,
                                      memory_budget=cfg["memory_budget"])
            else:
                sim = TorchStatevector(self.spec.qfunc, self.spec.n_qubits, self.grid.n_features, self.spec.n_weights)
            self._runner = _Shared(qnode_ref, qdev, sim=sim)
        else:
            self._runner = self._pennylane_runner(choice)


        gen = torch.Generator().manual_seed(int(cfg["seed"]))
        span = math.pi if cfg["init"] == "uniform_pi" else 2 * math.pi
        self.circuits = nn.ModuleList([
            PatchCircuit(self.spec, self._runner, torch.rand(self.spec.n_weights, generator=gen) * span)
            for _ in range(P)])
        self.pos_bias: Optional[nn.Parameter] = (nn.Parameter(torch.zeros(self.grid.image_shape))
                                                 if cfg["positional_bias"] else None)
        self.head: Optional[nn.Linear] = None
        if self.aggregation == "linear":
            n_out = self.spec.n_outputs
            assert n_out is not None  # CircuitSpec sets it from the observables
            self.head = nn.Linear(P * n_out, self.n_classes)
            bound = 1.0 / math.sqrt(P * n_out)
            with torch.no_grad():
                self.head.weight.copy_((torch.rand(self.head.weight.shape, generator=gen) * 2 - 1) * bound)
                self.head.bias.copy_((torch.rand(self.head.bias.shape, generator=gen) * 2 - 1) * bound)

        self._config: dict[str, Any] = dict(
            cfg, preset=preset, device=device, image_shape=list(self.grid.image_shape),
            patch_size=list(self.grid.patch_shape), stride=list(self.grid.stride), n_patches=P,
            observables=list(self.spec.observables or ()), patch_batching=batching,
            simulator=("compiled" if isinstance(self._runner.sim, CompiledCircuit) else
                       "tape" if self._runner.sim is not None else None),
            n_weights_per_patch=self.spec.n_weights, device_choice=choice.as_dict())
        if choice.name == "torch.statevector" and choice.torch_device != "cpu":
            self.to(choice.torch_device)

    def _pennylane_runner(self, choice: DeviceChoice) -> _Shared:
        """QNodes on a PennyLane device: one for differentiation, one for evaluation under no_grad."""
        qdev = create_device(choice, self.spec.n_qubits)
        kwargs: dict[str, Any] = {}
        if choice.diff_method == "parameter-shift":
            kwargs = dict(max_diff=2, cachesize=_PARAM_SHIFT_CACHESIZE)
        qnode = qml.QNode(self.spec.qfunc, qdev, interface="torch", diff_method=choice.diff_method, **kwargs)
        if choice.diff_method == "parameter-shift":
            # parameter-shift cannot differentiate w.r.t. broadcast parameters (the inputs are trainable
            # through the positional bias): split the batch into one tape per sample first, as lightning does
            qnode = qml.transforms.broadcast_expand(qnode)
        qnode_eval = None
        if choice.diff_method != "backprop":
            qnode_eval = qml.QNode(self.spec.qfunc, qdev, interface="torch", diff_method=None)
        return _Shared(qnode, qdev, qnode_eval)

    def _check_state_memory(self, choice: DeviceChoice, simulator: str, batching: str, n_patches: int,
                            batch_size: int, memory_budget: Optional[int]) -> None:
        """Refuse a register whose state vectors alone exceed the memory budget, before any device, QNode or
        simulator is built (:func:`~qlandscape.quantum.devices.check_state_memory`).

        States held at once at the least: lightning devices one (one tape per sample); the compiled simulator
        one per patch circuit (samples come in chunks sized from its budget); the tape simulator and
        default.qubit every broadcast row of one call (patches x ``batch_size``, or ``batch_size`` per patch).
        The budget is ``memory_budget`` when given, else :func:`~qlandscape.quantum.costmodel.default_budget`
        of the device the states live on. torch.statevector and default.qubit states are counted in
        complex128 (float64 parameters, the analyses' default); lightning's in its ``c_dtype``.
        """
        B, P = batch_size, n_patches
        where = torch.device("cpu")
        c_dtype = "complex128"
        fewer = ""
        if choice.name == "torch.statevector":
            where = torch.device(choice.torch_device)
            if simulator == "compiled":
                states, why = P, f"compiled simulator: the {P} patch circuits of one sample at once"
            else:
                states, why = P * B, f"tape simulator: {P} patches x batch_size={B} broadcast in one call"
                fewer = "a smaller batch_size, simulator='compiled'"
        elif choice.broadcast:
            states = B * (P if batching == "all" else 1)
            why = (f"{P} patches x batch_size={B} broadcast in one call" if batching == "all"
                   else f"batch_size={B} broadcast in one call")
            fewer = "a smaller batch_size"
        else:
            states, why, c_dtype = 1, "one tape per sample", choice.c_dtype
            if choice.name == "lightning.gpu" and torch.cuda.is_available():
                where = torch.device("cuda")
        if memory_budget is not None:
            budget, note = int(memory_budget), "memory_budget"
        else:
            budget = default_budget(where)
            note = ("default: a quarter of the GPU's memory, at most 8 GiB" if where.type == "cuda"
                    else "default: a quarter of this machine's memory, at most 3 GiB")
        check_state_memory(self.spec.n_qubits, device=choice.name, states=states, budget=budget, c_dtype=c_dtype,
                           why=why, budget_note=note, fewer=fewer)

    @staticmethod
    def _check_choices(cfg: dict[str, Any]) -> None:
        for key, allowed in (("aggregation", AGGREGATIONS), ("init", INITS), ("patch_batching", PATCH_BATCHING)):
            if cfg[key] not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {cfg[key]!r}")
        if not isinstance(cfg["n_classes"], int) or cfg["n_classes"] < 2:
            raise ValueError(f"n_classes must be an int >= 2, got {cfg['n_classes']!r}")
        if cfg["simulator"] not in SIMULATORS:
            raise ValueError(f"simulator must be one of {SIMULATORS}, got {cfg['simulator']!r}")
        budget = cfg["memory_budget"]
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0):
            raise ValueError(f"memory_budget must be a positive number of bytes or None, got {budget!r}")

    # ---------------------------------------------------------------- description
    @property
    def n_params(self) -> int:
        """Trainable parameters (paper: ``P * (6L + 16) * 8 + H * W``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def config(self) -> dict[str, Any]:
        """Every resolved knob (JSON-able), with the device choice and parameter counts."""
        return dict(self._config, n_params=self.n_params)

    def qlandscape_module_info(self) -> ModuleInfo:
        """Capabilities of the patch circuits' QNode (the submodules declare nothing themselves).

        torch.statevector and default.qubit/backprop: autograd exact to any order and ``torch.func``
        transforms run (verified in the tests); parameter-shift (``max_diff=2``): order 2; adjoint: order 1.
        """
        qnode, choice = self._runner.qnode, self.device_choice
        if isinstance(self._runner.sim, CompiledCircuit):
            caps = Capabilities(notes=("torch statevector (compiled): adjoint backward and exact second-order pass; "
                                       "higher orders and torch.func on its plain torch ops",))
        elif self._runner.sim is not None:
            caps = Capabilities(notes=("torch statevector (tape): plain torch autograd, exact to any order, torch.func",))
        else:
            caps = qnode_capabilities(qnode, "QNode")
        if choice.diff_method == "backprop" and choice.name == "default.qubit":
            caps = dataclasses.replace(caps, torch_func=True)
        note = (f"on {choice.name}/{choice.diff_method}: {self.grid.n_patches} patch circuits of "
                f"{self.spec.n_qubits} qubits, {self.patch_batching} patch batching")
        caps = dataclasses.replace(caps, copyable=True, notes=(note, *caps.notes))
        # the probe sees the reference QNode only when it is executed; its device is declared here either way
        return ModuleInfo(capabilities=caps, shared=(self._runner.device,),
                          provenance=dict(device_choice=choice.as_dict(), patch_batching=self.patch_batching,
                                          n_patches=self.grid.n_patches, n_qubits=self.spec.n_qubits,
                                          layers=self.spec.layers, n_params=self.n_params))

    # ---------------------------------------------------------------- forward
    def patch_outputs(self, patches: Tensor) -> Tensor:
        """Run every patch's circuit.

        Parameters
        ----------
        patches : Tensor, shape (B, P, n_features)
            Already scaled (angles).

        Returns
        -------
        Tensor, shape (B, P, n_outputs), in the weights' dtype.
        """
        B, P, F = patches.shape
        if self.patch_batching == "per_patch":
            return torch.stack([c(patches[:, p]) for p, c in enumerate(self.circuits)], dim=1)
        weights = torch.stack([cast(PatchCircuit, c).weights for c in self.circuits])  # (P, W)
        if self._runner.sim is not None:
            _require_compiled_dtype(self._runner.sim, weights)
            return self._runner.sim(patches.transpose(0, 1), weights).transpose(0, 1)
        xb = patches.transpose(0, 1).reshape(P * B, F)
        wb = weights.repeat_interleave(B, dim=0)  # (P*B, W): row p*B + b carries patch p's weights
        with _default_dtype(weights.dtype):
            out = torch.stack(list(self._runner(xb, wb)), dim=-1).to(weights.dtype)  # (P*B, n_out)
        return out.reshape(P, B, -1).transpose(0, 1)

    def extra_repr(self) -> str:
        return (f"patches={self.grid.n_patches} ({self.grid.patch_shape[0]}x{self.grid.patch_shape[1]}, stride "
                f"{self.grid.stride}), qubits={self.spec.n_qubits}, layers={self.spec.layers}, "
                f"device={self.device_choice.name}/{self.device_choice.diff_method}, params={self.n_params}")
