"""NTK dynamics along a training trajectory and kernel learning per checkpoint (qlandscape.ntk.dynamics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from qlandscape.adapter import Capabilities, CapabilityError, ModuleInfo
from qlandscape.data import load_digits
from qlandscape.models import MLP
from qlandscape.ntk.distance import kernel_distance
from qlandscape.ntk.dynamics import (
    KernelLearningResult,
    NTKDynamicsResult,
    checkpoint_model,
    kernel_learning_curve,
    ntk_dynamics,
)
from qlandscape.ntk.kernel import empirical_ntk
from qlandscape.ntk.linearized import kernel_regression
from qlandscape.params import ParamSpace
from qlandscape.train import train


def _flat(model: torch.nn.Module) -> np.ndarray:
    return ParamSpace.from_module(model).from_module_values(model, torch.float64).numpy()


@pytest.fixture(scope="module")
def run():
    """A tiny MLP trained 4 epochs on 120 digits (4x4 downsampled), a record per epoch."""
    data = load_digits(n_samples=120, downsample=4, seed=0)
    torch.manual_seed(0)
    model = MLP(data.n_features, (8,), data.n_classes).double()
    x, y = data.train
    data64 = ((x.double(), y), (data.x_test.double(), data.y_test))
    _, res = train(model, data64[0], test=data64[1], epochs=4, lr=0.1, batch_size=32, record_every=1,
                   progress=False)
    return model, res, data64


def test_checkpoint_model_reproduces_row_and_leaves_original(run):
    model, res, _ = run
    before = _flat(model)
    for t in (0, 2, len(res.steps) - 1):
        net = checkpoint_model(model, res.trajectory[t])
        np.testing.assert_array_equal(_flat(net), res.trajectory[t])
        assert not net.training
    np.testing.assert_array_equal(_flat(model), before)
    net = checkpoint_model(model, torch.tensor(res.trajectory[1]))
    np.testing.assert_array_equal(_flat(net), res.trajectory[1])
    with pytest.raises(ValueError, match=r"shape \(3,\).*parameter entries.*net\.1\.weight"):
        checkpoint_model(model, np.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        checkpoint_model(model, res.trajectory[:2])


def test_ntk_dynamics_against_direct_kernels(run, tmp_path):
    model, res, ((x, y), _) = run
    xs, ys = x[:20], y[:20]
    out = ntk_dynamics(model, res, xs, targets=ys, keep_kernels=True, progress=False)
    T = res.trajectory.shape[0]
    assert T == 5 and out.checkpoints == list(range(T))
    nets = [checkpoint_model(model, row) for row in res.trajectory]
    Ks = [empirical_ntk(n, xs, kind="trace", progress=False) for n in nets]
    outs = [n(xs).detach() for n in nets]

    assert out.kernel_to_initial[0] == 0.0 and out.kernel_to_final[-1] == 0.0
    assert out.kernel_to_initial[-1] > 1e-4 and out.param_to_initial[-1] > 1e-2  # the kernel really moved
    for arr in (out.kernel_to_initial, out.kernel_to_final, out.kernel_to_previous[1:]):
        assert np.all((arr >= 0) & (arr <= 1))
    for t in range(T):
        assert abs(out.kernel_to_initial[t] - kernel_distance(Ks[0], Ks[t])) <= 1e-12
        assert abs(out.kernel_to_final[t] - kernel_distance(Ks[t], Ks[-1])) <= 1e-12
        if t:
            assert abs(out.kernel_to_previous[t] - kernel_distance(Ks[t - 1], Ks[t])) <= 1e-12
        assert abs(out.kernel_norms[t] - float(torch.linalg.norm(Ks[t]))) <= 1e-12 * out.kernel_norms[t]
        np.testing.assert_allclose(out.kernels[t], Ks[t].numpy(), rtol=0, atol=0)
        rms = float(torch.sqrt(torch.mean((outs[t] - outs[-1]) ** 2)))
        assert abs(out.function_to_final[t] - rms) <= 1e-12
        dis = float((outs[t].argmax(1) != outs[-1].argmax(1)).double().mean())
        assert out.disagreement_to_final[t] == dis
        assert out.accuracy[t] == float((outs[t].argmax(1) == ys).double().mean())
    assert math.isnan(out.kernel_to_previous[0]) and math.isnan(out.velocity[0])
    # time in epochs: one record per epoch
    np.testing.assert_allclose(out.times_epochs, np.arange(T), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(out.steps, res.steps)
    dt = np.diff(out.times_epochs)
    np.testing.assert_allclose(out.velocity[1:], out.kernel_to_previous[1:] / dt, rtol=1e-15)
    np.testing.assert_allclose(out.param_to_initial, np.linalg.norm(res.trajectory - res.trajectory[0], axis=1),
                               rtol=1e-15, atol=0)
    np.testing.assert_allclose(out.param_to_final, np.linalg.norm(res.trajectory - res.trajectory[-1], axis=1),
                               rtol=1e-15, atol=0)
    assert out.function_to_final[-1] == 0.0 and out.param_to_final[-1] == 0.0
    assert out.info["n_kernel_evaluations"] == T and out.info["time_unit"] == "epochs"

    out.save(tmp_path / "dyn")
    back = NTKDynamicsResult.load(tmp_path / "dyn")
    np.testing.assert_array_equal(back.kernels, out.kernels)
    np.testing.assert_array_equal(back.velocity, out.velocity)
    assert back.checkpoints == out.checkpoints and back.kind == "trace" and back.n_inputs == 20
    assert back.info == out.info


def test_ntk_dynamics_with_checkpoints_inside_epochs(run):
    """Records every 2 optimizer steps (3 per epoch of 96 samples in batches of 32: dt = 2/3 epoch): times are
    steps / steps_per_epoch, velocities S / dt, and the kernels are those of the recorded weights."""
    model, _, ((x, y), _) = run
    _, res = train(model, (x, y), epochs=2, lr=0.1, batch_size=32, record_steps=2, progress=False)
    np.testing.assert_array_equal(res.steps, [0, 2, 4, 6])
    out = ntk_dynamics(model, res, x[:15], progress=False)
    np.testing.assert_allclose(out.times_epochs, [0, 2 / 3, 4 / 3, 2], rtol=0, atol=1e-15)
    assert out.info["time_unit"] == "epochs" and out.info["steps_per_epoch"] == 3
    Ks = [empirical_ntk(checkpoint_model(model, row), x[:15], kind="trace", progress=False) for row in res.trajectory]
    for t in range(1, 4):
        S = kernel_distance(Ks[t - 1], Ks[t])
        assert abs(out.kernel_to_previous[t] - S) <= 1e-12
        assert abs(out.velocity[t] - S / (2 / 3)) <= 1e-11


def test_ntk_dynamics_subset_full_kind_and_no_targets(run):
    model, res, ((x, _), _) = run
    xs = x[:6]
    out = ntk_dynamics(model, res, xs, kind="full", checkpoints=[1, -1], progress=False)
    assert out.checkpoints == [1, 4] and out.kernels.shape == (0,)
    K1 = empirical_ntk(checkpoint_model(model, res.trajectory[1]), xs, kind="full", progress=False)
    K4 = empirical_ntk(checkpoint_model(model, res.trajectory[4]), xs, kind="full", progress=False)
    d = kernel_distance(K1, K4)
    assert abs(out.kernel_to_final[0] - d) <= 1e-12 and abs(out.kernel_to_initial[1] - d) <= 1e-12
    assert abs(out.velocity[1] - d / 3.0) <= 1e-12
    assert np.all(np.isnan(out.disagreement_to_final)) and np.all(np.isnan(out.accuracy))


def test_ntk_dynamics_errors(run):
    model, res, ((x, _), _) = run
    with pytest.raises(ValueError, match="needs at least 2 checkpoints"):
        ntk_dynamics(model, res, x[:4], checkpoints=[2], progress=False)
    one = type(res)(**{**res.__dict__, "trajectory": res.trajectory[:1], "steps": res.steps[:1]})
    with pytest.raises(ValueError, match="needs at least 2 checkpoints"):
        ntk_dynamics(model, one, x[:4], progress=False)
    wide = type(res)(**{**res.__dict__, "trajectory": np.zeros((5, 7))})
    with pytest.raises(ValueError, match="width 7.*trainable parameter entries"):
        ntk_dynamics(model, wide, x[:4], progress=False)
    with pytest.raises(ValueError, match="N >= 1"):
        ntk_dynamics(model, res, x[:0], progress=False)
    with pytest.raises(ValueError, match="strictly increasing"):
        ntk_dynamics(model, res, x[:4], checkpoints=[3, 1], progress=False)
    with pytest.raises(ValueError, match="targets"):
        ntk_dynamics(model, res, x[:4], targets=torch.zeros(3, dtype=torch.long), progress=False)


def test_kernel_learning_curve(run, tmp_path):
    model, res, data = run
    (x, y), (xt, yt) = data
    n_tr, n_te = 30, 12
    out = kernel_learning_curve(model, res, data, checkpoints=[0, 4], n_train=n_tr, n_test=n_te,
                                linearized_epochs=2, progress=False)
    assert out.checkpoints == [0, 4] and out.steps.tolist() == [res.steps[0], res.steps[4]]
    xa = torch.cat([x[:n_tr], xt[:n_te]])
    for i, t in enumerate(out.checkpoints):
        net = checkpoint_model(model, res.trajectory[t])
        K = empirical_ntk(net, xa, kind="trace", progress=False)
        ref = kernel_regression(K[:n_tr, :n_tr], y[:n_tr], K[n_tr:, :n_tr], y_test=yt[:n_te], n_classes=10)
        assert out.regression_accuracy[i] == ref.accuracy
        assert out.regression_jitter[i] == ref.jitter
        assert 0.0 <= out.linearized_accuracy[i] <= 1.0 and 0.0 <= out.linearized_best_accuracy[i] <= 1.0
        acc = float((net(xt[:n_te]).argmax(1) == yt[:n_te]).double().mean())
        assert out.checkpoint_accuracy[i] == acc
    assert out.network_accuracy == out.checkpoint_accuracy[-1]
    assert out.info["n_train"] == n_tr and out.info["n_test"] == n_te

    out.save(tmp_path / "kl")
    back = KernelLearningResult.load(tmp_path / "kl")
    np.testing.assert_array_equal(back.regression_accuracy, out.regression_accuracy)
    np.testing.assert_array_equal(back.linearized_accuracy, out.linearized_accuracy)
    assert back.network_accuracy == out.network_accuracy and back.checkpoints == [0, 4]


def test_kernel_learning_curve_full_kind_regression_only(run):
    model, res, data = run
    (x, y), (xt, yt) = data
    out = kernel_learning_curve(model, res, data, checkpoints=[-1], methods=("regression",), kind="full",
                                n_train=8, n_test=5, progress=False)
    K = empirical_ntk(checkpoint_model(model, res.trajectory[-1]), torch.cat([x[:8], xt[:5]]), kind="full",
                      progress=False)
    ref = kernel_regression(K[:80, :80], y[:8], K[80:, :80], y_test=yt[:5])
    assert out.regression_accuracy[0] == ref.accuracy
    assert np.isnan(out.linearized_accuracy[0]) and out.methods == ["regression"]
    with pytest.raises(ValueError, match="methods"):
        kernel_learning_curve(model, res, data, methods=("bogus",), progress=False)


class _NoTorchFunc(nn.Module):
    """A layer that declares no torch.func support (as an adjoint-differentiated QNode would)."""

    def __init__(self, d: int, c: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, c)

    def forward(self, x):
        return self.lin(x)

    def qlandscape_module_info(self) -> ModuleInfo:
        return ModuleInfo(Capabilities(autograd_order=1, torch_func=False, notes=("fake adjoint layer",)))


def test_model_without_torch_func_and_float32(run):
    _, _, ((x, y), (xt, yt)) = run
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(16, 6), nn.Tanh(), _NoTorchFunc(6, 10))  # float32
    x32, xt32 = x.float(), xt.float()
    _, res = train(model, (x32, y), test=(xt32, yt), epochs=2, lr=0.1, batch_size=32, progress=False)
    np.testing.assert_array_equal(_flat(checkpoint_model(model, res.trajectory[-1])), res.trajectory[-1])
    out = ntk_dynamics(model, res, x32[:8], implementation="autograd", progress=False)
    K0 = empirical_ntk(checkpoint_model(model, res.trajectory[0]), x32[:8], kind="trace", progress=False)
    K2 = empirical_ntk(checkpoint_model(model, res.trajectory[2]), x32[:8], kind="trace", progress=False)
    assert abs(out.kernel_to_final[0] - kernel_distance(K0, K2)) <= 1e-12
    data = ((x32, y), (xt32, yt))
    with pytest.raises(CapabilityError, match="method 'linearized'.*fake adjoint layer"):
        kernel_learning_curve(model, res, data, n_train=10, n_test=5, progress=False)
    reg = kernel_learning_curve(model, res, data, methods=["regression"], n_train=10, n_test=5, progress=False)
    assert np.all((reg.regression_accuracy >= 0) & (reg.regression_accuracy <= 1))


def test_batchnorm_running_statistics_are_refused_not_silently_reused():
    """A trajectory records parameters only: a BatchNorm model rebuilt at an early checkpoint would carry the
    trained model's running statistics (before this check, ntk_dynamics returned plausible distances for it)."""
    import pytest

    from qlandscape import train
    from qlandscape.data import load_digits
    from qlandscape.models import MLP
    from qlandscape.ntk import checkpoint_model, ntk_dynamics
    ds = load_digits(n_samples=60, downsample=4)
    torch.manual_seed(0)
    trained, tr = train(MLP(16, (8,), 10, "tanh", batchnorm=True), ds, epochs=2, progress=False)
    with pytest.raises(ValueError, match="running statistics.*model.batchnorm=false"):
        ntk_dynamics(trained, tr, ds.x_train[:5], progress=False)
    with pytest.raises(ValueError, match="running statistics"):
        checkpoint_model(trained, tr.trajectory[0])
