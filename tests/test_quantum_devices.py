"""Device selection for the quantum models: the measured cost model, explicit requests, and real device builds.

GPU presence and plugin installation are mocked by monkeypatching the probes in ``qlandscape.quantum.devices``;
the real-build tests run on this machine's CPU simulators, and check that asking PennyLane for ``lightning.gpu``
here really fails (so the wrapped error path is exercised for real).
"""

from __future__ import annotations

import logging

import pytest

from qlandscape.quantum import devices as qd
from qlandscape.quantum.devices import DeviceChoice, DeviceUnavailableError, create_device, select_device


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qd, "gpu_available", lambda: False)
    monkeypatch.setattr(qd, "lightning_gpu_installed", lambda: False)
    monkeypatch.setattr(qd, "kokkos_installed", lambda: False)


@pytest.fixture
def with_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qd, "gpu_available", lambda: True)
    monkeypatch.setattr(qd, "lightning_gpu_installed", lambda: True)
    monkeypatch.setattr(qd, "kokkos_installed", lambda: False)


def _crossover(batch: int, layers: int) -> int:
    """Smallest integer qubit count at/above the model's CPU crossover (lightning vs torch.statevector)."""
    import math
    return math.ceil(qd.cpu_crossover(batch, layers))


def _default_qubit_crossover(batch: int, layers: int) -> int:
    """Smallest integer qubit count at/above the lightning-vs-default.qubit crossover (parameter-shift path)."""
    import math
    return math.ceil(qd._table_crossover(qd.DEFAULT_QUBIT_CROSSOVER, batch, layers))


# ------------------------------------------------------------------------------------------------- cost model


def test_default_qubit_crossover_table_is_measured_and_monotone_in_batch() -> None:
    assert qd.DEFAULT_QUBIT_CROSSOVER, "measured table missing"
    for layers in {lay for lay, _ in qd.DEFAULT_QUBIT_CROSSOVER}:
        batches = sorted(b for lay, b in qd.DEFAULT_QUBIT_CROSSOVER if lay == layers)
        values = [qd.DEFAULT_QUBIT_CROSSOVER[(layers, b)] for b in batches]
        assert values == sorted(values), "a larger batch favours broadcasting, so its crossover is not lower"


def test_cpu_crossover_is_the_torch_statevector_table() -> None:
    """torch.statevector beats default.qubit at every measured size, so lightning overtakes it no earlier; the
    table covers the same grid and stays within the measured range (+2 for 'beyond every measured size')."""
    assert qd.CPU_CROSSOVER.keys() == qd.DEFAULT_QUBIT_CROSSOVER.keys()
    for key, value in qd.CPU_CROSSOVER.items():
        assert value >= qd.DEFAULT_QUBIT_CROSSOVER[key], key
        assert 2 <= value <= qd.CROSSOVER_MEASURED_MAX_QUBITS + 2, key
    for batch in (1, 3, 16, 64, 200):
        for layers in (1, 2, 5, 8, 12):
            assert qd.cpu_crossover(batch, layers) == qd._table_crossover(qd.CPU_CROSSOVER, batch, layers)
            assert qd.cpu_crossover(batch, layers) >= _default_qubit_crossover(batch, layers) - 1e-9


@pytest.mark.usefixtures("no_gpu")
@pytest.mark.parametrize("batch", [16, 64])
def test_auto_below_cpu_crossover_picks_the_torch_statevector(batch: int) -> None:
    n = _crossover(batch, 2) - 1
    assert n >= 1
    c = select_device("auto", n_qubits=n, batch_size=batch, n_layers=2, order=1)
    assert (c.name, c.diff_method, c.broadcast, c.torch_device) == ("torch.statevector", "backprop", True, "cpu")
    assert "crossover" in c.reason and str(n) in c.reason and f"batch {batch}" in c.reason


@pytest.mark.usefixtures("no_gpu")
@pytest.mark.parametrize("batch", [1, 16, 64])
def test_auto_at_or_above_cpu_crossover_picks_lightning_qubit_for_first_order_jobs(batch: int) -> None:
    n = max(_crossover(batch, 2), 1)
    c = select_device("auto", n_qubits=n, batch_size=batch, n_layers=2, order=1)
    assert (c.name, c.diff_method, c.broadcast) == ("lightning.qubit", "adjoint", False)
    assert "crossover" in c.reason


@pytest.mark.usefixtures("no_gpu")
@pytest.mark.parametrize("batch", [1, 64, 100_000])
def test_auto_never_picks_a_first_order_device_for_hessians_while_the_exact_route_fits(batch: int) -> None:
    """order=2 (the default): lightning's adjoint gives first derivatives only, so above the speed crossover auto
    still takes torch.statevector, whose memory per sample does not depend on the batch (it chunks the data it
    is given); the batch_size knob no longer moves the choice."""
    for n in (max(_crossover(batch, 2), 1), 8, 16, 20, 22):
        c = select_device("auto", n_qubits=n, batch_size=batch, n_layers=150)
        assert (c.name, c.diff_method) == ("torch.statevector", "backprop"), (n, c.reason)
        assert "exact second derivatives" in c.reason


@pytest.mark.usefixtures("no_gpu")
def test_auto_memory_guard_prefers_lightning(monkeypatch: pytest.MonkeyPatch) -> None:
    """When even one sample's states exceed the limit, no exact second-order route fits: lightning, and the
    reason says the Hessian-vector products will be finite differences."""
    monkeypatch.setattr(qd, "BACKPROP_MEMORY_LIMIT_BYTES", 1)
    c = select_device("auto", n_qubits=4, batch_size=64, n_layers=2)
    assert c.name == "lightning.qubit" and "GiB" in c.reason and "finite differences" in c.reason
    big = select_device("auto", n_qubits=26, batch_size=1, n_layers=2)  # the real limit: 2**26 * 16 B * 40 > 4 GiB
    assert big.name == "lightning.qubit"


@pytest.mark.usefixtures("with_gpu")
def test_auto_picks_lightning_gpu_only_above_gpu_crossover() -> None:
    big = max(qd.GPU_MIN_QUBITS, _crossover(64, 8))
    c = select_device("auto", n_qubits=big, batch_size=64, n_layers=8, order=1)
    assert (c.name, c.diff_method, c.broadcast) == ("lightning.gpu", "adjoint", False)
    assert "GPU crossover" in c.reason
    small = select_device("auto", n_qubits=2, batch_size=64, n_layers=2, order=1)
    assert small.name == "torch.statevector"


def test_torch_statevector_runs_on_cuda_when_torch_sees_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same code path on CUDA tensors: auto places torch.statevector on the GPU torch sees (mocked here: CI
    has no GPU); explicit CPU is honoured; CUDA demanded where there is none is a clear error before any work."""
    monkeypatch.setattr(qd, "torch_cuda_available", lambda: True)
    c = select_device("auto", n_qubits=8, batch_size=64, n_layers=150)
    assert (c.name, c.torch_device) == ("torch.statevector", "cuda") and "CUDA GPU" in c.reason
    assert select_device("auto", n_qubits=8, batch_size=64, torch_device="cpu").torch_device == "cpu"
    assert select_device("torch.statevector", n_qubits=8, batch_size=64, torch_device="cuda:1").torch_device == "cuda:1"
    monkeypatch.setattr(qd, "torch_cuda_available", lambda: False)
    assert select_device("auto", n_qubits=8, batch_size=64).torch_device == "cpu"
    with pytest.raises(DeviceUnavailableError, match="torch_device='cpu'"):
        select_device("auto", n_qubits=8, batch_size=64, torch_device="cuda")
    with pytest.raises(ValueError, match="torch_device must be"):
        select_device("auto", n_qubits=8, batch_size=64, torch_device="gpu")
    with pytest.raises(ValueError, match="order must be"):
        select_device("auto", n_qubits=8, batch_size=64, order=3)


@pytest.mark.parametrize("installed,gpu", [(False, False), (True, False), (False, True)])
def test_auto_never_picks_lightning_gpu_without_gpu_and_package(monkeypatch: pytest.MonkeyPatch, installed: bool,
                                                                gpu: bool) -> None:
    monkeypatch.setattr(qd, "lightning_gpu_installed", lambda: installed)
    monkeypatch.setattr(qd, "gpu_available", lambda: installed and gpu)
    c = select_device("auto", n_qubits=qd.GPU_MIN_QUBITS + 4, batch_size=64, n_layers=8)
    assert c.name == "lightning.qubit"


@pytest.mark.usefixtures("no_gpu")
def test_auto_parameter_shift_and_backprop_are_honoured() -> None:
    n = _default_qubit_crossover(64, 2)  # parameter-shift compares lightning with default.qubit
    ps = select_device("auto", n_qubits=n, batch_size=64, n_layers=2, diff_method="parameter-shift")
    assert (ps.name, ps.diff_method) == ("lightning.qubit", "parameter-shift")
    bp = select_device("auto", n_qubits=n, batch_size=64, n_layers=2, diff_method="backprop")
    assert (bp.name, bp.diff_method, bp.broadcast) == ("torch.statevector", "backprop", True)
    below = select_device("auto", n_qubits=n - 1, batch_size=64, n_layers=2, diff_method="parameter-shift")
    assert (below.name, below.diff_method) == ("default.qubit", "parameter-shift")


@pytest.mark.usefixtures("no_gpu")
def test_parameter_shift_uses_the_default_qubit_table_not_the_torch_one() -> None:
    """Between the two crossovers plain auto keeps torch.statevector, parameter-shift already takes lightning."""
    n = _default_qubit_crossover(64, 2)
    assert n < _crossover(64, 2), "the measured tables no longer differ at batch 64, 2 layers"
    plain = select_device("auto", n_qubits=n, batch_size=64, n_layers=2)
    assert plain.name == "torch.statevector"
    ps = select_device("auto", n_qubits=n, batch_size=64, n_layers=2, diff_method="parameter-shift")
    assert ps.name == "lightning.qubit" and f"crossover {n}" in ps.reason


def test_torch_statevector_is_backprop_only_and_not_a_pennylane_device() -> None:
    with pytest.raises(ValueError, match="default.qubit"):
        select_device("torch.statevector", n_qubits=2, batch_size=4, diff_method="parameter-shift")
    c = select_device("torch.statevector", n_qubits=2, batch_size=4)
    assert (c.diff_method, c.broadcast) == ("backprop", True)
    with pytest.raises(ValueError, match="TorchStatevector"):
        create_device(c, 2)


def test_selection_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="qlandscape"):
        c = select_device("default.qubit", n_qubits=3, batch_size=4)
    assert c.reason in caplog.text


# ------------------------------------------------------------------------------------------ explicit requests


@pytest.mark.usefixtures("no_gpu")
def test_explicit_lightning_gpu_not_installed_names_the_extra() -> None:
    with pytest.raises(DeviceUnavailableError, match=r"pip install qlandscape\[gpu\]"):
        select_device("lightning.gpu", n_qubits=20, batch_size=8)


def test_explicit_lightning_gpu_without_cuda_names_cpu_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qd, "lightning_gpu_installed", lambda: True)
    monkeypatch.setattr(qd, "gpu_available", lambda: False)
    with pytest.raises(DeviceUnavailableError, match="no CUDA GPU") as info:
        select_device("lightning.gpu", n_qubits=20, batch_size=8)
    assert "lightning.qubit" in str(info.value) and "auto" in str(info.value)


@pytest.mark.usefixtures("with_gpu")
def test_explicit_lightning_gpu_with_gpu_is_accepted() -> None:
    c = select_device("lightning.gpu", n_qubits=4, batch_size=8)
    assert (c.name, c.diff_method, c.broadcast) == ("lightning.gpu", "adjoint", False)
    assert "requested" in c.reason


@pytest.mark.usefixtures("no_gpu")
def test_explicit_kokkos_not_installed() -> None:
    with pytest.raises(DeviceUnavailableError, match="pip install pennylane-lightning-kokkos"):
        select_device("lightning.kokkos", n_qubits=4, batch_size=8)


def test_explicit_cpu_devices_and_diff_methods() -> None:
    c = select_device("lightning.qubit", n_qubits=2, batch_size=64)
    assert (c.diff_method, c.broadcast) == ("adjoint", False)
    c = select_device("default.qubit", n_qubits=20, batch_size=1)
    assert (c.diff_method, c.broadcast) == ("backprop", True)
    c = select_device("lightning.qubit", n_qubits=2, batch_size=1, diff_method="parameter-shift")
    assert c.diff_method == "parameter-shift"
    assert c.as_dict() == {"name": "lightning.qubit", "diff_method": "parameter-shift", "broadcast": False,
                           "reason": c.reason, "c_dtype": "complex128", "torch_device": "cpu"}


def test_unknown_device_lists_known_devices() -> None:
    with pytest.raises(ValueError, match="unknown device") as info:
        select_device("qiskit.aer", n_qubits=2, batch_size=1)
    for name in qd.KNOWN_DEVICES:
        assert name in str(info.value)


@pytest.mark.parametrize("device", ["lightning.qubit", "lightning.gpu", "lightning.kokkos"])
def test_backprop_on_lightning_is_rejected(device: str) -> None:
    with pytest.raises(ValueError, match="default.qubit"):
        select_device(device, n_qubits=2, batch_size=1, diff_method="backprop")


def test_bad_diff_method_rejected() -> None:
    with pytest.raises(ValueError, match="diff_method"):
        select_device("auto", n_qubits=2, batch_size=1, diff_method="finite-diff")


@pytest.mark.parametrize("kw", [{"n_qubits": 0, "batch_size": 1}, {"n_qubits": -3, "batch_size": 1},
                                {"n_qubits": 2.5, "batch_size": 1}, {"n_qubits": 2, "batch_size": 0},
                                {"n_qubits": 2, "batch_size": 1, "n_layers": 0}])
def test_bad_sizes_rejected(kw: dict) -> None:
    with pytest.raises(ValueError, match=">= 1"):
        select_device("auto", **kw)


# ------------------------------------------------------------------------------------------------ real builds


@pytest.mark.parametrize("name", ["default.qubit", "lightning.qubit"])
def test_create_device_runs_a_circuit(name: str) -> None:
    import pennylane as qml
    import torch

    choice = select_device(name, n_qubits=2, batch_size=3)
    dev = create_device(choice, wires=2)
    assert isinstance(dev, qml.devices.Device)

    @qml.qnode(dev, interface="torch", diff_method=choice.diff_method)
    def circuit(x: torch.Tensor, w: torch.Tensor) -> list:
        qml.RX(x[..., 0], wires=0)
        qml.RX(x[..., 1], wires=1)
        qml.RY(w[0], wires=0)
        qml.RY(w[1], wires=1)
        qml.CZ(wires=[0, 1])
        return [qml.expval(qml.PauliZ(q)) for q in range(2)]

    x = torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], dtype=torch.float64)
    w = torch.tensor([0.7, -0.2], dtype=torch.float64, requires_grad=True)
    out = torch.stack(list(circuit(x, w)), dim=-1)
    assert out.shape == (3, 2)
    expected = torch.cos(x) * torch.cos(w.detach())  # <Z_q> = cos(x_q) cos(w_q); CZ is diagonal
    # lightning + adjoint returns torch's default dtype (float32) for the forward values (PennyLane 0.45)
    torch.testing.assert_close(out.detach().double(), expected, rtol=0, atol=1e-6)
    out.sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


def test_real_lightning_gpu_build_fails_here_with_the_fix() -> None:
    if qd.gpu_available():  # pragma: no cover - only on a CUDA machine with the plugin
        pytest.skip("lightning.gpu can run here")
    choice = DeviceChoice("lightning.gpu", "adjoint", False, "test")
    with pytest.raises(DeviceUnavailableError, match=r"pip install qlandscape\[gpu\]"):
        create_device(choice, wires=2)


def test_create_device_rejects_bad_wires() -> None:
    with pytest.raises(ValueError, match="wires"):
        create_device(select_device("default.qubit", n_qubits=2, batch_size=1), wires=0)
