"""Inputs that would reach the machine (huge dense matrices, registers, cached graphs) or give raw torch
errors (labels, dtypes, hyper-parameters) are refused before any expensive work, with one-line messages
naming the argument, the value and the way out (issue 19, finding 6)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import qlandscape as ql
from qlandscape.curvature.operator import dense_matrix, dense_matrix_bytes
from qlandscape.objective import MemoryBudgetError
from qlandscape.quantum import patch_qnn
from qlandscape.quantum.devices import state_bytes
from qlandscape.train import train


def _data(n: int = 20, d: int = 5, c: int = 3, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, c, (n,), generator=g)


def _mlp(d: int = 5, c: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, c)).double()


def _no_hvp(*args: Any, **kwargs: Any) -> Tensor:
    raise AssertionError("an HVP was started")


# ---------------------------------------------------------------------------------------------- dense matrices
def test_dense_hessian_of_a_301k_parameter_model_is_refused_before_any_hvp():
    model = nn.Linear(1000, 301)  # 301,301 parameters: ~676 GiB as a dense float64 matrix
    x, y = torch.randn(4, 1000), torch.randint(0, 301, (4,))
    ob = ql.Objective(model, "cross_entropy", (x, y))
    assert ob.n_params == 301_301
    ob.hvp = _no_hvp  # type: ignore[method-assign]
    with pytest.raises(MemoryBudgetError) as info:
        ql.dense_hessian(ob)
    msg = str(info.value)
    assert "(301301, 301301)" in msg and "~678.1 GiB" in msg and "301301 HVPs" in msg and "memory budget" in msg
    assert "hessian_eigs" in msg and "spectral_density" in msg and "params=" in msg and "memory_budget=" in msg
    assert "\n" not in msg
    assert isinstance(info.value, ValueError) and isinstance(info.value, MemoryError)
    assert ob.counters.hvp == 0 and ob.counters.graph_builds == 0


def test_dense_hessian_over_an_explicit_budget_states_the_estimate_and_the_budget():
    ob = ql.Objective(_mlp(), "cross_entropy", _data())
    need = dense_matrix_bytes(ob.n_params, torch.float64)
    assert need == 75 * 75 * 8 + 3 * 75 * 75 * 8  # block_size 256 > n: three (n, n) working blocks
    with pytest.raises(MemoryBudgetError, match=rf"needs ~.* and 75 HVPs, over the memory budget of 1000 B \(given\)"
                                                rf".*memory_budget={need} or more"):
        ql.dense_hessian(ob, memory_budget=1000)
    assert ob.counters.hvp == 0


def test_dense_hessian_within_an_explicit_budget_equals_the_default_one_and_is_symmetric():
    ob = ql.Objective(_mlp(), "cross_entropy", _data())
    H = ql.dense_hessian(ob)
    for block_size in (7, 256):
        H2 = ql.dense_hessian(ob, block_size, memory_budget=dense_matrix_bytes(ob.n_params, ob.dtype, block_size))
        assert torch.equal(H2, H)
    assert torch.equal(H, H.T)


class _HugeOperator:
    """A symmetric operator too large to hold densely; any product fails the test."""

    n = 200_000
    dtype = torch.float32
    device = torch.device("cpu")

    def matmat(self, V: Tensor) -> Tensor:
        raise AssertionError("a product was started")

    def work(self) -> dict[str, int]:
        return {"hvp": 0}

    def provenance(self) -> dict[str, Any]:
        return {}


def test_dense_matrix_of_a_large_operator_is_refused_before_any_product():
    with pytest.raises(MemoryBudgetError, match=r"dense_matrix: the dense \(200000, 200000\) float32 matrix needs"):
        dense_matrix(_HugeOperator(), block_size=1)


# ---------------------------------------------------------------------------------------------- quantum width
@pytest.fixture
def no_simulator_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building any PennyLane device or torch simulator fails the test (a 32-qubit state is 64 GiB)."""

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a simulator was built")

    for name in ("create_device", "CompiledCircuit", "TorchStatevector"):
        monkeypatch.setattr(patch_qnn, name, boom)


@pytest.mark.parametrize("device, states, needs", [("auto", 1, "64.0 GiB"), ("lightning.qubit", 1, "64.0 GiB"),
                                                   ("torch.statevector", 4, "256.0 GiB"),
                                                   ("default.qubit", 256, "16.0 TiB")])
def test_patch_qnn_with_32_qubits_is_refused_before_any_device_is_built(no_simulator_built, device, states, needs):
    with pytest.raises(MemoryBudgetError) as info:
        patch_qnn.PatchQNN("kawase2025", n_qubits=32, layers=1, device=device)
    msg = str(info.value)
    assert msg.startswith(f"n_qubits=32: {states} state vector(s) of 2**32 complex128 amplitudes")
    assert needs in msg and "over the memory budget of" in msg and "memory_budget=" in msg and "n_qubits <= " in msg
    assert "\n" not in msg


def test_patch_qnn_width_check_uses_an_explicit_memory_budget(no_simulator_built):
    # digits preset: 4 qubits on the tape simulator, 4 patches x batch_size 64 states of 16 amplitudes = 64 KiB
    assert state_bytes(4, "complex128", 4 * 64) == 65536
    with pytest.raises(MemoryBudgetError, match=r"n_qubits=4: 256 state vector\(s\).*over the memory budget of "
                                                r"1.0 KiB \(memory_budget\).*a smaller batch_size"):
        patch_qnn.PatchQNN("digits", device="torch.statevector", simulator="tape", memory_budget=1024)


def test_patch_qnn_width_check_refuses_one_byte_over_the_budget_and_builds_at_it():
    with pytest.raises(MemoryBudgetError, match="need 64.0 KiB"):
        patch_qnn.PatchQNN("digits", memory_budget=65535)
    model = patch_qnn.PatchQNN("digits", memory_budget=65536)  # exactly the 64 KiB its tape states take
    assert model.config["simulator"] == "tape"
    assert model(torch.zeros(2, 8, 8)).shape == (2, 10)


# ---------------------------------------------------------------------------------------------- cached graphs
def test_explicit_cache_graph_over_the_memory_budget_is_refused():
    model, data = _mlp(), _data()
    with pytest.raises(MemoryBudgetError, match=r"cache_graph=True: the first-order graphs of all 4 chunks would hold "
                                                r"~.* \(estimated\), over the memory budget of 1000 B .*"
                                                r"cache_graph='auto'.*memory_budget="):
        ql.Objective(model, "cross_entropy", data, batch_size=5, second_order="reverse", cache_graph=True,
                     memory_budget=1000)
    fits = ql.Objective(model, "cross_entropy", data, batch_size=5, second_order="reverse", cache_graph=True)
    assert fits.cache_graph and fits.graph_bytes is not None and fits.graph_bytes <= fits.memory_budget


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_cache_graph_must_be_true_false_or_auto(bad):
    with pytest.raises(ValueError, match=rf"cache_graph must be True, False or 'auto', got {bad!r}"):
        ql.Objective(_mlp(), "cross_entropy", _data(), cache_graph=bad)


# ---------------------------------------------------------------------------------------------- labels
def test_an_out_of_range_label_past_the_first_samples_is_refused_at_objective_construction():
    x, y = _data(c=10, d=5)
    y[13] = 12
    with pytest.raises(ValueError, match=r"the targets hold class 12 \(sample 13; labels span 0..12\) but the model "
                                         r"has 10 outputs, so classes must be in 0..9.*n_classes=13"):
        ql.Objective(_mlp(c=10), "cross_entropy", (x, y), batch_size=7)


@pytest.mark.parametrize("loss", ["nll", nn.CrossEntropyLoss()])
def test_negative_labels_other_than_ignore_index_are_refused(loss):
    x, y = _data()
    y[6] = -3
    with pytest.raises(ValueError, match=r"class -3 \(sample 6.*negative classes are invalid"):
        ql.Objective(_mlp(), loss, (x, y))
    y[6] = -100  # the ignore_index is not a class
    assert ql.Objective(_mlp(), loss, (x, y)).n_samples == 20


@pytest.mark.parametrize("loss, probabilities", [("cross_entropy", True), (nn.NLLLoss(), False)])
def test_float_class_labels_are_refused_naming_the_cast(loss, probabilities):
    x, y = _data()
    with pytest.raises(ValueError, match=r"needs integer class indices 0..2 as targets, got torch.float64 targets of "
                                         r"shape \(20,\); convert them with y.long\(\)"):
        ql.Objective(_mlp(), loss, (x, y.double()))
    soft = torch.softmax(torch.randn(20, 3, dtype=torch.float64), dim=1)
    if probabilities:  # cross-entropy's class probabilities stay accepted
        assert ql.Objective(_mlp(), loss, (x, soft)).loss() > 0
    else:
        with pytest.raises(ValueError, match="integer class indices"):
            ql.Objective(_mlp(), loss, (x, soft))


def test_train_refuses_an_out_of_range_label_before_the_first_epoch():
    x, y = _data(c=3)
    y[13] = 12
    with pytest.raises(ValueError, match=r"the training targets hold class 12 \(sample 13.*3 outputs"):
        train(_mlp(), (x, y), epochs=1, progress=False)
    xt, yt = _data(n=6, seed=1)
    yt[2] = 3
    with pytest.raises(ValueError, match=r"the test targets hold class 3 \(sample 2"):
        train(_mlp(), _data(), epochs=1, test=(xt, yt), progress=False)


# ---------------------------------------------------------------------------------------------- dtypes
def test_float8_dtypes_are_refused_naming_the_supported_ones():
    with pytest.raises(ValueError, match=r"dtype=torch.float8_e4m3fn is not supported; use torch.float64 or "
                                         r"torch.float32"):
        ql.Objective(_mlp(), "cross_entropy", _data(), dtype=torch.float8_e4m3fn)


def test_the_compiled_quantum_simulator_refuses_float16_parameters_naming_the_way_out():
    model = patch_qnn.PatchQNN("digits", simulator="compiled")
    x, y = torch.randn(4, 8, 8), torch.randint(0, 10, (4,))
    with pytest.raises(ValueError, match=r"compiled quantum simulator runs float32 or float64 parameters .*got "
                                         r"torch.float16.*simulator='tape'"):
        ql.Objective(model, "cross_entropy", (x, y), dtype="float16").gradient()
    tape = patch_qnn.PatchQNN("digits", simulator="tape")  # plain torch autograd: float16 runs
    assert torch.isfinite(ql.Objective(tape, "cross_entropy", (x, y), dtype="float16").gradient()).all()


# ---------------------------------------------------------------------------------------------- train options
@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=float("nan")), r"lr must be a finite number > 0, got nan"),
    (dict(lr=float("inf")), r"lr must be a finite number > 0, got inf"),
    (dict(lr=0.0), r"lr must be a finite number > 0, got 0.0"),
    (dict(lr="0.1"), r"lr must be a finite number > 0, got '0.1'"),
    (dict(momentum=float("nan")), r"momentum must be a finite number in \[0, 1\), got nan"),
    (dict(momentum=1.0), r"momentum must be a finite number in \[0, 1\), got 1.0"),
    (dict(momentum=-0.1), r"momentum must be a finite number in \[0, 1\), got -0.1"),
    (dict(weight_decay=float("nan")), r"weight_decay must be a finite number >= 0, got nan"),
    (dict(weight_decay=-1e-4), r"weight_decay must be a finite number >= 0, got -0.0001"),
    (dict(epochs=1.5), r"epochs must be an integer >= 0, got 1.5"),
    (dict(epochs=True), r"epochs must be an integer >= 0, got True"),
    (dict(batch_size=0), r"batch_size must be an integer >= 1, got 0"),
    (dict(batch_size=8.0), r"batch_size must be an integer >= 1, got 8.0"),
    (dict(record_every=0), r"record_every must be an integer >= 1, got 0"),
])
def test_train_refuses_invalid_hyper_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train(_mlp(), _data(), progress=False, **{"epochs": 1, **kwargs})


def test_train_refuses_a_nan_lr_and_accepts_numpy_and_int_numbers():
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got np.float64\(nan\)"):
        train(_mlp(), _data(), epochs=1, lr=np.float64("nan"), progress=False)
    _, res = train(_mlp(), _data(), epochs=np.int64(1), lr=np.float64(0.01), momentum=0, weight_decay=0,
                      batch_size=np.int64(8), progress=False)
    assert res.train_loss.shape == (2,)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dense_eigenvalues_of_a_half_precision_objective_match_float64_to_its_precision(dtype):
    # eigh has no half-precision kernels: the dense path decomposes the (exactly representable) matrix in
    # float32. Tolerance: the HVPs themselves run in half precision (eps 1e-3 / 8e-3), so the eigenvalues agree
    # with float64 to a few percent of the largest, not better.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    ref = ql.hessian_eigs(ql.Objective(model, "cross_entropy", (x, y), dtype="float64"), k=3)
    half = ql.hessian_eigs(ql.Objective(model, "cross_entropy", (x, y), dtype=dtype), k=3)
    assert half.method == "dense"
    np.testing.assert_allclose(half.eigenvalues, ref.eigenvalues, atol=0.05 * abs(ref.eigenvalues[0]))
