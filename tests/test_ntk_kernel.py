"""Empirical NTK (qlandscape.ntk.kernel): every route against a brute-force per-sample autograd reference."""

from __future__ import annotations

import copy
from typing import Optional, Sequence

import pytest
import torch
from torch import Tensor, nn

from qlandscape.adapter import Capabilities, CapabilityError, ModuleInfo
from qlandscape.models import MLP, SmallCNN
from qlandscape.ntk.kernel import empirical_ntk

ROUTES = ("structured", "jacobian", "autograd")
# torch's notice for padding='same' with an even kernel (ConvZoo uses one on purpose)
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


def reference_jacobian(model: nn.Module, x: Tensor, names: Optional[Sequence[str]] = None) -> Tensor:
    """(N, C, P): per-sample, per-output ``torch.autograd.grad``, parameters in ``model.parameters()`` order
    (restricted to ``names`` if given). The model is evaluated in eval mode on a float64 copy."""
    m = copy.deepcopy(model).double().eval()
    params = [p for n, p in m.named_parameters() if names is None or n in names]
    rows = []
    for i in range(x.shape[0]):
        out = m(x[i:i + 1].double())
        per_c = []
        for c in range(out.shape[1]):
            gs = torch.autograd.grad(out[0, c], params, retain_graph=True, allow_unused=True)
            per_c.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(gs, params)]))
        rows.append(torch.stack(per_c))
    return torch.stack(rows)


def ref_full(J: Tensor) -> Tensor:
    return J.reshape(-1, J.shape[-1]) @ J.reshape(-1, J.shape[-1]).T


def ref_trace(J: Tensor) -> Tensor:
    return torch.einsum("icp,jcp->ij", J, J)


def rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


class Custom(nn.Module):
    """Linear layers used in a custom way: bias-free layers, a product of a layer's output with itself, a skip."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 10)
        self.b = nn.Linear(10, 4, bias=False)
        self.c = nn.Linear(6, 4, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.a(x)
        return self.b(torch.tanh(h) * h) + torch.sin(self.c(x))


class Shared(nn.Module):
    """One Linear applied twice (weight sharing): the structured route must refuse."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 5)
        self.out = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.tanh(self.a(torch.tanh(self.a(x)))))


class NoTorchFunc(nn.Module):
    """A plain network (with a LayerNorm, so not Linear-only) that declares torch.func unsupported (as
    lightning adjoint QNodes do)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def qlandscape_module_info(self) -> ModuleInfo:
        return ModuleInfo(Capabilities(torch_func=False, notes=("declared for the test",)))


class ConvZoo(nn.Module):
    """Conv2d layers of every shape the structured route handles: stride, dilation, 'same' padding with an even
    kernel (asymmetric: the extra row/column on the bottom/right), 'valid', rectangular kernels, several input
    channels, no bias; and a Linear head on the flattened feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, kernel_size=(3, 2), stride=(2, 1), padding=1)
        self.c2 = nn.Conv2d(3, 4, kernel_size=2, padding="same", dilation=(1, 2), bias=False)
        self.c3 = nn.Conv2d(4, 2, kernel_size=2, padding="valid")
        self.head = nn.Linear(2 * 2 * 6, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.c1(x))
        h = torch.sin(self.c2(h)) + h.mean(dim=1, keepdim=True)
        return self.head(torch.tanh(self.c3(h)).flatten(1))


class ConvUnsupported(nn.Module):
    """Conv layers the structured route refuses: grouped, reflect padding."""

    def __init__(self) -> None:
        super().__init__()
        self.g = nn.Conv2d(2, 4, 3, padding=1, groups=2)
        self.r = nn.Conv2d(4, 2, 3, padding=1, padding_mode="reflect")

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.r(torch.tanh(self.g(x)))).mean(dim=(2, 3))


class ConvWeightOutside(nn.Module):
    """A conv weight that also enters the output outside Conv2d.forward: the gradient check must catch it."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(1, 2, 3)
        self.head = nn.Linear(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.c(x)).mean(dim=(2, 3))) + self.c.weight.sum()


def _bn_model() -> nn.Module:
    torch.manual_seed(3)
    m = MLP(16, [12, 8], 5, "tanh", batchnorm=True)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm1d):
            mod.running_mean.normal_()
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.normal_()
            mod.bias.data.normal_()
    return m


def _cases() -> list[tuple[str, nn.Module, Tensor, tuple[str, ...]]]:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    return [
        ("mlp", MLP(16, [12, 8], 5, "tanh"), torch.randn(7, 16, generator=g), ROUTES),
        ("custom", Custom(), torch.randn(6, 6, generator=g), ROUTES),
        ("cnn", SmallCNN(1, (3, 4), 4), torch.randn(5, 1, 8, 8, generator=g), ROUTES),
        ("batchnorm", _bn_model(), torch.randn(6, 16, generator=g), ("jacobian", "autograd")),
        ("convzoo", ConvZoo(), torch.randn(6, 2, 5, 6, generator=g), ROUTES),
        ("conv-unsupported", ConvUnsupported(), torch.randn(4, 2, 5, 5, generator=g), ("jacobian", "autograd")),
        ("conv-weight-outside", ConvWeightOutside(), torch.randn(4, 1, 5, 5, generator=g), ("jacobian", "autograd")),
        ("cnn-batchnorm", SmallCNN(1, (3, 4), 4, batchnorm=True).eval(), torch.randn(5, 1, 6, 6, generator=g),
         ("jacobian", "autograd")),
    ]


CASES = _cases()


@pytest.mark.parametrize("name,model,x,routes", CASES, ids=[c[0] for c in CASES])
def test_routes_match_reference(name: str, model: nn.Module, x: Tensor, routes: tuple[str, ...]) -> None:
    J = reference_jacobian(model, x)
    N, C, _ = J.shape
    Kf, Kt = ref_full(J), ref_trace(J)
    for impl in (*routes, "auto"):
        K = empirical_ntk(model, x, implementation=impl)
        assert K.shape == (N * C, N * C) and K.dtype == torch.float64
        assert rel(K, Kf) < 1e-12, (impl, rel(K, Kf))
        T = empirical_ntk(model, x, kind="trace", implementation=impl)
        assert T.shape == (N, N)
        assert rel(T, Kt) < 1e-12, (impl, rel(T, Kt))
        # traced = SUM over outputs of the diagonal (c, c) entries of the full kernel
        assert rel(torch.einsum("icjc->ij", K.reshape(N, C, N, C)), T) < 1e-12
        # symmetric exactly, positive semi-definite
        assert torch.equal(K, K.T) and torch.equal(T, T.T)
        ev = torch.linalg.eigvalsh(K)
        assert float(ev.min()) >= -1e-10 * float(ev.max())


@pytest.mark.parametrize("case,route", [(0, "structured"), (1, "structured"), (2, "structured"), (3, "jacobian"),
                                        (4, "structured"), (5, "jacobian"), (6, "jacobian"), (7, "jacobian")])
def test_auto_picks_route(case: int, route: str) -> None:
    _, model, x, _ = CASES[case]
    assert torch.equal(empirical_ntk(model, x), empirical_ntk(model, x, implementation=route))


def test_sample_major_indexing() -> None:
    _, model, x, _ = CASES[0]
    J = reference_jacobian(model, x)
    N, C, _ = J.shape
    for impl in ROUTES:
        K = empirical_ntk(model, x, implementation=impl)
        for i, c, j, d in [(0, 0, 0, 1), (1, 2, 4, 3), (6, 4, 2, 0), (3, 1, 3, 4), (5, 3, 6, 2)]:
            assert abs(float(K[i * C + c, j * C + d]) - float(J[i, c] @ J[j, d])) < 1e-12 * float(K.abs().max())


@pytest.mark.parametrize("impl", ROUTES)
@pytest.mark.parametrize("kind", ["full", "trace"])
@pytest.mark.parametrize("case", [0, 4])
def test_blocking_gives_same_kernel(impl: str, kind: str, case: int) -> None:
    _, model, x, _ = CASES[case]
    Ks = [empirical_ntk(model, x, kind=kind, implementation=impl, block_size=b) for b in (None, 1, 3, x.shape[0])]
    for K in Ks[1:]:
        assert rel(K, Ks[0]) < 1e-13
        assert torch.equal(K, K.T)


def test_params_selection() -> None:
    _, model, x, _ = CASES[0]
    for sel, names in [("net.5.*", ["net.5.weight", "net.5.bias"]),
                       (["net.1.bias", "net.3.weight"], ["net.1.bias", "net.3.weight"])]:
        J = reference_jacobian(model, x, names)
        for impl in ROUTES:
            assert rel(empirical_ntk(model, x, params=sel, implementation=impl), ref_full(J)) < 1e-12
            assert rel(empirical_ntk(model, x, kind="trace", params=sel, implementation=impl), ref_trace(J)) < 1e-12
    # a CNN's Linear head alone: the convolutions are then fixed functions, so "structured" applies
    _, cnn, xc, _ = CASES[2]
    J = reference_jacobian(cnn, xc, ["head.weight", "head.bias"])
    assert rel(empirical_ntk(cnn, xc, params="head.*", implementation="structured"), ref_full(J)) < 1e-12
    # conv layers with only their weight or only their bias selected (the others fixed)
    _, zoo, xz, _ = CASES[4]
    for names in (["c1.bias", "c3.weight"], ["c2.weight"], ["c1.weight", "head.bias"]):
        J = reference_jacobian(zoo, xz, names)
        for impl in ROUTES:
            assert rel(empirical_ntk(zoo, xz, params=names, implementation=impl), ref_full(J)) < 1e-12
            assert rel(empirical_ntk(zoo, xz, kind="trace", params=names, implementation=impl), ref_trace(J)) < 1e-12


def test_weight_sharing_and_torch_func_routes() -> None:
    torch.manual_seed(1)
    x = torch.randn(4, 5, dtype=torch.float64)
    model = Shared()
    with pytest.raises(ValueError, match="jacobian"):
        empirical_ntk(model, x, implementation="structured")
    Kf = ref_full(reference_jacobian(model, x))
    assert rel(empirical_ntk(model, x), Kf) < 1e-12  # auto falls back to a general route
    nt = NoTorchFunc()
    x4 = torch.randn(4, 4)
    with pytest.raises(CapabilityError, match="autograd"):
        empirical_ntk(nt, x4, implementation="jacobian")
    K = empirical_ntk(nt, x4)
    assert rel(K, ref_full(reference_jacobian(nt, x4))) < 1e-12
    assert torch.equal(K, empirical_ntk(nt, x4, implementation="autograd"))


def test_bad_inputs() -> None:
    _, model, x, _ = CASES[0]
    with pytest.raises(ValueError, match="N >= 1"):
        empirical_ntk(model, x[:0])
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        empirical_ntk(nn.Sequential(nn.Linear(16, 1), nn.Flatten(0)), x)
    with pytest.raises(ValueError, match=r"\(2, 1, 3\)"):
        empirical_ntk(nn.Sequential(nn.Linear(16, 3), nn.Unflatten(1, (1, 3))), x)
    for case in (3, 5, 6, 7):  # BatchNorm parameters, grouped/reflect-padded conv, a conv weight used outside
        _, other, xo, _ = CASES[case]
        with pytest.raises(ValueError, match="jacobian"):
            empirical_ntk(other, xo, implementation="structured")
    with pytest.raises(ValueError, match="kind"):
        empirical_ntk(model, x, kind="diag")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="implementation"):
        empirical_ntk(model, x, implementation="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="block_size"):
        empirical_ntk(model, x, block_size=0)
    with pytest.raises(ValueError, match="BatchNorm"):
        empirical_ntk(_bn_model(), x, mode="train")


def test_dtype_and_model_unchanged() -> None:
    model = _bn_model().train()
    model.net[1].bias.requires_grad_(False)
    x = torch.randn(5, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    rg = [p.requires_grad for p in model.parameters()]
    K32 = empirical_ntk(model, x, dtype="float32")
    assert K32.dtype == torch.float32
    assert empirical_ntk(model, x, dtype=None).dtype == torch.float32
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    K = empirical_ntk(model, x)  # eval mode by default, over the requires_grad parameters
    assert rel(K, ref_full(reference_jacobian(model, x, names))) < 1e-12
    assert rel(K32.double(), K) < 1e-4
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in model.modules()] == flags
    assert [p.requires_grad for p in model.parameters()] == rg
    assert not any(m._forward_hooks for m in model.modules())


def test_patch_qnn_default_and_lightning() -> None:
    from qlandscape.quantum import PatchQNN

    q = PatchQNN("digits", n_patches=4, layers=1, n_qubits=4, device="default.qubit")
    ql = PatchQNN("digits", n_patches=4, layers=1, n_qubits=4, device="lightning.qubit")
    ql.load_state_dict(q.state_dict())
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    J = reference_jacobian(q, x)
    Kf = ref_full(J)
    K_jac = empirical_ntk(q, x, implementation="jacobian")
    assert rel(K_jac, Kf) < 1e-12
    assert rel(empirical_ntk(q, x, kind="trace"), ref_trace(J)) < 1e-12
    with pytest.raises(CapabilityError, match="autograd"):
        empirical_ntk(ql, x, implementation="jacobian")
    K_light = empirical_ntk(ql, x)  # auto -> autograd (torch_func is False on lightning)
    assert rel(K_light, K_jac) < 1e-10


def test_patch_qnn_kernel_from_parameter_shift_jacobians() -> None:
    """The quantum reference independent of autograd through the simulator: a reference Jacobian whose rows
    are parameter-shift derivatives (each circuit on default.qubit with diff_method='parameter-shift', the
    exact shift rule for these rotations) gives the same kernel as the backprop model's NTK (tolerance 1e-10:
    the shift rule is exact, the difference is rounding of 2 x (#params) extra circuit evaluations)."""
    from qlandscape.quantum import PatchQNN

    q = PatchQNN("digits", n_patches=4, layers=1, n_qubits=4, device="default.qubit")
    ps = PatchQNN("digits", n_patches=4, layers=1, n_qubits=4, device="default.qubit", diff_method="parameter-shift")
    ps.load_state_dict(q.state_dict())
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    # reference rows only for the first circuit's weights (the shift rule costs two circuit runs per trainable
    # gate argument and output row; frozen tensors are not shifted): the kernel over that parameter subset
    names = ["circuits.0.weights"]
    for n, p in ps.named_parameters():
        p.requires_grad_(n in names)
    J_shift = reference_jacobian(ps.double(), x, names)  # per-sample autograd rows: parameter-shift gradients
    assert rel(empirical_ntk(q, x, params=names), ref_full(J_shift)) < 1e-10
    assert rel(empirical_ntk(q, x, kind="trace", params=names), ref_trace(J_shift)) < 1e-10
