"""Cost model of the compiled simulator (:mod:`qlandscape.quantum.compiled`): Kronecker group sizes,
folding a weights-only segment vs applying it gate by gate, chunk sizes and the memory budget.

The constants are measured on one CPU thread by ``benchmarks/bench_qsim.py --calibrate`` (results in
``benchmarks/results/qsim_calibration.{json,md}``); rerun it after changing the kernels or torch. The
decision counts work in *row-operations*: one group-matrix application to one state (one row) of the
register. Folding costs the segment's gates on the ``D = 2**n`` basis states plus one GEMM row per
sample (``GEMM_RATIO`` row-operations each, measured); gate by gate costs the gates on every sample.
Both are weighted by how many such passes a gradient plus a Hessian-vector product makes
(:data:`PASSES`), the work this library mostly does.
"""

from __future__ import annotations

import torch

__all__ = ["COMPILED_MIN_LAYERS", "COMPILED_MIN_QUBITS", "GEMM_RATIO", "GROUP_SIZE", "PASSES", "default_budget",
           "fold_pays", "group_size", "live_states", "patch_block", "prefer_compiled", "row_block"]

# Wires per Kronecker group for n >= 6 qubits; registers of up to 5 qubits are one group. Measured per-layer time
# (columns layout, complex128, 1 thread) at 8 qubits: groups of 3/4/5/6 within 5% of each other (1.9-2.0 us per
# row), per-qubit 2x2 products 2.1x slower; at 6 and 9 qubits groups of 4 are the fastest.
GROUP_SIZE: int = 4

# Time of one GEMM row (a state times a D x D matrix) divided by the time of one group-matrix application per row
# (complex128, 1 thread; complex64 within 10% of these at 8 qubits). Between measured sizes: nearest.
GEMM_RATIO: dict[int, float] = {2: 0.44, 3: 0.48, 4: 0.54, 5: 0.68, 6: 2.1, 7: 5.3, 8: 16.9, 9: 34.6, 10: 24.2,
                                11: 26.7, 12: 52.1}

# Row-operations per group op (or per GEMM row) of one gradient plus one Hessian-vector product, counted from the
# passes of compiled.py: ("fold", kept trajectories): build 1 + adjoint 2 + HVP (tangent 2 + reverse 6 + second
# adjoint 2) = 13 per op on the D basis states; without kept trajectories 1 + 3 + (12 + 3) = 19; GEMM rows per sample
# 1 (forward) + 3 (adjoint) + 8 (HVP) = 12. Gate by gate: adjoint (1 + 3) + HVP (12 + 4) = 20 per op on every sample.
PASSES: dict[str, float] = {"fold_kept": 13.0, "fold": 19.0, "gemm": 12.0, "gates": 20.0}


# simulator="auto": the compiled simulator from this many qubits or variational layers (all blocks together), the
# tape below. Measured (4 circuits, 64 samples, complex128, 1 thread; gradient / HVP time, tape over compiled):
# 4 qubits x 6 layers 1.61 / 0.63 (256 samples: 0.90 / 0.53); 4 x 24: 4.39 / 1.72; 6 x 6: 1.81 / 1.10; 6 x 24:
# 3.33 / 1.85; 8 x 3: 1.60 / 1.18; 8 x 30: 3.90 / 2.58. Below both thresholds the compiled one's per-sample
# bookkeeping outweighs what it saves, and the tape's memory is small anyway.
COMPILED_MIN_QUBITS: int = 6
COMPILED_MIN_LAYERS: int = 12


def prefer_compiled(n_qubits: int, total_layers: int) -> bool:
    """Whether ``simulator="auto"`` takes the compiled simulator for this circuit size."""
    return n_qubits >= COMPILED_MIN_QUBITS or total_layers >= COMPILED_MIN_LAYERS


def group_size(n_qubits: int) -> int:
    """Wires per group for an ``n_qubits`` register."""
    return n_qubits if n_qubits <= 5 else GROUP_SIZE


def default_budget(device: torch.device) -> int:
    """Bytes of state the simulator may hold by default: a quarter of the machine's memory, at most 3 GiB
    (on CUDA a quarter of the device's memory, at most 8 GiB). Kept trajectories of folded segments take
    up to three quarters of it, the chunks of samples the rest. It depends on the machine only (total,
    not free, memory), so chunking, and with it every rounding, is the same in every run."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return int(min(8 * 2 ** 30, total // 4))
    cap = 3 * 2 ** 30
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(min(cap, int(line.split()[1]) * 1024 // 4))
    except OSError:
        pass
    return 2 ** 30  # no /proc (not Linux): 1 GiB


def _ratio(n_qubits: int) -> float:
    best = min(GEMM_RATIO, key=lambda k: abs(k - n_qubits))
    return GEMM_RATIO[best]


def trajectory_bytes(group_ops: int, n_patches: int, n_qubits: int, dtype: torch.dtype) -> int:
    """Bytes of a folded segment's kept states and their tangents (``2 * ops`` states of ``P x D x D``)."""
    D = 2 ** n_qubits
    itemsize = 16 if dtype == torch.float64 else 8
    return 2 * group_ops * n_patches * D * D * itemsize


def fold_pays(n_qubits: int, group_ops: int, rows: int, dtype: torch.dtype, device: torch.device,
              n_patches: int, budget: int, kept: bool) -> tuple[bool, str]:
    """Whether folding a weights-only segment of ``group_ops`` group applications beats applying it
    gate by gate to ``rows`` states (for one gradient plus one HVP, see the module docstring), and why.

    ``kept``: whether the folded segment's trajectory fits the budget (then its reverse passes read kept
    states instead of un-computing them). Folding also needs the ``D x D`` unitaries of ``n_patches``
    circuits and a few working copies within ``budget`` bytes.
    """
    D = 2 ** n_qubits
    ratio = _ratio(n_qubits)
    itemsize = 16 if dtype == torch.float64 else 8
    mem = 8 * n_patches * D * D * itemsize
    if mem > budget:
        return False, f"folding needs ~{mem / 2**20:.0f} MiB > budget {budget / 2**20:.0f} MiB: gate by gate"
    fold = D * group_ops * PASSES["fold_kept" if kept else "fold"] + rows * ratio * PASSES["gemm"]
    gates = rows * group_ops * PASSES["gates"]
    choice = fold < gates
    return choice, (f"{group_ops} group ops on {rows} samples, D={D}: fold {fold:.3g} vs gate by gate {gates:.3g} "
                    f"row-operations -> {'fold' if choice else 'gate by gate'}")


def live_states(n_segments: int) -> int:
    """States held per sample and circuit while a chunk of samples is processed (segment boundaries, working
    copies and, during Hessian-vector products, their tangents and cotangents)."""
    return 3 * (n_segments + 6)


def patch_block(n_qubits: int, n_patches: int, dtype: torch.dtype, device: torch.device) -> int:
    """Circuits processed together (all of them: every kernel is batched over circuits)."""
    return n_patches


def row_block(n_qubits: int, n_patches: int, dtype: torch.dtype, device: torch.device) -> int:
    """Largest chunk of samples worth processing at once on the CPU: about 16 MiB of state per chunk (a
    few working states then stay in a 32 MiB L3 cache; measured 2-3x slower per row for 65 MiB chunks at
    16 patches x 8 qubits), at least 32 samples. Unlimited on CUDA."""
    if device.type == "cuda":
        return 1 << 30
    itemsize = 16 if dtype == torch.float64 else 8
    per_row = n_patches * (2 ** n_qubits) * itemsize
    return max(32, (16 * 2 ** 20) // per_row)
